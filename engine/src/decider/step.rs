//! Forward steps: which one runs next, starting it (its `when`, recorded as skipped when
//! false, then its construct), and what a permanent failure of one means (compensate, fail
//! the run past the pivot, or go on). It must never schedule a forward step once
//! compensation has started, nor evaluate a `when` but once, when the step would start.

use super::attempt::FailedForGood;
use super::{child, choice, emit, for_each, parallel, sleep, wait};
use crate::definition::{Construct, Definition, NodeId, OnFailure};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};

/// The first forward step not yet finished with, if any: the main line's steps run one after
/// another, and a choice's branch runs, step by step, right after the choice took it.
pub(super) fn next(definition: &Definition, state: &WorkflowState) -> Option<NodeId> {
    for node in definition.main_line() {
        if !state.done.contains(&node) {
            return Some(node);
        }
        if let Some(branch) = state.choices.get(&node) {
            if let Some(next) = definition.branch_nodes(branch).find(|n| !state.done.contains(n)) {
                return Some(next);
            }
        }
    }
    None
}

/// Starts forward step `node`: skipped if its `when` is false now, else its construct.
pub(super) fn begin(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64, node: NodeId) {
    let (Some(def), Some(step)) = (definition.node_def(node), definition.node(node).map(|n| n.step)) else {
        return;
    };
    if let Some(when) = &def.when {
        if !when.holds(&state.context_json()) {
            emit(definition, state, out, now, EventKind::StepSkipped { step });
            return;
        }
    }
    match &def.construct {
        Construct::Activity { .. } if def.for_each.is_some() => {
            if let Some(spec) = &def.for_each {
                for_each::begin(definition, state, out, now, node, step, spec);
            }
        }
        Construct::Activity { .. } => emit(definition, state, out, now, EventKind::StepScheduled { step, attempt: 1 }),
        Construct::Sleep(spec) => sleep::begin(definition, state, out, now, node, step, spec),
        Construct::Wait(spec) => wait::open(definition, state, out, now, node, step, spec),
        Construct::Choice(cases) => choice::take(definition, state, out, now, node, step, cases),
        Construct::Parallel(branches) => parallel::begin(definition, state, out, now, step, branches),
        Construct::Child(spec) => child::begin(definition, state, out, now, node, step, spec),
    }
}

/// A forward step failed for good. One that may continue was already moved past (the
/// state marks it done); one that compensates starts compensation, unless the pivot has
/// passed, when nothing is undone any more and the run fails. Inside an open parallel step,
/// that waits until the other branches' held attempts settle (`parallel::stop`).
pub(super) fn failed_for_good(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    failed: &FailedForGood<'_>,
) {
    if failed.on_failure != OnFailure::Compensate {
        return;
    }
    let (name, cause) = (failed.name, &failed.cause);
    let kind = if state.pivot_passed {
        EventKind::WorkflowFailed { reason: format!("step {name} failed after the pivot: {cause}") }
    } else {
        EventKind::CompensationStarted { reason: format!("step {name} failed: {cause}") }
    };
    let reason = match &kind {
        EventKind::WorkflowFailed { reason } | EventKind::CompensationStarted { reason } => reason.clone(),
        _ => String::new(),
    };
    if parallel::stop(definition, state, out, now, &reason) {
        return;
    }
    emit(definition, state, out, now, kind);
}
