//! The syncer: the thread that makes applied turns durable with one sync for all of them
//! (group commit) and only then sends their answers; and [`Turn`], what one turn of the core
//! writes and whom it answers.
//!
//! Architecture invariant: nothing is answered before the sync that covers its write. This
//! module must never decide anything or touch a run; it only syncs and answers, in order.

use super::Stats;
use crate::store::{Store, WriteBatch};
use shop_durable::commit::{group_commit, Job};
use shop_types::QueueName;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// An answer to send once what its turn applied is durable.
pub(super) type Reply = Box<dyn FnOnce() + Send>;

/// Turns waiting for the syncer at most; the core blocks beyond it (the disk is the limit).
pub(super) const SYNC_QUEUE_CAPACITY: usize = 64;

/// What one turn writes and whom it answers once that write is durable.
#[derive(Default)]
pub(super) struct Turn {
    pub(super) batch: WriteBatch,
    pub(super) replies: Vec<Reply>,
    pub(super) queues_with_new_tasks: HashSet<QueueName>,
}

/// A turn as the syncer sees it: whether it wrote, and whom to answer.
pub(super) struct AppliedTurn {
    pub(super) wrote: bool,
    pub(super) replies: Vec<Reply>,
}

/// The syncer: takes the answers of applied turns, makes everything applied so far durable
/// with one sync, then sends them. Turns arrive in order, so when no turn of a group wrote,
/// every earlier write is already synced and the group is answered without a sync (an empty
/// poll, a heartbeat, a read of a finished run). Ends when the core drops its sender.
pub(super) fn sync_loop(store: &Arc<Store>, stats: &Stats, turns: &Receiver<AppliedTurn>) {
    group_commit(
        turns,
        || store.sync(),
        |group, synced| {
            match synced {
                Ok(true) => {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, "sync failed; exiting so recovery starts from the durable state");
                    std::process::exit(70);
                }
            }
            for reply in group.into_iter().flat_map(|turn| turn.replies) {
                reply();
            }
        },
    );
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
