//! Forward activity steps: which one runs next, and what a permanent failure of one means
//! (compensate, fail the run past the pivot, or go on). It must never schedule a forward
//! step once compensation has started.

use super::attempt::FailedForGood;
use super::emit;
use crate::definition::{Definition, NodeId, OnFailure};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};

/// The first forward step not yet finished with, if any: steps run one after another.
pub(super) fn next(definition: &Definition, state: &WorkflowState) -> Option<NodeId> {
    definition.forward_nodes().find(|node| !state.done.contains(node))
}

/// A forward step failed for good. One that may continue was already moved past (the
/// state marks it done); one that compensates starts compensation, unless the pivot has
/// passed, when nothing is undone any more and the run fails.
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
    emit(definition, state, out, now, kind);
}
