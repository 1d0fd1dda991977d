//! Compensation: starting it (a step failed for good, a cancel, the execution timeout, or a
//! history nearing its limit), running the plan's compensations newest first, parking the run
//! when one fails for good, and resuming a parked run. It must never start compensation twice
//! or after the pivot has passed.

use super::attempt::FailedForGood;
use super::{advance, emit, parallel, Rejection};
use crate::definition::{Definition, NodeId};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};

/// The next compensation of the plan not yet completed, if any: a compensation node not
/// done, or a child step whose child is held (its child is told to compensate itself; one
/// that failed, or was never held, has nothing left to undo).
pub(super) fn next(definition: &Definition, state: &WorkflowState) -> Option<NodeId> {
    let plan = state.compensation_plan.as_ref()?;
    plan.iter().copied().find(|node| match definition.child_of(*node) {
        Some(_) => state.held_children.contains_key(node),
        None => !state.done.contains(node),
    })
}

/// Starts compensation: the state fixes the plan, and the first compensation is scheduled.
/// With a parallel step open, it first stops it, and compensation starts once the attempts
/// workers hold have settled.
pub(super) fn begin(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    reason: String,
) {
    if parallel::stop(definition, state, out, now, &reason) {
        advance(definition, state, out, now);
        return;
    }
    emit(definition, state, out, now, EventKind::CompensationStarted { reason });
    advance(definition, state, out, now);
}

pub(super) fn cancel(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    reason: String,
    by: Option<String>,
) -> Result<(), Rejection> {
    if let Some(link) = state.parent.as_ref().filter(|_| state.held()) {
        return Err(Rejection::HeldByParent(link.parent.clone()));
    }
    if state.pivot_passed {
        return Err(Rejection::PastPivot);
    }
    if state.compensation_plan.is_some() || state.stopping.is_some() {
        // Already compensating (or about to): a second cancel is a no-op, not an error.
        return Ok(());
    }
    cancelled(definition, state, out, now, reason, by);
    Ok(())
}

/// Records a cancel that is to be honoured (`CancelRequested`, or `CancelRequestedBy` when an
/// operator named by `by` asked) and starts compensation.
pub(super) fn cancelled(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    reason: String,
    by: Option<String>,
) {
    let requested = match by {
        Some(by) => EventKind::CancelRequestedBy { reason: reason.clone(), by },
        None => EventKind::CancelRequested { reason: reason.clone() },
    };
    emit(definition, state, out, now, requested);
    begin(definition, state, out, now, format!("cancelled: {reason}"));
}

pub(super) fn execution_timed_out(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64) {
    let limit = definition.execution_timeout_ms.unwrap_or_default();
    let reason = format!(
        "execution timeout of {} exceeded",
        humantime::format_duration(std::time::Duration::from_millis(limit))
    );
    begin(definition, state, out, now, reason);
}

/// A compensation failed for good: the run is parked until an operator resumes it.
pub(super) fn failed_for_good(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    failed: &FailedForGood<'_>,
) {
    let reason = format!(
        "{} failed after {} attempt(s): {}; the run needs attention",
        failed.name, failed.attempts_made, failed.cause
    );
    emit(definition, state, out, now, EventKind::RunParked { reason });
}

/// An operator resumes a parked run: the compensation that failed runs again.
pub(super) fn resume(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    reason: String,
    by: Option<String>,
) -> Result<(), Rejection> {
    let (Some(_), Some((node, attempt))) = (&state.parked, state.last_failed) else {
        return Err(Rejection::NotParked);
    };
    let step = definition.node(node).ok_or(Rejection::NotParked)?.step;
    let resumed = match by {
        Some(by) => EventKind::RunResumedBy { reason, by },
        None => EventKind::RunResumed { reason },
    };
    emit(definition, state, out, now, resumed);
    // A fresh attempt number, so a report of an attempt from before the park is stale.
    emit(definition, state, out, now, EventKind::StepScheduled { step, attempt: attempt + 1 });
    Ok(())
}
