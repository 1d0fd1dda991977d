//! Child workflows: a main-line step that runs another workflow as a run of its own.
//!
//! Starting the step records `ChildStarted { step, child, version }` and asks the core
//! (`Effect::Start`) to start the child in the same batch: id `<parent>.<step>`, input the
//! parent's context `{"input": ..., "steps": ...}`, one level deeper than the parent (at most
//! `MAX_CHILD_DEPTH`). When the child's forward path completes it does not end: it records
//! `HeldByParent { output }` and reports the output (`Effect::ChildEnded`), which completes
//! the parent's step at once (`ChildCompleted`); the child stays open, held, until the
//! parent's verdict (`Effect::Verdict`): the parent completed, so the child completes; or
//! the parent's compensation reached the step (`ChildCompensating`), or the parent ended any
//! other way, so the child compensates itself and reports how it ended, which the parent
//! records as `ChildFailed` before its compensation goes on. A child that ends without
//! completing (compensated, failed, terminated) reports that too: `ChildFailed`, a permanent
//! failure of the step. A parent that compensates, is cancelled or is terminated while a
//! child runs forward asks it to cancel (`Effect::Cancel`); its compensation waits for the
//! child's outcome (a child in flight keeps the run from being idle). It must never start a
//! child twice for one step, let a compensation go on while a child is in flight, nor leave
//! a completed child's effects in place when its parent does not complete.

use super::attempt::FailedForGood;
use super::{emit, step, Context, Effect, Rejection};
use crate::definition::{child_id, Child, Definition, NodeId, MAX_CHILD_DEPTH};
use crate::state::WorkflowState;
use shop_types::api::WorkflowStatus;
use shop_types::history::{Event, EventKind};
use shop_types::{JsonText, StepRef, WorkflowId};
use std::collections::BTreeMap;

/// The version `ChildStarted` carries until [`effects`] resolves "the latest" (a version is
/// never 0 otherwise; one that stays 0 names no definition, and the child fails to start).
pub(super) const LATEST_UNRESOLVED: u32 = 0;

/// How a child ended, as its parent hears it: `Ok` with its output when its forward path
/// completed (it is then held), `Err` with why it ended otherwise.
pub type ChildOutcome = Result<JsonText, String>;

/// What a parent tells a child it holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The parent completed: so does the child, with the output it held.
    Complete,
    /// The parent undoes the child's step (or ended without completing): the child
    /// compensates itself, then reports how it ended.
    Compensate { reason: String },
}

/// Starts child step `node`, or fails it for good when the child would be too deep or its
/// derived id does not fit.
pub(super) fn begin(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    spec: &Child,
) {
    let name = definition.node_def(node).map(|d| d.name.to_string()).unwrap_or_default();
    let depth = state.depth().saturating_add(1);
    let child = if depth > MAX_CHILD_DEPTH {
        Err(format!("a child here would be {depth} levels deep, more than {MAX_CHILD_DEPTH}"))
    } else {
        child_id(&state.id, &name)
    };
    match child {
        Ok(child) => {
            let version = spec.version.unwrap_or(LATEST_UNRESOLVED);
            emit(definition, state, out, now, EventKind::ChildStarted { step, child, version });
        }
        Err(reason) => fail(definition, state, out, now, node, step, reason),
    }
}

/// The child of step `step` reported `outcome` (the core delivers it from the child's
/// decision, or from recovery): its forward path completed (`Ok`: the step completes, the
/// child is held) or it ended otherwise. Stale unless that child is in flight for the step,
/// or held when it ended on its own (an operator terminated it: nothing of it is left to
/// compensate, and the step stays completed).
pub(super) fn ended(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
    child: &WorkflowId,
    outcome: ChildOutcome,
) -> Result<(), Rejection> {
    let node = definition.node_id(step).ok_or(Rejection::Stale)?;
    let ours = |open: Option<&crate::state::OpenChild>| open.is_some_and(|open| open.child == *child);
    match outcome {
        Ok(output) if ours(state.children.get(&node)) => {
            emit(definition, state, out, now, EventKind::ChildCompleted { step, output })
        }
        Err(reason) if ours(state.children.get(&node)) => fail(definition, state, out, now, node, step, reason),
        Err(reason) if ours(state.held_children.get(&node)) => {
            emit(definition, state, out, now, EventKind::ChildFailed { step, reason })
        }
        _ => return Err(Rejection::Stale),
    }
    Ok(())
}

/// A held child hears its parent's verdict: it completes with the output it held, or
/// compensates itself (past its own pivot it cannot: it fails, and its effects stand). Stale
/// unless the run is a child that is held.
pub(super) fn verdict(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    verdict: Verdict,
) -> Result<(), Rejection> {
    let output = match (&state.held_by_parent, state.held()) {
        (Some(output), true) => output.clone(),
        _ => return Err(Rejection::Stale),
    };
    match verdict {
        Verdict::Complete => emit(definition, state, out, now, EventKind::WorkflowCompleted { output }),
        Verdict::Compensate { reason } if state.pivot_passed => {
            let reason = format!("{reason}; this run passed its pivot, so its effects stand");
            emit(definition, state, out, now, EventKind::WorkflowFailed { reason });
        }
        Verdict::Compensate { reason } => super::compensation::cancelled(definition, state, out, now, reason, None),
    }
    Ok(())
}

/// Records `ChildFailed` and what it means for the run: nothing more while compensating (the
/// compensation was waiting for it), else a permanent failure of the step.
fn fail(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    reason: String,
) {
    emit(definition, state, out, now, EventKind::ChildFailed { step, reason: reason.clone() });
    if state.compensation_plan.is_some() || state.stopping.is_some() || state.terminal.is_some() {
        return;
    }
    let Some(def) = definition.node_def(node) else {
        return;
    };
    let name = def.name.to_string();
    let failed = FailedForGood { name: &name, on_failure: def.on_failure, cause: reason, attempts_made: 1 };
    step::failed_for_good(definition, state, out, now, &failed);
}

/// The children a run has business with, as a decision found them: in flight (running
/// forward, or told to compensate) and held.
#[derive(Default)]
pub(super) struct Children {
    /// By node: the child, and whether it was told to compensate (it is not cancelled again).
    in_flight: BTreeMap<NodeId, (WorkflowId, bool)>,
    held: BTreeMap<NodeId, (StepRef, WorkflowId)>,
}

impl Children {
    pub(super) fn of(state: &WorkflowState) -> Self {
        Children {
            in_flight: state.children.iter().map(|(n, c)| (*n, (c.child.clone(), c.compensating))).collect(),
            held: state.held_children.iter().map(|(n, c)| (*n, (c.step, c.child.clone()))).collect(),
        }
    }
}

/// What a decision's events ask of other runs, given the children before it: start the
/// children it started (resolving "the latest" version through the context, and recording
/// it in the event), cancel those running forward when the run compensates or ends, give
/// held children their verdict (when compensation reaches their step, or the run ends), and
/// when this run is a child, report to its parent that it is held, or how it ended (not when
/// it completes: only its parent's verdict completes a child).
pub(super) fn effects(
    definition: &Definition,
    before: Children,
    state: &WorkflowState,
    events: &mut [Event],
    ctx: Context<'_>,
) -> Vec<Effect> {
    let Children { mut in_flight, mut held } = before;
    let mut effects = Vec::new();
    let mut stopping = None;
    let verdict = |run: WorkflowId, step: StepRef, verdict: Verdict| Effect::Verdict {
        run,
        parent: state.id.clone(),
        step,
        verdict,
    };
    for event in events.iter_mut() {
        let node = event.kind.step().and_then(|s| definition.node_id(s));
        match (&mut event.kind, node) {
            (EventKind::ChildStarted { step, child, version }, Some(node)) => {
                let Some(Child { name, version: _ }) = definition.child_of(node) else {
                    continue;
                };
                if *version == LATEST_UNRESOLVED {
                    *version = ctx.latest_version(name).unwrap_or(LATEST_UNRESOLVED);
                }
                in_flight.insert(node, (child.clone(), false));
                effects.push(Effect::Start {
                    run: child.clone(),
                    workflow_type: name.clone(),
                    version: *version,
                    input: JsonText::from_value(&state.context_json()),
                    parent: state.id.clone(),
                    step: *step,
                    depth: state.depth().saturating_add(1),
                });
            }
            (EventKind::ChildCompleted { step, .. }, Some(node)) => {
                if let Some((child, _)) = in_flight.remove(&node) {
                    held.insert(node, (*step, child));
                }
            }
            (EventKind::ChildFailed { .. }, Some(node)) => {
                in_flight.remove(&node);
                held.remove(&node);
            }
            (EventKind::ChildCompensating { step, child }, Some(node)) => {
                held.remove(&node);
                in_flight.insert(node, (child.clone(), true));
                let reason = state.compensation_reason.clone().unwrap_or_default();
                let reason = format!("the parent {} compensates: {reason}", state.id);
                effects.push(verdict(child.clone(), *step, Verdict::Compensate { reason }));
            }
            (EventKind::CompensationStarted { reason }, _) => {
                stopping = Some(format!("the parent compensates: {reason}"))
            }
            (EventKind::WorkflowCompleted { .. }, _) => {
                let held = std::mem::take(&mut held);
                effects.extend(held.into_values().map(|(step, run)| verdict(run, step, Verdict::Complete)));
            }
            (kind, _) if kind.is_terminal() => {
                let why = format!("the parent {} ended ({})", state.id, kind.name());
                let held = std::mem::take(&mut held);
                let compensate = || Verdict::Compensate { reason: why.clone() };
                effects.extend(held.into_values().map(|(step, run)| verdict(run, step, compensate())));
                stopping = Some(format!("the parent ended ({})", kind.name()));
            }
            _ => {}
        }
    }
    if let Some(reason) = stopping {
        let running = in_flight.into_values().filter(|(_, told)| !told);
        effects.extend(running.map(|(run, _)| Effect::Cancel { run, reason: reason.clone() }));
    }
    if let Some(link) = &state.parent {
        effects.extend(events.iter().filter_map(|event| {
            let outcome = match (&event.kind, &state.terminal) {
                (EventKind::HeldByParent { output }, _) => Ok(output.clone()),
                (EventKind::WorkflowCompleted { .. }, _) => return None,
                (kind, Some(terminal)) if kind.is_terminal() => {
                    Err(ended_reason(&state.id, terminal.status, terminal.reason.as_deref()))
                }
                _ => return None,
            };
            Some(Effect::ChildEnded { parent: link.parent.clone(), step: link.step, child: state.id.clone(), outcome })
        }));
    }
    effects
}

/// What a child that ended `status` (for `reason`) tells its parent, which records it in
/// `ChildFailed`.
pub fn ended_reason(child: &WorkflowId, status: WorkflowStatus, reason: Option<&str>) -> String {
    format!("child {child} ended {}: {}", status.as_str(), reason.unwrap_or_default())
}
