//! A log's applier thread: it takes durable records in the order they were written, holds
//! them for the apply window, and applies them to their trees coalesced by key (one sled
//! write per key, its last), then marks the last record applied and, for a log with an
//! overlay, drops them from it. It checkpoints closed segments once every record before
//! them is applied.
//!
//! It must never apply a record that is not durable (the log hands it only written,
//! synced records), and never mark a record applied before its writes.

use super::segment::{self, decode_records, Log};
use super::{apply_record, lock, ApplyWindow, Overlay};
use crate::open::{Durability, Error, Opened};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a log hands its applier, in order.
enum Handed {
    /// Durable records, the last numbered `last_seq`.
    Apply(Vec<u8>, u64),
    /// Every segment up to this number is closed: apply what is held, flush sled, then
    /// delete them.
    Checkpoint(u64),
}

/// The applier's state.
pub(super) struct Applier {
    pub(super) store: Opened,
    /// The tree records' ops go to until one names another, and that holds the mark.
    pub(super) marked: sled::Tree,
    pub(super) applied_key: Vec<u8>,
    pub(super) dir: PathBuf,
    pub(super) durability: Durability,
    /// The staged writes readers see until they are applied (a log whose writer keeps them
    /// in memory itself has none).
    pub(super) overlay: Option<Arc<Mutex<Overlay>>>,
    pub(super) window: ApplyWindow,
}

/// Durable records handed to the applier and not applied yet, as handed (not copied).
#[derive(Default)]
struct Pending {
    records: Vec<Vec<u8>>,
    bytes: usize,
    last_seq: u64,
    /// When the oldest of them was handed.
    since: Option<Instant>,
}

/// The running applier: dropping it lets the thread apply everything handed to it, and
/// waits for it.
pub(super) struct ApplierThread {
    handed: Option<Sender<Handed>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set once the applier, or the log's writer, failed.
    failed: Arc<Mutex<Option<String>>>,
}

impl ApplierThread {
    pub(super) fn spawn(applier: Applier) -> Result<ApplierThread, Error> {
        let failed = Arc::new(Mutex::new(None));
        let (handed, receiver) = std::sync::mpsc::channel();
        let thread = {
            let failed = failed.clone();
            let dir = applier.dir.clone();
            std::thread::Builder::new()
                .name("wal-applier".into())
                .spawn(move || applier.run(&receiver, &failed))
                .map_err(|source| super::io(&dir, source))?
        };
        Ok(ApplierThread { handed: Some(handed), thread: Some(thread), failed })
    }

    /// Writes `records` (the last numbered `last_seq`) to `log` and makes them durable, then
    /// hands them over to be applied, and a segment the write closed to be checkpointed.
    /// Fails, and so does every later call, once the applier failed or a write did: part of
    /// a record may be in the file, and a record written after it would be past a torn one,
    /// which recovery never reads.
    pub(super) fn write(&self, log: &mut Log, records: Vec<u8>, last_seq: u64) -> Result<(), Error> {
        self.check()?;
        let closed = log.write(&records).map_err(|error| {
            *lock(&self.failed) = Some(format!("writing the write-ahead log failed: {error}"));
            Error::Sync(error)
        })?;
        self.hand(Handed::Apply(records, last_seq))?;
        if let Some(closed) = closed {
            self.hand(Handed::Checkpoint(closed))?;
        }
        Ok(())
    }

    /// Fails once the applier or a write failed: nothing the log is asked to sync after that
    /// may be acknowledged.
    pub(super) fn check(&self) -> Result<(), Error> {
        match lock(&self.failed).clone() {
            Some(failure) => Err(Error::Group(failure)),
            None => Ok(()),
        }
    }

    /// A record written but not handed over would never be applied nor marked: no write
    /// may succeed after one.
    fn hand(&self, handed: Handed) -> Result<(), Error> {
        let sent = self.handed.as_ref().is_some_and(|sender| sender.send(handed).is_ok());
        if !sent {
            *lock(&self.failed) = Some("the write-ahead log's applier has stopped".to_owned());
            return Err(Error::Stopped);
        }
        Ok(())
    }
}

impl Drop for ApplierThread {
    fn drop(&mut self) {
        self.handed.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Applier {
    fn run(&self, handed: &Receiver<Handed>, failed: &Mutex<Option<String>>) {
        let mut pending = Pending::default();
        loop {
            let next = match pending.since {
                None => handed.recv().ok(),
                Some(since) => match handed.recv_timeout(self.window.delay.saturating_sub(since.elapsed())) {
                    Ok(next) => Some(next),
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(error) = self.apply(&mut pending) {
                            return fail(failed, &error);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            let outcome = match next {
                Some(Handed::Apply(records, last_seq)) => {
                    pending.bytes += records.len();
                    pending.records.push(records);
                    pending.last_seq = last_seq;
                    let since = *pending.since.get_or_insert_with(Instant::now);
                    // Checked here too: under steady load a record is always waiting, and
                    // the wait above may never time out.
                    if pending.bytes >= self.window.bytes || since.elapsed() >= self.window.delay {
                        self.apply(&mut pending)
                    } else {
                        Ok(())
                    }
                }
                Some(Handed::Checkpoint(closed)) => self.apply(&mut pending).and_then(|()| self.checkpoint(closed)),
                // The log is dropped: apply what it synced, and stop.
                None => {
                    if let Err(error) = self.apply(&mut pending) {
                        fail(failed, &error);
                    }
                    return;
                }
            };
            if let Err(error) = outcome {
                return fail(failed, &error);
            }
        }
    }

    /// Applies the pending records as recovery would (the same decoding, the same order),
    /// coalesced: of the writes to one key only the last reaches sled.
    fn apply(&self, pending: &mut Pending) -> Result<(), Error> {
        if pending.since.take().is_none() {
            return Ok(());
        }
        let records = std::mem::take(&mut pending.records);
        pending.bytes = 0;
        let sections = decode_records(&self.dir, &records, &self.store.db, &self.marked)?;
        apply_record(&self.marked, sections, &self.applied_key, pending.last_seq)?;
        if let Some(overlay) = &self.overlay {
            let last_seq = pending.last_seq;
            lock(overlay).retain(|_, (seq, _)| *seq > last_seq);
        }
        Ok(())
    }

    /// Every batch of the segments up to `closed` was handed (and so applied) before this.
    fn checkpoint(&self, closed: u64) -> Result<(), Error> {
        segment::checkpoint(&self.store, &self.dir, self.durability, closed)
    }
}

fn fail(failed: &Mutex<Option<String>>, error: &Error) {
    tracing::error!(%error, "the write-ahead log's applier failed; every later write fails");
    *lock(failed) = Some(format!("the write-ahead log's applier failed: {error}"));
}
