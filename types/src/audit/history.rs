//! Invariant 6 of the audit: the shape of one run's history (numbering, a start first, one
//! terminal event last, no step completed twice). Pure: it must never read anything but the
//! events it is given.

use super::*;

/// 6: everything wrong with a finished run's history: numbering from 1, a start first,
/// exactly one terminal event and it last, at most one completion per step attempt and per
/// step.
pub fn history_violations(id: &str, events: &[HistoryEventView]) -> Vec<Violation> {
    shape_violations(id, events, true)
}

/// [`history_violations`] for a run whose status is known: a running run has no terminal
/// event, and a finished one ends with the event its status names.
pub(super) fn run_history_violations(id: &str, events: &[HistoryEventView], status: WorkflowStatus) -> Vec<Violation> {
    let mut violations = shape_violations(id, events, status.is_terminal());
    let ending = match events.last().map(|e| &e.event) {
        Some(EventKind::WorkflowCompleted { .. }) => Some(WorkflowStatus::Completed),
        Some(EventKind::WorkflowCompensated { .. }) => Some(WorkflowStatus::Compensated),
        Some(EventKind::WorkflowFailed { .. }) => Some(WorkflowStatus::Failed),
        Some(EventKind::WorkflowTerminated { .. } | EventKind::WorkflowTerminatedBy { .. }) => {
            Some(WorkflowStatus::Terminated)
        }
        _ => None,
    };
    if let Some(ending) = ending.filter(|ending| *ending != status) {
        let message = format!("the run is {} but its history ends {}", status.as_str(), ending.as_str());
        violations.push(Violation::new(ViolationKind::History, id, message));
    }
    violations
}

fn shape_violations(id: &str, events: &[HistoryEventView], finished: bool) -> Vec<Violation> {
    let history = |message: String| Violation::new(ViolationKind::History, id, message);
    let Some(first) = events.first() else {
        return vec![history("empty history".to_owned())];
    };
    let mut violations = Vec::new();
    if let Some((i, event)) = events.iter().enumerate().find(|(i, e)| e.seq != *i as u64 + 1) {
        violations.push(history(format!("event #{} has seq {}", i + 1, event.seq)));
    }
    if !matches!(first.event, EventKind::WorkflowStarted { .. }) {
        violations.push(history(format!("first event is {}, not WorkflowStarted", first.event.name())));
    }
    let terminals: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| e.event.is_terminal()).map(|(i, _)| i).collect();
    match (terminals.as_slice(), finished) {
        ([], false) => {}
        ([last], true) if *last == events.len() - 1 => {}
        ([], true) => violations.push(history("no terminal event".to_owned())),
        ([only], true) => violations.push(history(format!("terminal event #{} is not the last", only + 1))),
        (some, false) => violations.push(history(format!("{} terminal event(s) in a running run", some.len()))),
        (many, true) => violations.push(history(format!("{} terminal events", many.len()))),
    }
    let mut attempts: HashSet<(StepRef, u32)> = HashSet::new();
    let mut steps: HashSet<StepRef> = HashSet::new();
    for event in events {
        if let EventKind::StepCompleted { step, attempt, .. } = &event.event {
            let step_name = event.step_name.as_deref().unwrap_or("?");
            if !attempts.insert((*step, *attempt)) {
                let message = format!("step {step_name} ({step:?}) attempt {attempt} completed twice");
                violations.push(Violation::new(ViolationKind::Duplicate, id, message));
            } else if !steps.insert(*step) {
                let message = format!("step {step_name} ({step:?}) completed by more than one attempt");
                violations.push(Violation::new(ViolationKind::Duplicate, id, message));
            }
        }
    }
    violations
}
