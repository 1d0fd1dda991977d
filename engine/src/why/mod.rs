//! `why`: what a run is doing, what it waits for and what would move it on, computed from
//! state the engine already has: the run's state (its history folded by
//! [`WorkflowState::replay`]), its live timers (`decider::timers`, the very timers the core
//! arms), the core's queue gauges and the attempts' last heartbeats (held by the core only).
//!
//! Pure: it reads no clock (`Live::now_ms` is passed in), does no I/O and never looks at any
//! run but this one and the runs it names (through `Live::status_of`). It must never decide
//! anything: it only describes what the decider and the core will do.

use crate::core::CircuitState;
use crate::decider::{self, TimerKind};
use crate::definition::Definition;
use crate::state::{AttemptStatus, WorkflowState};
use shop_types::api::WorkflowStatus;
use shop_types::history::{Event, EventKind, TimeoutKind};
use shop_types::why::{
    WhyCircuit, WhyEnded, WhyError, WhyParked, WhyStep, WhyStepState, WhyTimeout, WhyTimeoutKind, WhyView, WhyWait,
};
use shop_types::{StepPhase, StepRef, WorkflowId};
use std::collections::BTreeMap;

mod render;
#[cfg(test)]
mod tests;

/// What only the live engine knows, gathered by the caller before [`explain`].
pub struct Live<'a> {
    /// The engine's clock now: every `left_ms` and `waited_ms` counts from here.
    pub now_ms: u64,
    /// The core's queue gauges (`Stats::queues`), by queue name.
    pub queues: &'a BTreeMap<String, crate::core::QueueGauges>,
    /// The core's circuit breakers (`Stats::circuits`), by activity name.
    pub circuits: &'a BTreeMap<String, crate::core::CircuitView>,
    /// The last heartbeat of each started attempt (`Handle::heartbeats`): (step, attempt, ms).
    pub heartbeats: &'a [(StepRef, u32, u64)],
    /// The status of another run (a child, a parent), if it can be read.
    pub status_of: &'a dyn Fn(&WorkflowId) -> Option<WorkflowStatus>,
}

/// Why run `state` (replayed from `events` on `definition`) is where it is, as of `live`.
pub fn explain(definition: &Definition, mut state: WorkflowState, events: &[Event], live: &Live) -> WhyView {
    // Replay cannot know heartbeats (they are not events): take the core's.
    for attempt in state.attempts.values_mut() {
        if let AttemptStatus::Started { last_heartbeat_ms, .. } = &mut attempt.status {
            let live_beat = live.heartbeats.iter().find(|(s, a, _)| (*s, *a) == (attempt.step, attempt.attempt));
            if let Some((_, _, at)) = live_beat {
                *last_heartbeat_ms = (*last_heartbeat_ms).max(*at);
            }
        }
    }
    let now = live.now_ms;
    let mut view = WhyView {
        as_of_ms: now,
        summary: String::new(),
        steps: Vec::new(),
        waits: Vec::new(),
        execution_timeout: None,
        compensating: None,
        parked: None,
        ended: None,
        advice: Vec::new(),
    };
    if let Some(terminal) = &state.terminal {
        view.ended = Some(WhyEnded {
            status: terminal.status,
            at_ms: terminal.at_ms,
            reason: terminal.reason.clone(),
            failure: (terminal.status != WorkflowStatus::Completed)
                .then(|| last_failure(definition, events, None, true))
                .flatten(),
            by: ended_by(events),
        });
        view.summary = render::summary(&state.id, &view);
        return view;
    }
    if let Some(reason) = &state.parked {
        view.parked = Some(WhyParked {
            reason: reason.clone(),
            failure: last_failure(definition, events, None, true),
            resume: format!("shopctl workflow resume {}", state.id),
        });
    }
    let timers = decider::timers(definition, &state);
    view.execution_timeout = timers
        .iter()
        .find(|t| t.kind == TimerKind::ExecutionTimeout)
        .map(|t| timeout(WhyTimeoutKind::Execution, t.due_ms, now));
    view.compensating = state.compensation_reason.clone().or_else(|| state.stopping.clone());
    view.steps = state.attempts.values().filter_map(|a| step_view(definition, a, &timers, events, live)).collect();
    let name = |step: StepRef| definition.step(step).map(|s| s.name.to_string()).unwrap_or_default();
    view.waits.extend(state.waits.values().map(|w| WhyWait::Signal {
        step: name(w.step),
        signals: w.signals.clone(),
        deadline_ms: w.deadline_ms,
        left_ms: w.deadline_ms.saturating_sub(now),
    }));
    view.waits.extend(state.sleeps.values().map(|s| WhyWait::Sleep {
        step: name(s.step),
        until_ms: s.until_ms,
        left_ms: s.until_ms.saturating_sub(now),
    }));
    view.waits.extend(state.children.values().map(|c| WhyWait::Child {
        step: name(c.step),
        child: c.child.to_string(),
        status: (live.status_of)(&c.child),
    }));
    if let Some(link) = state.parent.as_ref().filter(|_| state.held()) {
        view.waits.push(WhyWait::HeldByParent {
            parent: link.parent.to_string(),
            parent_status: (live.status_of)(&link.parent),
        });
    }
    view.summary = render::summary(&state.id, &view);
    view.advice = render::advice(&state.id, &view);
    view
}

/// One attempt in flight, with its timeouts from the run's live timers.
fn step_view(
    definition: &Definition,
    attempt: &crate::state::Attempt,
    timers: &[decider::Timer],
    events: &[Event],
    live: &Live,
) -> Option<WhyStep> {
    let def = definition.step(attempt.step)?;
    let now = live.now_ms;
    let queue = def.queue().map(ToString::to_string).unwrap_or_default();
    let mut view = WhyStep {
        step: def.name.to_string(),
        lane: definition.lane(attempt.step),
        compensation: attempt.step.phase != StepPhase::Forward,
        activity: def.activity().map(ToString::to_string).unwrap_or_default(),
        queue: queue.clone(),
        state: WhyStepState::WaitingForWorker,
        attempt: attempt.attempt,
        policy_attempt: attempt.attempt.saturating_sub(attempt.attempt_base),
        max_attempts: def.retry.max_attempts,
        waited_ms: None,
        pollers: None,
        worker: None,
        retry_due_ms: None,
        last_error: last_failure(definition, events, Some(attempt.step), false),
        timeouts: Vec::new(),
        circuit: None,
    };
    match attempt.status {
        AttemptStatus::Scheduled { at_ms } => {
            view.waited_ms = Some(now.saturating_sub(at_ms));
            let gauges = live.queues.get(&queue).copied().unwrap_or_default();
            view.pollers = Some(gauges.pollers.max(gauges.recent_pollers));
            view.circuit = live.circuits.get(&view.activity).and_then(|circuit| {
                // Half-open lets its probes through and holds the rest.
                (circuit.state != CircuitState::Closed).then(|| WhyCircuit {
                    state: circuit.state.as_str().to_owned(),
                    open_until_ms: circuit.open_until_ms,
                    left_ms: circuit.open_until_ms.map(|until| until.saturating_sub(now)),
                })
            });
        }
        AttemptStatus::Started { .. } => {
            view.state = WhyStepState::Running;
            view.worker = started_by(events, attempt.step, attempt.attempt);
        }
        AttemptStatus::BackingOff { until_ms } => {
            view.state = WhyStepState::BackingOff;
            view.retry_due_ms = Some(until_ms);
        }
    }
    for timer in timers {
        let kind = match timer.kind {
            TimerKind::ScheduleToClose { step } if step == attempt.step => WhyTimeoutKind::ScheduleToClose,
            TimerKind::ScheduleToStart { step, .. } if step == attempt.step => WhyTimeoutKind::ScheduleToStart,
            TimerKind::StartToClose { step, .. } if step == attempt.step => WhyTimeoutKind::StartToClose,
            TimerKind::Heartbeat { step, .. } if step == attempt.step => WhyTimeoutKind::Heartbeat,
            _ => continue,
        };
        view.timeouts.push(timeout(kind, timer.due_ms, now));
    }
    view.timeouts.sort_by_key(|t| t.due_ms);
    Some(view)
}

fn timeout(kind: WhyTimeoutKind, due_ms: u64, now_ms: u64) -> WhyTimeout {
    WhyTimeout { kind, due_ms, left_ms: due_ms.saturating_sub(now_ms) }
}

/// The newest failure (or timeout) in the history, of `step` when given; with `final_only`,
/// only one the step did not retry.
fn last_failure(
    definition: &Definition,
    events: &[Event],
    step: Option<StepRef>,
    final_only: bool,
) -> Option<WhyError> {
    events.iter().rev().find_map(|event| {
        let (at, attempt, code, message, will_retry) = match &event.kind {
            EventKind::StepFailed { step: at, attempt, error, will_retry } => {
                (*at, *attempt, error.error_type.clone(), error.message.clone(), *will_retry)
            }
            EventKind::StepTimedOut { step: at, attempt, timeout, will_retry } => {
                let (code, message) = timeout_text(*timeout);
                (*at, *attempt, code.to_owned(), message.to_owned(), *will_retry)
            }
            _ => return None,
        };
        if step.is_some_and(|s| s != at) || (final_only && will_retry) {
            return None;
        }
        let step = definition.step(at).map(|s| s.name.to_string()).unwrap_or_default();
        Some(WhyError { step, attempt, at_ms: event.at_ms, code, message })
    })
}

fn timeout_text(kind: TimeoutKind) -> (&'static str, &'static str) {
    match kind {
        TimeoutKind::ScheduleToStart => ("TIMEOUT_SCHEDULE_TO_START", "no worker took the task in time"),
        TimeoutKind::StartToClose => ("TIMEOUT_START_TO_CLOSE", "the attempt ran past its start-to-close timeout"),
        TimeoutKind::Heartbeat => ("TIMEOUT_HEARTBEAT", "the worker stopped heartbeating"),
        TimeoutKind::ScheduleToClose => ("TIMEOUT_SCHEDULE_TO_CLOSE", "all attempts together took too long"),
    }
}

/// The worker that started `attempt` of `step`.
fn started_by(events: &[Event], step: StepRef, attempt: u32) -> Option<String> {
    events.iter().rev().find_map(|event| match &event.kind {
        EventKind::StepStarted { step: s, attempt: a, worker } if (*s, *a) == (step, attempt) => {
            Some(worker.to_string())
        }
        _ => None,
    })
}

/// Who asked for the cancel or terminate that ended the run, when the history says.
fn ended_by(events: &[Event]) -> Option<String> {
    events.iter().rev().find_map(|event| match &event.kind {
        EventKind::WorkflowTerminatedBy { by, .. } | EventKind::CancelRequestedBy { by, .. } => Some(by.clone()),
        _ => None,
    })
}
