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

/// The most events one decision emits (with the history-limit compensation below). Far from
/// the limit a decision is applied in place; closer than this it is tried on a copy first.
pub const MAX_EVENTS_PER_DECISION: u64 = 8;
/// A run still in its forward steps when its history reaches `limit - limit / this` events
/// stops going forward and compensates, so the rest of the budget is left for undoing it.
pub const COMPENSATION_HEADROOM_DIVISOR: u64 = 4;

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
    Started {
        step: StepRef,
        attempt: u32,
        worker: String,
    },
    Completed {
        step: StepRef,
        attempt: u32,
        output: JsonText,
    },
    Failed {
        step: StepRef,
        attempt: u32,
        error: ActivityError,
    },
    TimerFired(TimerKind),
    Cancel {
        reason: String,
    },
    Terminate {
        reason: String,
    },
    /// An operator retries a parked run.
    Resume {
        reason: String,
    },
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
    #[error("the workflow is not parked: only a run whose compensation failed can be retried")]
    NotParked,
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
    let used = state.next_seq - 1;
    let limit = ctx.max_history_events;
    if used + MAX_EVENTS_PER_DECISION < limit {
        return decide_within_limit(definition, state, input, ctx);
    }
    // Near the limit: try the decision on a copy, and keep it only if it fits, leaving room
    // for a terminal event unless it is one. Otherwise the run fails here, at the limit.
    let mut trial = state.clone();
    let events = decide_within_limit(definition, &mut trial, input, ctx)?;
    let length = used + events.len() as u64;
    if length < limit || (length == limit && trial.terminal.is_some()) {
        *state = trial;
        return Ok(events);
    }
    // Keep as much of the decision as still leaves room for the failure: what happened
    // (a completion, say) stays recorded.
    let room = usize::try_from(limit.saturating_sub(used + 1)).unwrap_or(0).min(events.len());
    for event in &events[..room] {
        state.apply(definition, event);
    }
    let mut out = events;
    out.truncate(room);
    let reason = format!("history reached its limit of {limit} events; the run needs attention");
    emit(definition, state, &mut out, ctx.now_ms, EventKind::WorkflowFailed { reason });
    Ok(out)
}

fn decide_within_limit(
    definition: &Definition,
    state: &mut WorkflowState,
    input: Input,
    ctx: Context,
) -> Result<Vec<Event>, Rejection> {
    if state.terminal.is_some() {
        return Err(match input {
            Input::Cancel { .. } | Input::Terminate { .. } | Input::Resume { .. } => Rejection::Finished,
            _ => Rejection::Stale,
        });
    }
    let mut out = Vec::new();
    let now = ctx.now_ms;
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
        Input::Resume { reason } => {
            let (Some(_), Some((step, attempt))) = (&state.parked, state.last_failed) else {
                return Err(Rejection::NotParked);
            };
            emit(definition, state, &mut out, now, EventKind::RunResumed { reason });
            // A fresh attempt number, so a report of an attempt from before the park is stale.
            emit(definition, state, &mut out, now, EventKind::StepScheduled { step, attempt: attempt + 1 });
        }
    }
    let soft_limit = ctx.max_history_events - ctx.max_history_events / COMPENSATION_HEADROOM_DIVISOR;
    let going_forward = state.terminal.is_none() && state.compensation_plan.is_none() && !state.pivot_passed;
    if going_forward && state.next_seq > soft_limit {
        let reason = format!(
            "history passed {soft_limit} events, 3/4 of its limit of {}, before the order could finish",
            ctx.max_history_events
        );
        emit(definition, state, &mut out, now, EventKind::CompensationStarted { reason });
        advance(definition, state, &mut out, now);
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
            out.push(Timer { due_ms: state.created_at_ms.saturating_add(limit), kind: TimerKind::ExecutionTimeout });
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
        AttemptStatus::BackingOff { until_ms } => {
            out.push(Timer { due_ms: until_ms, kind: TimerKind::RetryDue { step, attempt } })
        }
    }
    out
}

/// The retry delay before `attempt + 1`: exponential backoff capped at `max_interval`, then
/// stretched or shrunk by up to `jitter`, by a fraction derived from the run, step and attempt.
pub fn retry_delay_ms(definition: &Definition, state: &WorkflowState, step: StepRef, attempt: u32) -> u64 {
    let Some(policy) = definition.step(step).map(|s| &s.retry) else {
        return 0;
    };
    let exponent = i32::try_from(attempt.saturating_sub(state.attempt_base).saturating_sub(1)).unwrap_or(i32::MAX);
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
    let bytes = id.bytes().chain([phase]).chain(step.index.to_be_bytes()).chain(attempt.to_be_bytes());
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
            let reason = format!(
                "execution timeout of {} exceeded",
                humantime::format_duration(std::time::Duration::from_millis(limit))
            );
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
    let attempts_made = attempt.saturating_sub(state.attempt_base);
    let will_retry = retryable && attempts_made < step_def.retry.max_attempts && within_budget;
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
            let reason = format!("{name} failed after {attempts_made} attempt(s): {cause}; the run needs attention");
            emit(definition, state, out, now, EventKind::RunParked { reason });
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
    while state.terminal.is_none() && state.current.is_none() && state.parked.is_none() {
        let kind = if let Some(plan) = &state.compensation_plan {
            if let Some(&index) = plan.get(state.next_compensation) {
                EventKind::StepScheduled { step: StepRef { phase: StepPhase::Compensation, index }, attempt: 1 }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition;
    use proptest::prelude::*;
    use shop_types::api::WorkflowStatus;
    use shop_types::WorkflowId;
    use std::collections::HashSet;

    const MAX_HISTORY: u64 = 10_000;

    fn order() -> Definition {
        definition::parse("order.toml", include_str!("../../workflows/order.toml")).expect("valid")
    }

    fn ctx(now_ms: u64) -> Context {
        Context { now_ms, max_history_events: MAX_HISTORY }
    }

    struct Harness {
        def: Definition,
        state: WorkflowState,
        history: Vec<Event>,
        now: u64,
        limit: u64,
    }

    impl Harness {
        fn new(def: Definition) -> Self {
            let input = JsonText::parse(r#"{"orderId":"o-1"}"#).expect("valid");
            let now = 1_000_000;
            let mut state = WorkflowState::new(WorkflowId::parse("o-1").expect("valid"), &def, input.clone(), now);
            let history = start(&def, &mut state, &input, ctx(now));
            Harness { def, state, history, now, limit: MAX_HISTORY }
        }

        fn feed(&mut self, input: Input) -> Result<(), Rejection> {
            let ctx = Context { now_ms: self.now, max_history_events: self.limit };
            let events = decide(&self.def, &mut self.state, input, ctx)?;
            self.history.extend(events);
            Ok(())
        }

        fn current(&self) -> Option<(StepRef, u32)> {
            self.state.current.as_ref().map(|c| (c.step, c.attempt))
        }

        fn take(&mut self) -> Option<(StepRef, u32)> {
            let (step, attempt) = self.current()?;
            self.feed(Input::Started { step, attempt, worker: "w".into() }).ok()?;
            Some((step, attempt))
        }

        fn complete(&mut self) {
            let (step, attempt) = self.take().expect("a step is scheduled");
            self.feed(Input::Completed { step, attempt, output: JsonText::parse("{}").expect("valid") })
                .expect("current attempt completes");
        }

        fn fail(&mut self, error_type: &str, retryable: bool) {
            let (step, attempt) = self.take().expect("a step is scheduled");
            let error = ActivityError { error_type: error_type.into(), message: "boom".into(), retryable };
            self.feed(Input::Failed { step, attempt, error }).expect("current attempt fails");
        }

        fn fire_next_timer(&mut self) -> bool {
            let Some(timer) = timers(&self.def, &self.state).into_iter().min_by_key(|t| t.due_ms) else {
                return false;
            };
            self.now = self.now.max(timer.due_ms);
            self.feed(Input::TimerFired(timer.kind)).is_ok()
        }

        fn names(&self) -> Vec<&'static str> {
            self.history.iter().map(|e| e.kind.name()).collect()
        }
    }

    #[test]
    fn the_happy_path_confirms() {
        let mut h = Harness::new(order());
        for _ in 0..4 {
            h.complete();
        }
        assert_eq!(h.state.status(), WorkflowStatus::Completed);
        assert_eq!(h.names().last(), Some(&"WorkflowCompleted"));
        assert!(timers(&h.def, &h.state).is_empty());
    }

    #[test]
    fn out_of_stock_compensates_without_undoing_unstarted_steps() {
        let mut h = Harness::new(order());
        h.fail("OUT_OF_STOCK", false);
        // reserve was started, so its release runs (it is a no-op for a refused reservation).
        let (step, _) = h.current().expect("compensation scheduled");
        assert_eq!(step, StepRef { phase: StepPhase::Compensation, index: 0 });
        h.complete();
        h.complete(); // notify_cancelled
        assert_eq!(h.state.status(), WorkflowStatus::Compensated);
        assert!(h.state.terminal.as_ref().and_then(|t| t.reason.clone()).is_some_and(|r| r.contains("OUT_OF_STOCK")));
    }

    #[test]
    fn a_declined_payment_refunds_then_releases() {
        let mut h = Harness::new(order());
        h.complete();
        h.fail("PAYMENT_DECLINED", false);
        let plan: Vec<u16> = h.state.compensation_plan.clone().expect("compensating");
        assert_eq!(plan, vec![1, 0]);
        h.complete();
        h.complete();
        h.complete();
        assert_eq!(h.state.status(), WorkflowStatus::Compensated);
    }

    #[test]
    fn transient_failures_retry_with_growing_backoff_until_the_cap() {
        let mut h = Harness::new(order());
        h.complete();
        let mut delays = Vec::new();
        for _ in 0..5 {
            h.fail("PAYMENT_UNAVAILABLE", true);
            match h.history.last().map(|e| &e.kind) {
                Some(EventKind::StepRetryScheduled { delay_ms, .. }) => delays.push(*delay_ms),
                other => panic!("expected a retry, got {other:?}"),
            }
            assert!(h.fire_next_timer(), "the backoff timer fires");
        }
        assert!(delays.windows(2).all(|w| w[1] > w[0]), "backoff grows: {delays:?}");
        // The sixth failure is past max_attempts = 6: compensation starts.
        h.fail("PAYMENT_UNAVAILABLE", true);
        assert!(h.state.compensation_plan.is_some());
    }

    #[test]
    fn a_late_completion_after_a_timeout_is_stale() {
        let mut h = Harness::new(order());
        let (step, attempt) = h.take().expect("scheduled");
        assert!(h.fire_next_timer(), "start_to_close fires");
        assert!(matches!(h.history.last().map(|e| &e.kind), Some(EventKind::StepRetryScheduled { .. })));
        let late = Input::Completed { step, attempt, output: JsonText::null() };
        let before = h.history.len();
        assert_eq!(h.feed(late), Err(Rejection::Stale));
        assert_eq!(h.history.len(), before);
    }

    #[test]
    fn no_worker_fails_the_step_at_schedule_to_start() {
        let mut h = Harness::new(order());
        // Nothing takes reserve_stock: schedule_to_start (1m) fires before the others.
        assert!(h.fire_next_timer());
        assert!(h.names().contains(&"StepTimedOut"));
        assert!(h.state.compensation_plan.as_ref().is_some_and(Vec::is_empty));
    }

    #[test]
    fn a_failing_compensation_parks_the_run_until_an_operator_resumes_it() {
        let mut h = Harness::new(order());
        h.complete();
        h.fail("PAYMENT_DECLINED", false);
        // The refund fails until its policy gives up.
        while h.state.parked.is_none() {
            h.fail("PAYMENT_UNAVAILABLE", true);
            h.fire_next_timer();
        }
        let (_, last_attempt) = h.state.last_failed.expect("the refund failed for good");
        assert_eq!(h.state.status(), WorkflowStatus::Failed);
        assert!(h.state.terminal.is_none(), "parked, not finished");
        assert!(timers(&h.def, &h.state).is_empty(), "a parked run waits for nobody");
        assert_eq!(h.names().last(), Some(&"RunParked"));
        let refund = StepRef { phase: StepPhase::Compensation, index: 1 };
        let late = Input::Completed { step: refund, attempt: last_attempt, output: JsonText::null() };
        assert_eq!(h.feed(late), Err(Rejection::Stale));

        h.feed(Input::Resume { reason: "provider is back".into() }).expect("resumes");
        let (step, attempt) = h.current().expect("the refund is scheduled again");
        assert_eq!((step, attempt), (refund, last_attempt + 1));
        // The policy counts from the resume: one failure is retried again.
        h.fail("PAYMENT_UNAVAILABLE", true);
        assert!(matches!(h.history.last().map(|e| &e.kind), Some(EventKind::StepRetryScheduled { .. })));
        h.fire_next_timer();
        while h.state.terminal.is_none() {
            h.complete();
        }
        assert_eq!(h.state.status(), WorkflowStatus::Compensated);
        assert_eq!(h.feed(Input::Resume { reason: "again".into() }), Err(Rejection::Finished));
    }

    #[test]
    fn only_a_parked_run_can_be_resumed() {
        let mut h = Harness::new(order());
        assert_eq!(h.feed(Input::Resume { reason: "x".into() }), Err(Rejection::NotParked));
    }

    #[test]
    fn cancel_after_the_pivot_is_refused() {
        let mut h = Harness::new(order());
        for _ in 0..3 {
            h.complete();
        }
        assert_eq!(h.feed(Input::Cancel { reason: "changed my mind".into() }), Err(Rejection::PastPivot));
    }

    #[test]
    fn a_run_that_needs_exactly_the_limit_completes() {
        let mut h = Harness::new(order());
        h.limit = 14;
        for _ in 0..4 {
            h.complete();
        }
        assert_eq!(h.state.status(), WorkflowStatus::Completed);
        assert_eq!(h.history.len() as u64, h.limit);
    }

    #[test]
    fn the_history_limit_fails_the_run_at_the_limit() {
        let mut h = Harness::new(order());
        h.limit = 12;
        h.complete();
        h.fail("PAYMENT_DECLINED", false);
        while h.state.terminal.is_none() {
            h.complete();
        }
        assert_eq!(h.state.status(), WorkflowStatus::Failed);
        assert_eq!(h.history.len() as u64, h.limit);
        assert!(h.state.terminal.as_ref().and_then(|t| t.reason.as_deref()).is_some_and(|r| r.contains("limit")));
    }

    #[test]
    fn endless_retries_compensate_at_three_quarters_of_the_limit() {
        let mut definition = order();
        definition.steps[1].retry.max_attempts = 100;
        definition.steps[1].timeouts.schedule_to_close_ms = None;
        let mut h = Harness::new(definition);
        h.limit = 80;
        h.complete();
        loop {
            h.fail("PAYMENT_UNAVAILABLE", true);
            if h.state.compensation_plan.is_some() {
                break;
            }
            assert!(h.fire_next_timer(), "the retry backoff fires");
        }
        let soft_limit = h.limit - h.limit / COMPENSATION_HEADROOM_DIVISOR;
        assert!(h.history.len() as u64 <= soft_limit + MAX_EVENTS_PER_DECISION, "{} events", h.history.len());
        while h.state.terminal.is_none() {
            h.complete();
        }
        assert_eq!(h.state.status(), WorkflowStatus::Compensated);
        assert!(h.history.len() as u64 <= h.limit);
    }

    #[derive(Debug, Clone)]
    enum Action {
        Complete,
        Fail { retryable: bool, permanent_type: bool },
        StaleReport { attempt_offset: u32 },
        FireTimer,
        Cancel,
        Terminate,
        Resume,
        Restart,
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            6 => Just(Action::Complete),
            3 => (any::<bool>(), any::<bool>()).prop_map(|(retryable, permanent_type)| Action::Fail { retryable, permanent_type }),
            2 => (1u32..3).prop_map(|attempt_offset| Action::StaleReport { attempt_offset }),
            3 => Just(Action::FireTimer),
            1 => Just(Action::Cancel),
            1 => Just(Action::Terminate),
            1 => Just(Action::Resume),
            2 => Just(Action::Restart),
        ]
    }

    fn check_history(h: &Harness) {
        let history = &h.history;
        assert!(matches!(history[0].kind, EventKind::WorkflowStarted { .. }));
        for (i, event) in history.iter().enumerate() {
            assert_eq!(event.seq, i as u64 + 1, "contiguous sequence numbers");
        }
        assert!(history.len() as u64 <= h.limit, "{} events over a limit of {}", history.len(), h.limit);
        let terminals = history.iter().filter(|e| e.kind.is_terminal()).count();
        assert!(terminals <= 1, "at most one terminal event");
        if terminals == 1 {
            assert!(history.last().is_some_and(|e| e.kind.is_terminal()), "the terminal event is last");
            assert!(timers(&h.def, &h.state).is_empty(), "no timer outlives the run");
        }
        let mut completed = HashSet::new();
        for event in history {
            if let EventKind::StepCompleted { step, attempt, .. } = event.kind {
                assert!(completed.insert((step, attempt)), "one completion per step attempt");
            }
        }
        let replayed = WorkflowState::replay(h.state.id.clone(), &h.def, history).expect("replays");
        assert_eq!(replayed, h.state, "replay reproduces the state");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_inputs_never_break_history_invariants(
            actions in proptest::collection::vec(action(), 1..80),
            small_limit in proptest::option::of(10u64..60),
        ) {
            let mut h = Harness::new(order());
            h.limit = small_limit.unwrap_or(MAX_HISTORY);
            for action in actions {
                match action {
                    Action::Complete => {
                        if let Some((step, attempt)) = h.take() {
                            let _ = h.feed(Input::Completed { step, attempt, output: JsonText::parse("{\"ok\":true}").expect("valid") });
                        }
                    }
                    Action::Fail { retryable, permanent_type } => {
                        if let Some((step, attempt)) = h.take() {
                            let error_type = if permanent_type { "PAYMENT_DECLINED" } else { "FLAKY" };
                            let error = ActivityError { error_type: error_type.into(), message: "x".into(), retryable };
                            let _ = h.feed(Input::Failed { step, attempt, error });
                        }
                    }
                    Action::StaleReport { attempt_offset } => {
                        if let Some((step, attempt)) = h.current() {
                            let before = h.history.len();
                            let stale = Input::Completed { step, attempt: attempt + attempt_offset, output: JsonText::null() };
                            prop_assert_eq!(h.feed(stale), Err(Rejection::Stale));
                            prop_assert_eq!(h.history.len(), before);
                        }
                    }
                    Action::FireTimer => {
                        h.fire_next_timer();
                    }
                    Action::Cancel => {
                        let _ = h.feed(Input::Cancel { reason: "test".into() });
                    }
                    Action::Terminate => {
                        let _ = h.feed(Input::Terminate { reason: "test".into() });
                    }
                    Action::Resume => {
                        let _ = h.feed(Input::Resume { reason: "test".into() });
                    }
                    Action::Restart => {
                        h.state = WorkflowState::replay(h.state.id.clone(), &h.def, &h.history).expect("replays");
                    }
                }
                check_history(&h);
            }
            // From any state, workers that answer (and an operator who resumes a parked run)
            // drive every run to an end.
            let mut guard = 0;
            while h.state.terminal.is_none() && guard < 500 {
                let current = h.state.current.as_ref().map(|c| (c.step, c.attempt, c.status.clone()));
                match current {
                    _ if h.state.parked.is_some() => {
                        h.feed(Input::Resume { reason: "operator".into() }).expect("a parked run resumes");
                    }
                    Some((_, _, AttemptStatus::Scheduled { .. })) => {
                        // Near a small history limit the start itself may end or redirect
                        // the run, so a refused completion is fine here.
                        if let Some((step, attempt)) = h.take() {
                            let _ = h.feed(Input::Completed { step, attempt, output: JsonText::null() });
                        }
                    }
                    Some((step, attempt, AttemptStatus::Started { .. })) => {
                        h.feed(Input::Completed { step, attempt, output: JsonText::null() }).expect("completes");
                    }
                    _ => {
                        h.fire_next_timer();
                    }
                }
                guard += 1;
            }
            prop_assert!(h.state.terminal.is_some(), "the run ends");
            check_history(&h);
        }
    }
}
