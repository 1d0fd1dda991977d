//! The wire shape of `GET /v1/stats`: the engine's counters and gauges, camelCase like the
//! rest of the API. The engine fills it from its core, its stream followers and its store;
//! `shopctl bench` and the tests read it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    /// Group commits published on the stream of committed events (only what is durable).
    pub commits: u64,
    /// Commands the core has taken.
    pub commands: u64,
    /// Events published on the stream, in all and by kind.
    pub events: u64,
    pub events_by_kind: BTreeMap<String, u64>,
    pub active_workflows: u64,
    /// Tasks waiting for a worker, over every queue.
    pub ready_tasks: u64,
    /// Reads waiting for a run to settle (`?wait=`), counted by their slots.
    pub waiting_reads: u64,
    /// Worker polls waiting for a task.
    pub waiting_polls: u64,
    pub stream: StreamCounters,
    /// Backlog per queue (a drained queue stays, at 0).
    pub queues: BTreeMap<String, u64>,
    /// Per queue: backlog, oldest task, waiting polls, recent pollers.
    pub queue_gauges: BTreeMap<String, QueueGauge>,
    /// Per activity with a circuit breaker.
    pub circuits: BTreeMap<String, CircuitStats>,
    /// Runs that could not be replayed at start-up, left on disk and not served.
    pub quarantined: Vec<QuarantinedRun>,
    /// `power-safe` or `process-crash`.
    pub durability: String,
    pub disk_bytes: u64,
}

/// The SSE streams' counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StreamCounters {
    /// Open SSE streams now.
    pub subscribers: u64,
    /// Times a stream read the store to catch up (a page at a time, or after a lag).
    pub catch_ups: u64,
    pub events_sent: u64,
}

/// One queue as of the core's last turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueGauge {
    /// Tasks waiting for a worker.
    pub ready: u64,
    /// When its oldest waiting task was scheduled (clock ms); absent when it is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_scheduled_ms: Option<u64>,
    /// Worker polls waiting on it now.
    pub waiting_polls: u64,
    /// Distinct workers that polled it lately.
    pub recent_pollers: u64,
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CircuitStateName {
    Closed,
    Open,
    HalfOpen,
}

/// One activity's circuit breaker as of the core's last turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CircuitStats {
    pub state: CircuitStateName,
    /// While open: when it turns half-open (clock ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until_ms: Option<u64>,
    /// Outcomes in the window now, and how many of them failed.
    pub calls: u64,
    pub failures: u64,
    /// State changes since start, by the state entered (`closed`, `open`, `half_open`).
    pub transitions: BTreeMap<String, u64>,
    /// Attempts handed out since start, by the state the breaker was in.
    pub handed_out: BTreeMap<String, u64>,
    /// The breaker's settings, in one line.
    pub config: String,
}

/// A run quarantined at start-up, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuarantinedRun {
    pub id: String,
    pub reason: String,
}
