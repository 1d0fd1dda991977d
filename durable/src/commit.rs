//! Group commit: one sync answers every writer that asked for one while the previous sync
//! ran.
//!
//! One thread per store does every sync. Many concurrent syncs collapse on a slow disk
//! (design.md section 3: p99 26 ms at 64 threads against under 1 ms for one writer syncing
//! batches), and sled 0.34's `flush_async` runs on sled's own small I/O pool, which
//! concurrent callers can exhaust until the store deadlocks. [`group_commit`] is the loop
//! (the engine's syncer runs it with its own jobs); [`Flusher`] is that loop on its own
//! thread for async callers (the workers' domains).
//!
//! The flusher also applies the batches handed to it ([`Flusher::write`]), all of one group
//! in one atomic sled write just before that group's sync. Why: sled 0.34 seals its log
//! buffer twice per `apply_batch` (before and after the batch's manifest), and each sealed
//! buffer is a `pwrite` plus a waited `sync_file_range` on sled's I/O pool. A worker applying
//! one batch per activity paid about six such writes per sync; one batch per group pays two.
//!
//! This module must never build a record: callers encode their writes, hand them over or
//! apply them, then ask for a sync.

use crate::open::{Error, Opened};
use sled::Transactional;
use std::sync::mpsc::{Receiver, Sender};

/// One request to the group-commit loop.
pub trait Job {
    /// Whether the job wrote: a group in which no job wrote is answered without a sync, as
    /// jobs arrive in order and every earlier write was synced by an earlier group.
    fn needs_sync(&self) -> bool {
        true
    }
}

/// Runs until every sender of `jobs` is gone. Takes every job waiting, syncs the group once
/// if any of its jobs wrote (`sync` sees the group, so it may apply the group's writes
/// first), then hands the group to `answer` with `Ok(true)` (synced), `Ok(false)` (nothing to
/// sync) or the sync's error. Nothing is answered before the sync that covers it.
pub fn group_commit<J: Job, E>(
    jobs: &Receiver<J>,
    mut sync: impl FnMut(&mut [J]) -> Result<(), E>,
    mut answer: impl FnMut(Vec<J>, Result<bool, E>),
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter());
        let outcome = if group.iter().any(Job::needs_sync) { sync(&mut group).map(|()| true) } else { Ok(false) };
        answer(group, outcome);
    }
}

/// What the flusher's thread is handed, in the order its callers handed it.
enum Handed {
    /// A batch for one tree, applied after everything handed before it and before the sync
    /// of its group.
    Write(sled::Tree, sled::Batch),
    /// A caller waiting until everything handed before it is durable.
    Flush(tokio::sync::oneshot::Sender<Result<(), String>>),
}

impl Job for Handed {}

/// Applies the group's batches as one atomic write: one `apply_batch` when there is one
/// batch (taken out of the group, not copied), one transaction over the trees written
/// otherwise (several batches of one tree apply in the order handed, so a later write of a
/// key wins, as if applied one by one).
fn apply_handed(group: &mut [Handed]) -> Result<(), String> {
    let mut writes: Vec<(&sled::Tree, &mut sled::Batch)> = group
        .iter_mut()
        .filter_map(|handed| match handed {
            Handed::Write(tree, batch) => Some((&*tree, batch)),
            Handed::Flush(_) => None,
        })
        .collect();
    match writes.as_mut_slice() {
        [] => Ok(()),
        [(tree, batch)] => tree.apply_batch(std::mem::take(*batch)).map_err(|e| e.to_string()),
        _ => {
            let mut trees: Vec<&sled::Tree> = Vec::new();
            let mut order = Vec::with_capacity(writes.len());
            for (tree, batch) in &writes {
                let index = match trees.iter().position(|known| known.name() == tree.name()) {
                    Some(index) => index,
                    None => {
                        trees.push(tree);
                        trees.len() - 1
                    }
                };
                order.push((index, &**batch));
            }
            trees
                .as_slice()
                .transaction(|views: &Vec<sled::transaction::TransactionalTree>| {
                    for (index, batch) in &order {
                        views[*index].apply_batch(batch)?;
                    }
                    Ok::<(), sled::transaction::ConflictableTransactionError<String>>(())
                })
                .map_err(|e| e.to_string())
        }
    }
}

/// The durability point of one store for async callers: nothing is acknowledged before
/// [`Flusher::flush`] returns, and one sync answers every caller that asked meanwhile.
///
/// Once applying handed batches or a sync fails, every later flush fails too: the callers
/// already changed their memory for writes that may not be in the store, so only a restart,
/// which reads the store again, puts the two back in step.
///
/// Dropping the flusher waits for its thread, which holds a handle to the store: once its
/// owner is dropped too, the store closes as soon as sled's own background threads let go
/// of its file (a moment; until then opening it again is refused as locked).
pub struct Flusher {
    requests: Option<Sender<Handed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").field("running", &self.requests.is_some()).finish()
    }
}

impl Flusher {
    /// Starts the flusher's thread, named after `name`.
    pub fn start(store: &Opened, name: &str) -> Result<Flusher, std::io::Error> {
        let store = store.clone();
        let (requests, pending) = std::sync::mpsc::channel::<Handed>();
        let thread = std::thread::Builder::new().name(format!("{name}-flusher")).spawn(move || {
            let mut failed: Option<String> = None;
            group_commit(
                &pending,
                |group| {
                    if let Some(failure) = &failed {
                        return Err(failure.clone());
                    }
                    let outcome = apply_handed(group).and_then(|()| store.sync().map_err(|e| e.to_string()));
                    if let Err(failure) = &outcome {
                        failed = Some(failure.clone());
                    }
                    outcome
                },
                |group, outcome| {
                    let result = outcome.map(|_| ());
                    for handed in group {
                        if let Handed::Flush(waiter) = handed {
                            // A caller that stopped waiting is no one's concern.
                            let _ = waiter.send(result.clone());
                        }
                    }
                },
            )
        })?;
        Ok(Flusher { requests: Some(requests), thread: Some(thread) })
    }

    /// Hands `batch` over to be applied to `tree`, atomically, after every batch handed before
    /// it and before the sync that answers the next [`Self::flush`]. It is not visible in the
    /// store until then: callers keep what they read in memory, hand batches over in the order
    /// their memory changed (under the lock that orders it), and acknowledge only after a
    /// flush.
    pub fn write(&self, tree: &sled::Tree, batch: sled::Batch) -> Result<(), Error> {
        let requests = self.requests.as_ref().ok_or(Error::Stopped)?;
        requests.send(Handed::Write(tree.clone(), batch)).map_err(|_| Error::Stopped)
    }

    /// Returns once everything applied to the store or handed to [`Self::write`] before the
    /// call is durable.
    pub async fn flush(&self) -> Result<(), Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.as_ref().ok_or(Error::Stopped)?.send(Handed::Flush(reply)).map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?.map_err(Error::Group)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; joining it drops its store handle.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    struct Wrote(bool);
    impl Job for Wrote {
        fn needs_sync(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn one_sync_answers_a_group_and_a_group_without_writes_is_not_synced() {
        let (tx, rx) = channel();
        for wrote in [true, false, true] {
            tx.send(Wrote(wrote)).expect("sends");
        }
        drop(tx);
        let (mut syncs, mut groups) = (0, Vec::new());
        group_commit(
            &rx,
            |_| {
                syncs += 1;
                Ok::<(), ()>(())
            },
            |group, outcome| groups.push((group.len(), outcome)),
        );
        assert_eq!((syncs, groups), (1, vec![(3, Ok(true))]), "three waiting jobs, one sync");

        let (tx, rx) = channel();
        tx.send(Wrote(false)).expect("sends");
        drop(tx);
        let mut outcomes = Vec::new();
        group_commit(&rx, |_| Err::<(), _>("must not sync"), |_, outcome| outcomes.push(outcome));
        assert_eq!(outcomes, vec![Ok(false)]);
    }

    /// A power-safe store's path in a fresh temporary dir (kept alive by the returned dir).
    fn power_safe_path() -> (tempfile::TempDir, std::path::PathBuf, crate::OpenOptions) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        (dir, path, crate::OpenOptions::new(crate::Durability::PowerSafe))
    }

    #[tokio::test]
    async fn the_flusher_makes_writes_durable_and_closes_the_store_when_dropped() {
        let (_dir, path, options) = power_safe_path();
        {
            let store = crate::open(&path, options).expect("opens");
            let flusher = Flusher::start(&store, "test").expect("starts");
            store.db.insert(b"k", b"v").expect("writes");
            flusher.flush().await.expect("flushes");
        }
        let again = crate::test_support::reopen(&path, options);
        assert_eq!(again.db.get(b"k").expect("reads").as_deref(), Some(&b"v"[..]));
    }

    fn batch(pairs: &[(&[u8], &[u8])]) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in pairs {
            batch.insert(*key, *value);
        }
        batch
    }

    #[tokio::test]
    async fn handed_batches_apply_in_order_across_trees_before_the_flush_answers() {
        let (_dir, path, options) = power_safe_path();
        {
            let store = crate::open(&path, options).expect("opens");
            let (a, b) = (store.db.open_tree("a").expect("tree a"), store.db.open_tree("b").expect("tree b"));
            let flusher = Flusher::start(&store, "test").expect("starts");
            // Batches over two trees, handed before one flush: one group (one transaction) when
            // the flusher takes them together, several otherwise; the outcome is the same.
            flusher.write(&a, batch(&[(b"k", b"1"), (b"only-first", b"x")])).expect("hands over");
            flusher.write(&b, batch(&[(b"k", b"b")])).expect("hands over");
            flusher.write(&a, batch(&[(b"k", b"2")])).expect("hands over");
            flusher.flush().await.expect("flushes");
            assert_eq!(a.get(b"k").expect("reads").as_deref(), Some(&b"2"[..]), "the later write wins");
            assert_eq!(a.get(b"only-first").expect("reads").as_deref(), Some(&b"x"[..]));
            assert_eq!(b.get(b"k").expect("reads").as_deref(), Some(&b"b"[..]));
            // A batch alone: one apply_batch.
            flusher.write(&b, batch(&[(b"k", b"b2")])).expect("hands over");
            flusher.flush().await.expect("flushes");
        }
        let again = crate::test_support::reopen(&path, options);
        let (a, b) = (again.db.open_tree("a").expect("tree a"), again.db.open_tree("b").expect("tree b"));
        assert_eq!(a.get(b"k").expect("reads").as_deref(), Some(&b"2"[..]), "durable once flushed");
        assert_eq!(b.get(b"k").expect("reads").as_deref(), Some(&b"b2"[..]));
    }
}
