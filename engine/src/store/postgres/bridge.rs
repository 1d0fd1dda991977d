//! The bridge between the synchronous store trait and the async PostgreSQL client: the
//! store's own runtime, running a future there and waiting for it without stalling a tokio
//! worker, connecting, and reading PostgreSQL's errors back into the store's.
//!
//! This module must never build a query of its own.

use super::super::{Epoch, Error, ShardId};
use shop_types::WorkflowId;
use std::future::Future;

/// Threads of the store's own runtime, which runs every query.
const RUNTIME_THREADS: usize = 2;

/// Why a write transaction failed, in a form every later caller can be told again.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    Conflict { run: WorkflowId, expected: u64, found: u64 },
    Fenced { shard: ShardId, epoch: Epoch },
    Db(String),
}

impl Failure {
    pub(super) fn error(&self) -> Error {
        match self {
            Failure::Conflict { run, expected, found } => {
                Error::Conflict { run: run.clone(), expected: *expected, found: *found }
            }
            Failure::Fenced { shard, epoch } => Error::Fenced { shard: *shard, epoch: *epoch },
            Failure::Db(message) => Error::Postgres(message.clone()),
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    /// Reads the errors `shop_append` (SH001) and `shop_fence` (SH002) raise back into what
    /// they mean.
    fn from(error: tokio_postgres::Error) -> Failure {
        let Some(db) = error.as_db_error() else {
            // tokio-postgres says only "error connecting to server"; the cause follows it.
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            return Failure::Db(message);
        };
        let numbers: Vec<u64> = db.detail().unwrap_or_default().split(' ').filter_map(|n| n.parse().ok()).collect();
        match (db.code().code(), numbers.as_slice()) {
            ("SH001", [expected, found]) => match WorkflowId::parse(db.message()) {
                Ok(run) => Failure::Conflict { run, expected: *expected, found: *found },
                Err(_) => Failure::Db(error.to_string()),
            },
            ("SH002", [epoch]) => match db.message().parse() {
                Ok(shard) => Failure::Fenced { shard: ShardId(shard), epoch: Epoch(*epoch) },
                Err(_) => Failure::Db(error.to_string()),
            },
            _ => Failure::Db(format!("{}: {}", db.code().code(), db.message())),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Error {
        Failure::from(error).error()
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(error: deadpool_postgres::PoolError) -> Error {
        Error::Postgres(format!("no read connection: {error}"))
    }
}

/// Runs `future` on `handle` and waits for it (see the module's doc on bridging).
pub(super) fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    future: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        // The caller may have gone; nothing else to tell.
        let _ = tx.send(future.await);
    });
    blocking(|| rx.recv().unwrap_or_else(|_| Err(Error::Postgres("the store's runtime stopped".into()))))
}

/// Runs `wait` where blocking is allowed: inside `block_in_place` on a worker of a
/// multi-threaded tokio runtime, else as it is.
pub(super) fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// The store's runtime, stopped without waiting when dropped: tokio refuses to drop a
/// runtime the ordinary way inside another one (the engine's), which is where a store (or a
/// failed open) is dropped.
pub(super) struct OwnedRuntime {
    /// Taken only on drop.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl OwnedRuntime {
    pub(super) fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(super) fn runtime() -> Result<OwnedRuntime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .thread_name("postgres")
        .enable_all()
        .build()
        .map(|runtime| OwnedRuntime { handle: runtime.handle().clone(), runtime: Some(runtime) })
        .map_err(|error| Error::Postgres(format!("cannot start the store's runtime: {error}")))
}

pub(super) fn config(url: &str) -> Result<tokio_postgres::Config, Error> {
    url.parse().map_err(|error| Error::Postgres(format!("bad --store URL: {error}")))
}

pub(super) async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::error!(%error, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}
