//! The writer: one connection that sends each batch as one transaction, pipelined (a batch's
//! statements, and the transactions of later batches, go out without waiting for earlier
//! answers), and the bookkeeping that lets `sync` wait for the commits sent so far.
//!
//! Each transaction is `BEGIN`, `shop_fence` (the epochs), `shop_append` (the conditional
//! appends), the upserts, the position row, `COMMIT`. A failing statement aborts the
//! transaction on the server, so every later statement of it fails and its `COMMIT` rolls it
//! back: the batch is all or nothing, and its first error says why. A `sync` reports the
//! first failure among the transactions sent since the previous `sync` (every failed
//! transaction is reported by the sync that covers it, so none is taken for durable; later
//! transactions that built on a failed one fail their own checks on the server).
//!
//! Order matters: a transaction's statements must reach the connection in order, and before
//! those of the next batch. tokio-postgres sends a request on its future's first poll, so each
//! transaction is polled once as soon as it is made, before the next one is taken.
//!
//! This module must never read records or decide what to write; it only sends rows.

use super::Failure;
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement};

/// Transactions sent and not yet answered at most; the writer takes no further batch until
/// one is answered (the core's sync queue bounds the batches waiting before it).
pub const MAX_PIPELINED_TRANSACTIONS: usize = 64;

/// One batch as the arrays its statements bind.
#[derive(Default)]
pub(super) struct Rows {
    pub fence_shards: Vec<i32>,
    pub fence_epochs: Vec<i64>,
    pub append_shards: Vec<i32>,
    pub append_runs: Vec<String>,
    pub append_seqs: Vec<i64>,
    pub append_lasts: Vec<i64>,
    pub append_records: Vec<Vec<u8>>,
    pub run_ids: Vec<String>,
    pub run_shards: Vec<i32>,
    pub run_statuses: Vec<i16>,
    pub run_in_flight: Vec<bool>,
    pub run_records: Vec<Vec<u8>>,
    /// The batch's position rows, one per shard it writes.
    pub position_shards: Vec<i32>,
    pub position_firsts: Vec<i64>,
    pub position_lasts: Vec<i64>,
    pub position_records: Vec<Vec<u8>>,
    pub token_digests: Vec<Vec<u8>>,
    pub token_records: Vec<Vec<u8>>,
    pub definition_names: Vec<String>,
    pub definition_versions: Vec<i32>,
    pub definition_records: Vec<Vec<u8>>,
    pub redrive_ids: Vec<String>,
    pub redrive_records: Vec<Vec<u8>>,
}

/// The writer's prepared statements.
pub(super) struct Statements {
    fence: Statement,
    append: Statement,
    runs: Statement,
    position: Statement,
    tokens: Statement,
    definitions: Statement,
    redrives: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            fence: client.prepare("SELECT shop_fence($1, $2)").await?,
            append: client.prepare("SELECT shop_append($1, $2, $3, $4, $5)").await?,
            runs: client
                .prepare(
                    "INSERT INTO shop_runs (run, shard, status, in_flight, record)
                     SELECT * FROM unnest($1::text[], $2::integer[], $3::smallint[], $4::boolean[], $5::bytea[])
                     ON CONFLICT (run) DO UPDATE
                     SET status = excluded.status, in_flight = excluded.in_flight, record = excluded.record",
                )
                .await?,
            position: client
                .prepare(
                    "INSERT INTO shop_positions (shard, first, last, record)
                     SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::bytea[])",
                )
                .await?,
            tokens: client
                .prepare(
                    "INSERT INTO shop_tokens (digest, record) SELECT * FROM unnest($1::bytea[], $2::bytea[])
                     ON CONFLICT (digest) DO UPDATE SET record = excluded.record",
                )
                .await?,
            definitions: client
                .prepare(
                    "INSERT INTO shop_definitions (name, version, record)
                     SELECT * FROM unnest($1::text[], $2::integer[], $3::bytea[])
                     ON CONFLICT (name, version) DO UPDATE SET record = excluded.record",
                )
                .await?,
            redrives: client
                .prepare(
                    "INSERT INTO shop_redrives (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])
                     ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                )
                .await?,
        })
    }
}

/// How far the writer got: transactions handed to it and answered (numbered from 1 in the
/// order sent), and the failed ones not yet reported by a `sync`.
#[derive(Default)]
struct Progress {
    sent: u64,
    done: u64,
    failures: std::collections::BTreeMap<u64, Failure>,
}

/// The handle the store holds: hands batches to the writer task and waits for them.
pub(super) struct Writer {
    rows: mpsc::UnboundedSender<Rows>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
}

impl Writer {
    /// Starts the writer task on `runtime` with its own connection.
    pub(super) fn start(runtime: &tokio::runtime::Handle, client: Client, statements: Statements) -> Writer {
        let (rows, receiver) = mpsc::unbounded_channel();
        let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        runtime.spawn(run(client, statements, receiver, progress.clone()));
        Writer { rows, progress }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A poisoned lock only means a panic elsewhere; the counters stay meaningful.
        self.progress.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends one batch's transaction.
    pub(super) fn send(&self, rows: Rows) -> Result<(), Failure> {
        let mut progress = self.lock();
        self.rows.send(rows).map_err(|_| Failure::Db("the writer connection is gone".into()))?;
        progress.sent += 1;
        Ok(())
    }

    /// Waits until every transaction sent before the call is answered. With `report`, says
    /// whether any of those sent since the last report failed (`Err`: the first such); without,
    /// leaves that to the next sync (a read waiting for the writes before it only needs them
    /// settled).
    pub(super) fn wait(&self, report: bool) -> Result<(), Failure> {
        let mut progress = self.lock();
        let target = progress.sent;
        while progress.done < target {
            progress = self.progress.1.wait(progress).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if !report {
            return Ok(());
        }
        let later = progress.failures.split_off(&(target + 1));
        let covered = std::mem::replace(&mut progress.failures, later);
        match covered.into_values().next() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;

async fn run(
    client: Client,
    statements: Statements,
    mut receiver: mpsc::UnboundedReceiver<Rows>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
) {
    let mut pending: FuturesOrdered<Pending<'_>> = FuturesOrdered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            biased;
            Some(result) = pending.next(), if !pending.is_empty() => {
                let (lock, changed) = &*progress;
                let mut progress = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                progress.done += 1;
                if let Err(error) = result {
                    let number = progress.done;
                    progress.failures.insert(number, Failure::from(error));
                }
                changed.notify_all();
            }
            rows = receiver.recv(), if open && pending.len() < MAX_PIPELINED_TRANSACTIONS => match rows {
                Some(rows) => {
                    let mut transaction: Pending<'_> = Box::pin(transaction(&client, &statements, rows));
                    // The first poll sends every statement of the transaction, in order.
                    if let Poll::Ready(result) = transaction.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                        pending.push_back(Box::pin(std::future::ready(result)));
                    } else {
                        pending.push_back(transaction);
                    }
                }
                None => open = false,
            },
        }
    }
}

/// One batch's transaction; its first error, if any, in statement order.
async fn transaction(client: &Client, statements: &Statements, rows: Rows) -> Result<(), tokio_postgres::Error> {
    let rows = &rows;
    let mut steps: Vec<Pending<'_>> = vec![Box::pin(client.batch_execute("BEGIN"))];
    if !rows.fence_shards.is_empty() {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&rows.fence_shards, &rows.fence_epochs];
        steps.push(Box::pin(execute(client, &statements.fence, params)));
    }
    if !rows.append_runs.is_empty() {
        steps.push(Box::pin(execute(
            client,
            &statements.append,
            [&rows.append_shards, &rows.append_runs, &rows.append_seqs, &rows.append_lasts, &rows.append_records],
        )));
    }
    if !rows.run_ids.is_empty() {
        steps.push(Box::pin(execute(
            client,
            &statements.runs,
            [&rows.run_ids, &rows.run_shards, &rows.run_statuses, &rows.run_in_flight, &rows.run_records],
        )));
    }
    if !rows.position_shards.is_empty() {
        steps.push(Box::pin(execute(
            client,
            &statements.position,
            [&rows.position_shards, &rows.position_firsts, &rows.position_lasts, &rows.position_records],
        )));
    }
    if !rows.token_digests.is_empty() {
        steps.push(Box::pin(execute(client, &statements.tokens, [&rows.token_digests, &rows.token_records])));
    }
    if !rows.definition_names.is_empty() {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&rows.definition_names, &rows.definition_versions, &rows.definition_records];
        steps.push(Box::pin(execute(client, &statements.definitions, params)));
    }
    if !rows.redrive_ids.is_empty() {
        steps.push(Box::pin(execute(client, &statements.redrives, [&rows.redrive_ids, &rows.redrive_records])));
    }
    steps.push(Box::pin(client.batch_execute("COMMIT")));
    // Every step is awaited, so the connection reads each answer; the first error explains
    // the rest (they fail because the transaction is aborted, and COMMIT rolls it back).
    let results = futures_util::future::join_all(steps).await;
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

async fn execute<const N: usize>(
    client: &Client,
    statement: &Statement,
    params: [&(dyn tokio_postgres::types::ToSql + Sync); N],
) -> Result<(), tokio_postgres::Error> {
    client.execute(statement, &params).await.map(|_| ())
}
