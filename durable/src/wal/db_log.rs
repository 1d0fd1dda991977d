//! One log for every tree of a store, for a single writer that applies what it logs itself:
//! the workers' [`crate::Flusher`], which logs a whole group of batches (every domain's) as
//! one record, `fdatasync`s it, answers the group, and then applies the batches to their
//! trees without pinning sled's log. There is no overlay: the flusher's callers keep what they wrote in memory and
//! read the store only at start-up.
//!
//! The record's number is kept under [`APPLIED_KEY`] in the store's default tree, written
//! after the record's batches; recovery is the same as [`super::LoggedTree`]'s. Writes made
//! to the trees directly, not through [`DbLog::commit`], are not logged: their writer makes
//! them durable with [`Opened::sync`] before anything is logged after them.
//!
//! This module must never decide when to commit (the flusher's group commit does).

use super::segment::{checkpoint, decode_ops, decode_records, encode_record, push_bytes, Log, TREE};
use super::{apply_record, stored_seq, LogBatch, WalOptions};
use crate::open::{Durability, Error, Opened};
use std::path::{Path, PathBuf};

/// The key, in the store's default tree, of the last record the trees hold.
pub const APPLIED_KEY: &[u8] = b"wal-applied";

pub(crate) struct DbLog {
    store: Opened,
    /// The store's default tree, which holds [`APPLIED_KEY`].
    marked: sled::Tree,
    log: Log,
    dir: PathBuf,
    durability: Durability,
    last_seq: u64,
    /// Records written and durable, not yet applied to their trees.
    unapplied: Vec<u8>,
    /// A segment closed since the last apply, to checkpoint once that apply is done.
    closed: Option<u64>,
}

impl DbLog {
    /// Opens the log in `dir`, first applying every record the trees do not hold yet.
    pub(crate) fn open(
        dir: &Path,
        store: &Opened,
        durability: Durability,
        options: WalOptions,
    ) -> Result<DbLog, Error> {
        let marked: sled::Tree = (*store.db).clone();
        let applied = stored_seq(&marked, APPLIED_KEY)?;
        let (log, last_seq) = Log::open(dir, store, durability, options.segment_bytes, applied, |path, record| {
            apply_record(&marked, decode_ops(path, &record.ops, &store.db, &marked)?, APPLIED_KEY, record.seq)
        })?;
        Ok(DbLog {
            store: store.clone(),
            marked,
            log,
            dir: dir.to_owned(),
            durability,
            last_seq,
            unapplied: Vec::new(),
            closed: None,
        })
    }

    /// Logs `writes` as one record and makes it durable; [`DbLog::apply`] then applies it.
    /// A failure leaves the log unusable: the caller must fail every later write.
    pub(crate) fn write(&mut self, writes: Vec<(sled::Tree, LogBatch)>) -> Result<(), Error> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        for (tree, batch) in writes {
            ops.push(TREE);
            push_bytes(&mut ops, &tree.name());
            ops.extend_from_slice(&batch.ops);
        }
        let seq = self.last_seq + 1;
        let start = self.unapplied.len();
        encode_record(&mut self.unapplied, &ops, seq);
        if let Some(closed) = self.log.write(&self.unapplied[start..]).map_err(Error::Sync)? {
            self.closed = Some(closed);
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Applies every batch written since the last call to its tree, in order, then marks the
    /// last record applied; a closed segment is checkpointed here.
    pub(crate) fn apply(&mut self) -> Result<(), Error> {
        if self.unapplied.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.unapplied);
        let sections = decode_records(&self.dir, &records, &self.store.db, &self.marked)?;
        apply_record(&self.marked, sections, APPLIED_KEY, self.last_seq)?;
        if let Some(closed) = self.closed.take() {
            checkpoint(&self.store, &self.dir, self.durability, closed)?;
        }
        Ok(())
    }
}
