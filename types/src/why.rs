//! `why`: what a run is doing, what it waits for and what would move it on, as the `why`
//! object of `GET /v1/workflows/{id}` carries it and `shopctl why` renders it.
//!
//! Owns the wire shape only. Every time here is the engine's clock (ms); every `left_ms`
//! and `waited_ms` counts from `as_of_ms`, so a reader never needs its own clock. It must
//! never carry a payload (inputs, outputs, signal data): `why` explains, the history records.

use crate::api::WorkflowStatus;
use serde::{Deserialize, Serialize};

/// Why a run is where it is. For a run in flight: its steps in flight, what it waits for and
/// its timeouts; for a parked run: the failure that parked it and how to resume; for a
/// finished run: how it ended and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyView {
    /// The engine's clock when this was computed.
    pub as_of_ms: u64,
    /// The gist, one sentence.
    pub summary: String,
    /// The activity attempts in flight, one per parallel branch or `for_each` instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<WhyStep>,
    /// Signals, sleeps, children and a holding parent the run waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<WhyWait>,
    /// The run's execution timeout, while it can still fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_timeout: Option<WhyTimeout>,
    /// Why the run compensates, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensating: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<WhyParked>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<WhyEnded>,
    /// What an operator can do, one plain sentence each (e.g. start a worker, resume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
}

/// Where an activity attempt in flight stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WhyStepState {
    /// In its task queue, not yet picked up by a worker.
    WaitingForWorker,
    /// Handed to a worker, under a lease.
    Running,
    /// Failed (or timed out); the next attempt is scheduled at `retry_due_ms`.
    BackingOff,
}

/// One activity attempt in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyStep {
    pub step: String,
    /// Its branch, or `<step>[<item>]` for a `for_each` instance; absent on the main line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// True for a compensation (or after-compensation) step.
    #[serde(default)]
    pub compensation: bool,
    pub activity: String,
    pub queue: String,
    pub state: WhyStepState,
    /// The attempt as the history numbers it (backing off: the one due next).
    pub attempt: u32,
    /// The attempt as the retry policy counts it (from the run's last resume): "n of N".
    pub policy_attempt: u32,
    pub max_attempts: u32,
    /// Waiting for a worker: how long this attempt has waited to be picked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    /// Waiting for a worker: workers that poll its queue now or did within the engine's
    /// `POLLER_RECENT_MS`. 0 means no worker serves the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pollers: Option<usize>,
    /// Running: the worker that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Backing off: when the next attempt is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_due_ms: Option<u64>,
    /// The last failure of this step (since its last resume), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<WhyError>,
    /// The timeouts that can still fire for this attempt, soonest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeouts: Vec<WhyTimeout>,
    /// Waiting for a worker: its activity's circuit breaker, when it holds the task back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<WhyCircuit>,
}

/// An activity's circuit breaker that holds a task back (open, or half-open with its probes
/// out): the engine hands none of the activity's tasks out until it lets them through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyCircuit {
    /// `open` or `half_open`.
    pub state: String,
    /// Open: when it turns half-open and lets probes through (clock ms), and how long that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_ms: Option<u64>,
}

/// A step's failure as the history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyError {
    pub step: String,
    pub attempt: u32,
    pub at_ms: u64,
    /// The activity's error type, or `TIMEOUT_<KIND>` (e.g. `TIMEOUT_START_TO_CLOSE`).
    pub code: String,
    pub message: String,
}

/// Which timeout a [`WhyTimeout`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WhyTimeoutKind {
    ScheduleToStart,
    StartToClose,
    Heartbeat,
    ScheduleToClose,
    /// The run's own `execution_timeout`.
    Execution,
}

impl WhyTimeoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WhyTimeoutKind::ScheduleToStart => "schedule-to-start",
            WhyTimeoutKind::StartToClose => "start-to-close",
            WhyTimeoutKind::Heartbeat => "heartbeat",
            WhyTimeoutKind::ScheduleToClose => "schedule-to-close",
            WhyTimeoutKind::Execution => "execution",
        }
    }
}

/// A timeout that can still fire: when, and how long from `as_of_ms` (0 once overdue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyTimeout {
    pub kind: WhyTimeoutKind,
    pub due_ms: u64,
    pub left_ms: u64,
}

/// Something other than an activity the run waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WhyWait {
    /// One of `signals`, until `deadline_ms`.
    Signal { step: String, signals: Vec<String>, deadline_ms: u64, left_ms: u64 },
    /// A sleep, until `until_ms`.
    Sleep { step: String, until_ms: u64, left_ms: u64 },
    /// A child run; `status` is absent when the engine cannot read it.
    Child {
        step: String,
        child: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<WorkflowStatus>,
    },
    /// This run is a child whose work is done, held until its parent ends.
    HeldByParent {
        parent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_status: Option<WorkflowStatus>,
    },
}

/// A parked run: its compensation failed for good; it waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyParked {
    pub reason: String,
    /// The failure that parked it, when the history has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<WhyError>,
    /// The command that resumes it once the cause is fixed.
    pub resume: String,
}

/// How a finished run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyEnded {
    pub status: WorkflowStatus,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last step failure before it ended, if any (what made it compensate or fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<WhyError>,
    /// Who ended it, for a cancel or terminate an operator asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}
