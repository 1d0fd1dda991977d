//! One log for every tree of a store, for a single writer: the workers' [`crate::Flusher`],
//! which logs a whole group of batches (every domain's) as one record and `fdatasync`s it
//! before it answers the group. The log's applier thread (`applier.rs`, the same as
//! [`super::LoggedTree`]'s) applies the records to their trees afterwards, a window's worth
//! at a time, coalesced by key (a product's stock record, rewritten by every order for it,
//! reaches sled once per window), without pinning sled's log. There is no overlay: the
//! flusher's callers keep what they wrote in memory and read the store only at start-up.
//!
//! The record's number is kept under [`APPLIED_KEY`] in the store's default tree, written
//! after the records' writes; recovery is the same as [`super::LoggedTree`]'s. Writes made
//! to the trees directly, not through [`DbLog::write`], are not logged: their writer makes
//! them durable with [`Opened::sync`] before anything is logged after them.
//!
//! This module must never decide when to commit (the flusher's group commit does).

use super::applier::{Applier, ApplierThread};
use super::segment::{decode_ops, encode_record, push_bytes, Log, TREE};
use super::{apply_record, stored_seq, LogBatch, WalOptions};
use crate::open::{Durability, Error, Opened};
use std::path::Path;

/// The key, in the store's default tree, of the last record the trees hold.
pub const APPLIED_KEY: &[u8] = b"wal-applied";

pub(crate) struct DbLog {
    log: Log,
    last_seq: u64,
    applier: ApplierThread,
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
        let applier = ApplierThread::spawn(Applier {
            store: store.clone(),
            marked,
            applied_key: APPLIED_KEY.to_vec(),
            dir: dir.to_owned(),
            durability,
            overlay: None,
            window: options.apply,
        })?;
        Ok(DbLog { log, last_seq, applier })
    }

    /// Logs `writes` as one record and makes it durable, then hands it to the applier. A
    /// failure here or in the applier leaves the log unusable: every later write fails.
    pub(crate) fn write(&mut self, writes: Vec<(sled::Tree, LogBatch)>) -> Result<(), Error> {
        self.applier.check()?;
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
        let mut record = Vec::with_capacity(ops.len() + 16);
        encode_record(&mut record, &ops, seq);
        self.applier.write(&mut self.log, record, seq)?;
        self.last_seq = seq;
        Ok(())
    }
}
