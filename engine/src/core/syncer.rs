//! The syncer: the thread that makes applied turns durable with one sync for all of them
//! (group commit) and only then publishes their events and sends their answers; and [`Turn`], what one turn of the core
//! writes and whom it answers.
//!
//! A group whose sync is refused on a store that fences (PostgreSQL: a shard's epoch moved
//! on, or an append's expectation failed because an earlier refused batch never landed) is
//! not answered: its replies are dropped (callers get [`super::CoreError::ShardMoved`]), its
//! events are not published, and the core is told ([`Suspect`]) to drop the fenced shards
//! and rebuild the others from the store at its next turn. Any other failed sync ends the
//! process (exit 70), as on sled.
//!
//! Architecture invariant: nothing is answered before the sync that covers its write. This
//! module must never decide anything or touch a run; it only syncs and answers, in order.

use super::stream::{CommittedEvent, Publisher};
use super::Stats;
use crate::state::ReceivedSignal;
use crate::store::{self, RunSummary, ShardId, Store, WriteBatch};
use shop_durable::commit::{group_commit, Job};
use shop_types::{QueueName, WorkflowId};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Mutex;

/// An answer to send once what its turn applied is durable.
pub(super) type Reply = Box<dyn FnOnce() + Send>;

/// A refused write the core must act on: the shards fenced, and that its memory of every
/// other shard is suspect (a refused transaction may have covered them too).
///
/// Turns are numbered by the core's **generation** (how many times it rebuilt its memory).
/// When a write is refused, every turn of that generation or an earlier one that the syncer
/// has not answered yet was decided on the suspect memory (the core goes on deciding while
/// the syncer syncs): none of them is answered or published, even one whose own write
/// committed (its callers retry and read the truth), until the core has rebuilt.
#[derive(Default)]
pub(super) struct Suspect {
    flagged: AtomicBool,
    fenced: Mutex<BTreeSet<ShardId>>,
    /// Turns of a generation below this one are not answered.
    poisoned_below: AtomicU64,
}

impl Suspect {
    /// A write of a turn of `generation` was refused (fencing `fenced`, if it says which).
    pub(super) fn flag(&self, fenced: Option<ShardId>, generation: u64) {
        if let Some(shard) = fenced {
            self.fenced.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(shard);
        }
        self.poisoned_below.fetch_max(generation + 1, Ordering::SeqCst);
        self.flagged.store(true, Ordering::SeqCst);
    }

    /// The fenced shards and the generation the core rebuilds into, once per flag; `None`
    /// when nothing was refused since the last take.
    pub(super) fn take(&self) -> Option<(BTreeSet<ShardId>, u64)> {
        if !self.flagged.swap(false, Ordering::SeqCst) {
            return None;
        }
        let fenced = std::mem::take(&mut *self.fenced.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        Some((fenced, self.poisoned_below.load(Ordering::SeqCst)))
    }

    /// Whether a turn of `generation` may be answered.
    fn answerable(&self, generation: u64) -> bool {
        generation >= self.poisoned_below.load(Ordering::SeqCst)
    }
}

/// Whether a failed write on `store` is one the core survives by rebuilding (see the
/// module's doc), and the shard it fenced, if any.
pub(super) fn survivable(store: &Store, error: &store::Error) -> Option<Option<ShardId>> {
    match error {
        store::Error::Fenced { shard, .. } if store.fences_epochs() => Some(Some(*shard)),
        store::Error::Conflict { .. } if store.fences_epochs() => Some(None),
        _ => None,
    }
}

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
    /// The runs that finished in this turn, for the same reason: a child held by one of them
    /// learns its parent's outcome from here, a repeated start its input, a command its end.
    pub(super) finished: HashMap<WorkflowId, FinishedRun>,
}

/// A run that finished in this turn: its summary, and its input (which a repeated start of
/// the same id is compared with).
pub(super) struct FinishedRun {
    pub(super) summary: RunSummary,
    pub(super) input: shop_types::JsonText,
}

/// A turn as the syncer sees it: whether it wrote, and whom to answer.
pub(super) struct AppliedTurn {
    pub(super) wrote: bool,
    /// The core's generation when it decided the turn (see [`Suspect`]).
    pub(super) generation: u64,
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
    stats: &Stats,
    suspect: &Suspect,
) {
    let sync = |_: &mut [AppliedTurn]| {
        let started = std::time::Instant::now();
        let synced = store.sync();
        stats.metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
        synced
    };
    group_commit(turns, sync, |group, synced| answer(store, publisher, group, synced, stats, suspect));
}

/// Makes one group of turns durable (one sync, if any of them wrote), publishes its events,
/// then answers it: what the syncer thread does per group, for a core run without one.
pub(super) fn finish(store: &Store, publisher: &mut Publisher, group: AppliedTurn, stats: &Stats, suspect: &Suspect) {
    let synced = if group.wrote { store.sync().map(|()| true) } else { Ok(false) };
    answer(store, publisher, vec![group], synced, stats, suspect);
}

/// After the sync that covers `group` (or none, when nothing in it wrote): its events are
/// published (one message per sync), then its callers are answered. A refused sync on a
/// fencing store drops the group (see the module's doc); any other failed sync ends the
/// process: what was applied may not be on disk, and restart recovers from what is.
fn answer(
    store: &Store,
    publisher: &mut Publisher,
    mut group: Vec<AppliedTurn>,
    synced: Result<bool, store::Error>,
    stats: &Stats,
    suspect: &Suspect,
) {
    if let Err(error) = &synced {
        if let Some(fenced) = survivable(store, error) {
            if fenced.is_some() {
                stats.fence_rejections.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(%error, turns = group.len(), "a write was refused; its callers are told to retry and the core rebuilds from the store");
            let generation = group.iter().map(|turn| turn.generation).max().unwrap_or_default();
            suspect.flag(fenced, generation);
            // Dropping the replies drops their senders: each caller hears `ShardMoved`.
            drop(group);
            return;
        }
    }
    // Turns decided on a memory a refused write made suspect are dropped, synced or not.
    group.retain(|turn| suspect.answerable(turn.generation));
    match synced {
        Ok(true) => publisher.publish(group.iter_mut().flat_map(|turn| std::mem::take(&mut turn.events)).collect()),
        Ok(false) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_decided_before_a_rebuild_are_not_answered_and_later_ones_are() {
        let suspect = Suspect::default();
        assert!(suspect.take().is_none(), "nothing refused yet");
        assert!(suspect.answerable(0));
        // A write of a generation-2 turn is refused, fencing shard 5.
        suspect.flag(Some(ShardId(5)), 2);
        for generation in 0..=2 {
            assert!(!suspect.answerable(generation), "generation {generation} was decided on the suspect memory");
        }
        let (fenced, rebuilt_into) = suspect.take().expect("the core is told once");
        assert_eq!(fenced, BTreeSet::from([ShardId(5)]));
        assert_eq!(rebuilt_into, 3, "the core rebuilds into the first generation answered again");
        assert!(suspect.answerable(3));
        assert!(suspect.take().is_none(), "told once per flag");
        // A refusal of an older turn arriving late never lowers the bar.
        suspect.flag(None, 1);
        assert!(suspect.answerable(3));
        assert_eq!(suspect.take().map(|(_, generation)| generation), Some(3));
    }
}
