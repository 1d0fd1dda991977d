//! What the core counts and shows of itself: [`Stats`] (the counters and gauges `/v1/stats`,
//! `/metrics`, `/healthz`, `/readyz`, `why` and the console read, shared with the core's
//! thread and its syncer by `Arc`), and the views of a queue built from them.
//!
//! The core and the syncer write these; everyone else only reads them. This module must
//! never decide anything or hold a lock across a turn.

use super::CircuitView;
use shop_types::WorkflowId;
use std::sync::atomic::AtomicU64;

/// Counters the core keeps for `/v1/stats`, `/metrics` and benchmarks.
#[derive(Default)]
pub struct Stats {
    pub commands: AtomicU64,
    pub active: AtomicU64,
    /// Worker polls waiting for a task.
    pub waiting_polls: AtomicU64,
    /// Tasks waiting for a worker, per queue: the backlog an operator watches. Exact: an
    /// entry leaves when its attempt starts, times out, or its run moves on or ends.
    pub queue_depths: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    /// Per queue that ever had a task: workers long-polling it now, and when its oldest
    /// waiting task was scheduled (clock ms; `None` when it is empty). A drained queue stays.
    pub queues: std::sync::Mutex<std::collections::BTreeMap<String, QueueGauges>>,
    /// Every activity's circuit breaker as of the last turn, by activity name.
    pub circuits: std::sync::Mutex<std::collections::BTreeMap<String, CircuitView>>,
    /// The core's histograms (commit batch sizes, sync latency) for `/metrics`.
    pub metrics: crate::metrics::CoreMetrics,
    /// Runs whose history could not be replayed at start-up, with why: left on disk as they
    /// are and not served, while every other run is.
    pub quarantined: std::sync::Mutex<std::collections::BTreeMap<WorkflowId, String>>,
    /// When the core's loop last came round (clock ms): `/healthz` calls the core dead when
    /// this is stale. The loop comes round at least every `IDLE_WAKE`.
    pub last_tick_ms: AtomicU64,
    /// The disk guard refuses writes: `/readyz` answers 503.
    pub disk_full: std::sync::atomic::AtomicBool,
    /// Write transactions refused because a shard's epoch moved on (another node took it):
    /// `shop_fence_rejections_total`, `GET /v1/cluster`.
    pub fence_rejections: AtomicU64,
    /// Set once the core is shutting down: a caller whose answer was dropped hears
    /// `ShuttingDown` rather than `ShardMoved`.
    pub stopping: std::sync::atomic::AtomicBool,
}

/// One queue as `/v1/stats`' `queue_gauges` and the console show it: its backlog with its
/// gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    /// Tasks waiting for a worker.
    pub ready: usize,
    /// When its oldest waiting task was scheduled (clock ms); none when it is empty.
    pub oldest_scheduled_ms: Option<u64>,
    /// Worker polls waiting on it now.
    pub waiting_polls: usize,
    /// Distinct workers that polled it within [`super::POLLER_RECENT_MS`].
    pub recent_pollers: usize,
}

impl Stats {
    /// Every queue known (a drained one stays, with zeros): backlog and gauges together.
    pub fn queue_views(&self) -> std::collections::BTreeMap<String, QueueView> {
        let mut views: std::collections::BTreeMap<String, QueueView> = std::collections::BTreeMap::new();
        if let Ok(depths) = self.queue_depths.lock() {
            for (queue, ready) in depths.iter() {
                views.entry(queue.clone()).or_default().ready = *ready;
            }
        }
        if let Ok(gauges) = self.queues.lock() {
            for (queue, gauge) in gauges.iter() {
                let view = views.entry(queue.clone()).or_default();
                view.oldest_scheduled_ms = gauge.oldest_scheduled_ms;
                view.waiting_polls = gauge.pollers;
                view.recent_pollers = gauge.recent_pollers;
            }
        }
        views
    }
}

/// What `/metrics`, `why`, `/v1/stats` and the console's queues page show of one queue, as
/// of the core's last turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGauges {
    /// Worker polls waiting on the queue now.
    pub pollers: usize,
    /// Distinct workers that polled it within [`super::POLLER_RECENT_MS`] (those waiting
    /// now included): a worker busy with a task does not poll, yet still serves the queue.
    pub recent_pollers: usize,
    pub oldest_scheduled_ms: Option<u64>,
}
