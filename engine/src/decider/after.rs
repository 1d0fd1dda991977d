//! Steps after compensation (e.g. telling the user the order was cancelled): which one runs
//! next, and what a permanent failure of one means. They run only once every compensation
//! in the plan has completed, and must never be compensated themselves.

use super::attempt::FailedForGood;
use super::emit;
use crate::definition::{Definition, NodeId, OnFailure};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};

/// The first step after compensation not yet finished with, if any.
pub(super) fn next(definition: &Definition, state: &WorkflowState) -> Option<NodeId> {
    definition.after_compensation_nodes().find(|node| !state.done.contains(node))
}

/// A step after compensation failed for good: the run fails, unless the step may continue
/// (the state already moved past it either way).
pub(super) fn failed_for_good(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    failed: &FailedForGood<'_>,
) {
    if failed.on_failure == OnFailure::Compensate {
        let reason = format!("step {} failed: {}", failed.name, failed.cause);
        emit(definition, state, out, now, EventKind::WorkflowFailed { reason });
    }
}
