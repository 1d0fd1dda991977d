//! Opening a domain's sled store, its key layout helpers, and the one codec for every record
//! the workers persist.
//!
//! A record is a format-version byte followed by its bincode 1.3 encoding; numeric keys are
//! big-endian so sled's byte order is numeric order. This module is the only place that
//! turns records into bytes and back, and it checks the version of everything it reads.
//! It holds no domain state and decides nothing about the shop.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The format version written in front of every record. Bump it, and teach `decode` the old
/// one, whenever a persisted record changes shape.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled refuses to open a store that another process holds, which is the usual cause.
    #[error("cannot open the store at {} (is another shop-worker using this data dir?)", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the store failed")]
    Sled(#[from] sled::Error),
    #[error("flushing the store failed: {0}")]
    Flush(String),
    #[error("cannot encode a record")]
    Encode(#[source] bincode::Error),
    #[error("record {key} has format version {found}; this worker reads version {FORMAT_VERSION}")]
    UnknownVersion { key: String, found: u8 },
    #[error("record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// What each flush must survive before an effect is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// sled's flush plus `fdatasync` of its log file: survives power loss (the default).
    PowerSafe,
    /// sled's flush only (`sync_file_range`): survives kill -9 of the worker, not power loss.
    ProcessCrash,
}

/// An open store, and the file to `fdatasync` after each flush when it must be power-safe.
#[derive(Debug, Clone)]
pub struct Opened {
    pub db: sled::Db,
    pub sync_file: Option<std::sync::Arc<std::fs::File>>,
}

/// Opens (creating when missing) the sled store at `path`.
pub fn open(path: &Path, durability: Durability) -> Result<Opened, Error> {
    let db = sled::Config::new().path(path).open().map_err(|source| Error::Open { path: path.to_owned(), source })?;
    let sync_file = match durability {
        // sled 0.34 keeps its log in the file `db` of the store's folder.
        Durability::PowerSafe => Some(std::sync::Arc::new(
            std::fs::File::open(path.join("db"))
                .map_err(|e| Error::Flush(format!("cannot open the store's log: {e}")))?,
        )),
        Durability::ProcessCrash => None,
    };
    Ok(Opened { db, sync_file })
}

/// A store that lives only as long as the process, for tests.
#[cfg(test)]
pub fn temporary() -> Opened {
    let db = sled::Config::new()
        .temporary(true)
        .open()
        .expect("a temporary sled store opens unless the machine is out of disk");
    Opened { db, sync_file: None }
}

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![FORMAT_VERSION];
    bincode::serialize_into(&mut bytes, record).map_err(Error::Encode)?;
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            bincode::deserialize(body).map_err(|err| Error::Corrupt { key: describe_key(key), reason: err.to_string() })
        }
        Some((&found, _)) => Err(Error::UnknownVersion { key: describe_key(key), found }),
        None => Err(Error::Corrupt { key: describe_key(key), reason: "empty value".to_owned() }),
    }
}

/// Every record under `prefix`, decoded, in key order.
pub fn scan<T: DeserializeOwned>(db: &sled::Db, prefix: &[u8]) -> Result<Vec<T>, Error> {
    db.scan_prefix(prefix)
        .map(|entry| {
            let (key, value) = entry?;
            decode(&key, &value)
        })
        .collect()
}

/// The durability point of one store: nothing is reported to the engine or answered to an
/// admin call before [`Flusher::flush`] returns.
///
/// One thread per store does every flush, and one flush answers every caller that asked
/// while the previous one ran (group commit). Callers never flush sled themselves: many
/// concurrent flushes are slow on this disk, and sled 0.34's `flush_async` runs on sled's own
/// small I/O pool, which concurrent callers can exhaust until the store deadlocks.
///
/// Dropping the flusher waits for its thread, which holds a handle to the store: once the
/// domain is dropped, its store is closed and can be opened again at once.
#[derive(Debug)]
pub struct Flusher {
    requests: Option<std::sync::mpsc::Sender<FlushRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type FlushRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

impl Flusher {
    pub fn start(store: &Opened, name: &str) -> Result<Flusher, Error> {
        let (db, sync_file) = (store.db.clone(), store.sync_file.clone());
        let (requests, pending) = std::sync::mpsc::channel::<FlushRequest>();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-flusher"))
            .spawn(move || {
                // Ends when every handle to the flusher is dropped.
                while let Ok(first) = pending.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(pending.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string()).and_then(|()| match &sync_file {
                        Some(file) => file.sync_data().map_err(|e| format!("fdatasync: {e}")),
                        None => Ok(()),
                    });
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .map_err(|e| Error::Flush(e.to_string()))?;
        Ok(Flusher { requests: Some(requests), thread: Some(thread) })
    }

    pub async fn flush(&self) -> Result<(), Error> {
        let stopped = || Error::Flush("the flusher has stopped".to_owned());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.as_ref().ok_or_else(stopped)?.send(reply).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(Error::Flush)
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
    fn a_store_held_by_someone_else_does_not_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("inventory");
        let _held = open(&path, Durability::PowerSafe).expect("first open succeeds");
        let second = open(&path, Durability::PowerSafe);
        assert!(matches!(second, Err(Error::Open { .. })), "{second:?}");
    }
}
