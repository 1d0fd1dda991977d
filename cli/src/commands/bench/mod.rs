//! `shopctl bench`: how many order sagas per second the engine finishes, and how much latency
//! it adds, with every transition durable before it is acknowledged.
//!
//! It starts a fresh engine and worker processes (real HTTP, real sled in a temporary
//! directory unless `--data-dir`), stocks the peers' catalog (products 1..50 with 1,000,000
//! units, product 51 with none), drives the orders through the public order API with a
//! closed loop of `--concurrency` clients, waits for every order to be final, and then checks
//! the outcome of every order and the shop's invariants against the workers' own ledgers.
//! A benchmark that loses or doubles anything fails loudly: figures are printed, and the exit
//! is non-zero. One JSON object goes to stdout; progress and notes go to stderr.
//!
//! It never asserts a timing: it measures and reports.

use super::verify::{self, Domains};
use crate::client::Client;
use crate::output;
use crate::stack::{free_loopback_addr, ChildOutput, Stack, StackOptions, WorkerLayout};
use anyhow::{anyhow, bail, Context as _, Result};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use shop_client::{Method, StatusCode};
use shop_types::audit::{self, InitialStock, Options};
use shop_types::order::{OrderItem, SetStockRequest};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod check;
mod drive;
mod proc_stats;
mod scrape;
mod subscribers;

use check::*;
use drive::*;
use proc_stats::*;
use subscribers::*;

/// Products the normal orders draw from, and their stock: the peers' catalog.
const CATALOG_PRODUCTS: i64 = 50;
const CATALOG_UNITS: i64 = 1_000_000;
/// The product kept at zero units: an order for it is out of stock.
const EMPTY_PRODUCT: i64 = 51;
/// How long one wait for an order's final state may block on the server.
const ORDER_WAIT: &str = "60s";
/// The benchmark clients' request timeout: the longest wait asked for, plus the margin a
/// long-poll gets for the server's answer at its end.
const ORDER_REQUEST_TIMEOUT: Duration = Duration::from_secs(60).saturating_add(shop_client::WAIT_MARGIN);
/// How long a benchmark client keeps retrying one order (engine overloaded, waits that end
/// before the order does) before the run is declared broken.
const ORDER_DEADLINE: Duration = Duration::from_secs(300);
/// Pause before retrying a start the engine refused as overloaded.
const OVERLOAD_BACKOFF: Duration = Duration::from_millis(20);
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
const DEFAULT_ORDERS: usize = 5_000;
const DEFAULT_UNLOADED_ORDERS: usize = 300;
/// Violations printed in full; the rest are counted.
const VIOLATIONS_SHOWN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Flush plus fdatasync before every acknowledgement, in the engine and the workers:
    /// survives power loss.
    PowerSafe,
    /// Flush only: survives kill -9 of the engine, not power loss.
    ProcessCrash,
}

impl Durability {
    fn as_str(self) -> &'static str {
        match self {
            Durability::PowerSafe => "power-safe",
            Durability::ProcessCrash => "process-crash",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Orders to run (default 5000, or 300 with --unloaded).
    #[arg(long)]
    orders: Option<usize>,
    /// Orders in flight at once (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// One order at a time, to measure latency without load.
    #[arg(long, conflicts_with = "concurrency")]
    unloaded: bool,
    /// Open loop: start orders at this many per second whatever the engine's pace (up to
    /// --concurrency in flight), to measure latency at a given load rather than the most
    /// the engine can take.
    #[arg(long, conflicts_with = "unloaded")]
    rate: Option<u32>,
    /// Poll loops per queue in each worker (its `--concurrency`).
    #[arg(long, default_value_t = 8)]
    worker_concurrency: u16,
    /// How each worker takes tasks (its `--protocol`): `stream` (one WebSocket per engine
    /// node) or `poll` (long-poll loops), to compare the two.
    #[arg(long, value_enum, default_value_t = WorkerProtocol::Stream)]
    worker_protocol: WorkerProtocol,
    /// Place each order with `POST /api/orders?wait=60s`, which answers once the order is
    /// final: one round trip instead of a start and a wait (start latency is then the whole).
    #[arg(long)]
    start_wait: bool,
    /// How the domains are spread over worker processes.
    #[arg(long, value_enum, default_value_t = WorkerLayout::PerDomain)]
    workers: WorkerLayout,
    /// Percentages of confirmed, out-of-stock and declined orders.
    #[arg(long, default_value = "80,10,10", value_parser = parse_mix)]
    mix: Mix,
    /// What each commit must survive before it is acknowledged.
    #[arg(long, value_enum, default_value_t = Durability::PowerSafe)]
    durability: Durability,
    /// Seed of the order generator; the same seed gives the same orders.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep the data here instead of a temporary directory (must not exist yet).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the engine on PostgreSQL (`postgres://user@host:port/db`, an empty database: the
    /// seed's orders would be duplicates of an earlier run's) instead of sled.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Engine nodes sharing one PostgreSQL database (`--store`, required for more than one),
    /// on consecutive loopback ports; the benchmark's clients are spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::stack::MAX_LOCAL_NODES)))]
    nodes: u16,
    /// Store this many completed order runs first (written by the engine itself), then
    /// measure start-up time and memory with them in the store.
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// SSE subscribers of `/v1/events` following the engine during the run: the report says
    /// how many events per second each kept up with and whether it fell behind.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=MAX_BENCH_SUBSCRIBERS as i64))]
    subscribers: u16,
    /// Export traces of the engine and the workers to this OTLP/HTTP collector while
    /// measuring (`--otlp-endpoint` of each), to measure what tracing costs.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Scrape `GET /metrics` of the engine and of every worker this often while measuring
    /// (e.g. `1s`, at least 100ms), as Prometheus would, to measure what being scraped costs;
    /// the report gives each target's scrapes, size and time per scrape.
    #[arg(long, value_name = "INTERVAL", value_parser = scrape::parse_interval)]
    scrape_metrics: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    confirmed: u32,
    out_of_stock: u32,
}

/// The engine's flags for `--store`, if given.
pub(crate) fn store_args(store: &Option<String>) -> Vec<String> {
    store.iter().flat_map(|url| ["--store".to_owned(), url.clone()]).collect()
}

fn parse_mix(text: &str) -> Result<Mix, String> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [confirmed, out_of_stock, declined] if confirmed + out_of_stock + declined == 100 => {
            Ok(Mix { confirmed: *confirmed, out_of_stock: *out_of_stock })
        }
        _ => Err("expected three percentages adding up to 100: confirmed,out-of-stock,declined".to_owned()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Confirmed,
    OutOfStock,
    Declined,
}

struct PlannedOrder {
    id: String,
    body: Vec<u8>,
    expected: Expected,
}

/// Orders `0..count`, deterministic for a seed. Classes are interleaved (position `i * 37`
/// modulo 100 walks all of 0..100) so every stretch of the run has the same mix.
fn plan_orders(count: usize, mix: Mix, seed: u64) -> Result<Vec<PlannedOrder>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let position = (i * 37 % 100) as u32;
            let expected = if position < mix.confirmed {
                Expected::Confirmed
            } else if position < mix.confirmed + mix.out_of_stock {
                Expected::OutOfStock
            } else {
                Expected::Declined
            };
            let items = match expected {
                Expected::OutOfStock => vec![OrderItem { product_id: EMPTY_PRODUCT, quantity: 1 }],
                _ => {
                    let lines = rng.gen_range(1..=3);
                    let mut items: Vec<OrderItem> = Vec::with_capacity(lines);
                    while items.len() < lines {
                        let product_id = rng.gen_range(1..=CATALOG_PRODUCTS);
                        if items.iter().all(|item| item.product_id != product_id) {
                            items.push(OrderItem { product_id, quantity: rng.gen_range(1..=3) });
                        }
                    }
                    items
                }
            };
            let id = format!("{}{i}", id_prefix(seed));
            let payment_method = if expected == Expected::Declined { "DECLINED" } else { "CREDIT_CARD" };
            let body = serde_json::to_vec(&serde_json::json!({
                "orderId": id,
                "orderItems": items,
                "shippingAddress": "1 Benchmark Way",
                "paymentMethod": payment_method,
            }))
            .context("cannot encode an order")?;
            Ok(PlannedOrder { id, body, expected })
        })
        .collect()
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let (concurrency, orders) = if args.unloaded {
        (1, args.orders.unwrap_or(DEFAULT_UNLOADED_ORDERS))
    } else {
        (args.concurrency.max(1), args.orders.unwrap_or(DEFAULT_ORDERS))
    };
    if orders == 0 {
        bail!("--orders must be at least 1");
    }
    if args.nodes > 1 && args.store.is_none() {
        bail!("--nodes {} needs --store postgres://...: the nodes of a cluster share one database", args.nodes);
    }
    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => {
            if dir.exists() {
                bail!("--data-dir {} already exists; a benchmark starts from an empty store", dir.display());
            }
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_owned()
        }
    };
    let otlp = crate::commands::dev::otlp_args(args.otlp_endpoint.as_deref());
    let mut options = StackOptions {
        data_dir: data_dir.clone(),
        engine_listen: free_loopback_addr()?,
        worker_listen: free_loopback_addr()?,
        workflows: None,
        output: ChildOutput::LogFiles,
        layout: args.workers,
        engine_args: [
            vec!["--durability".to_owned(), args.durability.as_str().to_owned()],
            store_args(&args.store),
            otlp.clone(),
        ]
        .concat(),
        worker_args: [
            vec![
                "--durability".to_owned(),
                args.durability.as_str().to_owned(),
                "--concurrency".to_owned(),
                args.worker_concurrency.to_string(),
                "--protocol".to_owned(),
                args.worker_protocol.as_str().to_owned(),
            ],
            otlp,
        ]
        .concat(),
        nodes: args.nodes,
    };
    let preload_took = match args.preload {
        0 => None,
        runs => Some(Stack::preload(&options, runs).await?),
    };
    let mut stack = Stack::start_on_free_ports(&mut options).await?;
    let start_up = StartUp {
        preloaded: args.preload,
        preload_took,
        ready_after: stack.engine_ready_after(),
        rss_at_start_kib: stack.engine_pid().and_then(|pid| proc_status_kib(pid, "VmRSS:")),
    };
    let target = Target::of(&stack);
    let outcome = tokio::select! {
        outcome = async { measure(&target?, &args, concurrency, orders, &data_dir, &start_up).await } => outcome,
        died = stack.died() => Err(anyhow!("{died}")),
    };
    stack.stop().await;
    let report = outcome?;
    output::line(&serde_json::to_string_pretty(&report.json).context("cannot encode the report")?)?;
    if report.violations > 0 {
        bail!("{} invariant violation(s): the run lost or doubled something", report.violations);
    }
    Ok(())
}

/// A worker's `--protocol` (the CLI does not depend on the worker crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkerProtocol {
    Stream,
    Poll,
}

impl WorkerProtocol {
    fn as_str(self) -> &'static str {
        match self {
            WorkerProtocol::Stream => "stream",
            WorkerProtocol::Poll => "poll",
        }
    }
}

#[cfg(test)]
mod tests;
