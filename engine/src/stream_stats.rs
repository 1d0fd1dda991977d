//! The stats follower: counts what the stream of committed events knows (commits, events,
//! events by kind) for `/v1/stats`, from one subscription, on its own task.
//!
//! It must never block the core or hold a lock across an await. Totals are exact even after a
//! lag, as every message carries its commit number and the running event total; the counts by
//! kind skip the messages a lag dropped (`lagged_commits` says how many).

use crate::core::stream::{Commit, Subscription};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use tokio::sync::broadcast::error::RecvError;

/// Counts of committed work, as the stream tells them.
#[derive(Debug, Default)]
pub struct StreamStats {
    commits: AtomicU64,
    events: AtomicU64,
    lagged_commits: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
}

impl StreamStats {
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
        for event in &commit.events {
            *by_kind.entry(event.kind).or_default() += 1;
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
}
