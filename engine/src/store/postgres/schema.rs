//! The PostgreSQL schema and its migrations, the cluster's fixed shard count, the lease rows
//! and the node registry (what `leases.rs` reads and claims).
//!
//! Migrations are numbered SQL scripts applied in order, each once, recorded in
//! `shop_schema_migrations`. One transaction holds a transaction-level advisory lock while it
//! reads what was applied and applies the rest, so engines starting at once on one database
//! migrate it exactly once, and a second run is a no-op. A database migrated by a newer engine
//! (a version this one does not know) is refused rather than written to.
//!
//! How the schema avoids bloat: nothing is a queue. Ready tasks and timers live in the owner's
//! memory and are rebuilt from histories when it takes a shard, so no table sees the
//! insert-update-delete churn of a job queue that vacuum cannot keep up with. `shop_history`
//! and `shop_positions` are append-only (INSERT, never UPDATE or DELETE). `shop_runs` is
//! updated in place as a run moves; it has a lower fillfactor so these updates can stay on
//! their page (HOT) when the indexed status does not change, and the in-flight index is a
//! partial index that holds only live runs. `shop_shards` has one row per shard, updated only
//! on a takeover.
//!
//! This module must never read or write a run's records.

use super::Error;
use tokio_postgres::Client;

/// The advisory lock key under which migrations run ("shopmigr" as bytes).
const MIGRATION_LOCK: i64 = 0x7368_6f70_6d69_6772;

/// Every migration, in order: `(version, SQL)`. Append only; never edit one that shipped.
const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3)];

/// Shards a cluster is created with when `--shards` is not given.
pub const DEFAULT_SHARD_COUNT: u32 = 16;
/// Shards a cluster may have at most: each one is a lease row every write may lock.
pub const MAX_SHARD_COUNT: u32 = 1024;

const V1: &str = r#"
CREATE TABLE shop_cluster (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_count integer NOT NULL CHECK (shard_count > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE shop_shards (
    shard integer PRIMARY KEY,
    owner text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
-- One row per append (one transition's events, encoded as one record), keyed by its first
-- event's number: a second append at the same number fails on the key.
CREATE TABLE shop_history (
    shard integer NOT NULL,
    run text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    last bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (shard, run, seq)
);
CREATE TABLE shop_runs (
    run text COLLATE "C" PRIMARY KEY,
    shard integer NOT NULL,
    status smallint NOT NULL,
    in_flight boolean NOT NULL,
    record bytea NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX shop_runs_by_status ON shop_runs (status, run);
CREATE INDEX shop_runs_in_flight ON shop_runs (shard, run) WHERE in_flight;
-- The position index: one row per batch, keyed by its first event's position.
CREATE TABLE shop_positions (
    shard integer NOT NULL,
    first bigint NOT NULL,
    last bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (shard, first)
);
CREATE TABLE shop_definitions (
    name text COLLATE "C" NOT NULL,
    version integer NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE shop_tokens (digest bytea PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE shop_meta (name text PRIMARY KEY, value bytea NOT NULL);

-- Fences a write transaction: locks each shard's lease row (FOR SHARE, so a takeover's
-- UPDATE waits for this transaction) and aborts it unless the shard is still at the epoch
-- the writer holds. SQLSTATE SH002, the shard as the message, the epoch as the detail.
CREATE FUNCTION shop_fence(shards integer[], epochs bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    held bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(shards, 1), 0) LOOP
        SELECT epoch INTO held FROM shop_shards WHERE shard = shards[i] FOR SHARE;
        IF held IS DISTINCT FROM epochs[i] THEN
            RAISE EXCEPTION USING ERRCODE = 'SH002', MESSAGE = shards[i]::text, DETAIL = epochs[i]::text;
        END IF;
    END LOOP;
END $$;

-- Appends, in order, each after checking that its run's history ends where the append
-- expects (appends to one run chain). SQLSTATE SH001, the run as the message, "expected
-- found" as the detail.
CREATE FUNCTION shop_append(shards integer[], runs text[], seqs bigint[], lasts bigint[], records bytea[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ends bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(runs, 1), 0) LOOP
        ends := NULL;
        SELECT h.last INTO ends FROM shop_history h
            WHERE h.shard = shards[i] AND h.run = runs[i] ORDER BY h.seq DESC LIMIT 1;
        ends := coalesce(ends, 0);
        IF ends <> seqs[i] - 1 THEN
            RAISE EXCEPTION USING ERRCODE = 'SH001', MESSAGE = runs[i],
                DETAIL = (seqs[i] - 1)::text || ' ' || ends::text;
        END IF;
        INSERT INTO shop_history (shard, run, seq, last, record)
            VALUES (shards[i], runs[i], seqs[i], lasts[i], records[i]);
    END LOOP;
END $$;
"#;

/// Redrive jobs (`crate::redrive`), each rewritten whole as it progresses: a handful of rows.
const V2: &str = r#"
CREATE TABLE shop_redrives (id text PRIMARY KEY, record bytea NOT NULL);
"#;

/// The node registry (`cluster::lease`): one row per engine node, its advertised URL and its
/// last heartbeat by the database's clock. A node's row is upserted every renewal and deleted
/// when it stops; a dead node's row stays until a node with its id comes back (a handful of
/// rows, updated in place: HOT, as `shop_shards`).
const V3: &str = r#"
CREATE TABLE shop_nodes (
    node text COLLATE "C" PRIMARY KEY,
    url text NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);
"#;

/// Applies every migration the database lacks, once, whoever else starts at the same time.
/// Returns the schema version the database is at.
pub(super) async fn migrate(client: &mut Client) -> Result<i32, Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS shop_schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let row = tx.query_one("SELECT coalesce(max(version), 0) FROM shop_schema_migrations", &[]).await?;
    let applied: i32 = row.get(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if applied > known {
        return Err(Error::NewerSchema { found: applied, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO shop_schema_migrations (version) VALUES ($1)", &[version]).await?;
        tracing::info!(version, "applied a schema migration");
    }
    tx.commit().await?;
    Ok(known)
}

/// The cluster's shard count: created with `asked` (or the default) by the first engine,
/// then fixed. Asking for a different count than the stored one is an error.
pub(super) async fn shard_count(client: &Client, asked: Option<u32>) -> Result<u32, Error> {
    let asked_or_default = asked.unwrap_or(DEFAULT_SHARD_COUNT);
    if asked_or_default == 0 || asked_or_default > MAX_SHARD_COUNT {
        return Err(Error::ShardCount { stored: None, asked: asked_or_default });
    }
    let count =
        i32::try_from(asked_or_default).map_err(|_| Error::ShardCount { stored: None, asked: asked_or_default })?;
    client.execute("INSERT INTO shop_cluster (shard_count) VALUES ($1) ON CONFLICT DO NOTHING", &[&count]).await?;
    let stored: i32 = client.query_one("SELECT shard_count FROM shop_cluster", &[]).await?.get(0);
    let stored = u32::try_from(stored).map_err(|_| Error::ShardCount { stored: None, asked: asked_or_default })?;
    if asked.is_some_and(|asked| asked != stored) {
        return Err(Error::ShardCount { stored: Some(stored), asked: asked_or_default });
    }
    Ok(stored)
}

/// Makes sure every shard of the cluster has its lease row (released, epoch 0, when new), so
/// a claim is one conditional `UPDATE`. Nobody owns a shard until a lease manager claims it.
pub(super) async fn ensure_shards(client: &Client, shards: u32) -> Result<(), Error> {
    let all: Vec<i32> = (0..shards as i32).collect();
    client
        .execute(
            "INSERT INTO shop_shards (shard, owner, epoch, expires_at)
             SELECT s, '', 0, now() FROM unnest($1::integer[]) AS s ON CONFLICT DO NOTHING",
            &[&all],
        )
        .await?;
    Ok(())
}

/// Takes every shard of the cluster for `owner` at once, whoever holds it: each epoch goes up
/// by one, which fences the earlier holder. Not the engine's path (its lease manager claims
/// shards one by one as placement says); for stand-alone stores: tests, tools.
pub(super) async fn claim_all(
    client: &Client,
    owner: &str,
    shards: u32,
    lease: std::time::Duration,
) -> Result<Vec<(u32, u64)>, Error> {
    ensure_shards(client, shards).await?;
    let all: Vec<i32> = (0..shards as i32).collect();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "UPDATE shop_shards SET owner = $1, epoch = epoch + 1,
                 expires_at = now() + $3::bigint * interval '1 millisecond'
             WHERE shard = ANY($2) RETURNING shard, epoch",
            &[&owner, &all, &lease_ms],
        )
        .await?;
    let mut held: Vec<(u32, u64)> =
        rows.iter().map(|row| (row.get::<_, i32>(0) as u32, row.get::<_, i64>(1) as u64)).collect();
    held.sort_unstable();
    Ok(held)
}
