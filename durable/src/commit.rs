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
//! This module must never write a record: callers apply their writes, then ask for a sync.

use crate::open::{Error, Opened};
use std::sync::mpsc::{Receiver, Sender};

/// One request to the group-commit loop.
pub trait Job {
    /// Whether the job wrote: a group in which no job wrote is answered without a sync, as
    /// jobs arrive in order and every earlier write was synced by an earlier group.
    fn needs_sync(&self) -> bool {
        true
    }
}

/// Runs until every sender of `jobs` is gone. Takes every job waiting, syncs once if any of
/// them wrote, then hands the group to `answer` with `Ok(true)` (synced), `Ok(false)`
/// (nothing to sync) or the sync's error. Nothing is answered before the sync that covers it.
pub fn group_commit<J: Job, E>(
    jobs: &Receiver<J>,
    mut sync: impl FnMut() -> Result<(), E>,
    mut answer: impl FnMut(Vec<J>, Result<bool, E>),
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter());
        let outcome = if group.iter().any(Job::needs_sync) { sync().map(|()| true) } else { Ok(false) };
        answer(group, outcome);
    }
}

type FlushRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

impl Job for FlushRequest {}

/// The durability point of one store for async callers: nothing is acknowledged before
/// [`Flusher::flush`] returns, and one sync answers every caller that asked meanwhile.
///
/// Dropping the flusher waits for its thread, which holds a handle to the store: once its
/// owner is dropped the store is closed and can be opened again at once.
#[derive(Debug)]
pub struct Flusher {
    requests: Option<Sender<FlushRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flusher's thread, named after `name`.
    pub fn start(store: &Opened, name: &str) -> Result<Flusher, std::io::Error> {
        let store = store.clone();
        let (requests, pending) = std::sync::mpsc::channel::<FlushRequest>();
        let thread = std::thread::Builder::new().name(format!("{name}-flusher")).spawn(move || {
            group_commit(
                &pending,
                || store.sync().map_err(|e| e.to_string()),
                |waiters, outcome| {
                    let result = outcome.map(|_| ());
                    for waiter in waiters {
                        // A caller that stopped waiting is no one's concern.
                        let _ = waiter.send(result.clone());
                    }
                },
            )
        })?;
        Ok(Flusher { requests: Some(requests), thread: Some(thread) })
    }

    /// Returns once everything applied to the store before the call is durable.
    pub async fn flush(&self) -> Result<(), Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.as_ref().ok_or(Error::Stopped)?.send(reply).map_err(|_| Error::Stopped)?;
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
            || {
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
        group_commit(&rx, || Err::<(), _>("must not sync"), |_, outcome| outcomes.push(outcome));
        assert_eq!(outcomes, vec![Ok(false)]);
    }

    #[tokio::test]
    async fn the_flusher_makes_writes_durable_and_closes_the_store_when_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let options = crate::OpenOptions::new(crate::Durability::PowerSafe);
        {
            let store = crate::open(&path, options).expect("opens");
            let flusher = Flusher::start(&store, "test").expect("starts");
            store.db.insert(b"k", b"v").expect("writes");
            flusher.flush().await.expect("flushes");
        }
        let again = crate::open(&path, options).expect("reopens once the flusher is gone");
        assert_eq!(again.db.get(b"k").expect("reads").as_deref(), Some(&b"v"[..]));
    }
}
