//! Event streams for clients: the feeds behind `GET /v1/events` (every committed event, by
//! position) and `GET /v1/workflows/{id}/events` (one run's history, then live), and the hub
//! that caps their subscribers and counts what they do for `/v1/stats`.
//!
//! A feed is a follower of the stream of committed events that can start in the past: it
//! subscribes FIRST, then reads the store (up to the durable position, see
//! `core::stream::DurablePosition`), then takes live events, skipping what it already gave.
//! Positions count per shard, so the global feed keeps one per shard (sled has one shard;
//! a PostgreSQL node follows the shards it holds or held) and each event carries the cursor
//! of everything given up to it.
//! A feed that lags (`RecvError::Lagged`) or sees a gap catches up by reading the store from
//! its own position again; it never slows the core or the syncer, which only overwrite the
//! oldest message of the bounded broadcast.
//!
//! This module must never write, never decide anything about runs, and never hold a lock
//! across an await.

use crate::core::stream::Subscription;
use crate::core::Handle;
use crate::store::{self, ShardId, Store};
use shop_types::api::WorkflowStatus;
use shop_types::history::Event;
use shop_types::{WorkflowId, WorkflowType};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// Default of `--max-stream-subscribers`: event streams (`/v1/events` and
/// `/v1/workflows/{id}/events` together) open at once; one more is refused with 503
/// `OVERLOADED`. Each holds a connection and a broadcast subscription, and a lagging one
/// reads the store, so they are capped apart from the connection cap.
pub const MAX_STREAM_SUBSCRIBERS: usize = 1_024;

/// Events a feed reads from the store at once while it catches up: bounds the memory of one
/// catch-up step, and how long it holds a blocking read.
pub const CATCH_UP_PAGE: usize = 512;

/// Subscribers, their cap, and what they did.
pub struct StreamHub {
    subscribers: AtomicUsize,
    max: usize,
    catch_ups: AtomicU64,
    events_sent: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// One stream's place under the cap; dropping it (the stream ended, however) gives it back.
pub struct StreamSlot {
    hub: Arc<StreamHub>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Relaxed);
    }
}

impl StreamHub {
    pub fn new(max_subscribers: usize) -> StreamHub {
        StreamHub {
            subscribers: AtomicUsize::new(0),
            max: max_subscribers,
            catch_ups: AtomicU64::new(0),
            events_sent: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
        }
    }

    /// A place for one more stream, unless `max` are open.
    pub fn acquire(self: &Arc<Self>) -> Option<StreamSlot> {
        self.subscribers
            .fetch_update(Relaxed, Relaxed, |open| (open < self.max).then_some(open + 1))
            .ok()
            .map(|_| StreamSlot { hub: self.clone() })
    }

    pub fn max_subscribers(&self) -> usize {
        self.max
    }

    /// Streams open now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Relaxed)
    }

    /// Times a feed fell behind the broadcast (or saw a gap) and re-read the store.
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups.load(Relaxed)
    }

    /// Events sent to subscribers, over every stream.
    pub fn events_sent(&self) -> u64 {
        self.events_sent.load(Relaxed)
    }

    pub fn count_sent(&self, events: u64) {
        self.events_sent.fetch_add(events, Relaxed);
    }

    /// Ends every stream (at their next step) so the server can drain.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown begins.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// A committed event as `/v1/events` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Its position in its run's shard.
    pub position: u64,
    /// Where a feed resumes to give every event after this one: the last position given in
    /// each shard (shards with none left out).
    pub cursor: BTreeMap<ShardId, u64>,
    pub run: WorkflowId,
    pub workflow_type: WorkflowType,
    pub seq: u64,
    pub kind: &'static str,
    pub at_ms: u64,
    /// The run's status once this event is applied.
    pub status: WorkflowStatus,
}

/// What a feed could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("the stream of committed events has closed")]
    Closed,
    /// An event of a run whose summary is not in the store: the store is damaged.
    #[error("run {0} has events but no summary")]
    NoSummary(WorkflowId),
}

/// Every committed event after a position: the store first, then live.
pub struct GlobalFeed {
    store: Arc<Store>,
    core: Handle,
    hub: Arc<StreamHub>,
    subscription: Subscription,
    /// The store's shard count.
    shards: u32,
    /// The last position put into `ready`, per shard (absent: 0).
    last: BTreeMap<ShardId, u64>,
    ready: VecDeque<StreamEvent>,
    catching_up: bool,
    /// Runs' types, read once per run from their summaries while catching up.
    types: HashMap<WorkflowId, WorkflowType>,
}

impl GlobalFeed {
    /// A feed of the events after `after` (a position per shard; a shard left out: from its
    /// beginning), or of those committed from now on (`None`).
    pub fn new(
        store: Arc<Store>,
        core: Handle,
        hub: Arc<StreamHub>,
        after: Option<BTreeMap<ShardId, u64>>,
    ) -> GlobalFeed {
        // Subscribed before the durable positions are read: nothing can fall between them.
        let subscription = core.subscribe();
        let shards = store.shard_count();
        let last = after.unwrap_or_else(|| {
            (0..shards)
                .map(|shard| (ShardId(shard), core.durable_position_of(ShardId(shard))))
                .filter(|(_, position)| *position > 0)
                .collect()
        });
        GlobalFeed {
            store,
            core,
            hub,
            subscription,
            shards,
            last,
            ready: VecDeque::new(),
            catching_up: true,
            types: HashMap::new(),
        }
    }

    /// The next event, waiting for one to be committed if need be.
    pub async fn next(&mut self) -> Result<StreamEvent, Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if self.catching_up {
                // One page of the first shard behind its durable position; round after round
                // until none is behind.
                let behind = (0..self.shards).map(ShardId).find_map(|shard| {
                    let (last, durable) = (self.position(shard), self.core.durable_position_of(shard));
                    (last < durable).then_some((shard, last, durable))
                });
                let Some((shard, last, durable)) = behind else {
                    self.catching_up = false;
                    continue;
                };
                let store = self.store.clone();
                let limit = usize::try_from(durable - last).unwrap_or(usize::MAX).min(CATCH_UP_PAGE);
                let page = tokio::task::spawn_blocking(move || store.events_after(shard, last, limit))
                    .await
                    .map_err(|_| Error::Closed)??;
                if page.is_empty() {
                    // Numbered but never written (a refused batch): nothing more to read there.
                    self.last.insert(shard, durable);
                    continue;
                }
                for stored in page {
                    let workflow_type = self.type_of(&stored.run)?;
                    self.last.insert(shard, stored.position);
                    self.ready.push_back(StreamEvent {
                        position: stored.position,
                        cursor: self.last.clone(),
                        run: stored.run,
                        workflow_type,
                        seq: stored.event.seq,
                        kind: stored.event.kind.name(),
                        at_ms: stored.event.at_ms,
                        status: stored.status,
                    });
                }
                continue;
            }
            match self.subscription.recv().await {
                Ok(commit) => {
                    for event in &commit.events {
                        let last = self.position(event.shard);
                        if event.position <= last {
                            continue;
                        }
                        if event.position != last + 1 {
                            // A gap: some events went by unseen. Read them from the store.
                            self.start_catch_up();
                            break;
                        }
                        self.last.insert(event.shard, event.position);
                        self.ready.push_back(StreamEvent {
                            position: event.position,
                            cursor: self.last.clone(),
                            run: event.run.clone(),
                            workflow_type: event.workflow_type.clone(),
                            seq: event.seq,
                            kind: event.kind,
                            at_ms: event.at_ms,
                            status: event.status,
                        });
                    }
                }
                Err(RecvError::Lagged(_)) => self.start_catch_up(),
                Err(RecvError::Closed) => return Err(Error::Closed),
            }
        }
    }

    /// The last position given in `shard`.
    fn position(&self, shard: ShardId) -> u64 {
        self.last.get(&shard).copied().unwrap_or(0)
    }

    fn start_catch_up(&mut self) {
        self.catching_up = true;
        self.hub.catch_ups.fetch_add(1, Relaxed);
    }

    fn type_of(&mut self, run: &WorkflowId) -> Result<WorkflowType, Error> {
        if let Some(known) = self.types.get(run) {
            return Ok(known.clone());
        }
        // Bounded: forgotten whenever it holds a page's worth, which is all one page needs.
        if self.types.len() >= CATCH_UP_PAGE {
            self.types.clear();
        }
        let workflow_type = match self.store.run(run)? {
            Some(summary) => summary.workflow_type,
            None => return Err(Error::NoSummary(run.clone())),
        };
        self.types.insert(run.clone(), workflow_type.clone());
        Ok(workflow_type)
    }
}

/// What a run's feed gives: its next event, or that it has ended (after its last event, or
/// at once when the feed started after it).
#[derive(Debug, Clone, PartialEq)]
pub enum RunItem {
    Event(Event),
    End(WorkflowStatus),
}

/// One run's events after a sequence number: its stored history, then each event as it is
/// committed, until the run ends.
pub struct RunFeed {
    store: Arc<Store>,
    hub: Arc<StreamHub>,
    subscription: Subscription,
    run: WorkflowId,
    /// The last sequence number put into `ready`.
    last: u64,
    ready: VecDeque<Event>,
    /// Whether the store must be read (at first, after a lag, and when a commit names the run).
    stale: bool,
    /// The run's final status, once a read found its terminal event: given after `ready`.
    end: Option<WorkflowStatus>,
}

impl RunFeed {
    pub fn new(store: Arc<Store>, core: &Handle, hub: Arc<StreamHub>, run: WorkflowId, after: u64) -> RunFeed {
        // Subscribed before the first read: nothing the run commits can fall between them.
        let subscription = core.subscribe();
        RunFeed { store, hub, subscription, run, last: after, ready: VecDeque::new(), stale: true, end: None }
    }

    /// The run's next event, waiting for one to be committed if need be; then its end.
    pub async fn next(&mut self) -> Result<RunItem, Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(RunItem::Event(event));
            }
            if let Some(status) = self.end {
                return Ok(RunItem::End(status));
            }
            if self.stale {
                self.stale = false;
                let store = self.store.clone();
                let run = self.run.clone();
                let history =
                    tokio::task::spawn_blocking(move || store.history(&run)).await.map_err(|_| Error::Closed)??;
                self.end = history
                    .last()
                    .filter(|e| e.kind.is_terminal())
                    .map(|e| e.kind.status_after(WorkflowStatus::Running));
                let after = self.last;
                self.ready.extend(history.into_iter().filter(|e| e.seq > after));
                if let Some(last) = self.ready.back() {
                    self.last = last.seq;
                }
                continue;
            }
            match self.subscription.recv().await {
                Ok(commit) => {
                    self.stale = commit.events.iter().any(|e| e.run == self.run && e.seq > self.last);
                }
                Err(RecvError::Lagged(_)) => {
                    self.hub.catch_ups.fetch_add(1, Relaxed);
                    self.stale = true;
                }
                Err(RecvError::Closed) => return Err(Error::Closed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_refuses_one_past_its_cap_and_takes_back_a_dropped_slot() {
        let hub = Arc::new(StreamHub::new(2));
        let first = hub.acquire().expect("1st");
        let _second = hub.acquire().expect("2nd");
        assert!(hub.acquire().is_none(), "one past the cap");
        drop(first);
        assert_eq!(hub.subscribers(), 1);
        assert!(hub.acquire().is_some(), "a slot came back");
        assert_eq!(MAX_STREAM_SUBSCRIBERS, 1_024);
    }
}
