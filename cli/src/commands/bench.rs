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
    /// Store this many completed order runs first (written by the engine itself), then
    /// measure start-up time and memory with them in the store.
    #[arg(long, default_value_t = 0)]
    preload: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    confirmed: u32,
    out_of_stock: u32,
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
    let options = StackOptions {
        data_dir: data_dir.clone(),
        engine_listen: free_loopback_addr()?,
        worker_listen: free_loopback_addr()?,
        workflows: None,
        output: ChildOutput::LogFiles,
        layout: args.workers,
        engine_args: vec!["--durability".to_owned(), args.durability.as_str().to_owned()],
        worker_args: vec![
            "--durability".to_owned(),
            args.durability.as_str().to_owned(),
            "--concurrency".to_owned(),
            args.worker_concurrency.to_string(),
        ],
    };
    let preload_took = match args.preload {
        0 => None,
        runs => Some(Stack::preload(&options, runs).await?),
    };
    let mut stack = Stack::start(&options).await?;
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

struct Report {
    json: serde_json::Value,
    violations: usize,
}

/// One order's measured life.
struct Sample {
    start_us: u64,
    e2e_us: u64,
    status: String,
}

#[derive(Deserialize)]
struct OrderStatus {
    status: String,
}

#[derive(Deserialize, Default)]
struct EngineStats {
    commits: u64,
    commands: u64,
    events: u64,
}

/// What the measurement talks to: the engine, and the admin API of each domain's worker.
struct Target {
    engine: Client,
    engine_url: String,
    engine_pid: Option<u32>,
    worker_pids: Vec<u32>,
    inventory: Client,
    payments: Client,
    notifications: Client,
}

impl Target {
    fn of(stack: &Stack) -> Result<Target> {
        let engine_url = stack.client().engine().base_str().to_owned();
        let admin = |domain: &str| -> Result<Client> {
            let url = stack.admin_url(domain).ok_or_else(|| anyhow!("no worker serves {domain}"))?;
            stack.client().with_worker(url)
        };
        Ok(Target {
            engine: stack.client().clone(),
            engine_pid: stack.engine_pid(),
            worker_pids: stack.worker_pids(),
            inventory: admin("inventory")?,
            payments: admin("payment")?,
            notifications: admin("notification")?,
            engine_url,
        })
    }
}

/// How the engine started: with how many stored runs, and what that cost.
struct StartUp {
    preloaded: u64,
    preload_took: Option<Duration>,
    ready_after: Duration,
    rss_at_start_kib: Option<u64>,
}

async fn measure(
    target: &Target,
    args: &BenchArgs,
    concurrency: usize,
    count: usize,
    data_dir: &Path,
    start_up: &StartUp,
) -> Result<Report> {
    let Target { engine, engine_url, engine_pid, worker_pids, inventory, payments, notifications } = target;
    stock_catalog(inventory).await?;

    let planned = Arc::new(plan_orders(count, args.mix, args.seed)?);
    // Its own pool, one idle connection per benchmark client, and no retry: the clients
    // back off from an overloaded engine themselves and time it.
    let options = shop_client::Options {
        request_timeout: ORDER_REQUEST_TIMEOUT,
        pool_max_idle_per_host: Some(concurrency),
        ..shop_client::Options::default()
    };
    let http = shop_client::Client::new(shop_client::Service::Engine, engine_url, options)
        .context("cannot create the HTTP client")?;
    let before: EngineStats = engine.engine().stats().await?.body;
    output::note(&format!(
        "bench: {count} orders, {concurrency} in flight, {} durability, workers {:?}",
        args.durability.as_str(),
        args.workers
    ));

    let engine_cpu_before = engine_pid.and_then(cpu_ms);
    let workers_cpu_before: Option<u64> = worker_pids.iter().map(|&pid| cpu_ms(pid)).sum();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // In the open loop, order i starts at `started + i / rate`, late only if every client
    // is busy.
    let interval = args.rate.map(|rate| Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, planned, next, done) = (http.clone(), planned.clone(), next.clone(), done.clone());
        clients.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(order) = planned.get(index) else { break };
                if let Some(interval) = interval {
                    let due = started + interval.mul_f64(index as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                samples.push(drive_one(&http, order).await?);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(samples)
        });
    }
    let progress = tokio::spawn(show_progress(done.clone(), count, started));
    let mut samples = Vec::with_capacity(count);
    while let Some(joined) = clients.join_next().await {
        samples.extend(joined.context("a benchmark client panicked")??);
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!();
    let after: EngineStats = engine.engine().stats().await?.body;
    let engine_cpu = engine_pid.and_then(cpu_ms).zip(engine_cpu_before).map(|(after, before)| after - before);
    let workers_cpu_after: Option<u64> = worker_pids.iter().map(|&pid| cpu_ms(pid)).sum();
    let workers_cpu = workers_cpu_after.zip(workers_cpu_before).map(|(after, before)| after - before);
    let per_saga = |cpu_ms: Option<u64>| cpu_ms.map(|ms| round(ms as f64 / count as f64, 3));

    let mut start_us = Histogram::<u64>::new(3).context("cannot create a histogram")?;
    let mut e2e_us = Histogram::<u64>::new(3).context("cannot create a histogram")?;
    for sample in &samples {
        start_us.record(sample.start_us.max(1)).context("latency out of range")?;
        e2e_us.record(sample.e2e_us.max(1)).context("latency out of range")?;
    }
    let domains =
        Domains { inventory: inventory.clone(), payment: payments.clone(), notification: notifications.clone() };
    let violations = verify(&planned, &samples, engine, &domains).await?;
    let engine_peak_rss_mb = engine_pid.and_then(|pid| proc_status_kib(pid, "VmHWM:")).map(|kib| kib as f64 / 1024.0);
    let disk_bytes = disk_usage(&data_dir.join("engine"));
    let seconds = elapsed.as_secs_f64();
    let commits = after.commits.saturating_sub(before.commits).max(1);
    let ms = |h: &Histogram<u64>, q: f64| round(h.value_at_quantile(q) as f64 / 1000.0, 3);
    let confirmed = samples.iter().filter(|s| s.status == "CONFIRMED").count();
    let json = serde_json::json!({
        "orders": count,
        "concurrency": concurrency,
        "rate_per_sec": args.rate,
        "durability": args.durability.as_str(),
        "workers": format!("{:?}", args.workers),
        "elapsed_s": round(seconds, 3),
        "sagas_per_sec": round(count as f64 / seconds, 1),
        "start_p50_ms": ms(&start_us, 0.50),
        "start_p99_ms": ms(&start_us, 0.99),
        "e2e_p50_ms": ms(&e2e_us, 0.50),
        "e2e_p99_ms": ms(&e2e_us, 0.99),
        "engine_peak_rss_mb": engine_peak_rss_mb.map(|mb| round(mb, 1)),
        // Every run in the store, preloaded ones included.
        "disk_bytes_per_saga": disk_bytes.map(|bytes| bytes / (count as u64 + start_up.preloaded)),
        "events_per_sec": round(after.events.saturating_sub(before.events) as f64 / seconds, 0),
        "mean_commit_batch": round(after.commands.saturating_sub(before.commands) as f64 / commits as f64, 2),
        "engine_cpu_ms_per_saga": per_saga(engine_cpu),
        "workers_cpu_ms_per_saga": per_saga(workers_cpu),
        "mean_events_per_commit": round(after.events.saturating_sub(before.events) as f64 / commits as f64, 2),
        "confirmed": confirmed,
        "cancelled": samples.len() - confirmed,
        "violations": violations,
        "preloaded_runs": start_up.preloaded,
        "preload_s": start_up.preload_took.map(|took| round(took.as_secs_f64(), 1)),
        "engine_start_to_serving_s": round(start_up.ready_after.as_secs_f64(), 3),
        "engine_rss_at_start_mb": start_up.rss_at_start_kib.map(|kib| round(kib as f64 / 1024.0, 1)),
    });
    Ok(Report { json, violations })
}

fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

async fn stock_catalog(inventory: &Client) -> Result<()> {
    for product_id in 1..=EMPTY_PRODUCT {
        let units = if product_id == EMPTY_PRODUCT { 0 } else { CATALOG_UNITS };
        let request = SetStockRequest { units, name: None, price_cents: None };
        inventory
            .worker()
            .set_stock(product_id, &request)
            .await
            .with_context(|| format!("cannot stock product {product_id}"))?;
    }
    Ok(())
}

/// Places one order and waits for its final state, timing both.
async fn drive_one(http: &shop_client::Client, order: &PlannedOrder) -> Result<Sample> {
    let deadline = Instant::now() + ORDER_DEADLINE;
    let begun = Instant::now();
    // Raw calls: the body is encoded once, before timing, and the answer is only read as
    // far as its status.
    loop {
        let response = http
            .send(Method::POST, "/api/orders", Some("application/json"), order.body.clone(), &[])
            .await
            .with_context(|| format!("cannot place order {}", order.id))?;
        let status = response.status;
        if status.is_success() {
            break;
        }
        let text = String::from_utf8_lossy(&response.body);
        if status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            bail!("placing order {} failed: {status} {text}", order.id);
        }
        tokio::time::sleep(OVERLOAD_BACKOFF).await;
    }
    let start_us = micros(begun.elapsed());
    let wait_path = format!("/api/orders/{}?wait={ORDER_WAIT}", order.id);
    loop {
        let response = http
            .send(Method::GET, &wait_path, None, Vec::new(), &[])
            .await
            .with_context(|| format!("cannot read order {}", order.id))?;
        let (status, bytes) = (response.status, response.body);
        if !status.is_success() {
            bail!("reading order {} failed: {status} {}", order.id, String::from_utf8_lossy(&bytes));
        }
        let view: OrderStatus = serde_json::from_slice(&bytes).context("an order in an unexpected shape")?;
        if view.status != "PENDING" {
            return Ok(Sample { start_us, e2e_us: micros(begun.elapsed()), status: view.status });
        }
        if Instant::now() > deadline {
            bail!("order {} is still PENDING after {}", order.id, output::duration(ORDER_DEADLINE));
        }
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

async fn show_progress(done: Arc<AtomicUsize>, total: usize, started: Instant) {
    const WIDTH: usize = 30;
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let finished = done.load(Ordering::Relaxed);
        let filled = finished * WIDTH / total.max(1);
        let rate = finished as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprint!("\r[{}{}] {finished}/{total} orders, {rate:.0}/s", "#".repeat(filled), ".".repeat(WIDTH - filled));
    }
}

/// Checks every order's outcome and the shop's invariants (design.md section 7, items 1-6)
/// with the shared checker, against the engine's runs and histories and the workers' own
/// data. Returns how many violations it found, printing them.
/// The ID prefix of every order of a run with this seed.
fn id_prefix(seed: u64) -> String {
    format!("bench-{seed}-")
}

/// The prefix of an order ID made by [`id_prefix`].
fn order_prefix(id: &str) -> String {
    id.rsplit_once('-').map_or_else(|| id.to_owned(), |(head, _)| format!("{head}-"))
}

async fn verify(planned: &[PlannedOrder], samples: &[Sample], engine: &Client, domains: &Domains) -> Result<usize> {
    let mut violations = Vec::new();
    if samples.len() != planned.len() {
        violations.push(format!("{} orders planned, {} finished", planned.len(), samples.len()));
    }
    let expected = planned
        .iter()
        .map(|order| {
            let outcome = match order.expected {
                Expected::Confirmed => audit::Expected::Confirmed,
                Expected::OutOfStock | Expected::Declined => audit::Expected::Cancelled,
            };
            (order.id.clone(), outcome)
        })
        .collect();
    let initial = (1..=EMPTY_PRODUCT)
        .map(|product_id| (product_id, if product_id == EMPTY_PRODUCT { 0 } else { CATALOG_UNITS }))
        .collect();
    let options =
        Options { initial_stock: InitialStock::Known(initial), expected: Some(expected), allow_running: false };
    // Only this run's orders: a store preloaded with finished runs is not audited again.
    let prefix = planned.first().map(|order| order_prefix(&order.id));
    let found = audit::audit(&verify::snapshot(engine, domains, prefix.as_deref()).await?, &options);
    violations.extend(found.violations.iter().map(ToString::to_string));

    for violation in violations.iter().take(VIOLATIONS_SHOWN) {
        output::note(&format!("violation: {violation}"));
    }
    if violations.len() > VIOLATIONS_SHOWN {
        output::note(&format!("... and {} more violations", violations.len() - VIOLATIONS_SHOWN));
    }
    Ok(violations.len())
}

/// A memory figure of the process in KiB from /proc (`VmRSS:` now, `VmHWM:` its peak).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU time (user + system) the process has used so far, in milliseconds, from /proc. CPU
/// per saga is steadier than throughput on a machine that is doing other work too.
fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1000 / CLOCK_TICKS_PER_SECOND)
}

/// The kernel's USER_HZ, which /proc reports times in; 100 on every Linux we run on.
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// Bytes the directory's files occupy on disk (allocated blocks, not apparent sizes).
fn disk_usage(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let entry = entry.ok()?;
            let metadata = entry.metadata().ok()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::order::PlaceOrderRequest;

    #[test]
    fn the_mix_must_add_up() {
        assert_eq!(parse_mix("80,10,10"), Ok(Mix { confirmed: 80, out_of_stock: 10 }));
        assert!(parse_mix("80,10").is_err());
        assert!(parse_mix("80,10,11").is_err());
        assert!(parse_mix("a,b,c").is_err());
    }

    #[test]
    fn plans_follow_the_mix_and_the_seed() -> Result<()> {
        let mix = Mix { confirmed: 80, out_of_stock: 10 };
        let plan = plan_orders(1000, mix, 7)?;
        let count = |e: Expected| plan.iter().filter(|o| o.expected == e).count();
        assert_eq!(
            (count(Expected::Confirmed), count(Expected::OutOfStock), count(Expected::Declined)),
            (800, 100, 100)
        );
        for order in plan.iter().filter(|o| o.expected == Expected::OutOfStock) {
            let request: PlaceOrderRequest = serde_json::from_slice(&order.body)?;
            assert_eq!(request.order_items[0].product_id, EMPTY_PRODUCT);
        }
        let again = plan_orders(1000, mix, 7)?;
        assert!(plan.iter().zip(&again).all(|(a, b)| a.body == b.body));
        Ok(())
    }
}
