//! `parallel = ["a", "b"]`: the named branches run at once, each its steps in order; the step
//! completes when every branch has (`BranchCompleted` for each, recorded as it happens).
//!
//! When the run must stop going forward while a parallel step is open (a branch step failed
//! for good, a cancel, the execution timeout, the history's soft limit), the step stops
//! (`ParallelStopped`): nothing more is scheduled in any branch, attempts no worker holds,
//! sleeps and waits end, and the attempts workers hold settle (their retries are not taken);
//! only then does compensation start, over everything handed to a worker, newest completion
//! first. It must never abandon an attempt a worker holds, nor schedule a branch step once
//! the step has stopped.

use super::{emit, for_each, step};
use crate::definition::{Definition, NodeId};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};
use shop_types::StepRef;

/// Starts a parallel step; `advance` then starts its branches.
pub(super) fn begin(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
    branches: &[String],
) {
    emit(definition, state, out, now, EventKind::ParallelStarted { step, branches: branches.to_vec() });
}

/// Moves the open parallel steps on by one event: a branch with nothing left completes, or a
/// branch with nothing in flight starts its next step. Returns whether it emitted anything
/// (the caller calls again until it does not).
pub(super) fn progress(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64) -> bool {
    if state.stopping.is_some() || state.compensation_plan.is_some() {
        return false;
    }
    let mut next: Option<(StepRef, String, Option<NodeId>)> = None;
    'open: for open in state.parallels.values() {
        for branch in open.branches.iter().filter(|b| !open.completed.contains(*b)) {
            match definition.branch_nodes(branch).find(|n| !state.done.contains(n)) {
                None => {
                    next = Some((open.step, branch.clone(), None));
                    break 'open;
                }
                Some(node) if !state.node_in_flight(node) => {
                    next = Some((open.step, branch.clone(), Some(node)));
                    break 'open;
                }
                Some(_) => {}
            }
        }
    }
    match next {
        None => false,
        Some((step, branch, None)) => {
            emit(definition, state, out, now, EventKind::BranchCompleted { step, branch });
            true
        }
        Some((_, _, Some(node))) => {
            step::begin(definition, state, out, now, node);
            true
        }
    }
}

/// The run must stop going forward for `reason`. With a parallel step open, it stops
/// (returns true); the caller then waits for the held attempts to settle. Without one it
/// returns false, and the caller compensates (or fails) at once. Once stopping, it stops
/// nothing twice (returns true). An open `for_each` step stops the same way.
pub(super) fn stop(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    reason: &str,
) -> bool {
    if state.stopping.is_some() {
        return true;
    }
    let Some(step) = state.parallels.values().next().map(|open| open.step) else {
        return for_each::stop(definition, state, out, now, reason);
    };
    emit(definition, state, out, now, EventKind::ParallelStopped { step, reason: reason.to_owned() });
    true
}
