//! A write-ahead log in front of one sled tree ([`LoggedTree`]): a batch is logged first,
//! and reaches sled only once its record is durable.
//!
//! Why: sled 0.34's atomic `apply_batch` pins its log, sealing the log buffer before and
//! after every batch, and each sealed buffer is a `pwrite` and a waited `sync_file_range`
//! on sled's I/O pool; a flush seals and waits once more. At the engine's commit rate those
//! were the largest fixed cost of a turn (`docs/performance.md`, "Issue 13, part five").
//! Here [`LoggedTree::apply`] stages a batch: its record is appended to a buffer and its
//! writes to an overlay that every read of this type consults first, so the writer and
//! readers see it at once, as they saw an applied sled batch before. [`LoggedTree::sync`]
//! writes the staged records to the current segment file, `fdatasync`s it (power-safe;
//! process-crash only writes), and only then hands the written records to the log's applier
//! thread. The applier holds them for [`APPLY_DELAY`] (or until they reach [`APPLY_BYTES`],
//! a checkpoint, or the log's drop), then decodes and applies them to sled as recovery
//! does, coalesced (of the writes to one key only the last reaches sled: most of a short
//! run's keys are written and removed within that time and never cost sled anything),
//! without pinning its log and one write at a time (`Tree::apply_logged_batches`, a patch
//! of ours), and then drops them from the overlay. sled's readers need no atomicity from
//! it: until the overlay drops them, every key being applied is read from the overlay. A
//! batch exists in one form, its record's ops; the overlay's entries and sled's writes are
//! both decoded from it. The applier works off the path of the caller's acknowledgements,
//! which need only the sync. sled writes its own log in the background, as full buffers and
//! in its periodic flush.
//!
//! Recovery: each apply also sets `applied_key` to the number of its last record, written
//! after the records' own writes. sled recovers a prefix of its log, so the tree holds
//! every batch up to the number stored there, maybe part of later ones, and nothing that
//! was not logged durably first; opening applies every record after that number again,
//! in order, which completes any partial one.
//!
//! Segments: the log is a folder of numbered files. A segment that reaches
//! [`WalOptions::segment_bytes`] is closed and a new one opened; the applier, once it has
//! applied every batch handed to it before, flushes sled and deletes the closed segments. So
//! the log holds about two segments at most, and recovery reads no more. Power-safe, a
//! segment is written in place into a file of zeros made before it is used, so a sync writes
//! no file metadata (`segment.rs`).
//!
//! Record: `len u32 | crc32 u32 | ops | seq u64` (little-endian; `len` counts `ops` and
//! `seq`, the CRC covers both); an op is `1 | key_len u32 | key | value_len u32 | value`
//! (insert), `0 | key_len u32 | key` (remove), or `2 | name_len u32 | name`: the later ops
//! of the record go to that tree (a log serving several trees, `db_log.rs`; until one, ops
//! go to the log's own tree). A short record or one failing its CRC ends
//! the last segment (a write the crash tore, never acknowledged); in an earlier segment it
//! is corruption, and opening fails.
//!
//! Reads merge the overlay with the tree, the overlay first; a read spanning many keys is
//! not a snapshot (nor was sled's iteration). This module must never know what the keys
//! mean, and nothing may write the tree except through [`LoggedTree::apply`].

mod applier;
pub(crate) mod db_log;
mod merged;
mod segment;

pub use merged::Merged;

use crate::open::{Durability, Error, Opened};
use applier::{Applier, ApplierThread};
use segment::{decode_ops, encode_record, parse_ops, push_bytes, Log, Op, INSERT, REMOVE};
use sled::IVec;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The segment size at which the log moves to a new file (64 MiB): about ten seconds of the
/// engine at full load, and the most recovery reads beyond the segment being written.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// How long the applier holds durable records before applying them to sled (50 ms): a
/// key written and removed again within that time (most of a short run's history and index
/// entries, packed or dropped when it ends) never reaches sled at all, and a key rewritten
/// reaches it once. What it costs is memory (the overlay keeps those writes for as long) and
/// replay at start-up (at most that much more of the log). Why not longer: the window is
/// applied at once, and a longer one is a longer burst of the applier's CPU, which every
/// other thread on a small machine waits behind (measured: start p99 at 1,000 starts/s
/// 3.40-3.47 ms with 250 ms, 2.38-2.92 ms with 50 ms, throughput the same; a saga here lives
/// 15-40 ms, so 50 ms still holds most of a run's short-lived keys).
pub const APPLY_DELAY: Duration = Duration::from_millis(50);

/// The most bytes of records the applier holds before applying them, whatever their age
/// (16 MiB): bounds the overlay under a burst of large writes.
pub const APPLY_BYTES: usize = 16 << 20;

/// How a log is kept beyond the store's durability.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Close a segment and start the next once it holds at least this many bytes (the first
    /// segment a log opens: at most `FIRST_SEGMENT_BYTES`, 8 MiB). Power-safe, each segment is
    /// this many zeros on disk before it is written (see `segment`'s doc).
    pub segment_bytes: u64,
    /// When durable records are applied to sled.
    pub apply: ApplyWindow,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions { segment_bytes: SEGMENT_BYTES, apply: ApplyWindow { delay: APPLY_DELAY, bytes: APPLY_BYTES } }
    }
}

/// The applier applies the records it holds once the oldest is `delay` old or they reach
/// `bytes`, and always before a checkpoint and when the log is dropped.
#[derive(Debug, Clone, Copy)]
pub struct ApplyWindow {
    pub delay: Duration,
    pub bytes: usize,
}

/// One atomic write, as its record's ops: the one form of it, from which the overlay's
/// entries and sled's batch are both decoded.
#[derive(Default)]
pub struct LogBatch {
    ops: Vec<u8>,
}

impl LogBatch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.ops.push(INSERT);
        push_bytes(&mut self.ops, key);
        push_bytes(&mut self.ops, value);
    }

    /// The sled batch of these writes, for a writer that applies it without logging it.
    pub(crate) fn to_batch(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for op in parse_ops(&self.ops).unwrap_or_default() {
            match op {
                Op::Insert(key, value) => batch.insert(key, value),
                Op::Remove(key) => batch.remove(key),
                // Only a log serving several trees writes these, never a batch.
                Op::Tree(_) => {}
            }
        }
        batch
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        self.ops.push(REMOVE);
        push_bytes(&mut self.ops, key);
    }
}

/// Batches in the overlay since the last sync: their records.
struct Staged {
    next_seq: u64,
    records: Vec<u8>,
}

/// Staged writes not yet in the tree: the latest per key, with its record's number.
pub(super) type Overlay = BTreeMap<Vec<u8>, (u64, Option<IVec>)>;

/// A sled tree whose every write is logged first (see the module's doc). Dropping it lets
/// its applier thread apply every synced batch and waits for it; what was staged and not
/// synced is lost, as it was never acknowledged.
pub struct LoggedTree {
    dir: PathBuf,
    tree: sled::Tree,
    staged: Mutex<Staged>,
    overlay: Arc<Mutex<Overlay>>,
    /// Held for a whole sync: syncs write records in order.
    log: Mutex<Log>,
    /// Applies synced records to the tree; once writing the log or applying failed, every
    /// later sync fails, as the log or the tree can no longer be trusted (a restart replays
    /// the log).
    applier: ApplierThread,
}

impl std::fmt::Debug for LoggedTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedTree").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl LoggedTree {
    /// Opens the log in `dir` for `tree` of `store`, first applying every record the tree
    /// does not hold yet (then flushing the store and starting a fresh segment).
    pub fn open(
        dir: &Path,
        store: &Opened,
        tree: sled::Tree,
        applied_key: &[u8],
        durability: Durability,
        options: WalOptions,
    ) -> Result<LoggedTree, Error> {
        let applied = stored_seq(&tree, applied_key)?;
        let (log, last_seq) = Log::open(dir, store, durability, options.segment_bytes, applied, |path, record| {
            let sections = decode_ops(path, &record.ops, &store.db, &tree)?;
            apply_record(&tree, sections, applied_key, record.seq)
        })?;
        let overlay = Arc::new(Mutex::new(BTreeMap::new()));
        let applier = ApplierThread::spawn(Applier {
            store: store.clone(),
            marked: tree.clone(),
            applied_key: applied_key.to_vec(),
            dir: dir.to_owned(),
            durability,
            overlay: Some(overlay.clone()),
            window: options.apply,
        })?;
        Ok(LoggedTree {
            dir: dir.to_owned(),
            tree,
            staged: Mutex::new(Staged { next_seq: last_seq + 1, records: Vec::new() }),
            overlay,
            log: Mutex::new(log),
            applier,
        })
    }

    /// Stages `batch`: every read sees it at once; durable (and in sled) after the next
    /// [`LoggedTree::sync`].
    pub fn apply(&self, batch: LogBatch) {
        let mut staged = lock(&self.staged);
        let seq = staged.next_seq;
        staged.next_seq += 1;
        encode_record(&mut staged.records, &batch.ops, seq);
        // Under the staged lock, so the overlay holds each key's latest staged write. A
        // batch's own ops always parse, and hold no tree op.
        let mut overlay = lock(&self.overlay);
        for op in parse_ops(&batch.ops).unwrap_or_default() {
            match op {
                Op::Insert(key, value) => overlay.insert(key.to_vec(), (seq, Some(IVec::from(value)))),
                Op::Remove(key) => overlay.insert(key.to_vec(), (seq, None)),
                Op::Tree(_) => None,
            };
        }
    }

    /// Makes every staged batch durable: writes their records and, power-safe, `fdatasync`s
    /// the segment; then hands them to the applier. A full segment is closed here and
    /// handed to the applier to checkpoint.
    pub fn sync(&self) -> Result<(), Error> {
        self.applier.check()?;
        let mut log = lock(&self.log);
        let (records, last_seq) = {
            let mut staged = lock(&self.staged);
            (std::mem::take(&mut staged.records), staged.next_seq - 1)
        };
        if records.is_empty() {
            return Ok(());
        }
        self.applier.write(&mut log, records, last_seq)
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        if let Some((_, value)) = lock(&self.overlay).get(key.as_ref()) {
            return Ok(value.clone());
        }
        self.tree.get(key)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Merged<sled::Iter> {
        let prefix = prefix.as_ref();
        let staged = self.staged_in(Bound::Included(prefix), Bound::Unbounded, |key| key.starts_with(prefix));
        Merged::new(self.tree.scan_prefix(prefix), staged, false)
    }

    /// The last entry whose key starts with `prefix`.
    pub fn last_with_prefix(&self, prefix: impl AsRef<[u8]>) -> sled::Result<Option<(IVec, IVec)>> {
        let prefix = prefix.as_ref();
        let staged = self.staged_in(Bound::Included(prefix), Bound::Unbounded, |key| key.starts_with(prefix));
        Merged::new(self.tree.scan_prefix(prefix).rev(), staged, true).next().transpose()
    }

    /// The last entry with a key from `low` to `high`, both included.
    pub fn last_between(&self, low: &[u8], high: &[u8]) -> sled::Result<Option<(IVec, IVec)>> {
        let staged = self.staged_in(Bound::Included(low), Bound::Included(high), |_| true);
        Merged::new(self.tree.range(low.to_vec()..=high.to_vec()).rev(), staged, true).next().transpose()
    }

    /// Every entry from `start` on whose key starts with `prefix`, in key order.
    pub fn range_within(&self, prefix: &[u8], start: &[u8]) -> Merged<sled::Iter> {
        let staged = self.staged_in(Bound::Included(start), Bound::Unbounded, |key| key.starts_with(prefix));
        Merged::new(self.tree.range(start.to_vec()..), staged, false)
    }

    /// The overlay's entries in a range (taken before the tree is read: see the module's
    /// doc), in key order.
    fn staged_in(
        &self,
        low: Bound<&[u8]>,
        high: Bound<&[u8]>,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Vec<(Vec<u8>, Option<IVec>)> {
        lock(&self.overlay)
            .range::<[u8], _>((low, high))
            .take_while(|(key, _)| keep(key))
            .map(|(key, (_, value))| (key.clone(), value.clone()))
            .collect()
    }

    /// Bytes the log's segments hold on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        segment::size_on_disk(&self.dir)
    }
}

/// Applies records' writes (by tree, in order), then sets `applied_key` in `marked` to
/// `seq`, the last record's number: after every write, as the log's recovery needs. A run
/// of writes to one tree is one `apply_logged_batches` call, the mark in the last.
fn apply_record(
    marked: &sled::Tree,
    sections: Vec<(sled::Tree, sled::Batch)>,
    applied_key: &[u8],
    seq: u64,
) -> Result<(), Error> {
    let mut runs: Vec<(sled::Tree, Vec<sled::Batch>)> = Vec::new();
    for (tree, batch) in sections {
        match runs.last_mut() {
            Some((last, batches)) if last.name() == tree.name() => batches.push(batch),
            _ => runs.push((tree, vec![batch])),
        }
    }
    if runs.last().is_none_or(|(last, _)| last.name() != marked.name()) {
        runs.push((marked.clone(), Vec::new()));
    }
    let mark = seq.to_be_bytes();
    let count = runs.len();
    for (index, (tree, batches)) in runs.into_iter().enumerate() {
        let marker = (index + 1 == count).then_some((applied_key, &mark[..]));
        tree.apply_logged_batches(batches, marker).map_err(Error::Flush)?;
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic while it was held; a record is pushed whole under the
    // staged lock, and the overlay's entries each say what a staged record wrote.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Log { path: path.to_owned(), source }
}

fn stored_seq(tree: &sled::Tree, key: &[u8]) -> Result<u64, Error> {
    match tree.get(key).map_err(Error::Flush)? {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt(format!("the log's applied number has {} bytes, not 8", bytes.len()))),
    }
}

#[cfg(test)]
mod tests;
