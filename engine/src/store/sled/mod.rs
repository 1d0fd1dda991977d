//! The sled backend of the storage seam: every run's events, its summary and the engine's
//! indexes in one sled tree with key prefixes, so that one batch is one atomic write.
//!
//! Key layout (IDs never contain a NUL byte, numbers are big-endian so keys sort by them):
//! - `h` id 0x00 seq      -> the events of one transition (all of the run's in one batch), the
//!   first numbered `seq`, while the run is in flight
//! - `r` id               -> the run's [`RunSummary`]; once the run is out of flight, its packed
//!   record instead: the summary and every transition's record in one value (`pack.rs`), the
//!   run's `h` keys removed in the same batch
//! - `a` id               -> () while the run is in flight (what start-up replays)
//! - `s` status id        -> () an index of runs by status
//! - `d` name 0x00 version -> a registered definition's TOML source
//! - `k` digest           -> a [`TokenRecord`]: an API token, keyed by the SHA-256 digest of
//!   its secret (the secret itself is never stored)
//! - `p` shard position    -> the position index: one record per batch, keyed by its first
//!   event's position (shard as u32, position as u64), listing its appends
//!   ([`super::position`])
//! - `j` job id           -> a redrive job (`shop_types::redrive::RedriveJob`), rewritten
//!   whole as it progresses
//! - `m` name             -> the engine's own settings, e.g. `m task-token-key`: the secret
//!   key that signs task tokens, created once (see [`HistoryStore::task_token_key`]), and
//!   `m wal-applied`, the number of the last write-ahead log record the tree holds
//!
//! Ownership: a sled store has one owner (the process that opened it: sled locks it) and one
//! shard, [`ShardId::SOLE`], at epoch 0; it ignores the epochs a batch carries.
//!
//! Conditional appends without a read per append: this backend is the single writer of its
//! store, so it keeps the last sequence number of every run it has touched and that is still
//! in flight, in memory. A run's number is read from the store the first time the run is
//! touched (its last history record), and dropped when a batch's summary says the run is
//! no longer in flight. A batch is checked against these numbers, under the same lock that
//! applies it, before anything is applied.
//!
//! Durability: every write goes through the store's write-ahead log (`shop_durable::wal`,
//! folder `wal` in the store's). `apply` stages the batch there (every read of this store
//! sees it at once); `sync` writes its record and, power-safe, `fdatasync`s it; sled gets
//! the batch after that, on the log's applier thread. A store an older engine wrote has no
//! log and opens as it is. This module must never decide anything about workflows.

use super::{
    Epoch, Error, HistoryStore, IndexedAppend, PositionedEvent, RunSummary, ShardId, TokenRecord, WriteBatch,
    TASK_TOKEN_KEY_LEN, TOKEN_DIGEST_LEN,
};
use crate::codec;
use shop_durable::{Durability, LogBatch, LoggedTree, OpenOptions, Opened, WalOptions};
use shop_types::api::WorkflowStatus;
use shop_types::history::Event;
use shop_types::WorkflowId;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

mod pack;

const TREE: &str = "engine";
const HISTORY: u8 = b'h';
const RUN: u8 = b'r';
const ACTIVE: u8 = b'a';
const BY_STATUS: u8 = b's';
const DEFINITION: u8 = b'd';
const TOKEN: u8 = b'k';
const META: u8 = b'm';
const POSITION: u8 = b'p';
const REDRIVE: u8 = b'j';
/// The meta record holding the key that signs task tokens.
const TASK_TOKEN_KEY: &[u8] = b"task-token-key";
/// The meta record holding the number of the last write-ahead log record the tree holds.
const WAL_APPLIED: &[u8] = b"wal-applied";
/// The write-ahead log's folder inside the store's.
const WAL_DIR: &str = "wal";

pub struct SledStore {
    opened: Opened,
    /// The one tree, every write logged first; its sync is the store's.
    log: LoggedTree,
    /// The last sequence number of each in-flight run touched since the store was opened.
    /// Its lock also serializes applies, so a check and its apply are one step.
    last_seq: Mutex<HashMap<WorkflowId, u64>>,
}

impl SledStore {
    /// Opens (or creates) the store. `cache_bytes` bounds sled's page cache (sled's own
    /// default, 1 GiB, when `None`): the engine's working set is its in-flight runs, so a
    /// small cache keeps memory flat however many finished runs the store holds.
    pub fn open(dir: &Path, durability: Durability, cache_bytes: Option<u64>) -> Result<SledStore, Error> {
        let options = OpenOptions { durability, cache_bytes, high_throughput: true };
        let opened = shop_durable::open(dir, options)?;
        let tree = opened.db.open_tree(TREE)?;
        let applied_key = key(META, WAL_APPLIED, &[]);
        let log = LoggedTree::open(&dir.join(WAL_DIR), &opened, tree, &applied_key, durability, WalOptions::default())?;
        Ok(SledStore { opened, log, last_seq: Mutex::new(HashMap::new()) })
    }

    /// The sequence number `id`'s history ends at, from its last record or its packed record
    /// (0 when it has none), and the packed record when it is packed.
    fn stored_last_seq(&self, id: &WorkflowId) -> Result<(u64, pack::Stored), Error> {
        if let Some((key, bytes)) = self.log.last_with_prefix(history_prefix(id))? {
            let last = decode_events(&key, &bytes)?.last().map_or(0, |event| event.seq);
            return Ok((last, pack::Stored { packed: None }));
        }
        match pack::packed_record(&self.log, id)? {
            Some(bytes) => Ok((pack::last_seq_of_packed(id, &bytes)?, pack::Stored { packed: Some(bytes) })),
            None => Ok((0, pack::Stored { packed: None })),
        }
    }

    fn log_batch(batch: &WriteBatch) -> LogBatch {
        let mut out = LogBatch::default();
        for append in batch.appends() {
            out.insert(history_key(&append.run, append.after + 1), append.record.as_slice());
        }
        for put in batch.runs() {
            let raw = put.run.as_str().as_bytes();
            out.insert(key(RUN, raw, &[]), put.record.as_slice());
            if let Some(previous) = put.previous {
                out.remove(key(BY_STATUS, &[status_byte(previous)], raw));
            }
            out.insert(key(BY_STATUS, &[status_byte(put.status)], raw), []);
            if put.in_flight {
                out.insert(key(ACTIVE, raw, &[]), []);
            } else {
                out.remove(key(ACTIVE, raw, &[]));
            }
        }
        for (shard, first, _, record) in batch.index() {
            out.insert(position_key(shard, first), record);
        }
        for (digest, record) in batch.tokens() {
            out.insert(key(TOKEN, digest, &[]), record.as_slice());
        }
        for (id, record) in batch.redrives() {
            out.insert(key(REDRIVE, id.as_bytes(), &[]), record.as_slice());
        }
        for (name, version, record) in batch.definitions() {
            let mut k = key(DEFINITION, name.as_bytes(), &[0]);
            k.extend_from_slice(&version.to_be_bytes());
            out.insert(k, record.as_slice());
        }
        out
    }
}

impl HistoryStore for SledStore {
    fn shards(&self) -> Vec<(ShardId, Epoch)> {
        vec![(ShardId::SOLE, Epoch(0))]
    }

    fn shard_count(&self) -> u32 {
        1
    }

    fn fences_epochs(&self) -> bool {
        false
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), Error> {
        // A poisoned lock only means a panic elsewhere mid-apply; the map holds numbers that
        // were true when written, and the check below still guards the store.
        let mut last_seq = self.last_seq.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Check every expectation first, chaining appends to one run within the batch.
        let mut pending: HashMap<&WorkflowId, u64> = HashMap::new();
        // Runs not in flight in the map: whether the store holds them packed.
        let mut stored: HashMap<&WorkflowId, pack::Stored> = HashMap::new();
        for append in batch.appends() {
            let found = match pending.get(&append.run).or_else(|| last_seq.get(&append.run)) {
                Some(&seq) => seq,
                None => {
                    let (seq, packed) = self.stored_last_seq(&append.run)?;
                    stored.insert(&append.run, packed);
                    seq
                }
            };
            if found != append.after {
                return Err(Error::Conflict { run: append.run.clone(), expected: append.after, found });
            }
            pending.insert(&append.run, append.last);
        }
        for put in batch.runs() {
            // A run in the map is in flight, so not packed; any other one may be.
            if !last_seq.contains_key(&put.run) && !stored.contains_key(&put.run) {
                stored.insert(&put.run, pack::Stored { packed: pack::packed_record(&self.log, &put.run)? });
            }
        }
        let mut out = Self::log_batch(&batch);
        pack::pack_and_unpack(&self.log, &batch, &stored, &mut out)?;
        self.log.apply(out);
        for (run, seq) in pending {
            last_seq.insert(run.clone(), seq);
        }
        for put in batch.runs().iter().filter(|put| !put.in_flight) {
            last_seq.remove(&put.run);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(self.log.sync()?)
    }

    fn task_token_key(&self) -> Result<[u8; TASK_TOKEN_KEY_LEN], Error> {
        let key = key(META, TASK_TOKEN_KEY, &[]);
        if let Some(stored) = self.log.get(&key)? {
            return <[u8; TASK_TOKEN_KEY_LEN]>::try_from(stored.as_ref()).map_err(|_| Error::BadLength {
                key: "m task-token-key".into(),
                len: stored.len(),
                expected: TASK_TOKEN_KEY_LEN,
            });
        }
        // Written once, at start-up, before the core takes the store: not a turn's write.
        let mut fresh = [0u8; TASK_TOKEN_KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
        let mut write = LogBatch::default();
        write.insert(key, fresh);
        self.log.apply(write);
        self.sync()?;
        Ok(fresh)
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self.opened.db.size_on_disk()? + self.log.size_on_disk()?)
    }

    fn last_position(&self, shard: ShardId) -> Result<u64, Error> {
        let Some((key, bytes)) = self.log.last_with_prefix(position_prefix(shard))? else {
            return Ok(0);
        };
        let appends: Vec<IndexedAppend> = decode(&key, &bytes)?;
        let count: u64 = appends.iter().map(|append| u64::from(append.count)).sum();
        Ok((position_of(&key)? + count).saturating_sub(1))
    }

    fn events_after(&self, shard: ShardId, after: u64, limit: usize) -> Result<Vec<PositionedEvent>, Error> {
        let prefix = position_prefix(shard);
        let from = position_key(shard, after.saturating_add(1));
        // The record holding `after + 1` is keyed at or before it: start there.
        let start = match self.log.last_between(&prefix, &from)? {
            Some((key, _)) => key.to_vec(),
            None => from,
        };
        let mut out = Vec::new();
        // Packed runs read once for all of their transitions in this page.
        let mut packed_runs = HashMap::new();
        for entry in self.log.range_within(&prefix, &start) {
            if out.len() == limit {
                break;
            }
            let (key, bytes) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let appends: Vec<IndexedAppend> = decode(&key, &bytes)?;
            let events_of = |append: &IndexedAppend| {
                let key = history_key(&append.run, append.first_seq);
                match pack::transition_record(&self.log, &append.run, append.first_seq, &mut packed_runs)? {
                    Some(bytes) => decode_events(&key, &bytes),
                    None => Err(Error::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        source: codec::Error::Empty,
                    }),
                }
            };
            super::position::positioned(position_of(&key)?, &appends, after, events_of, &mut out, limit)?;
        }
        Ok(out)
    }

    fn run(&self, id: &WorkflowId) -> Result<Option<RunSummary>, Error> {
        let key = pack::run_key(id);
        self.log.get(&key)?.map(|bytes| decode(&key, pack::summary_bytes(id, &bytes)?)).transpose()
    }

    fn history(&self, id: &WorkflowId) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        for transition in pack::transitions(&self.log, id)? {
            events.extend(decode_events(&history_key(id, transition.first_seq), &transition.record)?);
        }
        Ok(events)
    }

    fn first_event(&self, id: &WorkflowId) -> Result<Option<Event>, Error> {
        Ok(self.start_events(id)?.into_iter().next())
    }

    fn start_events(&self, id: &WorkflowId) -> Result<Vec<Event>, Error> {
        let key = history_key(id, 1);
        match pack::transition_record(&self.log, id, 1, &mut HashMap::new())? {
            Some(bytes) => decode_events(&key, &bytes),
            None => Ok(Vec::new()),
        }
    }

    fn in_flight(&self, shard: ShardId) -> Result<Vec<WorkflowId>, Error> {
        if shard != ShardId::SOLE {
            return Ok(Vec::new());
        }
        self.log
            .scan_prefix([ACTIVE])
            .map(|entry| {
                let (key, _) = entry?;
                id_from(&key, &key[1..])
            })
            .collect()
    }

    fn list_ids(
        &self,
        status: Option<WorkflowStatus>,
        cursor: Option<&WorkflowId>,
        limit: usize,
    ) -> Result<(Vec<WorkflowId>, bool), Error> {
        let prefix = match status {
            Some(status) => vec![BY_STATUS, status_byte(status)],
            None => vec![RUN],
        };
        let start = match cursor {
            Some(cursor) => {
                let mut start = prefix.clone();
                start.extend_from_slice(cursor.as_str().as_bytes());
                start.push(0);
                start
            }
            None => prefix.clone(),
        };
        let mut ids = Vec::new();
        for entry in self.log.range_within(&prefix, &start) {
            let (key, _) = entry?;
            if !key.starts_with(&prefix) {
                return Ok((ids, false));
            }
            if ids.len() == limit {
                return Ok((ids, true));
            }
            ids.push(id_from(&key, &key[prefix.len()..])?);
        }
        Ok((ids, false))
    }

    fn redrives(&self) -> Result<Vec<shop_types::redrive::RedriveJob>, Error> {
        self.log
            .scan_prefix([REDRIVE])
            .map(|entry| {
                let (key, bytes) = entry?;
                codec::decode(&bytes)
                    .map_err(|source| Error::Corrupt { key: String::from_utf8_lossy(&key).into_owned(), source })
            })
            .collect()
    }

    fn tokens(&self) -> Result<Vec<([u8; TOKEN_DIGEST_LEN], TokenRecord)>, Error> {
        self.log
            .scan_prefix([TOKEN])
            .map(|entry| {
                let (key, bytes) = entry?;
                let digest = key[1..].try_into().map_err(|_| Error::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source: codec::Error::Empty,
                })?;
                let record = super::decode_token(&bytes)
                    .map_err(|source| Error::Corrupt { key: String::from_utf8_lossy(&key).into_owned(), source })?;
                Ok((digest, record))
            })
            .collect()
    }

    fn definitions(&self) -> Result<Vec<(String, u32, String)>, Error> {
        self.log
            .scan_prefix([DEFINITION])
            .map(|entry| {
                let (key, bytes) = entry?;
                let source: String = decode(&key, &bytes)?;
                let body = &key[1..];
                let corrupt =
                    || Error::Corrupt { key: String::from_utf8_lossy(&key).into_owned(), source: codec::Error::Empty };
                let split = body.len().checked_sub(5).ok_or_else(corrupt)?;
                let name = String::from_utf8(body[..split].to_vec()).map_err(|_| corrupt())?;
                let version_bytes: [u8; 4] = body[split + 1..].try_into().map_err(|_| corrupt())?;
                Ok((name, u32::from_be_bytes(version_bytes), source))
            })
            .collect()
    }
}

/// A status's one-byte code, in keys (sled) and columns (PostgreSQL).
pub(super) fn status_byte(status: WorkflowStatus) -> u8 {
    match status {
        WorkflowStatus::Running => b'R',
        WorkflowStatus::Completed => b'C',
        WorkflowStatus::Compensated => b'X',
        WorkflowStatus::Failed => b'F',
        WorkflowStatus::Terminated => b'T',
    }
}

fn key(prefix: u8, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + a.len() + b.len());
    key.push(prefix);
    key.extend_from_slice(a);
    key.extend_from_slice(b);
    key
}

fn history_prefix(id: &WorkflowId) -> Vec<u8> {
    key(HISTORY, id.as_str().as_bytes(), &[0])
}

fn position_prefix(shard: ShardId) -> Vec<u8> {
    key(POSITION, &shard.0.to_be_bytes(), &[])
}

fn position_key(shard: ShardId, position: u64) -> Vec<u8> {
    key(POSITION, &shard.0.to_be_bytes(), &position.to_be_bytes())
}

/// The position an index record's key names.
fn position_of(key: &[u8]) -> Result<u64, Error> {
    key.get(5..)
        .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source: codec::Error::Empty })
}

fn history_key(id: &WorkflowId, seq: u64) -> Vec<u8> {
    let mut key = history_prefix(id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[cfg(test)]
impl SledStore {
    /// Puts raw bytes under a token digest, as an older engine may have left them.
    pub(crate) fn put_raw_token(&self, digest: &[u8; TOKEN_DIGEST_LEN], bytes: &[u8]) -> Result<(), Error> {
        let mut write = LogBatch::default();
        write.insert(key(TOKEN, digest, &[]), bytes);
        self.log.apply(write);
        Ok(())
    }
}

fn decode_events(key: &[u8], bytes: &[u8]) -> Result<Vec<Event>, Error> {
    codec::decode_events(bytes)
        .map_err(|source| Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source })
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    codec::decode(bytes).map_err(|source| Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source })
}

fn id_from(key: &[u8], raw: &[u8]) -> Result<WorkflowId, Error> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|text| WorkflowId::parse(text).ok())
        .ok_or_else(|| Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source: codec::Error::Empty })
}
