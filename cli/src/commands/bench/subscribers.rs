//! `shopctl bench --subscribers N`: N SSE subscribers of `/v1/events` follow the engine while
//! the benchmark runs, each counting what it receives, so the report says how many events per
//! second each kept up with and whether it had fallen behind when the last order finished.
//!
//! Subscribers open their streams before the benchmark's first order (from "now"), so each
//! must receive exactly the events the benchmark commits. It measures and reports; it never
//! asserts a timing. A subscriber that never catches up within [`DRAIN_DEADLINE`] after the
//! run is reported, not waited for.

use anyhow::{Context as _, Result};
use shop_client::events::EventsQuery;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long subscribers may take, after the last order, to receive every event before the
/// report calls them behind for good.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Subscribers at most: each holds a connection and one of the engine's stream places.
pub(super) const MAX_BENCH_SUBSCRIBERS: usize = 256;

/// Subscribers following the engine, each with its count of events received.
pub(super) struct Subscribers {
    received: Vec<Arc<AtomicU64>>,
    tasks: JoinSet<Result<()>>,
}

impl Subscribers {
    /// Opens `count` streams of `/v1/events` from now, and waits until the engine counts
    /// every one of them, so none misses the benchmark's first events.
    pub(super) async fn start(engine: &shop_client::Client, count: usize) -> Result<Subscribers> {
        let mut received = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            let counter = Arc::new(AtomicU64::new(0));
            received.push(counter.clone());
            let mut stream = engine.events(&EventsQuery::default())?;
            tasks.spawn(async move {
                loop {
                    stream.next().await.context("a subscriber's stream failed")?;
                    counter.fetch_add(1, Relaxed);
                }
            });
        }
        let deadline = Instant::now() + DRAIN_DEADLINE;
        loop {
            let stats: serde_json::Value = engine.stats().await?.body;
            if stats["stream"]["subscribers"].as_u64().unwrap_or(0) >= count as u64 {
                return Ok(Subscribers { received, tasks });
            }
            if Instant::now() > deadline {
                anyhow::bail!("the engine did not take {count} subscribers");
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// The report once the benchmark's `expected` events are committed, `elapsed` after its
    /// start: what each subscriber had then, and how long the slowest took to get the rest.
    pub(super) async fn finish(
        mut self,
        engine: &shop_client::Client,
        expected: u64,
        elapsed: Duration,
    ) -> Result<serde_json::Value> {
        let at_end: Vec<u64> = self.received.iter().map(|r| r.load(Relaxed)).collect();
        let drain_started = Instant::now();
        while self.received.iter().any(|r| r.load(Relaxed) < expected) && drain_started.elapsed() < DRAIN_DEADLINE {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let drained = drain_started.elapsed();
        let finals: Vec<u64> = self.received.iter().map(|r| r.load(Relaxed)).collect();
        self.tasks.abort_all();
        let stats: serde_json::Value = engine.stats().await?.body;
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Ok(serde_json::json!({
            "subscribers": at_end.len(),
            "subscriber_events_per_sec": at_end.iter().map(|&n| super::round(n as f64 / seconds, 0)).collect::<Vec<_>>(),
            "subscribers_behind_at_end": at_end.iter().filter(|&&n| n < expected).count(),
            "subscribers_missing_events": finals.iter().filter(|&&n| n != expected).count(),
            "subscriber_drain_s": super::round(drained.as_secs_f64(), 3),
            "subscriber_catch_ups": stats["stream"]["catchUps"],
        }))
    }
}
