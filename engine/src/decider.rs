//! The decider: what happens next in a workflow run, as a pure function of
//! (definition, state, input, now).
//!
//! It emits history events and folds each into the state as it goes, so the caller gets the
//! new events and the new state together. It must never do I/O, read a clock or draw a random
//! number: retry jitter is derived from the run, step and attempt, so a replay of the same
//! inputs gives the same history, and property tests can drive it with any sequence of inputs.

use crate::definition::{Definition, OnFailure};
use crate::state::{AttemptStatus, WorkflowState};
use shop_types::history::{ActivityError, Event, EventKind, TimeoutKind};
use shop_types::{JsonText, StepPhase, StepRef};

/// The most events one decision emits. A run is failed while this many slots are still free
/// below its history limit, so a history never exceeds the limit.
pub const MAX_EVENTS_PER_DECISION: u64 = 8;

/// A durable timer of a run. Timers are derived from the state (see [`timers`]), never stored
/// on their own, so a terminal run can never leave one behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    ExecutionTimeout,
    ScheduleToClose { step: StepRef },
    ScheduleToStart { step: StepRef, attempt: u32 },
    StartToClose { step: StepRef, attempt: u32 },
    Heartbeat { step: StepRef, attempt: u32 },
    RetryDue { step: StepRef, attempt: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub due_ms: u64,
    pub kind: TimerKind,
}

/// What happened to a run, as the decider sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A worker took the attempt from its queue.
    Started { step: StepRef, attempt: u32, worker: String },
    Completed { step: StepRef, attempt: u32, output: JsonText },
    Failed { step: StepRef, attempt: u32, error: ActivityError },
    TimerFired(TimerKind),
    Cancel { reason: String },
    Terminate { reason: String },
}

/// Why an input changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the attempt is no longer current")]
    Stale,
    #[error("the workflow has already finished")]
    Finished,
    #[error("the workflow is past its pivot step and can no longer be cancelled")]
    PastPivot,
}

#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now_ms: u64,
    pub max_history_events: u64,
}

/// The events a new run starts with: `WorkflowStarted` and the first step's schedule.
pub fn start(definition: &Definition, state: &mut WorkflowState, input: &JsonText, ctx: Context) -> Vec<Event> {
    let mut out = vec![Event {
        seq: 1,
        at_ms: ctx.now_ms,
        kind: EventKind::WorkflowStarted {
            workflow_type: definition.name.clone(),
            definition_version: definition.version,
            input: input.clone(),
        },
    }];
    advance(definition, state, &mut out, ctx.now_ms);
    out
}

/// Decides what `input` does to the run, returning the new events (already applied to
/// `state`), or why it changes nothing.
pub fn decide(
    definition: &Definition,
    state: &mut WorkflowState,
    input: Input,
    ctx: Context,
) -> Result<Vec<Event>, Rejection> {
    if state.terminal.is_some() {
        return Err(match input {
            Input::Cancel { .. } | Input::Terminate { .. } => Rejection::Finished,
            _ => Rejection::Stale,
        });
    }
    let mut out = Vec::new();
    let now = ctx.now_ms;
    if state.next_seq + MAX_EVENTS_PER_DECISION > ctx.max_history_events {
        let reason = format!("history reached its limit of {} events", ctx.max_history_events);
        emit(definition, state, &mut out, now, EventKind::WorkflowFailed { reason });
        return Ok(out);
    }
    match input {
        Input::Started { step, attempt, worker } => {
            current_attempt(state, step, attempt, |s| matches!(s, AttemptStatus::Scheduled { .. }))?;
            emit(definition, state, &mut out, now, EventKind::StepStarted { step, attempt, worker });
        }
        Input::Completed { step, attempt, output } => {
            current_attempt(state, step, attempt, |s| matches!(s, AttemptStatus::Started { .. }))?;
            emit(definition, state, &mut out, now, EventKind::StepCompleted { step, attempt, output });
            advance(definition, state, &mut out, now);
        }
        Input::Failed { step, attempt, error } => {
            current_attempt(state, step, attempt, |s| matches!(s, AttemptStatus::Started { .. }))?;
            attempt_failed(definition, state, &mut out, now, step, attempt, Failure::Error(error));
        }
        Input::TimerFired(kind) => {
            if !timers(definition, state).iter().any(|t| t.kind == kind && t.due_ms <= now) {
                return Err(Rejection::Stale);
            }
            timer_fired(definition, state, &mut out, now, kind);
        }
        Input::Cancel { reason } => {
            if state.pivot_passed {
                return Err(Rejection::PastPivot);
            }
            if state.compensation_plan.is_some() {
                // Already compensating: a second cancel is a no-op, not an error.
                return Ok(out);
            }
            emit(definition, state, &mut out, now, EventKind::CancelRequested { reason: reason.clone() });
            let reason = format!("cancelled: {reason}");
            emit(definition, state, &mut out, now, EventKind::CompensationStarted { reason });
            advance(definition, state, &mut out, now);
        }
        Input::Terminate { reason } => {
            emit(definition, state, &mut out, now, EventKind::WorkflowTerminated { reason });
        }
    }
    Ok(out)
}

/// The run's live timers. The engine arms exactly these, and a fired timer that is not
/// among them any more is stale.
pub fn timers(definition: &Definition, state: &WorkflowState) -> Vec<Timer> {
    let mut out = Vec::new();
    if state.terminal.is_some() {
        return out;
    }
    if let Some(limit) = definition.execution_timeout_ms {
        if state.compensation_plan.is_none() && !state.pivot_passed {
            out.push(Timer {
                due_ms: state.created_at_ms.saturating_add(limit),
                kind: TimerKind::ExecutionTimeout,
            });
        }
    }
    let Some(current) = &state.current else {
        return out;
    };
    let Some(step_def) = definition.step(current.step) else {
        return out;
    };
    let (step, attempt) = (current.step, current.attempt);
    if let Some(budget) = step_def.timeouts.schedule_to_close_ms {
        out.push(Timer {
            due_ms: current.first_scheduled_at_ms.saturating_add(budget),
            kind: TimerKind::ScheduleToClose { step },
        });
    }
    match current.status {
        AttemptStatus::Scheduled { at_ms } => {
            if let Some(limit) = step_def.timeouts.schedule_to_start_ms {
                out.push(Timer {
                    due_ms: at_ms.saturating_add(limit),
                    kind: TimerKind::ScheduleToStart { step, attempt },
                });
            }
        }
        AttemptStatus::Started { at_ms, last_heartbeat_ms } => {
            out.push(Timer {
                due_ms: at_ms.saturating_add(step_def.timeouts.start_to_close_ms),
                kind: TimerKind::StartToClose { step, attempt },
            });
            if let Some(limit) = step_def.timeouts.heartbeat_ms {
                out.push(Timer {
                    due_ms: last_heartbeat_ms.saturating_add(limit),
                    kind: TimerKind::Heartbeat { step, attempt },
                });
            }
        }
        AttemptStatus::BackingOff { until_ms } => out.push(Timer {
            due_ms: until_ms,
            kind: TimerKind::RetryDue { step, attempt },
        }),
    }
    out
}

/// The retry delay before `attempt + 1`: exponential backoff capped at `max_interval`, then
/// stretched or shrunk by up to `jitter`, by a fraction derived from the run, step and attempt.
pub fn retry_delay_ms(definition: &Definition, state: &WorkflowState, step: StepRef, attempt: u32) -> u64 {
    let Some(policy) = definition.step(step).map(|s| &s.retry) else {
        return 0;
    };
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = (policy.initial_interval_ms as f64 * policy.backoff_coefficient.powi(exponent))
        .min(policy.max_interval_ms as f64);
    let unit = unit_fraction(state.id.as_str(), step, attempt) * 2.0 - 1.0;
    let delay = base * (1.0 + policy.jitter * unit);
    (delay.round() as u64).max(1)
}

/// A fraction in [0, 1) from FNV-1a over the run, step and attempt: random enough to spread
/// retries of many runs apart, and the same every time it is computed for the same attempt.
fn unit_fraction(id: &str, step: StepRef, attempt: u32) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let phase = step.phase as u8;
    let bytes = id
        .bytes()
        .chain([phase])
        .chain(step.index.to_be_bytes())
        .chain(attempt.to_be_bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

fn current_attempt(
    state: &WorkflowState,
    step: StepRef,
    attempt: u32,
    status_ok: impl Fn(&AttemptStatus) -> bool,
) -> Result<(), Rejection> {
    match &state.current {
        Some(c) if c.step == step && c.attempt == attempt && status_ok(&c.status) => Ok(()),
        _ => Err(Rejection::Stale),
    }
}

fn emit(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64, kind: EventKind) {
    let event = Event { seq: state.next_seq, at_ms: now, kind };
    state.apply(definition, &event);
    out.push(event);
}

enum Failure {
    Error(ActivityError),
    Timeout(TimeoutKind),
}

fn timer_fired(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64, kind: TimerKind) {
    match kind {
        TimerKind::ExecutionTimeout => {
            let limit = definition.execution_timeout_ms.unwrap_or_default();
            let reason = format!("execution timeout of {} exceeded", humantime::format_duration(std::time::Duration::from_millis(limit)));
            emit(definition, state, out, now, EventKind::CompensationStarted { reason });
            advance(definition, state, out, now);
        }
        TimerKind::RetryDue { step, attempt } => {
            emit(definition, state, out, now, EventKind::StepScheduled { step, attempt });
        }
        TimerKind::ScheduleToClose { step } => {
            let attempt = state.current.as_ref().map_or(1, |c| c.attempt);
            attempt_failed(definition, state, out, now, step, attempt, Failure::Timeout(TimeoutKind::ScheduleToClose));
        }
        TimerKind::ScheduleToStart { step, attempt } => {
            attempt_failed(definition, state, out, now, step, attempt, Failure::Timeout(TimeoutKind::ScheduleToStart));
        }
        TimerKind::StartToClose { step, attempt } => {
            attempt_failed(definition, state, out, now, step, attempt, Failure::Timeout(TimeoutKind::StartToClose));
        }
        TimerKind::Heartbeat { step, attempt } => {
            attempt_failed(definition, state, out, now, step, attempt, Failure::Timeout(TimeoutKind::Heartbeat));
        }
    }
}

fn attempt_failed(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
    attempt: u32,
    failure: Failure,
) {
    let Some(step_def) = definition.step(step) else {
        return;
    };
    let retryable = match &failure {
        Failure::Error(error) => error.retryable && !step_def.retry.non_retryable.contains(&error.error_type),
        // Waiting longer for a worker, or past the whole budget, cannot help: only a lost or
        // hung attempt is worth another try.
        Failure::Timeout(kind) => matches!(kind, TimeoutKind::StartToClose | TimeoutKind::Heartbeat),
    };
    let delay_ms = retry_delay_ms(definition, state, step, attempt);
    let first_scheduled = state.current.as_ref().map_or(now, |c| c.first_scheduled_at_ms);
    let within_budget = step_def
        .timeouts
        .schedule_to_close_ms
        .is_none_or(|budget| now.saturating_add(delay_ms) < first_scheduled.saturating_add(budget));
    let will_retry = retryable && attempt < step_def.retry.max_attempts && within_budget;
    let cause = match &failure {
        Failure::Error(error) => format!("{}: {}", error.error_type, error.message),
        Failure::Timeout(kind) => format!("{} timeout", kind.as_str()),
    };
    let kind = match failure {
        Failure::Error(error) => EventKind::StepFailed { step, attempt, error, will_retry },
        Failure::Timeout(timeout) => EventKind::StepTimedOut { step, attempt, timeout, will_retry },
    };
    emit(definition, state, out, now, kind);
    if will_retry {
        let next = EventKind::StepRetryScheduled { step, attempt: attempt + 1, delay_ms };
        emit(definition, state, out, now, next);
        return;
    }
    let name = &step_def.name;
    let compensates = step_def.on_failure == OnFailure::Compensate;
    match step.phase {
        StepPhase::Forward if compensates && state.pivot_passed => {
            let reason = format!("step {name} failed after the pivot: {cause}");
            emit(definition, state, out, now, EventKind::WorkflowFailed { reason });
        }
        StepPhase::Forward if compensates => {
            let reason = format!("step {name} failed: {cause}");
            emit(definition, state, out, now, EventKind::CompensationStarted { reason });
        }
        StepPhase::Compensation => {
            let reason = format!("{name} failed after {attempt} attempt(s): {cause}; the run needs attention");
            emit(definition, state, out, now, EventKind::WorkflowFailed { reason });
        }
        StepPhase::AfterCompensation if compensates => {
            let reason = format!("step {name} failed: {cause}");
            emit(definition, state, out, now, EventKind::WorkflowFailed { reason });
        }
        StepPhase::Forward | StepPhase::AfterCompensation => {}
    }
    advance(definition, state, out, now);
}

/// With no step in flight, schedules the next one or finishes the run.
fn advance(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64) {
    while state.terminal.is_none() && state.current.is_none() {
        let kind = if let Some(plan) = &state.compensation_plan {
            if let Some(&index) = plan.get(state.next_compensation) {
                EventKind::StepScheduled {
                    step: StepRef { phase: StepPhase::Compensation, index },
                    attempt: 1,
                }
            } else if usize::from(state.next_after) < definition.after_compensation.len() {
                EventKind::StepScheduled {
                    step: StepRef { phase: StepPhase::AfterCompensation, index: state.next_after },
                    attempt: 1,
                }
            } else {
                let reason = state.compensation_reason.clone().unwrap_or_default();
                EventKind::WorkflowCompensated { reason }
            }
        } else if usize::from(state.next_forward) < definition.steps.len() {
            EventKind::StepScheduled { step: StepRef::forward(state.next_forward), attempt: 1 }
        } else {
            EventKind::WorkflowCompleted { output: state.results_json() }
        };
        emit(definition, state, out, now, kind);
    }
}
