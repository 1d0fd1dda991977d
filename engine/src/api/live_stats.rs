//! `GET /v1/overview/events`: the engine's activity, one SSE message a second (`event: tick`,
//! data a [`LiveStatsTick`]): runs started and finished (totals and per second), end-to-end
//! latency percentiles of recent finished runs and the backlog per queue. Behind the client
//! role, like the other streams; takes one of the engine's stream places.
//!
//! It reads what the stats follower (`stream_stats`) and the core's queue gauges already
//! aggregate from the stream of committed events; it must never read the store or keep
//! state beyond the previous tick of its own connection.

use super::streams::{sse, take_slot};
use super::{ApiError, AppState};
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::Response;
use shop_types::api::LiveStatsTick;
use std::time::Duration;

/// Milliseconds between two ticks of the overview stream.
pub const LIVE_STATS_INTERVAL_MS: u64 = 1_000;

/// The tick as of now; `previous` is the one before it on the same connection.
fn tick(state: &AppState, previous: Option<&LiveStatsTick>) -> LiveStatsTick {
    let stats = &state.stream_stats;
    let (started, finished) = (stats.started(), stats.finished());
    let latency = stats.latency();
    let backlog = state.core.stats.queue_views().into_iter().map(|(queue, view)| (queue, view.ready)).collect();
    LiveStatsTick {
        at_ms: state.clock.now_ms(),
        started,
        finished,
        started_per_sec: previous.map_or(0, |p| started.saturating_sub(p.started)),
        finished_per_sec: previous.map_or(0, |p| finished.saturating_sub(p.finished)),
        latency_p50_ms: latency.p50,
        latency_p90_ms: latency.p90,
        latency_p99_ms: latency.p99,
        latency_samples: latency.samples,
        backlog,
    }
}

/// `GET /v1/overview/events`.
pub(crate) async fn events(State(state): State<AppState>) -> Result<Response, ApiError> {
    let slot = take_slot(&state)?;
    let mut interval = tokio::time::interval(Duration::from_millis(LIVE_STATS_INTERVAL_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = state.streams.stopping();
    let start = (state, interval, stopping, slot, None::<LiveStatsTick>);
    let stream =
        futures_util::stream::unfold(start, |(state, mut interval, mut stopping, slot, previous)| async move {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return None,
                _ = interval.tick() => {}
            }
            let now = tick(&state, previous.as_ref());
            state.streams.count_sent(1);
            let message = SseEvent::default().event("tick").data(serde_json::to_string(&now).unwrap_or_default());
            Some((Ok(message), (state, interval, stopping, slot, Some(now))))
        });
    Ok(sse(stream))
}
