//! `for_each`: an activity step run once per item of an array. Starting it reads the array
//! once and records its length (`ForEachStarted`); then instances are scheduled in item
//! order, at most `max_concurrency` in flight (an instance backing off for a retry counts);
//! the step completes when every instance has settled (the state folds that in).
//!
//! An instance failing for good is tolerated up to `tolerated_failures`; one more fails the
//! step: it stops (`ForEachStopped`): nothing more is scheduled, instances no worker holds
//! end, held ones settle without retries; then compensation undoes every instance handed out,
//! newest completion first (the same discipline as a stopped `parallel`). A cancel, the
//! execution timeout or the history's soft limit stop it the same way. It must never
//! schedule an instance once the step stopped, nor more than `max_concurrency` at once.

use super::attempt::FailedForGood;
use super::{emit, step};
use crate::definition::{Definition, ForEach, NodeId, OnFailure, MAX_FOR_EACH_ITEMS};
use crate::state::{for_each_items, WorkflowState};
use shop_types::history::{Event, EventKind};
use shop_types::StepRef;

/// Starts `for_each` step `node`: records how many items it has, or fails the step for good
/// when its pointer holds no array or one of more than `MAX_FOR_EACH_ITEMS` items.
pub(super) fn begin(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    spec: &ForEach,
) {
    let count = for_each_items(&state.context_json(), &spec.items).and_then(|items| {
        u32::try_from(items.len())
            .ok()
            .filter(|n| *n as usize <= MAX_FOR_EACH_ITEMS)
            .ok_or_else(|| format!("for_each items: {} items, more than {MAX_FOR_EACH_ITEMS}", items.len()))
    });
    match count {
        Ok(count) => emit(definition, state, out, now, EventKind::ForEachStarted { step, count }),
        Err(cause) => {
            let name = definition.node_def(node).map(|d| d.name.to_string()).unwrap_or_default();
            let failed = FailedForGood { name: &name, on_failure: OnFailure::Compensate, cause, attempts_made: 0 };
            step::failed_for_good(definition, state, out, now, &failed);
        }
    }
}

/// Schedules the next instance of an open `for_each` step that has room under its
/// `max_concurrency`. Returns whether it emitted anything (the caller calls again until not).
pub(super) fn progress(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64) -> bool {
    if state.stopping.is_some() || state.compensation_plan.is_some() {
        return false;
    }
    let mut next = None;
    for (&node, open) in &state.for_eachs {
        let Some(spec) = definition.node_def(node).and_then(|d| d.for_each.as_ref()) else {
            continue;
        };
        if open.begun >= open.count {
            continue;
        }
        let in_flight =
            state.attempts.keys().filter(|n| definition.instance_of(**n).is_some_and(|(s, _)| s == node)).count();
        if in_flight < spec.max_concurrency as usize {
            next = definition.instance_node(node, open.begun).and_then(|n| definition.node(n)).map(|n| n.step);
            break;
        }
    }
    match next {
        Some(step) => {
            emit(definition, state, out, now, EventKind::StepScheduled { step, attempt: 1 });
            true
        }
        None => false,
    }
}

/// An instance failed for good (already folded in): past the step's tolerance, the step
/// fails, which stops it (`stop`).
pub(super) fn failed_for_good(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    failed: &FailedForGood<'_>,
) {
    let Some((owner, item)) = definition.instance_of(node) else {
        return;
    };
    let (Some(open), Some(spec)) =
        (state.for_eachs.get(&owner), definition.node_def(owner).and_then(|d| d.for_each.as_ref()))
    else {
        return;
    };
    if state.stopping.is_some() || open.failed.len() <= spec.tolerated_failures as usize {
        return;
    }
    let cause = format!(
        "{} of {} items failed for good ({} tolerated); item {item}: {}",
        open.failed.len(),
        open.count,
        spec.tolerated_failures,
        failed.cause
    );
    let failed = FailedForGood { name: failed.name, on_failure: OnFailure::Compensate, cause, attempts_made: 0 };
    step::failed_for_good(definition, state, out, now, &failed);
}

/// Stops the open `for_each` step for `reason`, if there is one (returns whether).
pub(super) fn stop(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    reason: &str,
) -> bool {
    let Some(step) = state.for_eachs.values().next().map(|open| open.step) else {
        return false;
    };
    emit(definition, state, out, now, EventKind::ForEachStopped { step, reason: reason.to_owned() });
    true
}
