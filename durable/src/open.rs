//! Opening a sled store with a [`Durability`], and syncing it.
//!
//! sled 0.34's `flush()` ends in `sync_file_range`, which survives a kill -9 but not a power
//! loss; power-safe also `fdatasync`s sled's log file, which this module opens once, beside
//! the store. It must never decide when to sync (that is the caller's group commit).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How far a write must reach before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// sled's flush plus `fdatasync` of its log file: survives power loss (the default).
    PowerSafe,
    /// sled's flush only (`sync_file_range`): survives kill -9 of the process, not power loss.
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
    /// sled refuses to open a store another process holds, which is the usual cause.
    #[error("cannot open the store at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot open the store's log {} to fdatasync it: {source}", path.display())]
    OpenLog { path: PathBuf, source: std::io::Error },
    #[error("flushing the store failed: {0}")]
    Flush(#[source] sled::Error),
    #[error("fdatasync of the store's log failed: {0}")]
    Sync(#[source] std::io::Error),
    #[error("the write-ahead log {}: {source}", path.display())]
    Log { path: PathBuf, source: std::io::Error },
    #[error("the write-ahead log is corrupt: {0}")]
    Corrupt(String),
    #[error("the flusher has stopped")]
    Stopped,
    /// A flush that failed for every caller of its group; the text is the cause's.
    #[error("flushing the store failed: {0}")]
    Group(String),
}

/// How to open a store beyond its durability.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    pub durability: Durability,
    /// Bound of sled's page cache; sled's own default (1 GiB) when `None`.
    pub cache_bytes: Option<u64>,
    /// sled's `HighThroughput` mode (the engine's history store) instead of its default.
    pub high_throughput: bool,
}

impl OpenOptions {
    pub fn new(durability: Durability) -> OpenOptions {
        OpenOptions { durability, cache_bytes: None, high_throughput: false }
    }
}

/// An open store, and the file to `fdatasync` after each flush when it must be power-safe.
#[derive(Debug, Clone)]
pub struct Opened {
    pub db: sled::Db,
    pub sync_file: Option<Arc<File>>,
}

/// Opens (creating when missing) the sled store at `path`.
pub fn open(path: &Path, options: OpenOptions) -> Result<Opened, Error> {
    let mut config = sled::Config::new().path(path);
    if options.high_throughput {
        config = config.mode(sled::Mode::HighThroughput);
    }
    if let Some(bytes) = options.cache_bytes {
        config = config.cache_capacity(bytes);
    }
    let db = config.open().map_err(|source| Error::Open { path: path.to_owned(), source })?;
    let sync_file = match options.durability {
        // sled 0.34 keeps its log in the file `db` of the store's folder.
        Durability::PowerSafe => {
            let log = path.join("db");
            Some(Arc::new(File::open(&log).map_err(|source| Error::OpenLog { path: log, source })?))
        }
        Durability::ProcessCrash => None,
    };
    Ok(Opened { db, sync_file })
}

impl Opened {
    /// A store that lives only as long as the process (tests).
    pub fn temporary() -> Result<Opened, Error> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| Error::Open { path: PathBuf::from("(temporary)"), source })?;
        Ok(Opened { db, sync_file: None })
    }

    /// Makes everything applied so far durable: sled's flush, then `fdatasync` of its log
    /// when power-safe. sled writes its log in order, so one sync covers every earlier write.
    pub fn sync(&self) -> Result<(), Error> {
        self.db.flush().map_err(Error::Flush)?;
        if let Some(file) = &self.sync_file {
            file.sync_data().map_err(Error::Sync)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_held_by_someone_else_does_not_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let held = open(&path, OpenOptions::new(Durability::PowerSafe)).expect("first open succeeds");
        held.db.insert(b"k", b"v").expect("writes");
        held.sync().expect("syncs, fdatasync included");
        let second = open(&path, OpenOptions::new(Durability::PowerSafe));
        assert!(matches!(second, Err(Error::Open { .. })), "{second:?}");
    }
}
