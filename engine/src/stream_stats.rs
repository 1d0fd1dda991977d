//! The stats follower: counts what the stream of committed events knows (commits, events,
//! events by kind, runs started and finished, the end-to-end latency of recent finished
//! runs) for `/v1/stats` and the console's live overview, from one subscription, on its own
//! task.
//!
//! It is the engine's one tracker of when runs in flight started: besides the overview's
//! latencies, it observes each settled run's duration in `/metrics`
//! (`shop_run_duration_seconds`, through [`StreamStats::with_metrics`]), so the metrics
//! follower remembers no start times of its own.
//!
//! It must never block the core or hold a lock across an await. Totals are exact even after a
//! lag, as every message carries its commit number and the running event total; the counts by
//! kind, of runs started and finished and the latencies skip the messages a lag dropped
//! (`lagged_commits` says how many).

use crate::core::stream::{Commit, Subscription};
use crate::metrics::Metrics;
use shop_types::WorkflowId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;

/// Finished runs whose end-to-end latency the percentiles are taken over (the most recent).
pub const RECENT_LATENCIES: usize = 1_000;
/// Most runs in flight whose start time the follower remembers to measure their latency; a
/// run started while it is full is not measured (nothing else is lost).
pub const MAX_TRACKED_STARTS: usize = 50_000;
/// A remembered start older than this (behind the newest) is forgotten when the table is
/// full: a run parked for an hour says little about latency now.
pub const MAX_TRACKED_START_AGE_MS: u64 = 3_600_000;

/// The kind name that starts a run.
const STARTED_KIND: &str = "WorkflowStarted";

/// Counts of committed work, as the stream tells them.
#[derive(Default)]
pub struct StreamStats {
    commits: AtomicU64,
    events: AtomicU64,
    lagged_commits: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<Latency>,
    /// Where settled runs' durations go (none in unit tests).
    metrics: Option<Arc<Metrics>>,
}

/// Start times of runs in flight and the latencies of the last finished ones.
#[derive(Debug, Default)]
struct Latency {
    starts: HashMap<WorkflowId, u64>,
    recent: VecDeque<u64>,
}

impl Latency {
    fn started(&mut self, run: &WorkflowId, at_ms: u64) {
        if self.starts.len() >= MAX_TRACKED_STARTS {
            let horizon = at_ms.saturating_sub(MAX_TRACKED_START_AGE_MS);
            self.starts.retain(|_, started| *started >= horizon);
            if self.starts.len() >= MAX_TRACKED_STARTS {
                return;
            }
        }
        self.starts.insert(run.clone(), at_ms);
    }

    /// A run settled at `at_ms`: when it started, if that is known. A run that ended for
    /// good is forgotten and its latency kept; a parked one is remembered (it may resume).
    fn settled(&mut self, run: &WorkflowId, at_ms: u64, terminal: bool) -> Option<u64> {
        if !terminal {
            return self.starts.get(run).copied();
        }
        let started = self.starts.remove(run)?;
        if self.recent.len() >= RECENT_LATENCIES {
            self.recent.pop_front();
        }
        self.recent.push_back(at_ms.saturating_sub(started));
        Some(started)
    }
}

/// End-to-end latency percentiles (ms) of the last [`RECENT_LATENCIES`] finished runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    /// How many runs they are taken over (0: no run finished yet; the values are then 0).
    pub samples: usize,
}

/// The nearest-rank percentile `p` (0..=100) of sorted `values`.
fn nearest_rank(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

impl StreamStats {
    /// Counts for `/v1/stats` and the overview, and settled runs' durations for `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> StreamStats {
        StreamStats { metrics: Some(metrics), ..StreamStats::default() }
    }

    /// Follows `subscription` until the stream closes.
    pub async fn follow(&self, mut subscription: Subscription) {
        loop {
            match subscription.recv().await {
                Ok(commit) => self.count(&commit),
                Err(RecvError::Lagged(missed)) => {
                    self.lagged_commits.fetch_add(missed, Relaxed);
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn count(&self, commit: &Commit) {
        self.commits.fetch_max(commit.number, Relaxed);
        self.events.fetch_max(commit.events_total, Relaxed);
        let mut by_kind = self.by_kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in &commit.events {
            *by_kind.entry(event.kind).or_default() += 1;
            if event.kind == STARTED_KIND {
                self.started.fetch_add(1, Relaxed);
                latency.started(&event.run, event.at_ms);
            } else if event.settles || event.terminal {
                if event.terminal {
                    self.finished.fetch_add(1, Relaxed);
                }
                let started = latency.settled(&event.run, event.at_ms, event.terminal);
                if let (Some(started), Some(metrics)) = (started, &self.metrics) {
                    let seconds = event.at_ms.saturating_sub(started) as f64 / 1_000.0;
                    metrics.observe_run_duration(event.workflow_type.as_str(), event.status, seconds);
                }
            }
        }
    }

    /// Runs started since the engine started (as far as this follower saw).
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }

    /// Runs that ended for good since the engine started (as far as this follower saw).
    pub fn finished(&self) -> u64 {
        self.finished.load(Relaxed)
    }

    /// Latency percentiles of the last [`RECENT_LATENCIES`] finished runs it saw start.
    pub fn latency(&self) -> Percentiles {
        let mut sorted: Vec<u64> = {
            let latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            latency.recent.iter().copied().collect()
        };
        sorted.sort_unstable();
        Percentiles {
            p50: nearest_rank(&sorted, 50),
            p90: nearest_rank(&sorted, 90),
            p99: nearest_rank(&sorted, 99),
            samples: sorted.len(),
        }
    }

    /// Syncs that made turns durable.
    pub fn commits(&self) -> u64 {
        self.commits.load(Relaxed)
    }

    /// Events committed.
    pub fn events(&self) -> u64 {
        self.events.load(Relaxed)
    }

    /// Commits a lag made this follower miss (their events are not in [`Self::by_kind`]).
    pub fn lagged_commits(&self) -> u64 {
        self.lagged_commits.load(Relaxed)
    }

    /// Events committed, by kind name.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.by_kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stream::CommittedEvent;
    use std::sync::Arc;
    use tokio::sync::broadcast;

    fn commit(number: u64, events_total: u64, kinds: &[&'static str]) -> Arc<Commit> {
        let events =
            kinds.iter().enumerate().map(|(i, kind)| CommittedEvent::sample("r", i as u64 + 1, kind, false)).collect();
        Arc::new(Commit { number, events_total, events })
    }

    #[tokio::test]
    async fn totals_stay_exact_after_a_lag_and_kinds_are_counted() {
        let (tx, rx) = broadcast::channel(2);
        tx.send(commit(1, 2, &["WorkflowStarted", "StepScheduled"])).expect("sent");
        // Three more into a channel of two: the follower lags by one.
        tx.send(commit(2, 3, &["StepStarted"])).expect("sent");
        tx.send(commit(3, 4, &["StepCompleted"])).expect("sent");
        tx.send(commit(4, 6, &["StepScheduled", "WorkflowCompleted"])).expect("sent");
        drop(tx);
        let stats = StreamStats::default();
        stats.follow(rx).await;
        assert_eq!(stats.commits(), 4);
        assert_eq!(stats.events(), 6, "totals ride on every message");
        assert_eq!(stats.lagged_commits(), 2);
        let by_kind = stats.by_kind();
        assert_eq!(by_kind.get("StepCompleted"), Some(&1));
        assert_eq!(by_kind.get("WorkflowStarted"), None, "dropped by the lag");
    }

    fn at(run: &str, kind: &'static str, terminal: bool, at_ms: u64) -> CommittedEvent {
        CommittedEvent { at_ms, ..CommittedEvent::sample(run, 1, kind, terminal) }
    }

    #[test]
    fn runs_started_and_finished_give_latency_percentiles() {
        let stats = StreamStats::default();
        assert_eq!(stats.latency(), Percentiles::default(), "no run finished yet");
        let mut events = Vec::new();
        for i in 0..100u64 {
            let run: &'static str = Box::leak(format!("r{i}").into_boxed_str());
            events.push(at(run, "WorkflowStarted", false, 1_000));
            events.push(at(run, "WorkflowCompleted", true, 1_000 + (i + 1) * 10));
        }
        // A run that ends without this follower having seen it start is counted, not measured.
        events.push(at("unseen", "WorkflowFailed", true, 5_000));
        stats.count(&Commit { number: 1, events_total: events.len() as u64, events });
        assert_eq!((stats.started(), stats.finished()), (100, 101));
        let p = stats.latency();
        assert_eq!((p.p50, p.p90, p.p99, p.samples), (500, 900, 990, 100));
    }

    #[test]
    fn a_parked_run_keeps_its_start_until_it_ends_for_good() {
        let mut latency = Latency::default();
        let run = WorkflowId::parse("p").expect("valid");
        latency.started(&run, 100);
        assert_eq!(latency.settled(&run, 300, false), Some(100), "parked: timed and remembered");
        assert!(latency.recent.is_empty(), "a park is not an end");
        assert_eq!(latency.settled(&run, 900, true), Some(100), "resumed, then ended");
        assert_eq!(latency.recent.back(), Some(&800));
        assert_eq!(latency.settled(&run, 950, true), None, "forgotten once ended");
    }

    #[test]
    fn only_the_most_recent_latencies_are_kept() {
        let mut latency = Latency::default();
        for i in 0..(RECENT_LATENCIES as u64 + 1) {
            let run = WorkflowId::parse(format!("r{i}")).expect("valid");
            latency.started(&run, 0);
            latency.settled(&run, i, true);
        }
        assert_eq!(latency.recent.len(), RECENT_LATENCIES);
        assert_eq!(latency.recent.front(), Some(&1), "the oldest went");
    }

    #[test]
    fn a_full_start_table_forgets_old_starts_then_stops_tracking() {
        let mut latency = Latency::default();
        for i in 0..MAX_TRACKED_STARTS {
            latency.started(&WorkflowId::parse(format!("r{i}")).expect("valid"), 0);
        }
        let late = WorkflowId::parse("late").expect("valid");
        latency.started(&late, MAX_TRACKED_START_AGE_MS);
        assert!(!latency.starts.contains_key(&late), "nothing was old enough to forget: not tracked");
        let later = WorkflowId::parse("later").expect("valid");
        latency.started(&later, MAX_TRACKED_START_AGE_MS + 1);
        assert!(latency.starts.contains_key(&later), "the starts older than the horizon were forgotten");
        assert_eq!(latency.starts.len(), 1);
    }
}
