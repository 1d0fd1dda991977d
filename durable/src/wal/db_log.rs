//! One log for every tree of a store, for a single writer that applies what it logs itself:
//! the workers' [`crate::Flusher`], which logs a whole group of batches (every domain's) as
//! one record, `fdatasync`s it, and then applies the batches to their trees without pinning
//! sled's log. There is no overlay: the flusher's callers keep what they wrote in memory and
//! read the store only at start-up.
//!
//! The record's number is kept under [`APPLIED_KEY`] in the store's default tree, written
//! after the record's batches; recovery is the same as [`super::LoggedTree`]'s. Writes made
//! to the trees directly, not through [`DbLog::commit`], are not logged: their writer makes
//! them durable with [`Opened::sync`] before anything is logged after them.
//!
//! This module must never decide when to commit (the flusher's group commit does).

use super::segment::{checkpoint, decode_ops, encode_record, push_bytes, Log, TREE};
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
        Ok(DbLog { store: store.clone(), marked, log, dir: dir.to_owned(), durability, last_seq })
    }

    /// Logs `writes` as one record and makes it durable, then applies each batch to its tree
    /// in order, then marks the record applied; a full segment is checkpointed here. A
    /// failure leaves the log unusable: the caller must fail every later commit.
    pub(crate) fn commit(&mut self, writes: Vec<(sled::Tree, LogBatch)>) -> Result<(), Error> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        let mut batches = Vec::with_capacity(writes.len());
        for (tree, batch) in writes {
            ops.push(TREE);
            push_bytes(&mut ops, &tree.name());
            ops.extend_from_slice(&batch.ops);
            batches.push((tree, batch.batch));
        }
        let seq = self.last_seq + 1;
        let mut record = Vec::with_capacity(ops.len() + 16);
        encode_record(&mut record, &ops, seq);
        let closed = self.log.write(&record).map_err(Error::Sync)?;
        self.last_seq = seq;
        apply_record(&self.marked, batches, APPLIED_KEY, seq)?;
        if let Some(closed) = closed {
            checkpoint(&self.store, &self.dir, self.durability, closed)?;
        }
        Ok(())
    }
}
