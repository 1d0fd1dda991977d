//! What every activity attempt shares, whatever construct it belongs to: a worker taking it,
//! its completion, its failure or timeout, and the retry policy deciding between another
//! attempt and a permanent failure. What a completion or a permanent failure means for the
//! run is the business of the node's construct (`step`, `compensation`, `after`). It must
//! never accept a report for an attempt that is not the one in flight.

use super::{advance, after, compensation, emit, for_each, retry_delay_ms, step, Rejection, TimerKind};
use crate::definition::{Definition, NodeId, NodeKind};
use crate::state::{AttemptStatus, WorkflowState};
use shop_types::history::{ActivityError, Event, EventKind, TimeoutKind};
use shop_types::{JsonText, StepRef};

/// Why an attempt failed.
pub(super) enum Failure {
    Error(ActivityError),
    Timeout(TimeoutKind),
}

/// The node of `step` if `attempt` is the one it has in flight, standing as `status_ok` wants.
fn in_flight(
    definition: &Definition,
    state: &WorkflowState,
    step: StepRef,
    attempt: u32,
    status_ok: impl Fn(&AttemptStatus) -> bool,
) -> Result<NodeId, Rejection> {
    let node = definition.node_id(step).ok_or(Rejection::Stale)?;
    match state.attempt(node) {
        Some(a) if a.step == step && a.attempt == attempt && status_ok(&a.status) => Ok(node),
        _ => Err(Rejection::Stale),
    }
}

fn is_scheduled(status: &AttemptStatus) -> bool {
    matches!(status, AttemptStatus::Scheduled { .. })
}

fn is_started(status: &AttemptStatus) -> bool {
    matches!(status, AttemptStatus::Started { .. })
}

pub(super) fn started(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
    attempt: u32,
    worker: shop_types::WorkerId,
) -> Result<(), Rejection> {
    in_flight(definition, state, step, attempt, is_scheduled)?;
    emit(definition, state, out, now, EventKind::StepStarted { step, attempt, worker });
    Ok(())
}

pub(super) fn completed(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
    attempt: u32,
    output: JsonText,
) -> Result<(), Rejection> {
    in_flight(definition, state, step, attempt, is_started)?;
    emit(definition, state, out, now, EventKind::StepCompleted { step, attempt, output });
    advance(definition, state, out, now);
    Ok(())
}

pub(super) fn failed(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
    attempt: u32,
    error: ActivityError,
) -> Result<(), Rejection> {
    let node = in_flight(definition, state, step, attempt, is_started)?;
    attempt_failed(definition, state, out, now, node, step, attempt, Failure::Error(error));
    Ok(())
}

/// A timer of an attempt in flight fired (the caller checked that it is live).
pub(super) fn timer_fired(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    kind: TimerKind,
) {
    let (step, attempt, timeout) = match kind {
        TimerKind::RetryDue { step, attempt } => {
            emit(definition, state, out, now, EventKind::StepScheduled { step, attempt });
            return;
        }
        TimerKind::ScheduleToClose { step } => (step, None, TimeoutKind::ScheduleToClose),
        TimerKind::ScheduleToStart { step, attempt } => (step, Some(attempt), TimeoutKind::ScheduleToStart),
        TimerKind::StartToClose { step, attempt } => (step, Some(attempt), TimeoutKind::StartToClose),
        TimerKind::Heartbeat { step, attempt } => (step, Some(attempt), TimeoutKind::Heartbeat),
        // Not an attempt's timers: the caller routes them to their constructs.
        TimerKind::ExecutionTimeout | TimerKind::SleepDue { .. } | TimerKind::WaitDeadline { .. } => return,
    };
    let Some(node) = definition.node_id(step) else {
        return;
    };
    let attempt = attempt.unwrap_or_else(|| state.attempt(node).map_or(1, |a| a.attempt));
    attempt_failed(definition, state, out, now, node, step, attempt, Failure::Timeout(timeout));
}

/// Records a failed attempt, then either schedules a retry or hands the permanent failure to
/// the node's construct, and moves the run on.
#[allow(clippy::too_many_arguments)]
fn attempt_failed(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    attempt: u32,
    failure: Failure,
) {
    let (Some(step_def), Some(kind)) = (definition.node_def(node), definition.node_kind(node)) else {
        return;
    };
    let retryable = match &failure {
        Failure::Error(error) => error.retryable && !step_def.retry.non_retryable.contains(&error.error_type),
        // Waiting longer for a worker, or past the whole budget, cannot help: only a lost or
        // hung attempt is worth another try.
        Failure::Timeout(kind) => matches!(kind, TimeoutKind::StartToClose | TimeoutKind::Heartbeat),
    };
    let delay_ms = retry_delay_ms(definition, state, step, attempt);
    let in_flight = state.attempt(node);
    let first_scheduled = in_flight.map_or(now, |a| a.first_scheduled_at_ms);
    let within_budget = step_def
        .timeouts
        .schedule_to_close_ms
        .is_none_or(|budget| now.saturating_add(delay_ms) < first_scheduled.saturating_add(budget));
    let attempts_made = attempt.saturating_sub(in_flight.map_or(0, |a| a.attempt_base));
    // A stopped parallel or for_each step lets held attempts settle, never starts them again.
    let stopping = matches!(kind, NodeKind::Step | NodeKind::Instance) && state.stopping.is_some();
    let will_retry = retryable && attempts_made < step_def.retry.max_attempts && within_budget && !stopping;
    let cause = match &failure {
        Failure::Error(error) => format!("{}: {}", error.error_type, error.message),
        Failure::Timeout(kind) => format!("{} timeout", kind.as_str()),
    };
    let event = match failure {
        Failure::Error(error) => EventKind::StepFailed { step, attempt, error, will_retry },
        Failure::Timeout(timeout) => EventKind::StepTimedOut { step, attempt, timeout, will_retry },
    };
    emit(definition, state, out, now, event);
    if will_retry {
        let next = EventKind::StepRetryScheduled { step, attempt: attempt + 1, delay_ms };
        emit(definition, state, out, now, next);
        return;
    }
    let failed = FailedForGood { name: step_def.name.as_str(), on_failure: step_def.on_failure, cause, attempts_made };
    match kind {
        NodeKind::Step => step::failed_for_good(definition, state, out, now, &failed),
        NodeKind::Compensation => compensation::failed_for_good(definition, state, out, now, &failed),
        NodeKind::AfterCompensation => after::failed_for_good(definition, state, out, now, &failed),
        NodeKind::Instance => for_each::failed_for_good(definition, state, out, now, node, &failed),
    }
    advance(definition, state, out, now);
}

/// A step that failed past its retry policy, as its construct needs to know it.
pub(super) struct FailedForGood<'a> {
    pub name: &'a str,
    pub on_failure: crate::definition::OnFailure,
    pub cause: String,
    /// Attempts since the last resume.
    pub attempts_made: u32,
}
