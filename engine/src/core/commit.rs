//! The end of a turn: numbering the batch's events per shard, fencing it at the epochs the
//! core holds, applying it, publishing the core's gauges, and handing the turn to the syncer.
//!
//! A batch a fencing store refuses at once (a shard it no longer holds) is not answered and
//! flags the core for a rebuild (see `shards`); any other refusal ends the process. This
//! module must never decide anything about a run.

use super::*;

impl Core {
    pub(super) fn commit(&mut self, mut turn: Turn, now: u64) {
        let mut wrote = !turn.batch.is_empty();
        if let Some(event) = turn.events.iter().find(|event| !self.held.contains_key(&event.shard)) {
            // Never numbered nor written: a shard not held has no position here. A bug if it
            // happens; the turn is refused like a fenced one rather than written wrongly.
            tracing::error!(shard = event.shard.0, run = %event.run, "a turn wrote a shard this core does not hold; refusing it");
            self.suspect.flag(None, self.generation);
            turn.replies.clear();
            turn.events.clear();
            turn.batch = store::WriteBatch::default();
            wrote = false;
        }
        if wrote && turn.batch.joined_appends() {
            // A run's later transition joined its first one's append: its events move up to
            // stand with that append's, so the turn's events keep the order the batch numbers
            // them in (a run's own events keep theirs).
            let order: HashMap<&WorkflowId, usize> =
                turn.batch.appends().iter().enumerate().rev().map(|(index, append)| (&append.run, index)).collect();
            turn.events.sort_by_key(|event| order.get(&event.run).copied().unwrap_or(usize::MAX));
        }
        if wrote {
            let shard_count = self.shard_count;
            let shard_of = |run: &WorkflowId| shard_in(run, shard_count);
            let mut last = self.last_position.clone();
            let numbered = match turn.batch.number_shards(shard_of, &mut last) {
                Ok(numbered) => numbered,
                Err(error) => {
                    tracing::error!(%error, "numbering a batch failed; exiting so recovery starts from the durable state");
                    std::process::exit(70);
                }
            };
            // `record` adds a transition's events to the batch and to the turn in the same
            // order, so each shard's events take that shard's positions one by one.
            debug_assert_eq!(numbered, turn.events.len() as u64);
        }
        if wrote {
            let held = &self.held;
            let numbered = turn.events.len() as u64;
            for event in turn.events.iter_mut() {
                let position = self.last_position.entry(event.shard).or_insert(0);
                *position += 1;
                event.position = *position;
            }
            // The batch is decided under the epochs held now: a store that fences refuses it
            // once any of them moved on, even if it has learned a newer one since.
            let written: Vec<store::ShardId> = turn.batch.index().map(|(shard, ..)| shard).collect();
            for shard in written {
                if let Some(epoch) = held.get(&shard) {
                    turn.batch.fence(shard, *epoch);
                }
            }
            self.stats.metrics.commit_batch_events.observe(numbered as f64);
            if let Err(error) = self.store.apply(turn.batch) {
                match syncer::survivable(self.store.as_ref(), &error) {
                    Some(fenced) => {
                        // Refused before it was sent: nothing of it is answered, and the
                        // core's memory is rebuilt at its next turn (see `shards`).
                        if fenced.is_some() {
                            self.stats.fence_rejections.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::warn!(%error, "a batch was refused; its callers are told to retry");
                        self.suspect.flag(fenced, self.generation);
                        turn.replies.clear();
                        turn.events.clear();
                        wrote = false;
                    }
                    None => {
                        // The in-memory state is ahead of what the store holds; serving it
                        // would break "nothing acknowledged is lost". Exit without answering:
                        // restart recovers from what is on disk.
                        tracing::error!(%error, "applying a batch failed; exiting so recovery starts from the durable state");
                        std::process::exit(70);
                    }
                }
            }
        }
        self.stats.active.store(self.runs.len() as u64, Ordering::Relaxed);
        self.stats.waiting_polls.store(self.waiting_polls.count() as u64, Ordering::Relaxed);
        if let Ok(mut depths) = self.stats.queue_depths.lock() {
            for (queue, tasks) in self.ready.depths() {
                depths.insert(queue.to_string(), tasks);
            }
        }
        self.publish_queue_gauges(now);
        if let Ok(mut circuits) = self.stats.circuits.lock() {
            *circuits = self.circuits.views(now);
        }
        // A turn that wrote goes to the syncer even with nobody to answer, so its write is
        // synced at once; a turn that only answers waits its turn there, as its answers may
        // rest on state an earlier turn applied and has not yet made durable.
        if !wrote && turn.replies.is_empty() {
            return;
        }
        let Some(syncer) = &self.syncer else {
            // No syncer thread (a test driving turns by hand): sync and answer right here,
            // in the same order the thread would.
            if let Some(publisher) = &mut self.publisher {
                syncer::finish(
                    self.store.as_ref(),
                    publisher,
                    AppliedTurn { wrote, generation: self.generation, replies: turn.replies, events: turn.events },
                    &self.stats,
                    &self.suspect,
                );
            }
            return;
        };
        if syncer
            .send(AppliedTurn { wrote, generation: self.generation, replies: turn.replies, events: turn.events })
            .is_err()
        {
            tracing::error!("the syncer has stopped; exiting so recovery starts from the durable state");
            std::process::exit(70);
        }
    }
}

/// The shard of `run` among `shard_count` (no hashing with one shard: sled's path).
pub(super) fn shard_in(run: &WorkflowId, shard_count: u32) -> store::ShardId {
    if shard_count <= 1 {
        store::ShardId::SOLE
    } else {
        crate::cluster::shard_of(run, shard_count)
    }
}
