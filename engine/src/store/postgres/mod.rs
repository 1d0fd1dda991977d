//! The PostgreSQL backend of the storage seam (design.md section 10): histories, summaries,
//! the position index, definitions, tokens and settings in tables (`schema.rs`), written by
//! one pipelined writer connection (`writer.rs`) and read through a small pool.
//!
//! Runs are split into a fixed number of shards by a hash of their id ([`shard_of`]); each
//! shard has a lease row `(shard, owner, epoch, expires_at)`. The store claims nothing when it
//! opens: the engine's lease manager (`crate::cluster::lease`, through [`PostgresLeases`],
//! `leases.rs`) claims and renews shards and tells the store what it holds
//! ([`PostgresStore::set_held`]); [`PostgresStore::claim_all`] takes every shard at once for a
//! stand-alone store (tests, tools). Every write transaction first checks, under the lease
//! rows' locks, that it still holds the shards it writes ([`Error::Fenced`] otherwise), so a
//! node that lost a shard cannot commit anything for it. History rows are keyed
//! `(shard, run, seq)`.
//!
//! Bridging (`bridge.rs`): the trait is synchronous (the core calls it from its own thread),
//! and the backend is async. The store owns a small runtime of its own; each call runs there and the
//! caller waits on a channel. A caller on a worker thread of the API's (multi-threaded) tokio
//! runtime waits inside `block_in_place`, which hands that worker's other tasks to another
//! thread first, so a slow query never stalls unrelated requests.
//!
//! Durability: `apply` sends the batch's transaction; `sync` waits for every commit sent
//! before it (with `synchronous_commit` on, the server's default, a commit is on its disk).
//! Reads wait for the commits sent before them, so this process reads its own writes.
//!
//! This module must never decide anything about workflows.

mod bridge;
mod leases;
mod schema;
pub mod test_db;
mod writer;

pub use leases::PostgresLeases;
pub use schema::{DEFAULT_SHARD_COUNT, MAX_SHARD_COUNT};
pub use writer::MAX_PIPELINED_TRANSACTIONS;

use super::position::positioned;
use super::sled::status_byte;
use super::{
    Epoch, Error, HistoryStore, IndexedAppend, PositionedEvent, RunSummary, ShardId, TokenRecord, WriteBatch,
    TASK_TOKEN_KEY_LEN, TOKEN_DIGEST_LEN,
};
use crate::codec;
use bridge::{blocking, config, connect, run_on, runtime, Failure, OwnedRuntime};
use shop_types::api::WorkflowStatus;
use shop_types::history::Event;
use shop_types::WorkflowId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use writer::{Rows, Writer};

/// Connections of the read pool at most (the writer has its own).
pub const MAX_READ_CONNECTIONS: usize = 8;

/// How to reach and set up the database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A `postgres://` URL (or a libpq key=value string).
    pub url: String,
    /// The cluster's shard count: chosen when the first engine creates it; `None` accepts
    /// what is stored (or [`DEFAULT_SHARD_COUNT`] for a new cluster).
    pub shards: Option<u32>,
}

/// The shard a run belongs to (`crate::cluster::shard_of`: a hash of its root id).
pub use crate::cluster::shard_of;

pub struct PostgresStore {
    _runtime: OwnedRuntime,
    handle: tokio::runtime::Handle,
    pool: deadpool_postgres::Pool,
    writer: Writer,
    /// Kept for the lease manager's own connection.
    config: tokio_postgres::Config,
    shard_count: u32,
    /// The shards this process may write and the epoch of each, as the lease manager last
    /// said ([`PostgresStore::set_held`]); empty until it claims one.
    held: RwLock<BTreeMap<ShardId, Epoch>>,
    /// Write transactions refused because another engine took a shard over.
    fenced_writes: AtomicU64,
}

/// Applies the schema's migrations (what `shop-engine migrate` runs); returns its version.
pub fn migrate(url: &str) -> Result<i32, Error> {
    let config = config(url)?;
    let runtime = runtime()?;
    run_on(&runtime.handle(), async move { schema::migrate(&mut connect(&config).await?).await })
}

impl PostgresStore {
    /// Connects, migrates the schema, fixes the shard count and makes sure every shard has
    /// its lease row, then starts the writer. It holds no shard yet: see the module's doc.
    pub fn open(options: &PostgresOptions) -> Result<PostgresStore, Error> {
        let config = config(&options.url)?;
        let runtime = runtime()?;
        let handle = runtime.handle();
        let asked = options.shards;
        let writer_config = config.clone();
        let (client, statements, shard_count) = run_on(&handle, async move {
            let mut client = connect(&writer_config).await?;
            schema::migrate(&mut client).await?;
            let shard_count = schema::shard_count(&client, asked).await?;
            schema::ensure_shards(&client, shard_count).await?;
            let statements = writer::Statements::prepare(&client).await?;
            Ok((client, statements, shard_count))
        })?;
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(MAX_READ_CONNECTIONS)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| Error::Postgres(format!("cannot build the read pool: {error}")))?;
        let writer = Writer::start(&handle, client, statements);
        Ok(PostgresStore {
            _runtime: runtime,
            handle,
            pool,
            writer,
            config,
            shard_count,
            held: RwLock::new(BTreeMap::new()),
            fenced_writes: AtomicU64::new(0),
        })
    }

    /// Takes every shard of the cluster at once (each epoch + 1, fencing whoever held it) and
    /// holds them for `lease`: a stand-alone store (tests, tools), never the engine's path.
    pub fn claim_all(&self, lease: std::time::Duration) -> Result<Vec<(ShardId, Epoch)>, Error> {
        let config = self.config.clone();
        let (owner, shards) = (format!("store-{}-{}", std::process::id(), uuid::Uuid::now_v7()), self.shard_count);
        let claimed = run_on(&self.handle, async move {
            let client = connect(&config).await?;
            schema::claim_all(&client, &owner, shards, lease).await
        })?;
        let held: BTreeMap<ShardId, Epoch> =
            claimed.into_iter().map(|(shard, epoch)| (ShardId(shard), Epoch(epoch))).collect();
        self.set_held(held.clone());
        Ok(held.into_iter().collect())
    }

    /// What this process holds now, by shard: the lease manager's word. A batch writing a
    /// shard not in it is refused before it is sent ([`Error::Fenced`]).
    pub fn set_held(&self, held: BTreeMap<ShardId, Epoch>) {
        // A poisoned lock only means a panic elsewhere; the map is replaced whole.
        *self.held.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = held;
    }

    fn held(&self) -> BTreeMap<ShardId, Epoch> {
        self.held.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The lease manager's side of this store: its own connection (never the writer's or the
    /// pool's, so a busy writer cannot delay a renewal), and [`Self::set_held`].
    pub fn leases(self: &std::sync::Arc<Self>) -> PostgresLeases {
        PostgresLeases::new(self.clone(), self.config.clone())
    }

    /// Write transactions refused so far because another engine took a shard over.
    pub fn fenced_writes(&self) -> u64 {
        self.fenced_writes.load(Ordering::Relaxed)
    }

    fn failed(&self, failure: Failure) -> Error {
        if matches!(failure, Failure::Fenced { .. }) {
            let refused = self.fenced_writes.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(refused, "a write was refused: another engine took a shard of this one over");
        }
        failure.error()
    }

    /// Runs a read on the pool, after the writes this process sent before it.
    fn read<T: Send + 'static, F>(&self, query: impl FnOnce(deadpool_postgres::Pool) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let _ = blocking(|| self.writer.wait(false));
        run_on(&self.handle, query(self.pool.clone()))
    }

    fn shard(&self, run: &WorkflowId) -> i32 {
        shard_of(run, self.shard_count).0 as i32
    }

    /// The batch as the writer's arrays, fenced by the epochs of every shard it writes (none
    /// when it writes no shard: definitions, tokens and redrive jobs are the cluster's, and
    /// any node may upsert them).
    fn rows(&self, batch: &WriteBatch) -> Result<Rows, Error> {
        let mut rows = Rows::default();
        let mut touched: HashSet<ShardId> = HashSet::new();
        for append in batch.appends() {
            let shard = self.shard(&append.run);
            touched.insert(ShardId(shard as u32));
            rows.append_shards.push(shard);
            rows.append_runs.push(append.run.as_str().to_owned());
            rows.append_seqs.push(int(append.after + 1)?);
            rows.append_lasts.push(int(append.last)?);
            rows.append_records.push(append.record.clone());
        }
        // One row per run (the last put wins): an upsert may not touch a row twice.
        let mut seen = HashSet::new();
        for put in batch.runs().iter().rev().filter(|put| seen.insert(&put.run)) {
            let shard = self.shard(&put.run);
            touched.insert(ShardId(shard as u32));
            rows.run_ids.push(put.run.as_str().to_owned());
            rows.run_shards.push(shard);
            rows.run_statuses.push(i16::from(status_byte(put.status)));
            rows.run_in_flight.push(put.in_flight);
            rows.run_records.push(put.record.clone());
        }
        for (shard, first, count, record) in batch.index() {
            touched.insert(shard);
            rows.position_shards.push(shard.0 as i32);
            rows.position_firsts.push(int(first)?);
            rows.position_lasts.push(int(first + count - 1)?);
            rows.position_records.push(record.to_vec());
        }
        let mut seen = HashSet::new();
        for (digest, record) in batch.tokens().iter().rev().filter(|(digest, _)| seen.insert(digest)) {
            rows.token_digests.push(digest.to_vec());
            rows.token_records.push(record.clone());
        }
        // The last write of a job in the batch wins, as in sled.
        let mut seen = HashSet::new();
        for (id, record) in batch.redrives().iter().rev().filter(|(id, _)| seen.insert(id)) {
            rows.redrive_ids.push(id.clone());
            rows.redrive_records.push(record.clone());
        }
        let mut seen = HashSet::new();
        for (name, version, record) in batch.definitions().iter().rev().filter(|(n, v, _)| seen.insert((n, v))) {
            rows.definition_names.push(name.clone());
            rows.definition_versions.push(*version as i32);
            rows.definition_records.push(record.clone());
        }
        // Sorted, so concurrent writers lock lease rows in one order.
        let mut fences: BTreeMap<ShardId, Epoch> = self.held();
        fences.retain(|shard, _| touched.contains(shard));
        if let Some(shard) = touched.iter().find(|shard| !fences.contains_key(shard)) {
            return Err(self.failed(Failure::Fenced { shard: *shard, epoch: Epoch(0) }));
        }
        // A batch decided under an older epoch is checked at that epoch.
        fences.extend(batch.fences().iter().copied());
        for (shard, Epoch(epoch)) in fences {
            rows.fence_shards.push(shard.0 as i32);
            rows.fence_epochs.push(int(epoch)?);
        }
        Ok(rows)
    }
}

/// A number as PostgreSQL's `bigint`.
fn int(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::Postgres(format!("{n} does not fit a bigint")))
}

fn corrupt(key: String, source: codec::Error) -> Error {
    Error::Corrupt { key, source }
}

fn decode_events(run: &str, seq: i64, bytes: &[u8]) -> Result<Vec<Event>, Error> {
    codec::decode_events(bytes).map_err(|source| corrupt(format!("history {run}/{seq}"), source))
}

fn parse_id(text: &str) -> Result<WorkflowId, Error> {
    WorkflowId::parse(text).map_err(|_| corrupt(format!("run id {text:?}"), codec::Error::Empty))
}

impl HistoryStore for PostgresStore {
    fn shards(&self) -> Vec<(ShardId, Epoch)> {
        self.held().into_iter().collect()
    }

    fn shard_count(&self) -> u32 {
        self.shard_count
    }

    fn fences_epochs(&self) -> bool {
        true
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), Error> {
        let rows = self.rows(&batch)?;
        self.writer.send(rows).map_err(|failure| self.failed(failure))
    }

    fn sync(&self) -> Result<(), Error> {
        blocking(|| self.writer.wait(true)).map_err(|failure| self.failed(failure))
    }

    fn run(&self, id: &WorkflowId) -> Result<Option<RunSummary>, Error> {
        let (run, shard) = (id.as_str().to_owned(), self.shard(id));
        let row = self.read(|pool| async move {
            let client = pool.get().await?;
            let statement = client.prepare_cached("SELECT record FROM shop_runs WHERE run = $1 AND shard = $2").await?;
            Ok(client.query_opt(&statement, &[&run, &shard]).await?)
        })?;
        row.map(|row| codec::decode(row.get::<_, &[u8]>(0)).map_err(|source| corrupt(format!("run {id}"), source)))
            .transpose()
    }

    fn history(&self, id: &WorkflowId) -> Result<Vec<Event>, Error> {
        self.records(id, "SELECT seq, record FROM shop_history WHERE shard = $1 AND run = $2 ORDER BY seq")
    }

    fn first_event(&self, id: &WorkflowId) -> Result<Option<Event>, Error> {
        Ok(self.start_events(id)?.into_iter().next())
    }

    fn start_events(&self, id: &WorkflowId) -> Result<Vec<Event>, Error> {
        self.records(id, "SELECT seq, record FROM shop_history WHERE shard = $1 AND run = $2 AND seq = 1")
    }

    fn in_flight(&self, shard: ShardId) -> Result<Vec<WorkflowId>, Error> {
        let shard = shard.0 as i32;
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            let statement =
                client.prepare_cached("SELECT run FROM shop_runs WHERE shard = $1 AND in_flight ORDER BY run").await?;
            Ok(client.query(&statement, &[&shard]).await?)
        })?;
        rows.iter().map(|row| parse_id(row.get(0))).collect()
    }

    fn list_ids(
        &self,
        status: Option<WorkflowStatus>,
        cursor: Option<&WorkflowId>,
        limit: usize,
    ) -> Result<(Vec<WorkflowId>, bool), Error> {
        let after = cursor.map_or(String::new(), |cursor| cursor.as_str().to_owned());
        let status = status.map(|status| i16::from(status_byte(status)));
        // One more than asked says whether more follow.
        let take = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(match status {
                Some(status) => {
                    let statement = client
                        .prepare_cached(
                            "SELECT run FROM shop_runs WHERE status = $1 AND run > $2 ORDER BY run LIMIT $3",
                        )
                        .await?;
                    client.query(&statement, &[&status, &after, &take]).await?
                }
                None => {
                    let statement =
                        client.prepare_cached("SELECT run FROM shop_runs WHERE run > $1 ORDER BY run LIMIT $2").await?;
                    client.query(&statement, &[&after, &take]).await?
                }
            })
        })?;
        let more = rows.len() > limit;
        let ids = rows.iter().take(limit).map(|row| parse_id(row.get(0))).collect::<Result<_, _>>()?;
        Ok((ids, more))
    }

    fn tokens(&self) -> Result<Vec<([u8; TOKEN_DIGEST_LEN], TokenRecord)>, Error> {
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(client.query("SELECT digest, record FROM shop_tokens ORDER BY digest", &[]).await?)
        })?;
        rows.iter()
            .map(|row| {
                let (digest, record): (&[u8], &[u8]) = (row.get(0), row.get(1));
                let key = || format!("token {digest:02x?}");
                let digest = digest.try_into().map_err(|_| corrupt(key(), codec::Error::Empty))?;
                Ok((digest, super::decode_token(record).map_err(|source| corrupt(key(), source))?))
            })
            .collect()
    }

    fn redrives(&self) -> Result<Vec<shop_types::redrive::RedriveJob>, Error> {
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(client.query("SELECT id, record FROM shop_redrives ORDER BY id", &[]).await?)
        })?;
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                codec::decode(row.get::<_, &[u8]>(1)).map_err(|source| corrupt(format!("redrive job {id}"), source))
            })
            .collect()
    }

    fn definitions(&self) -> Result<Vec<(String, u32, String)>, Error> {
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(client.query("SELECT name, version, record FROM shop_definitions ORDER BY name, version", &[]).await?)
        })?;
        rows.iter()
            .map(|row| {
                let (name, version): (String, i32) = (row.get(0), row.get(1));
                let source: String = codec::decode(row.get::<_, &[u8]>(2))
                    .map_err(|source| corrupt(format!("definition {name} v{version}"), source))?;
                Ok((name, version as u32, source))
            })
            .collect()
    }

    fn task_token_key(&self) -> Result<[u8; TASK_TOKEN_KEY_LEN], Error> {
        let mut fresh = [0u8; TASK_TOKEN_KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
        let stored: Vec<u8> = self.read(|pool| async move {
            let client = pool.get().await?;
            // The first engine's key wins; a commit is durable before it returns.
            let row = client
                .query_one(
                    "WITH made AS (INSERT INTO shop_meta (name, value) VALUES ('task-token-key', $1)
                                   ON CONFLICT (name) DO NOTHING RETURNING value)
                     SELECT value FROM made UNION ALL SELECT value FROM shop_meta WHERE name = 'task-token-key'
                     LIMIT 1",
                    &[&fresh.as_slice()],
                )
                .await?;
            Ok(row.get(0))
        })?;
        <[u8; TASK_TOKEN_KEY_LEN]>::try_from(stored.as_slice()).map_err(|_| Error::BadLength {
            key: "shop_meta task-token-key".into(),
            len: stored.len(),
            expected: TASK_TOKEN_KEY_LEN,
        })
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        let bytes: i64 = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(client.query_one("SELECT pg_database_size(current_database())", &[]).await?.get(0))
        })?;
        Ok(bytes.max(0) as u64)
    }

    fn last_position(&self, shard: ShardId) -> Result<u64, Error> {
        let shard = shard.0 as i32;
        let last: Option<i64> = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(client.query_one("SELECT max(last) FROM shop_positions WHERE shard = $1", &[&shard]).await?.get(0))
        })?;
        Ok(last.unwrap_or(0).max(0) as u64)
    }

    fn events_after(&self, shard: ShardId, after: u64, limit: usize) -> Result<Vec<PositionedEvent>, Error> {
        let Ok(from) = i64::try_from(after.saturating_add(1)) else {
            return Ok(Vec::new());
        };
        let shard_id = shard.0 as i32;
        let take = i64::try_from(limit).unwrap_or(i64::MAX);
        // The row holding `after + 1` starts at or before it; each row holds at least one
        // event, so `limit` rows from there hold the page.
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(client
                .query(
                    "SELECT first, record FROM shop_positions WHERE shard = $1 AND first >= coalesce(
                         (SELECT max(first) FROM shop_positions WHERE shard = $1 AND first <= $2), $2)
                     ORDER BY first LIMIT $3",
                    &[&shard_id, &from, &take],
                )
                .await?)
        })?;
        let mut batches = Vec::with_capacity(rows.len());
        for row in &rows {
            let first: i64 = row.get(0);
            let appends: Vec<IndexedAppend> =
                codec::decode(row.get::<_, &[u8]>(1)).map_err(|source| corrupt(format!("position {first}"), source))?;
            batches.push((first as u64, appends));
        }
        let records = self.history_records(batches.iter().flat_map(|(_, appends)| appends))?;
        let mut out = Vec::new();
        for (first, appends) in &batches {
            let events_of = |append: &IndexedAppend| {
                let seq = int(append.first_seq)?;
                match records.get(&(append.run.as_str().to_owned(), seq)) {
                    Some(bytes) => decode_events(append.run.as_str(), seq, bytes),
                    None => Err(corrupt(format!("history {}/{seq}", append.run), codec::Error::Empty)),
                }
            };
            positioned(*first, appends, after, events_of, &mut out, limit)?;
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

impl PostgresStore {
    /// The events of `id`'s history rows that `sql` selects (`seq, record`, bound to the
    /// run's shard and id), in order.
    fn records(&self, id: &WorkflowId, sql: &'static str) -> Result<Vec<Event>, Error> {
        let (run, shard) = (id.as_str().to_owned(), self.shard(id));
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query(&statement, &[&shard, &run]).await?)
        })?;
        let mut events = Vec::new();
        for row in &rows {
            events.extend(decode_events(id.as_str(), row.get(0), row.get::<_, &[u8]>(1))?);
        }
        Ok(events)
    }

    /// The history records the appends name, by `(run, first seq)`, in one query.
    fn history_records<'a>(
        &self,
        appends: impl Iterator<Item = &'a IndexedAppend>,
    ) -> Result<HashMap<(String, i64), Vec<u8>>, Error> {
        let (mut shards, mut runs, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
        for append in appends {
            shards.push(self.shard(&append.run));
            runs.push(append.run.as_str().to_owned());
            seqs.push(int(append.first_seq)?);
        }
        if runs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.read(|pool| async move {
            let client = pool.get().await?;
            Ok(client
                .query(
                    "SELECT h.run, h.seq, h.record FROM shop_history h
                     JOIN unnest($1::integer[], $2::text[], $3::bigint[]) AS k(shard, run, seq)
                     ON h.shard = k.shard AND h.run = k.run AND h.seq = k.seq",
                    &[&shards, &runs, &seqs],
                )
                .await?)
        })?;
        Ok(rows.into_iter().map(|row| ((row.get(0), row.get(1)), row.get(2))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> WorkflowId {
        WorkflowId::parse(text).expect("valid")
    }

    #[test]
    fn a_runs_shard_never_changes() {
        // Stored rows are keyed by these: a change to the hash would strand every run.
        let shards: Vec<u32> = ["order-1", "a", "b", "pg-0001"].iter().map(|run| shard_of(&id(run), 16).0).collect();
        assert_eq!(shards, vec![13, 12, 5, 12]);
        assert_eq!(shard_of(&id("order-1"), MAX_SHARD_COUNT), ShardId(109));
        assert_eq!(shard_of(&id("order-1"), 1), ShardId(0));
    }
}
