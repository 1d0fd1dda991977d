//! What a history leaves open, for the end of its timeline: the waits still open (their
//! signals and deadline), the sleeps (their wake time), whether the run is itself held by its
//! parent, and every child it started with where it stands (running, held, compensating,
//! ended). Folded from the events alone, as the engine's state is; it must never guess at
//! what the events do not say.

use super::{truncate, MAX_DETAIL_CHARS};
use crate::output::{timestamp, Table};
use shop_types::api::HistoryEventView;
use shop_types::describe::payload;
use shop_types::history::EventKind;
use shop_types::StepRef;
use std::collections::BTreeMap;

/// Where a child started by the run stands, as its parent's history tells it.
enum Child {
    Running,
    /// Completed; it ends with the run (completes if the run does, else undoes itself).
    Held,
    /// Told to compensate itself; the run's compensation waits for it.
    Compensating,
    Ended(String),
}

/// The lines after a timeline: `waiting for:` and `children:` sections, each only if it has
/// rows; empty when there is nothing to show.
pub(super) fn render(events: &[HistoryEventView]) -> String {
    let name = |event: &HistoryEventView| event.step_name.clone().unwrap_or_default();
    let mut waits: BTreeMap<StepRef, String> = BTreeMap::new();
    let mut sleeps: BTreeMap<StepRef, String> = BTreeMap::new();
    let mut children: BTreeMap<StepRef, (String, String, Child)> = BTreeMap::new();
    let mut held_by: Option<String> = None;
    let mut parent: Option<String> = None;
    let mut ended = None;
    for event in events {
        match &event.event {
            EventKind::WaitOpened { step, signals, deadline_ms } => {
                let text = format!("{}  until {}", signals.join(" | "), timestamp(*deadline_ms));
                waits.insert(*step, format!("{}\t{text}", name(event)));
            }
            EventKind::WaitCompleted { step, .. } | EventKind::WaitTimedOut { step } => {
                waits.remove(step);
            }
            EventKind::SleepStarted { step, until_ms } => {
                sleeps.insert(*step, format!("{}\tuntil {}", name(event), timestamp(*until_ms)));
            }
            EventKind::SleepEnded { step } => {
                sleeps.remove(step);
            }
            EventKind::ChildStarted { step, child, .. } => {
                children.insert(*step, (name(event), child.to_string(), Child::Running));
            }
            EventKind::ChildCompleted { step, .. } => set(&mut children, step, Child::Held),
            EventKind::ChildCompensating { step, .. } => set(&mut children, step, Child::Compensating),
            EventKind::ChildFailed { step, reason } => set(&mut children, step, Child::Ended(reason.clone())),
            EventKind::ParentLinked { parent: p, .. } => parent = Some(p.to_string()),
            EventKind::HeldByParent { output } => held_by = Some(payload(output)),
            // Waits and sleeps in flight end with the forward path.
            EventKind::CompensationStarted { .. }
            | EventKind::ParallelStopped { .. }
            | EventKind::ForEachStopped { .. } => {
                waits.clear();
                sleeps.clear();
                held_by = None;
            }
            kind if kind.is_terminal() => {
                waits.clear();
                sleeps.clear();
                held_by = None;
                ended = Some(kind.name());
            }
            _ => {}
        }
    }
    let mut table = Table::without_header();
    let mut split = |kind: &str, text: &str| {
        let (step, rest) = text.split_once('\t').unwrap_or((text, ""));
        table.row(vec![format!("  {kind}"), step.to_owned(), truncate(rest, MAX_DETAIL_CHARS)]);
    };
    for wait in waits.values() {
        split("wait", wait);
    }
    for sleep in sleeps.values() {
        split("sleep", sleep);
    }
    if let (Some(output), Some(parent)) = (&held_by, &parent) {
        split("parent", &format!("{parent}\theld until it ends; output {output}"));
    }
    let waiting = table.render();
    let mut table = Table::without_header();
    for (step_name, child, status) in children.values() {
        let status = match (status, ended) {
            (Child::Running, None) => "running".to_owned(),
            (Child::Running, Some(_)) => "told to cancel (this run ended first)".to_owned(),
            (Child::Held, None) => "completed, held until this run ends".to_owned(),
            (Child::Held, Some("WorkflowCompleted")) => "completed with this run".to_owned(),
            (Child::Held, Some(_)) => "told to compensate itself (this run did not complete)".to_owned(),
            (Child::Compensating, _) => "compensating itself".to_owned(),
            (Child::Ended(reason), _) => format!("ended: {reason}"),
        };
        table.row(vec![format!("  {step_name}"), child.clone(), truncate(&status, MAX_DETAIL_CHARS)]);
    }
    let children = table.render();
    let mut text = String::new();
    if !waiting.is_empty() {
        text.push_str("waiting for:\n");
        text.push_str(&waiting);
    }
    if !children.is_empty() {
        text.push_str("children:\n");
        text.push_str(&children);
    }
    text
}

fn set(children: &mut BTreeMap<StepRef, (String, String, Child)>, step: &StepRef, status: Child) {
    if let Some(entry) = children.get_mut(step) {
        entry.2 = status;
    }
}
