//! A run's live timers, derived from its state: the run's execution timeout, each sleep's
//! wake time and each wait's deadline, and per attempt in flight its step's budget, its wait for a worker, its lease and heartbeat, or its retry
//! backoff. Timers are never stored on their own, so a terminal run can never leave one
//! behind. Also the retry delay, whose jitter is a hash, never a random draw.

use crate::definition::Definition;
use crate::state::{AttemptStatus, WorkflowState};
use shop_types::StepRef;

/// A durable timer of a run. Steps are named as stored events name them, so a timer survives
/// the engine's restart unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    ExecutionTimeout,
    ScheduleToClose {
        step: StepRef,
    },
    ScheduleToStart {
        step: StepRef,
        attempt: u32,
    },
    StartToClose {
        step: StepRef,
        attempt: u32,
    },
    Heartbeat {
        step: StepRef,
        attempt: u32,
    },
    RetryDue {
        step: StepRef,
        attempt: u32,
    },
    /// A sleep step's wake time.
    SleepDue {
        step: StepRef,
    },
    /// A wait step's deadline.
    WaitDeadline {
        step: StepRef,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub due_ms: u64,
    pub kind: TimerKind,
}

/// The run's live timers. The engine arms exactly these, and a fired timer that is not
/// among them any more is stale.
pub fn timers(definition: &Definition, state: &WorkflowState) -> Vec<Timer> {
    let mut out = Vec::new();
    if state.terminal.is_some() {
        return out;
    }
    if let Some(limit) = definition.execution_timeout_ms {
        // A stopped parallel step is already on its way to compensation; a held child has
        // finished its work and waits for its parent's verdict, however long that takes.
        if state.compensation_plan.is_none()
            && state.stopping.is_none()
            && !state.pivot_passed
            && state.held_by_parent.is_none()
        {
            out.push(Timer { due_ms: state.created_at_ms.saturating_add(limit), kind: TimerKind::ExecutionTimeout });
        }
    }
    for sleep in state.sleeps.values() {
        out.push(Timer { due_ms: sleep.until_ms, kind: TimerKind::SleepDue { step: sleep.step } });
    }
    for wait in state.waits.values() {
        out.push(Timer { due_ms: wait.deadline_ms, kind: TimerKind::WaitDeadline { step: wait.step } });
    }
    for (&node, current) in &state.attempts {
        let Some(step_def) = definition.node_def(node) else {
            continue;
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
    }
    out
}

/// The retry delay before `attempt + 1`: exponential backoff capped at `max_interval`, then
/// stretched or shrunk by up to `jitter`, by a fraction derived from the run, step and attempt.
/// The exponent counts attempts since the step's last resume.
pub fn retry_delay_ms(definition: &Definition, state: &WorkflowState, step: StepRef, attempt: u32) -> u64 {
    let Some(policy) = definition.step(step).map(|s| &s.retry) else {
        return 0;
    };
    let resumed_at = definition.node_id(step).and_then(|node| state.attempt(node)).map_or(0, |a| a.attempt_base);
    let exponent = i32::try_from(attempt.saturating_sub(resumed_at).saturating_sub(1)).unwrap_or(i32::MAX);
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
