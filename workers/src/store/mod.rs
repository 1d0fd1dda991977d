//! The worker process's one sled store as its domains see it: opening it (and moving a data
//! dir of the older per-domain layout into it, `migrate.rs`), a tree per domain sharing one
//! group-commit [`Flusher`], their key layout helpers, and their errors. Durability, the
//! flusher and the codec are the shared toolkit's (`shop-durable`), the same the engine uses.
//!
//! Why one store: a process serving inventory, payment and notification used to sync three
//! sled logs, one per domain, for the same saga; with one log, one sync covers every domain's
//! writes since the last one (design: group commit across domains).
//!
//! A record is a format-version byte followed by its bincode 1.3 encoding; numeric keys are
//! big-endian so sled's byte order is numeric order. New records are written at the shared
//! codec's current version; records written at the workers' version 1 (bincode's fixed-width
//! little-endian default) still decode. This module holds no domain state and decides
//! nothing about the shop.

use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_durable::codec::{self, Family};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod migrate;

pub use shop_durable::{Durability, Flusher, Opened};

/// The folder of the process's store under the data dir (one sled log for every domain).
pub const STORE_DIR: &str = "store";

/// The folder of the store's write-ahead log, inside the store's (`shop_durable::wal`).
pub const WAL_DIR: &str = "wal";

/// The format version written in front of every new record (the shared codec's).
pub const FORMAT_VERSION: u8 = codec::FORMAT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled refuses to open a store that another process holds, which is the usual cause.
    #[error("cannot open the store at {} (is another shop-worker using this data dir?)", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: shop_durable::Error,
    },
    #[error("the store failed")]
    Sled(#[from] sled::Error),
    #[error("flushing the store failed: {0}")]
    Flush(#[from] shop_durable::Error),
    #[error("the flusher thread could not start: {0}")]
    FlusherThread(#[source] std::io::Error),
    #[error("cannot encode a record")]
    Encode(#[source] codec::Error),
    #[error("record {key} has format version {found}; this worker reads versions 1 and {FORMAT_VERSION}")]
    UnknownVersion { key: String, found: u8 },
    #[error("cannot move the store of the older layout at {} into the worker's store: {reason}", path.display())]
    Migration { path: PathBuf, reason: String },
    #[error("record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Opens (creating when missing) the sled store at `path`.
pub fn open(path: &Path, durability: Durability) -> Result<Opened, Error> {
    shop_durable::open(path, shop_durable::OpenOptions::new(durability))
        .map_err(|source| Error::Open { path: path.to_owned(), source })
}

/// The worker process's store: one sled log and one flusher for every domain it serves.
#[derive(Debug)]
pub struct WorkerStore {
    data_dir: PathBuf,
    opened: Opened,
    flusher: Arc<Flusher>,
}

impl WorkerStore {
    /// Opens (creating when missing) the store under `data_dir` and starts its flusher.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<WorkerStore, Error> {
        let path = data_dir.join(STORE_DIR);
        let opened = open(&path, durability)?;
        let flusher = Arc::new(Flusher::start_logged(&opened, &path.join(WAL_DIR), durability, "worker")?);
        Ok(WorkerStore { data_dir: data_dir.to_owned(), opened, flusher })
    }

    /// The tree of `domain`, with any data of the older per-domain layout moved into it first.
    pub fn domain(&self, domain: &str) -> Result<DomainStore, Error> {
        let tree = self.opened.db.open_tree(domain)?;
        migrate::from_per_domain_dir(&self.data_dir, domain, &tree, &self.opened)?;
        Ok(DomainStore { tree, flusher: Arc::clone(&self.flusher), store: self.opened.clone() })
    }
}

/// One domain's part of the worker's store: its own tree (its own key space) and the flusher
/// it shares with every other domain of the process.
#[derive(Debug, Clone)]
pub struct DomainStore {
    pub tree: sled::Tree,
    pub flusher: Arc<Flusher>,
    /// The whole store, to sync a write made to the tree directly (not through the flusher,
    /// whose flushes cover only what it was handed).
    pub store: Opened,
}

/// Waits for `flusher` to make `domain`'s writes durable, timing it for `/metrics`.
pub async fn flush(flusher: &Flusher, domain: &str) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let flushed = flusher.flush().await;
    crate::metrics::flushed(domain, started.elapsed());
    Ok(flushed?)
}

/// A domain store that lives only as long as the process, for tests.
#[cfg(test)]
pub fn temporary() -> DomainStore {
    let opened = Opened::temporary().expect("a temporary sled store opens unless the machine is out of disk");
    let flusher = Arc::new(Flusher::start(&opened, "test").expect("the flusher thread starts"));
    DomainStore { tree: opened.db.open_tree("test").expect("a temporary tree opens"), flusher, store: opened }
}

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, Error> {
    codec::encode(record).map_err(Error::Encode)
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    codec::decode(Family::Workers, bytes).map_err(|error| match error {
        codec::Error::UnknownVersion { version, .. } => {
            Error::UnknownVersion { key: describe_key(key), found: version }
        }
        codec::Error::Empty => Error::Corrupt { key: describe_key(key), reason: "empty value".to_owned() },
        codec::Error::Corrupt(err) => Error::Corrupt { key: describe_key(key), reason: err.to_string() },
    })
}

/// Every record under `prefix`, decoded, in key order.
pub fn scan<T: DeserializeOwned>(db: &sled::Tree, prefix: &[u8]) -> Result<Vec<T>, Error> {
    db.scan_prefix(prefix)
        .map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
        .collect()
}

/// A key made of a one-byte prefix and a big-endian number, so keys sort numerically.
pub fn number_key(prefix: u8, number: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&number.to_be_bytes());
    key
}

/// A key made of a one-byte prefix and a text (an order id, an idempotency key).
pub fn text_key(prefix: u8, text: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + text.len());
    key.push(prefix);
    key.extend_from_slice(text.as_bytes());
    key
}

fn describe_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: i64,
    }

    #[test]
    fn records_round_trip_with_their_version_byte() {
        let sample = Sample { name: "beans".to_owned(), count: -3 };
        let bytes = encode(&sample).expect("encodes");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(b"k", &bytes).expect("decodes"), sample);
    }

    #[test]
    fn a_record_written_by_an_older_worker_still_decodes() {
        // What the workers wrote before the shared codec: version 1, then bincode's default
        // encoding (fixed-width, little-endian).
        let sample = Sample { name: "beans".to_owned(), count: -3 };
        let mut old = vec![1u8];
        old.extend(bincode::serialize(&sample).expect("encodes"));
        assert_eq!(decode::<Sample>(b"k", &old).expect("decodes"), sample);
        let new = encode(&sample).expect("encodes");
        assert!(new.len() < old.len(), "new records are varints");
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut bytes = encode(&Sample { name: "x".to_owned(), count: 1 }).expect("encodes");
        bytes[0] = FORMAT_VERSION + 1;
        assert!(matches!(decode::<Sample>(b"k", &bytes), Err(Error::UnknownVersion { .. })));
        assert!(matches!(decode::<Sample>(b"k", &[]), Err(Error::Corrupt { .. })));
        assert!(matches!(decode::<Sample>(b"k", &[FORMAT_VERSION, 0xff]), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn number_keys_sort_numerically() {
        assert!(number_key(b'p', 2) < number_key(b'p', 10));
        assert!(number_key(b'p', 255) < number_key(b'p', 256));
    }

    #[test]
    fn every_domain_is_a_tree_of_one_store_with_one_flusher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = WorkerStore::open(dir.path(), Durability::PowerSafe).expect("opens");
        let (inventory, payment) = (store.domain("inventory").expect("opens"), store.domain("payment").expect("opens"));
        assert!(Arc::ptr_eq(&inventory.flusher, &payment.flusher), "one flusher, so one sync, for both");
        inventory.tree.insert(b"k", b"inventory").expect("writes");
        assert_eq!(payment.tree.get(b"k").expect("reads"), None, "each domain has its own key space");
        let folders: Vec<_> =
            std::fs::read_dir(dir.path()).expect("lists").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(folders, vec![std::ffi::OsString::from(STORE_DIR)]);
        let again = WorkerStore::open(dir.path(), Durability::PowerSafe);
        assert!(matches!(again, Err(Error::Open { .. })), "one process per data dir: {again:?}");
    }

    #[test]
    fn a_store_held_by_someone_else_does_not_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("inventory");
        let _held = open(&path, Durability::PowerSafe).expect("first open succeeds");
        let second = open(&path, Durability::PowerSafe);
        assert!(matches!(second, Err(Error::Open { .. })), "{second:?}");
    }
}
