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
//! The flusher also applies the batches handed to it ([`Flusher::write`]). With a log
//! ([`Flusher::start_logged`], what the workers run): all of one group as one record of the
//! store's write-ahead log, `fdatasync`ed, and applied to sled afterwards by the log's
//! applier thread, `wal::APPLY_DELAY` of records at a time coalesced by key, without
//! pinning its log (`wal::db_log`). Without one ([`Flusher::start`], temporary stores): in one atomic sled
//! write just before the group's sync. Why either: sled 0.34 seals its log buffer twice per
//! atomic `apply_batch` (before and after the batch's manifest), and each sealed buffer is a
//! `pwrite` plus a waited `sync_file_range` on sled's I/O pool; one batch per activity paid
//! about six such writes per sync, one per group two, the log none.
//!
//! This module must never build a record: callers encode their writes, hand them over or
//! apply them, then ask for a sync.

use crate::open::{Durability, Error, Opened};
use crate::wal::db_log::DbLog;
use crate::wal::{LogBatch, WalOptions};
use sled::Transactional;
use std::path::Path;
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
    Write(sled::Tree, LogBatch),
    /// A caller waiting until everything handed before it is durable.
    Flush(tokio::sync::oneshot::Sender<Result<(), String>>),
}

impl Job for Handed {}

/// Applies the group's batches as one atomic write: one `apply_batch` when there is one
/// batch (taken out of the group, not copied), one transaction over the trees written
/// otherwise (several batches of one tree apply in the order handed, so a later write of a
/// key wins, as if applied one by one).
fn apply_handed(mut writes: Vec<(sled::Tree, sled::Batch)>) -> Result<(), String> {
    match writes.as_mut_slice() {
        [] => Ok(()),
        [(tree, batch)] => tree.apply_batch(std::mem::take(batch)).map_err(|e| e.to_string()),
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
                order.push((index, batch));
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

/// Where the flusher's groups go (see [`Flusher::start`] and [`Flusher::start_logged`]).
enum Sink {
    Unlogged(Opened),
    Logged(DbLog),
}

impl Sink {
    fn commit(&mut self, writes: Vec<(sled::Tree, LogBatch)>) -> Result<(), String> {
        match self {
            Sink::Unlogged(store) => {
                apply_handed(writes.into_iter().map(|(tree, batch)| (tree, batch.to_batch())).collect())?;
                store.sync().map_err(|e| e.to_string())
            }
            Sink::Logged(log) => log.write(writes).map_err(|e| e.to_string()),
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
    /// Starts the flusher's thread, named after `name`, without a log: each group is one
    /// atomic sled write, then the store's sync (for temporary stores, which have no folder).
    pub fn start(store: &Opened, name: &str) -> Result<Flusher, std::io::Error> {
        Flusher::spawn(Sink::Unlogged(store.clone()), name)
    }

    /// Starts the flusher's thread, named after `name`, with the store's write-ahead log in
    /// `dir` (applying every record the trees do not hold yet first): each group is one
    /// record, made durable, then applied by the log's applier thread. Writes made to the trees directly are not covered
    /// by its flushes: their writer syncs the store itself.
    pub fn start_logged(store: &Opened, dir: &Path, durability: Durability, name: &str) -> Result<Flusher, Error> {
        let log = DbLog::open(dir, store, durability, WalOptions::default())?;
        Flusher::spawn(Sink::Logged(log), name).map_err(|source| Error::Log { path: dir.to_owned(), source })
    }

    fn spawn(sink: Sink, name: &str) -> Result<Flusher, std::io::Error> {
        let (requests, pending) = std::sync::mpsc::channel::<Handed>();
        let thread = std::thread::Builder::new().name(format!("{name}-flusher")).spawn(move || {
            let mut sink = sink;
            let mut failed: Option<String> = None;
            group_commit(
                &pending,
                |group| {
                    if let Some(failure) = &failed {
                        return Err(failure.clone());
                    }
                    let writes = group
                        .iter_mut()
                        .filter_map(|handed| match handed {
                            Handed::Write(tree, batch) => Some((tree.clone(), std::mem::take(batch))),
                            Handed::Flush(_) => None,
                        })
                        .collect();
                    let outcome = sink.commit(writes);
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
    pub fn write(&self, tree: &sled::Tree, batch: LogBatch) -> Result<(), Error> {
        let requests = self.requests.as_ref().ok_or(Error::Stopped)?;
        requests.send(Handed::Write(tree.clone(), batch)).map_err(|_| Error::Stopped)
    }

    /// Returns once everything handed to [`Self::write`] before the call is durable (without
    /// a log, everything applied to the store directly too).
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

    fn batch(pairs: &[(&[u8], &[u8])]) -> LogBatch {
        let mut batch = LogBatch::default();
        for (key, value) in pairs {
            batch.insert(*key, *value);
        }
        batch
    }

    #[tokio::test]
    async fn a_logged_flusher_makes_a_group_of_several_trees_one_record_that_replays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let options = crate::OpenOptions::new(crate::Durability::PowerSafe);
        let store = crate::open(&first, options).expect("opens");
        let (a, b) = (store.db.open_tree("a").expect("tree a"), store.db.open_tree("b").expect("tree b"));
        let flusher =
            Flusher::start_logged(&store, &first.join("wal"), crate::Durability::PowerSafe, "test").expect("starts");
        flusher.write(&a, batch(&[(b"k", b"1"), (b"only-first", b"x")])).expect("hands over");
        flusher.write(&b, batch(&[(b"k", b"b")])).expect("hands over");
        flusher.write(&a, batch(&[(b"k", b"2")])).expect("hands over");
        flusher.flush().await.expect("flushes");
        // Applied after the flush answers; dropping the flusher waits for its thread.
        drop(flusher);
        assert_eq!(a.get(b"k").expect("reads").as_deref(), Some(&b"2"[..]), "applied, the later write winning");
        assert_eq!(b.get(b"k").expect("reads").as_deref(), Some(&b"b"[..]));
        // What a crash leaves when sled lost everything since the flush: the log alone.
        std::fs::create_dir_all(second.join("wal")).expect("folder");
        for entry in std::fs::read_dir(first.join("wal")).expect("lists") {
            let path = entry.expect("lists").path();
            std::fs::copy(&path, second.join("wal").join(path.file_name().expect("a name"))).expect("copies");
        }
        let other = crate::open(&second, options).expect("opens");
        let _replayed = Flusher::start_logged(&other, &second.join("wal"), crate::Durability::PowerSafe, "test")
            .expect("starts, replaying the log");
        let (a, b) = (other.db.open_tree("a").expect("tree a"), other.db.open_tree("b").expect("tree b"));
        assert_eq!(a.get(b"k").expect("reads").as_deref(), Some(&b"2"[..]));
        assert_eq!(a.get(b"only-first").expect("reads").as_deref(), Some(&b"x"[..]));
        assert_eq!(b.get(b"k").expect("reads").as_deref(), Some(&b"b"[..]));
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
