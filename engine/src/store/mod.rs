//! The storage seam: what the engine needs from a store ([`HistoryStore`]), the records it
//! keeps (a run's history and [`RunSummary`], definitions, [`TokenRecord`]s, the task-token
//! key) and the backend-neutral [`WriteBatch`] one turn writes. Every caller holds the trait
//! (`Arc<`[`Store`]`>`), never a backend: sled ([`SledStore`], `sled/`) is the embedded
//! default, and PostgreSQL ([`PostgresStore`], `postgres/`, design.md section 10) is a second
//! backend passing the same [`contract`] suite.
//!
//! Writes are **conditional** and **pipelined**: a batch's appends carry the sequence number
//! each run's new events follow, and a backend refuses the whole batch, before applying any
//! of it, when one does not hold ([`Error::Conflict`], never an overwrite). [`HistoryStore::apply`]
//! sends a batch in order (readers of this process see it at once); [`HistoryStore::sync`]
//! returns once everything applied before it is durable. The core applies a turn and goes on
//! deciding while its syncer syncs (group commit); nothing is acknowledged before the sync.
//!
//! This module must never decide anything about workflows.

pub mod batch;
pub mod contract;
mod packed;
pub mod position;
pub mod postgres;
mod sled;
mod token;

pub use self::sled::SledStore;
pub use batch::{Append, PutRun, WriteBatch};
pub use position::{IndexedAppend, PositionedEvent};
pub use postgres::{PostgresLeases, PostgresOptions, PostgresStore};
pub use shop_durable::Durability;
pub use token::{decode_token, TokenRecord};

use crate::codec;
use serde::{Deserialize, Serialize};
use shop_types::api::WorkflowStatus;
use shop_types::history::Event;
use shop_types::{JsonText, WorkflowId};

/// Bytes of the task-token signing key: as many as SHA-256 digests, the MAC's hash.
pub const TASK_TOKEN_KEY_LEN: usize = 32;
/// Length of a token's key: a SHA-256 digest of its secret.
pub const TOKEN_DIGEST_LEN: usize = 32;

/// What the engine needs from a store, whatever keeps it.
pub type Store = dyn HistoryStore;

/// A shard of the run space: runs are split by a hash of their id (design.md section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u32);

impl ShardId {
    /// The one shard of a store with one owner (sled).
    pub const SOLE: ShardId = ShardId(0);
}

/// The ownership token of a shard: taking a shard over increments it, and a backend that
/// fences refuses a batch decided under an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Sled(#[from] ::sled::Error),
    #[error("store: {0}")]
    Durable(#[from] shop_durable::Error),
    #[error("store: record {key} is unreadable: {source}")]
    Corrupt { key: String, source: codec::Error },
    #[error("store: encoding a record failed: {0}")]
    Encode(codec::Error),
    #[error("store: record {key} is {len} bytes long; expected {expected}")]
    BadLength { key: String, len: usize, expected: usize },
    /// A batch expected `run`'s history to end at `expected`, and it ends at `found`:
    /// nothing of the batch was applied.
    #[error("store: run {run}'s history ends at {found}, not {expected} as the batch expected; nothing was written")]
    Conflict { run: WorkflowId, expected: u64, found: u64 },
    /// The events of one append are not numbered one after the other.
    #[error("store: the events appended to run {run} are not contiguous at {seq}")]
    Gap { run: WorkflowId, seq: u64 },
    /// The batch was decided under an epoch that no longer owns `shard`: nothing was written.
    #[error("store: shard {} is no longer owned at epoch {}; nothing was written", shard.0, epoch.0)]
    Fenced { shard: ShardId, epoch: Epoch },
    /// PostgreSQL refused a query, or could not be reached.
    #[error("store: postgres: {0}")]
    Postgres(String),
    /// The database was migrated by a newer engine: this one does not know its schema.
    #[error("store: the database's schema is at version {found}; this engine knows up to {known}: upgrade the engine")]
    NewerSchema { found: i32, known: i32 },
    /// The shard count asked for is not the cluster's (fixed when it was created), or is out
    /// of range.
    #[error("store: {asked} shards asked for; {}", match stored {
        Some(stored) => format!("the cluster was created with {stored} and that never changes (drop --shards or give {stored})"),
        None => format!("a cluster has 1 to {} shards", postgres::MAX_SHARD_COUNT),
    })]
    ShardCount { stored: Option<u32>, asked: u32 },
}

/// What the API shows of a run without reading its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub workflow_type: shop_types::WorkflowType,
    pub definition_version: u32,
    pub status: WorkflowStatus,
    pub created_at_ms: u64,
    pub closed_at_ms: Option<u64>,
    pub reason: Option<String>,
    pub output: Option<JsonText>,
}

/// A store of histories, summaries, definitions, tokens and settings.
///
/// Writes: one writer per shard (the core) applies batches in order; `apply` + `sync` is the
/// pipelined form of `commit`. A backend keeps a batch all or nothing, refuses it whole when
/// an expectation or (if it fences) an epoch does not hold, and keeps each run's history in
/// sequence order.
pub trait HistoryStore: Send + Sync {
    /// The shards this store lets this process write, with the epoch it holds each at.
    fn shards(&self) -> Vec<(ShardId, Epoch)>;

    /// The cluster's fixed number of shards (1 for a store with one owner): a run's shard is
    /// `crate::cluster::shard_of(run, shard_count)`.
    fn shard_count(&self) -> u32;

    /// Whether the backend refuses a batch whose epochs are stale ([`Error::Fenced`]). sled
    /// has one owner, so it does not; PostgreSQL must.
    fn fences_epochs(&self) -> bool;

    /// Applies `batch` atomically, after checking every append's expectation: readers see
    /// it at once, but it is durable only once a later [`HistoryStore::sync`] returns. For
    /// PostgreSQL: the batch's transaction is sent, in order.
    fn apply(&self, batch: WriteBatch) -> Result<(), Error>;

    /// Makes everything applied so far durable; one sync covers every earlier apply.
    fn sync(&self) -> Result<(), Error>;

    /// Applies `batch` and returns once it is durable.
    fn commit(&self, batch: WriteBatch) -> Result<(), Error> {
        self.apply(batch)?;
        self.sync()
    }

    fn run(&self, id: &WorkflowId) -> Result<Option<RunSummary>, Error>;

    /// The run's events, in sequence order.
    fn history(&self, id: &WorkflowId) -> Result<Vec<Event>, Error>;

    /// The run's `WorkflowStarted` event (it carries the input).
    fn first_event(&self, id: &WorkflowId) -> Result<Option<Event>, Error>;

    /// The events of the run's first transition (its start: `WorkflowStarted`, then for runs
    /// started since it exists `DefinitionPinned`, then what the start scheduled), without
    /// reading the rest of its history. A backend that stores one event a record may return
    /// only the first; the default does.
    fn start_events(&self, id: &WorkflowId) -> Result<Vec<Event>, Error> {
        Ok(self.first_event(id)?.into_iter().collect())
    }

    /// The runs of `shard` that are not terminal (parked ones included): what an owner
    /// replays when it starts or takes the shard over.
    fn in_flight(&self, shard: ShardId) -> Result<Vec<WorkflowId>, Error>;

    /// The runs that are not terminal in every shard this process holds, in ID order: what
    /// the core replays at start.
    fn in_flight_held(&self) -> Result<Vec<WorkflowId>, Error> {
        let mut ids = Vec::new();
        for (shard, _) in self.shards() {
            ids.extend(self.in_flight(shard)?);
        }
        ids.sort();
        Ok(ids)
    }

    /// Up to `limit` run IDs after `cursor` (exclusive), in ID order, optionally only those
    /// with `status`; and whether more may follow.
    fn list_ids(
        &self,
        status: Option<WorkflowStatus>,
        cursor: Option<&WorkflowId>,
        limit: usize,
    ) -> Result<(Vec<WorkflowId>, bool), Error>;

    /// Every stored redrive job (`crate::redrive`), as last written.
    fn redrives(&self) -> Result<Vec<shop_types::redrive::RedriveJob>, Error>;

    /// Every stored token with the digest of its secret.
    fn tokens(&self) -> Result<Vec<([u8; TOKEN_DIGEST_LEN], TokenRecord)>, Error>;

    /// Every registered definition's `(name, version, source)`.
    fn definitions(&self) -> Result<Vec<(String, u32, String)>, Error>;

    /// The secret key that signs task tokens: read, or on first use drawn from the OS's
    /// random source and made durable before it is returned, so no token signed with it can
    /// outlive it (a token handed out before a crash must still verify after the restart).
    fn task_token_key(&self) -> Result<[u8; TASK_TOKEN_KEY_LEN], Error>;

    fn size_on_disk(&self) -> Result<u64, Error>;

    /// The last position numbered in `shard` (0 before its first event): where the writer's
    /// numbering resumes after a restart (see [`position`]).
    fn last_position(&self, shard: ShardId) -> Result<u64, Error>;

    /// Up to `limit` committed events of `shard` after position `after` (0: from the first),
    /// in position order, each with its run and the run's status once it is applied.
    fn events_after(&self, shard: ShardId, after: u64, limit: usize) -> Result<Vec<PositionedEvent>, Error>;
}
