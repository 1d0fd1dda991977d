//! The history store: every run's events, its summary and the engine's indexes, in one sled
//! tree with key prefixes, so that one transition is one atomic `apply_batch`.
//!
//! Key layout (IDs never contain a NUL byte, numbers are big-endian so keys sort by them):
//! - `h` id 0x00 seq      -> the events of one transition, the first numbered `seq`
//! - `r` id               -> the run's [`RunSummary`]
//! - `a` id               -> () while the run is not terminal (what start-up replays)
//! - `s` status id        -> () an index of runs by status
//! - `d` name 0x00 version -> a registered definition's TOML source
//! - `k` digest           -> a [`TokenRecord`]: an API token, keyed by the SHA-256 digest of
//!   its secret (the secret itself is never stored)
//! - `m` name             -> the engine's own settings, e.g. `m task-token-key`: the secret
//!   key that signs task tokens, created once (see [`Store::task_token_key`])
//!
//! This module owns durability: [`Store::commit`] returns only once the batch is flushed
//! (and, power-safe, `fdatasync`ed). It must never decide anything about workflows.

use crate::codec;
use serde::{Deserialize, Serialize};
use shop_types::api::WorkflowStatus;
use shop_types::auth::Role;
use shop_types::history::Event;
use shop_types::{JsonText, QueueName, WorkflowId};
use std::fs::File;
use std::path::Path;

const TREE: &str = "engine";
const HISTORY: u8 = b'h';
const RUN: u8 = b'r';
const ACTIVE: u8 = b'a';
const BY_STATUS: u8 = b's';
const DEFINITION: u8 = b'd';
const TOKEN: u8 = b'k';
const META: u8 = b'm';
/// The meta record holding the key that signs task tokens.
const TASK_TOKEN_KEY: &[u8] = b"task-token-key";
/// Bytes of the task-token signing key: as many as SHA-256 digests, the MAC's hash.
pub const TASK_TOKEN_KEY_LEN: usize = 32;
/// Length of a token's key after its prefix: a SHA-256 digest.
pub const TOKEN_DIGEST_LEN: usize = 32;

/// How far a commit must reach before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// sled's flush plus `fdatasync` of its log file: survives power loss (the default).
    PowerSafe,
    /// sled's flush only (`sync_file_range`): survives kill -9 of the engine, not power loss.
    ProcessCrash,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::PowerSafe => "power-safe",
            Durability::ProcessCrash => "process-crash",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: record {key} is unreadable: {source}")]
    Corrupt { key: String, source: codec::Error },
    #[error("store: encoding a record failed: {0}")]
    Encode(codec::Error),
    #[error("store: syncing the data file failed: {0}")]
    Sync(std::io::Error),
    #[error("store: record {key} is {len} bytes long; expected {expected}")]
    BadLength { key: String, len: usize, expected: usize },
}

/// What the API shows of a run without reading its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub workflow_type: String,
    pub definition_version: u32,
    pub status: WorkflowStatus,
    pub created_at_ms: u64,
    pub closed_at_ms: Option<u64>,
    pub reason: Option<String>,
    pub output: Option<JsonText>,
}

/// An API token as stored: everything about it except its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The queues a worker token may serve; empty for other roles.
    pub queues: Vec<QueueName>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked: bool,
}

pub struct Store {
    tree: sled::Tree,
    db: sled::Db,
    /// sled's log file, `fdatasync`ed after each flush when power-safe.
    log_file: Option<File>,
}

impl Store {
    /// Opens (or creates) the store. `cache_bytes` bounds sled's page cache (sled's own
    /// default, 1 GiB, when `None`): the engine's working set is its in-flight runs, so a
    /// small cache keeps memory flat however many finished runs the store holds.
    pub fn open(dir: &Path, durability: Durability, cache_bytes: Option<u64>) -> Result<Store, Error> {
        let mut config = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput);
        if let Some(bytes) = cache_bytes {
            config = config.cache_capacity(bytes);
        }
        let db = config.open()?;
        let tree = db.open_tree(TREE)?;
        let log_file = match durability {
            Durability::PowerSafe => Some(File::open(dir.join("db")).map_err(Error::Sync)?),
            Durability::ProcessCrash => None,
        };
        Ok(Store { tree, db, log_file })
    }

    /// The secret key that signs task tokens: read, or on first use drawn from the OS's
    /// random source and made durable before it is returned, so no token signed with it can
    /// outlive it. A token handed out before a crash must still verify after the restart,
    /// which is why the key lives in the store and not in memory only.
    pub fn task_token_key(&self) -> Result<[u8; TASK_TOKEN_KEY_LEN], Error> {
        let key = key(META, TASK_TOKEN_KEY, &[]);
        if let Some(stored) = self.tree.get(&key)? {
            return <[u8; TASK_TOKEN_KEY_LEN]>::try_from(stored.as_ref()).map_err(|_| Error::BadLength {
                key: "m task-token-key".into(),
                len: stored.len(),
                expected: TASK_TOKEN_KEY_LEN,
            });
        }
        let mut fresh = [0u8; TASK_TOKEN_KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
        self.tree.insert(key, fresh.as_slice())?;
        self.sync()?;
        Ok(fresh)
    }

    /// Applies `batch` atomically and returns once it is durable.
    pub fn commit(&self, batch: WriteBatch) -> Result<(), Error> {
        self.apply(batch)?;
        self.sync()
    }

    /// Applies `batch` atomically, in memory: readers see it, but it is not durable until
    /// a later [`Store::sync`] returns.
    pub fn apply(&self, batch: WriteBatch) -> Result<(), Error> {
        Ok(self.tree.apply_batch(batch.batch)?)
    }

    /// Makes everything applied so far durable: sled's flush, then `fdatasync` of its log
    /// when power-safe. sled writes its log in order, so one sync covers every earlier apply.
    pub fn sync(&self) -> Result<(), Error> {
        self.db.flush()?;
        if let Some(file) = &self.log_file {
            file.sync_data().map_err(Error::Sync)?;
        }
        Ok(())
    }

    pub fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self.db.size_on_disk()?)
    }

    pub fn run(&self, id: &WorkflowId) -> Result<Option<RunSummary>, Error> {
        let key = key(RUN, id.as_str().as_bytes(), &[]);
        self.tree.get(&key)?.map(|bytes| decode(&key, &bytes)).transpose()
    }

    pub fn history(&self, id: &WorkflowId) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        for entry in self.tree.scan_prefix(history_prefix(id)) {
            let (key, bytes) = entry?;
            events.extend(decode_events(&key, &bytes)?);
        }
        Ok(events)
    }

    /// The run's `WorkflowStarted` event (it carries the input).
    pub fn first_event(&self, id: &WorkflowId) -> Result<Option<Event>, Error> {
        let key = history_key(id, 1);
        match self.tree.get(&key)? {
            Some(bytes) => Ok(decode_events(&key, &bytes)?.into_iter().next()),
            None => Ok(None),
        }
    }

    /// IDs of runs that are not terminal: what start-up must replay.
    pub fn active_ids(&self) -> impl Iterator<Item = Result<WorkflowId, Error>> + '_ {
        self.tree.scan_prefix([ACTIVE]).map(|entry| {
            let (key, _) = entry?;
            id_from(&key, &key[1..])
        })
    }

    /// Up to `limit` run IDs after `cursor` (exclusive), in ID order, optionally only those
    /// with `status`. Also returns whether more may follow.
    pub fn list_ids(
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
        for entry in self.tree.range(start..) {
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

    /// Every stored token with the digest of its secret.
    pub fn tokens(&self) -> Result<Vec<([u8; TOKEN_DIGEST_LEN], TokenRecord)>, Error> {
        self.tree
            .scan_prefix([TOKEN])
            .map(|entry| {
                let (key, bytes) = entry?;
                let digest = key[1..].try_into().map_err(|_| Error::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source: codec::Error::Empty,
                })?;
                Ok((digest, decode(&key, &bytes)?))
            })
            .collect()
    }

    /// Every registered definition's `(name, version, source)`.
    pub fn definitions(&self) -> Result<Vec<(String, u32, String)>, Error> {
        self.tree
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

/// The writes of one or more transitions, applied together by [`Store::commit`].
#[derive(Default)]
pub struct WriteBatch {
    batch: sled::Batch,
    /// Records written.
    len: usize,
    /// History events among them.
    events: usize,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn events(&self) -> usize {
        self.events
    }

    /// Appends one transition's events as one record, keyed by the first one's number.
    pub fn append_events(&mut self, id: &WorkflowId, events: &[Event]) -> Result<(), Error> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let bytes = codec::encode_events(events).map_err(Error::Encode)?;
        self.batch.insert(history_key(id, first.seq), bytes);
        self.len += 1;
        self.events += events.len();
        Ok(())
    }

    /// Writes the run's summary and keeps the active and by-status indexes in step with it.
    /// Writes the run's summary and keeps the by-status index in step with it, and the active
    /// index with `in_flight` (a parked run is FAILED yet still in flight: it can resume).
    pub fn put_run(
        &mut self,
        id: &WorkflowId,
        summary: &RunSummary,
        previous: Option<WorkflowStatus>,
        in_flight: bool,
    ) -> Result<(), Error> {
        let raw = id.as_str().as_bytes();
        let bytes = codec::encode(summary).map_err(Error::Encode)?;
        self.batch.insert(key(RUN, raw, &[]), bytes);
        if let Some(previous) = previous {
            self.batch.remove(key(BY_STATUS, &[status_byte(previous)], raw));
        }
        self.batch.insert(key(BY_STATUS, &[status_byte(summary.status)], raw), &[]);
        if in_flight {
            self.batch.insert(key(ACTIVE, raw, &[]), &[]);
        } else {
            self.batch.remove(key(ACTIVE, raw, &[]));
        }
        self.len += 1;
        Ok(())
    }

    pub fn put_token(&mut self, digest: &[u8; TOKEN_DIGEST_LEN], record: &TokenRecord) -> Result<(), Error> {
        let bytes = codec::encode(record).map_err(Error::Encode)?;
        self.batch.insert(key(TOKEN, digest, &[]), bytes);
        self.len += 1;
        Ok(())
    }

    pub fn put_definition(&mut self, name: &str, version: u32, source: &str) -> Result<(), Error> {
        let bytes = codec::encode(&source).map_err(Error::Encode)?;
        let mut k = key(DEFINITION, name.as_bytes(), &[0]);
        k.extend_from_slice(&version.to_be_bytes());
        self.batch.insert(k, bytes);
        self.len += 1;
        Ok(())
    }
}

fn status_byte(status: WorkflowStatus) -> u8 {
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

fn history_key(id: &WorkflowId, seq: u64) -> Vec<u8> {
    let mut key = history_prefix(id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
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

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::history::EventKind;

    fn id(text: &str) -> WorkflowId {
        WorkflowId::parse(text).expect("valid id")
    }

    fn summary(status: WorkflowStatus) -> RunSummary {
        RunSummary {
            workflow_type: "w".into(),
            definition_version: 1,
            status,
            created_at_ms: 1,
            closed_at_ms: None,
            reason: None,
            output: None,
        }
    }

    #[test]
    fn a_committed_batch_reads_back_and_indexes_follow_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::PowerSafe, None).expect("opens");
        let (a, ab) = (id("a"), id("ab"));
        let mut batch = WriteBatch::default();
        for run in [&a, &ab] {
            let events: Vec<Event> = (1..=3)
                .map(|seq| Event {
                    seq,
                    at_ms: seq,
                    kind: EventKind::CancelRequested { reason: format!("{run}{seq}") },
                })
                .collect();
            batch.append_events(run, &events).expect("encodes");
            batch.put_run(run, &summary(WorkflowStatus::Running), None, true).expect("encodes");
        }
        store.commit(batch).expect("commits");
        // `a` is a prefix of `ab`: the NUL separator keeps their histories apart.
        assert_eq!(store.history(&a).expect("reads").len(), 3);
        assert_eq!(store.active_ids().count(), 2);

        let mut batch = WriteBatch::default();
        batch.put_run(&a, &summary(WorkflowStatus::Completed), Some(WorkflowStatus::Running), false).expect("encodes");
        store.commit(batch).expect("commits");
        let active: Vec<_> = store.active_ids().collect::<Result<_, _>>().expect("reads");
        assert_eq!(active, vec![ab.clone()]);
        let (running, more) = store.list_ids(Some(WorkflowStatus::Running), None, 10).expect("lists");
        assert_eq!((running, more), (vec![ab.clone()], false));
        let (page, more) = store.list_ids(None, None, 1).expect("lists");
        assert_eq!((page, more), (vec![a.clone()], true));
        let (page, more) = store.list_ids(None, Some(&a), 1).expect("lists");
        assert_eq!((page, more), (vec![ab], false));
    }

    #[test]
    fn tokens_round_trip_by_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::ProcessCrash, None).expect("opens");
        let record = TokenRecord {
            id: "tok_1".into(),
            name: "payments".into(),
            role: Role::Worker,
            queues: vec![QueueName::parse("payment").expect("valid")],
            created_at_ms: 5,
            expires_at_ms: Some(10),
            revoked: false,
        };
        let mut batch = WriteBatch::default();
        batch.put_token(&[7; TOKEN_DIGEST_LEN], &record).expect("encodes");
        store.commit(batch).expect("commits");
        assert_eq!(store.tokens().expect("reads"), vec![([7; TOKEN_DIGEST_LEN], record)]);
    }

    #[test]
    fn definitions_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::ProcessCrash, None).expect("opens");
        let mut batch = WriteBatch::default();
        batch.put_definition("order", 2, "name = \"order\"").expect("encodes");
        store.commit(batch).expect("commits");
        assert_eq!(store.definitions().expect("reads"), vec![("order".into(), 2, "name = \"order\"".into())]);
    }

    #[test]
    fn the_task_token_key_is_made_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let store = Store::open(dir.path(), Durability::ProcessCrash, None).expect("opens");
            let key = store.task_token_key().expect("creates the key");
            assert_eq!(store.task_token_key().expect("reads the key"), key, "made once");
            key
        };
        let store = Store::open(dir.path(), Durability::ProcessCrash, None).expect("reopens");
        assert_eq!(store.task_token_key().expect("reads the key"), first, "kept across a restart");
        assert_ne!(first, [0u8; TASK_TOKEN_KEY_LEN]);
        let other = tempfile::tempdir().expect("tempdir");
        let other = Store::open(other.path(), Durability::ProcessCrash, None).expect("opens");
        assert_ne!(other.task_token_key().expect("creates the key"), first, "each store has its own key");
    }
}
