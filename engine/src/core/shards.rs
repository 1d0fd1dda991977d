//! The changing set of shards the core owns (design.md section 10): taking a shard (its
//! in-flight runs replayed from the store, their timers and ready tasks rebuilt, its position
//! read), dropping one (its runs forgotten, so nothing of it is dispatched or written), the
//! lease guard (a shard whose lease may have lapsed by this node's own clock is dropped before
//! the turn does anything), and rebuilding after a refused write.
//!
//! Why a rebuild of every shard after a refused write, not just of the fenced one: one
//! transaction holds a whole turn, so a refused one also took back the writes it held for the
//! other shards, which the core's memory already counts as done. Reading them back from the
//! store (conditional appends kept it consistent) is the one state known to be true.
//!
//! On sled the core holds its one shard from start to end: nothing here runs but the owner
//! check. This module must never write: what it rebuilds, it reads.

use super::*;
use crate::cluster::lease::ShardHolder;
use crate::store::{Epoch, ShardId};

impl Core {
    /// The shard of `run`.
    pub(super) fn shard(&self, run: &WorkflowId) -> ShardId {
        shard_in(run, self.shard_count)
    }

    /// `Ok` when the core owns `run`'s shard now; a command about it is refused otherwise.
    pub(super) fn owns(&self, run: &WorkflowId) -> Result<(), CoreError> {
        let shard = self.shard(run);
        if self.held.contains_key(&shard) {
            Ok(())
        } else {
            Err(CoreError::NotOwner(shard))
        }
    }

    /// The lease guard and the syncer's word, before the turn fires or dispatches anything.
    pub(super) fn check_shards(&mut self) {
        if let Some(guard) = &self.guard {
            for shard in guard.lapsed(std::time::Instant::now()) {
                if self.held.contains_key(&shard) {
                    tracing::warn!(
                        shard = shard.0,
                        "the shard's lease may have lapsed by this node's clock; dropping it"
                    );
                    self.drop_shard(shard);
                }
            }
        }
        if let Some(fenced) = self.suspect.take() {
            self.rebuild(&fenced);
        }
    }

    /// Replays `shard`'s in-flight runs and serves them at `epoch`. A run that cannot be
    /// replayed is quarantined, as at start-up.
    pub(super) fn take_shard(&mut self, shard: ShardId, epoch: Epoch, now: u64) -> Result<usize, store::Error> {
        if self.held.contains_key(&shard) {
            self.drop_shard(shard);
        }
        let last = self.store.last_position(shard)?;
        let ids = self.store.in_flight(shard)?;
        let mut recovered = 0;
        for id in ids {
            match self.replay(&id, now) {
                Ok(run) => {
                    self.runs.insert(id.clone(), run);
                    self.refresh_timers(&id);
                    self.sync_ready(&id);
                    recovered += 1;
                }
                Err(reason) => {
                    tracing::error!(workflow_id = %id, %reason, "run quarantined: it cannot be recovered; it is left as it is on disk and not served");
                    if let Ok(mut quarantined) = self.stats.quarantined.lock() {
                        quarantined.insert(id, reason);
                    }
                }
            }
        }
        self.held.insert(shard, epoch);
        self.last_position.insert(shard, last);
        self.durable.raise(shard, last);
        // Links between runs of the shard may need the repairs a start-up makes.
        self.reconcile_pending = true;
        self.stats.active.store(self.runs.len() as u64, Ordering::Relaxed);
        Ok(recovered)
    }

    /// Forgets every run of `shard`: its timers and ready tasks go with it, so nothing of it
    /// is dispatched or written from here on. Circuits and waiting polls are not per run.
    pub(super) fn drop_shard(&mut self, shard: ShardId) {
        self.held.remove(&shard);
        self.last_position.remove(&shard);
        let gone: Vec<WorkflowId> = self.runs.keys().filter(|id| self.shard(id) == shard).cloned().collect();
        for id in &gone {
            if let Some(run) = self.runs.remove(id) {
                for timer in &run.timers {
                    self.timers.remove(&(timer.due_ms, id.clone(), timer.kind));
                }
                for key in &run.ready {
                    self.ready.remove(key);
                }
            }
        }
        if let Ok(mut quarantined) = self.stats.quarantined.lock() {
            quarantined.retain(|id, _| shard_in(id, self.shard_count) != shard);
        }
        self.stats.active.store(self.runs.len() as u64, Ordering::Relaxed);
        tracing::info!(shard = shard.0, runs = gone.len(), "dropped a shard");
    }

    /// After a refused write: the fenced shards go, every other one is read back.
    fn rebuild(&mut self, fenced: &BTreeSet<ShardId>) {
        let now = self.clock.now_ms();
        let held: Vec<(ShardId, Epoch)> = self.held.iter().map(|(s, e)| (*s, *e)).collect();
        for (shard, epoch) in held {
            self.drop_shard(shard);
            if fenced.contains(&shard) {
                if let Some(guard) = &self.guard {
                    guard.forget(shard);
                }
                continue;
            }
            if let Err(error) = self.take_shard(shard, epoch, now) {
                // Not served rather than served from a memory known to be wrong; the lease
                // manager sees it gone and claims it again.
                tracing::error!(shard = shard.0, %error, "cannot read a shard back after a refused write; dropping it");
                if let Some(guard) = &self.guard {
                    guard.forget(shard);
                }
            }
        }
        tracing::warn!(fenced = fenced.len(), held = self.held.len(), "rebuilt the core's memory from the store");
    }

    /// Reads definitions registered by other nodes; `true` when one was new here.
    pub(super) fn reload_definitions(&mut self) -> bool {
        let stored = match self.store.definitions() {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored definitions");
                return false;
            }
        };
        let mut added = false;
        for (name, version, source) in stored {
            let known = self.registry.read().is_ok_and(|registry| registry.get(&name, version).is_some());
            if known {
                continue;
            }
            let definition = match crate::definition::parse(&format!("stored definition {name} v{version}"), &source) {
                Ok(definition) => definition,
                Err(error) => {
                    tracing::error!(%name, version, %error, "a stored definition does not parse");
                    continue;
                }
            };
            self.circuits.configure(&definition);
            if let Ok(mut registry) = self.registry.write() {
                added |= registry.insert(definition).unwrap_or(false);
            }
        }
        added
    }
}

impl ShardHolder for Handle {
    fn take(&self, shard: ShardId, epoch: Epoch) -> crate::cluster::lease::Taking {
        match self.take_shard(shard, epoch) {
            Ok(answer) => Box::pin(async move {
                match answer.await {
                    Ok(taken) => taken.map_err(|error| error.to_string()),
                    Err(_) => Err("the core stopped".to_owned()),
                }
            }),
            Err(error) => Box::pin(std::future::ready(Err(error.to_string()))),
        }
    }

    async fn release(&self, shard: ShardId) -> Result<(), String> {
        self.drop_shard(shard).await.map_err(|error| error.to_string())
    }
}
