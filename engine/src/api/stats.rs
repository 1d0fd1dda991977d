//! `GET /v1/stats` (admin): the engine's counters and gauges in their wire shape
//! ([`StatsView`]), read from the core's stats, the stream followers and the store.
//!
//! It only reads: it never sends the core a command, and it never reads a history.

use super::{ApiError, AppState};
use crate::core::{CircuitState, CircuitView};
use axum::extract::State;
use axum::Json;
use shop_types::stats::{CircuitStateName, CircuitStats, QuarantinedRun, QueueGauge, StatsView, StreamCounters};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

/// Counts are `usize` in memory and `u64` on the wire.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<StatsView>, ApiError> {
    let stats = &state.core.stats;
    let gauges = stats.queue_views();
    let queue_gauges: BTreeMap<String, QueueGauge> = gauges
        .iter()
        .map(|(queue, g)| {
            let gauge = QueueGauge {
                ready: count(g.ready),
                oldest_scheduled_ms: g.oldest_scheduled_ms,
                waiting_polls: count(g.waiting_polls),
                recent_pollers: count(g.recent_pollers),
            };
            (queue.clone(), gauge)
        })
        .collect();
    let circuits = stats.circuits.lock().map(|c| c.clone()).unwrap_or_default();
    let quarantined = stats
        .quarantined
        .lock()
        .map(|runs| {
            runs.iter().map(|(id, reason)| QuarantinedRun { id: id.to_string(), reason: reason.clone() }).collect()
        })
        .unwrap_or_default();
    Ok(Json(StatsView {
        // Counted from the stream of committed events: only what is durable.
        commits: state.stream_stats.commits(),
        commands: stats.commands.load(Relaxed),
        events: state.stream_stats.events(),
        events_by_kind: state.stream_stats.by_kind().into_iter().map(|(kind, n)| (kind.to_owned(), n)).collect(),
        active_workflows: stats.active.load(Relaxed),
        ready_tasks: queue_gauges.values().map(|g| g.ready).sum(),
        // Counted at the door by the slots' guards, so it is exact at every moment.
        waiting_reads: count(state.watch.slots().in_use()),
        waiting_polls: stats.waiting_polls.load(Relaxed),
        stream: StreamCounters {
            subscribers: count(state.streams.subscribers()),
            catch_ups: state.streams.catch_ups(),
            events_sent: state.streams.events_sent(),
        },
        queues: queue_gauges.iter().map(|(queue, g)| (queue.clone(), g.ready)).collect(),
        queue_gauges,
        circuits: circuits.into_iter().map(|(activity, view)| (activity, circuit(view))).collect(),
        quarantined,
        durability: state.durability.as_str().to_owned(),
        disk_bytes: state.store.size_on_disk()?,
    }))
}

fn state_name(state: CircuitState) -> CircuitStateName {
    match state {
        CircuitState::Closed => CircuitStateName::Closed,
        CircuitState::Open => CircuitStateName::Open,
        CircuitState::HalfOpen => CircuitStateName::HalfOpen,
    }
}

fn circuit(view: CircuitView) -> CircuitStats {
    let by_state =
        |counts: BTreeMap<CircuitState, u64>| counts.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect();
    CircuitStats {
        state: state_name(view.state),
        open_until_ms: view.open_until_ms,
        calls: count(view.calls),
        failures: count(view.failures),
        transitions: by_state(view.transitions),
        handed_out: by_state(view.handed_out),
        config: view.config,
    }
}
