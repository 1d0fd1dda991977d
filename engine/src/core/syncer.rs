//! The syncer: the thread that makes applied turns durable with one sync for all of them
//! (group commit) and only then publishes their events and sends their answers; and [`Turn`], what one turn of the core
//! writes and whom it answers.
//!
//! Architecture invariant: nothing is answered before the sync that covers its write. This
//! module must never decide anything or touch a run; it only syncs and answers, in order.

use super::stream::{CommittedEvent, Publisher};
use crate::state::ReceivedSignal;
use crate::store::{RunSummary, Store, WriteBatch};
use shop_durable::commit::{group_commit, Job};
use shop_types::{QueueName, WorkflowId};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Receiver;

/// An answer to send once what its turn applied is durable.
pub(super) type Reply = Box<dyn FnOnce() + Send>;

/// The engine's exit status when a write is refused because another engine took its shards
/// over (PostgreSQL): EX_TEMPFAIL, distinct from a crash's 70, so a supervisor can tell.
pub const EXIT_FENCED: i32 = 75;

/// Turns waiting for the syncer at most; the core blocks beyond it (the disk is the limit).
pub(super) const SYNC_QUEUE_CAPACITY: usize = 64;

/// What one turn writes and whom it answers once that write is durable.
#[derive(Default)]
pub(super) struct Turn {
    pub(super) batch: WriteBatch,
    pub(super) replies: Vec<Reply>,
    pub(super) queues_with_new_tasks: HashSet<QueueName>,
    /// The turn's events, for the stream once they are durable.
    pub(super) events: Vec<CommittedEvent>,
    /// The signals of runs that finished in this turn: not in flight any more, and not in
    /// the store until the turn is applied, yet a retried signal must find its key.
    pub(super) finished_signals: HashMap<WorkflowId, Vec<ReceivedSignal>>,
    /// The summaries of runs that finished in this turn, for the same reason: a child held
    /// by one of them learns its parent's outcome from here.
    pub(super) finished: HashMap<WorkflowId, RunSummary>,
}

/// A turn as the syncer sees it: whether it wrote, and whom to answer.
pub(super) struct AppliedTurn {
    pub(super) wrote: bool,
    pub(super) replies: Vec<Reply>,
    pub(super) events: Vec<CommittedEvent>,
}

/// The syncer: takes the answers of applied turns, makes everything applied so far durable
/// with one sync, then sends them. Turns arrive in order, so when no turn of a group wrote,
/// every earlier write is already synced and the group is answered without a sync (an empty
/// poll, a heartbeat, a read of a finished run). Ends when the core drops its sender.
/// Each sync's latency goes to `sync_seconds`.
pub(super) fn sync_loop(
    store: &Store,
    publisher: &mut Publisher,
    turns: &Receiver<AppliedTurn>,
    sync_seconds: &prometheus_client::metrics::histogram::Histogram,
) {
    let sync = || {
        let started = std::time::Instant::now();
        let synced = store.sync();
        sync_seconds.observe(started.elapsed().as_secs_f64());
        synced
    };
    group_commit(turns, sync, |group, synced| answer(publisher, group, synced));
}

/// Makes one group of turns durable (one sync, if any of them wrote), publishes its events,
/// then answers it: what the syncer thread does per group, for a core run without one.
pub(super) fn finish(store: &Store, publisher: &mut Publisher, group: AppliedTurn) {
    let synced = if group.wrote { store.sync().map(|()| true) } else { Ok(false) };
    answer(publisher, vec![group], synced);
}

/// After the sync that covers `group` (or none, when nothing in it wrote): its events are
/// published (one message per sync), then its callers are answered. A failed sync ends the
/// process: what was applied may not be on disk, and restart recovers from what is.
fn answer(publisher: &mut Publisher, mut group: Vec<AppliedTurn>, synced: Result<bool, crate::store::Error>) {
    match synced {
        Ok(true) => publisher.publish(group.iter_mut().flat_map(|turn| std::mem::take(&mut turn.events)).collect()),
        Ok(false) => {}
        Err(error @ crate::store::Error::Fenced { .. }) => {
            // Another engine took a shard over: this one must not serve another write. Its
            // answers are dropped (not sent), and the new owner recovers from the store.
            tracing::error!(%error, "fenced: another engine owns this engine's shards now; exiting ({EXIT_FENCED})");
            std::process::exit(EXIT_FENCED);
        }
        Err(error) => {
            tracing::error!(%error, "sync failed; exiting so recovery starts from the durable state");
            std::process::exit(70);
        }
    }
    for reply in group.into_iter().flat_map(|turn| turn.replies) {
        reply();
    }
}

impl Job for AppliedTurn {
    fn needs_sync(&self) -> bool {
        self.wrote
    }
}

impl Turn {
    pub(super) fn after_commit(&mut self, reply: impl FnOnce() + Send + 'static) {
        self.replies.push(Box::new(reply));
    }
}
