//! Crash torture: "nothing lost, nothing doubled" under random kill -9 and freezes.
//!
//! Real separate processes: one engine and three workers (inventory, payment, notification,
//! each with its own data dir and admin port; the payment worker fails 20% of charges with a
//! retryable error). The test drives a seeded mix of orders (declined cards, out-of-stock,
//! normal) through the order API, retrying every POST with the same `orderId` until it is
//! acknowledged, while a chaos loop kills a process with SIGKILL (the engine about half the
//! time) or freezes one with SIGSTOP for 1-10 s. A killed process restarts 0-2 s later on the
//! same data dir and port, and some kills land right after a restart, while the engine or
//! worker is still recovering. Then it heals (everything up, nothing stopped), drains (no
//! order PENDING, bounded) and audits with the shared checker (`shop_types::audit`): 0 lost,
//! 0 duplicated effects, 0 violations.
//!
//! Size and seed come from the environment: `TORTURE_ORDERS` (default 300), `TORTURE_KILLS`
//! (6), `TORTURE_FREEZES` (2), `TORTURE_SEED` (random, always printed, and printed again on
//! failure so the run can be replayed). The full run is
//! `TORTURE_ORDERS=10000 TORTURE_KILLS=100 TORTURE_FREEZES=20 cargo test --release -p shop-tests --test torture -- --nocapture`.
//! It reports figures, including the time to drain, and never asserts a timing.

use shop_tests::process::{send, Engine, EngineOptions, Process, Worker, WorkerOptions};
use shop_tests::{audit_stack, order_body, Admin, Admins, Api};
use shop_types::audit::{expected_outcome, Audit, Expected, InitialStock, Options, ViolationKind};
use shop_types::order::{OrderInput, OrderItem, DECLINED_PAYMENT_METHOD};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const DEFAULT_ORDERS: usize = 300;
const DEFAULT_KILLS: usize = 6;
const DEFAULT_FREEZES: usize = 2;

/// Products normal orders draw from, stocked so that no mix of orders can exhaust them: then
/// every outcome is dictated by its input alone, whatever the order of arrival.
const STOCKED_PRODUCTS: [i64; 5] = [1, 2, 3, 4, 5];
const PLENTY: i64 = 1_000_000;
/// A product with no stock: every order naming it is out of stock.
const SOLD_OUT_PRODUCT: i64 = 7;
const MAX_LINES: u64 = 3;
const MAX_QUANTITY: u64 = 5;
/// Percent of orders paid with a declined card, and out of stock.
const DECLINED_PERCENT: u64 = 10;
const OUT_OF_STOCK_PERCENT: u64 = 10;

/// The payment worker's transient failure rate (retryable `PAYMENT_UNAVAILABLE`).
const PAYMENT_FAILURE_RATE: &str = "0.2";
/// Latency every activity takes, so that runs are in flight when a fault lands.
const WORKER_LATENCY: &str = "10ms";

/// POSTs in flight at once.
const PLACEMENT_CONCURRENCY: usize = 32;
/// The pace of new orders: at least this many per second, faster for big runs so that
/// placing takes about `PLACEMENT_SPAN` (outages come on top).
const MIN_ORDER_RATE: f64 = 15.0;
const PLACEMENT_SPAN: Duration = Duration::from_secs(60);
/// How long one order may take to be acknowledged, outages included.
const PLACEMENT_DEADLINE: Duration = Duration::from_secs(600);
/// Pause before retrying a POST the engine could not take.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How long a killed process stays down before its restart, at most.
const MAX_DOWNTIME_MS: u64 = 2_000;
/// How long a frozen process stays stopped.
const FREEZE_MS: (u64, u64) = (1_000, 10_000);
/// Percent of kills followed at once by another fault, landing while the restarted process
/// is still recovering.
const DURING_RECOVERY_PERCENT: u64 = 30;
/// How soon after a restart such a fault lands, at most.
const RECOVERY_WINDOW_MS: u64 = 300;

/// How long the drain may take after healing before the test gives up (the target is 60 s).
const DRAIN_DEADLINE: Duration = Duration::from_secs(300);
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Violations printed in full.
const VIOLATIONS_SHOWN: usize = 40;

/// A tiny seeded generator (splitmix64): the whole run follows from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// Prints the seed again if the test fails, so the failing run can be replayed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("torture FAILED with seed {0}; replay it with TORTURE_SEED={0}", self.0);
        }
    }
}

/// The seeded order mix, with the outcome each order's input dictates. A normal order may
/// also end CANCELLED for PAYMENT_UNAVAILABLE: at a 20% failure rate, all six attempts
/// failing (0.2^6) happens about once in 15,000 orders.
fn plan(rng: &mut Rng, count: usize, initial: &BTreeMap<i64, i64>) -> Vec<(OrderInput, Expected)> {
    (0..count)
        .map(|i| {
            let mut lines: BTreeMap<i64, i64> = BTreeMap::new();
            for _ in 0..rng.between(1, MAX_LINES) {
                let product = STOCKED_PRODUCTS[rng.between(0, STOCKED_PRODUCTS.len() as u64 - 1) as usize];
                lines.insert(product, rng.between(1, MAX_QUANTITY) as i64);
            }
            let mut payment_method = "CREDIT_CARD";
            let roll = rng.between(0, 99);
            if roll < DECLINED_PERCENT {
                payment_method = DECLINED_PAYMENT_METHOD;
            } else if roll < DECLINED_PERCENT + OUT_OF_STOCK_PERCENT {
                // Half of them beside an in-stock line: reservation is all or nothing.
                if rng.percent(50) {
                    lines.clear();
                }
                lines.insert(SOLD_OUT_PRODUCT, 1);
            }
            let input = OrderInput {
                order_id: format!("torture-{i:05}"),
                order_items: lines
                    .into_iter()
                    .map(|(product_id, quantity)| OrderItem { product_id, quantity })
                    .collect(),
                shipping_address: "1 Torture Lane".to_owned(),
                payment_method: payment_method.to_owned(),
                customer_id: None,
            };
            let expected = match expected_outcome(&input, initial) {
                Expected::Confirmed => Expected::ConfirmedOrPaymentUnavailable,
                other => other,
            };
            (input, expected)
        })
        .collect()
}

/// Posts one order until the engine acknowledges it (2xx), retrying with the same body
/// (and so the same `orderId`) while the engine is down, frozen or refusing for now.
async fn place_until_acknowledged(api: Api, input: OrderInput) -> Result<(), String> {
    let items: Vec<(i64, i64)> = input.order_items.iter().map(|i| (i.product_id, i.quantity)).collect();
    let body = order_body(Some(&input.order_id), &items, &input.payment_method);
    let deadline = Instant::now() + PLACEMENT_DEADLINE;
    loop {
        match api.place_order(&body).await {
            Ok(reply) if reply.is_success() => return Ok(()),
            Ok(reply) if reply.status == 503 => {}
            Ok(reply) => return Err(format!("{}: {} {}", input.order_id, reply.status, reply.text)),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(format!("{}: not acknowledged within {PLACEMENT_DEADLINE:?}", input.order_id));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The processes under test.
struct Cluster {
    engine: Engine,
    /// Inventory, payment, notification.
    workers: [Worker; 3],
}

/// Faults injected, by kind.
#[derive(Debug, Default)]
struct Faults {
    engine_kills: usize,
    worker_kills: usize,
    freezes: usize,
    /// Kills and freezes that landed within `RECOVERY_WINDOW_MS` of a restart.
    during_recovery: usize,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Freeze,
}

/// Which process a fault hits: 0 is the engine, 1-3 the workers.
const ENGINE: usize = 0;
const PROCESSES: u64 = 4;

impl Cluster {
    fn proc(&self, which: usize) -> &Process {
        let proc = if which == ENGINE { self.engine.proc() } else { self.workers[which - 1].proc() };
        proc.expect("every process is up between faults")
    }

    /// kill -9, 0-2 s down, restart on the same data dir and port.
    async fn kill_and_restart(&mut self, rng: &mut Rng, which: usize) {
        let downtime = Duration::from_millis(rng.between(0, MAX_DOWNTIME_MS));
        if which == ENGINE {
            self.engine.kill9();
            tokio::time::sleep(downtime).await;
            self.engine.restart().await;
        } else {
            let worker = &mut self.workers[which - 1];
            worker.kill9();
            tokio::time::sleep(downtime).await;
            worker.restart().await;
        }
    }

    /// SIGSTOP for 1-10 s, then SIGCONT.
    async fn freeze(&self, rng: &mut Rng, which: usize) {
        let proc = self.proc(which);
        send(proc, "STOP");
        tokio::time::sleep(Duration::from_millis(rng.between(FREEZE_MS.0, FREEZE_MS.1))).await;
        send(proc, "CONT");
    }
}

/// Injects `kills` and `freezes` in a seeded order, spread over the placement (fault k waits
/// until k/(n+1) of the orders are acknowledged), some right after a restart.
async fn chaos(
    cluster: &mut Cluster,
    rng: &mut Rng,
    kills: usize,
    freezes: usize,
    acked: &AtomicUsize,
    orders: usize,
) -> Faults {
    let mut schedule: Vec<Fault> =
        std::iter::repeat_n(Fault::Kill, kills).chain(std::iter::repeat_n(Fault::Freeze, freezes)).collect();
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.between(0, i as u64) as usize);
    }
    let total = schedule.len();
    let mut faults = Faults::default();
    let mut right_after_restart = false;
    for (k, fault) in schedule.into_iter().enumerate() {
        if right_after_restart {
            tokio::time::sleep(Duration::from_millis(rng.between(0, RECOVERY_WINDOW_MS))).await;
            faults.during_recovery += 1;
        } else {
            let threshold = (k + 1) * orders / (total + 1);
            let deadline = Instant::now() + PLACEMENT_DEADLINE;
            while acked.load(Ordering::SeqCst) < threshold && Instant::now() < deadline {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        right_after_restart = false;
        match fault {
            Fault::Kill => {
                // About half the kills hit the engine, the rest one of the three workers.
                let which = if rng.percent(50) { ENGINE } else { rng.between(1, PROCESSES - 1) as usize };
                if which == ENGINE {
                    faults.engine_kills += 1;
                } else {
                    faults.worker_kills += 1;
                }
                cluster.kill_and_restart(rng, which).await;
                right_after_restart = rng.percent(DURING_RECOVERY_PERCENT);
            }
            Fault::Freeze => {
                faults.freezes += 1;
                let which = rng.between(0, PROCESSES - 1) as usize;
                cluster.freeze(rng, which).await;
            }
        }
    }
    faults
}

/// Waits until the engine holds no RUNNING order; returns how long that took.
async fn drain(api: &Api) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        match api.get("/v1/workflows?type=order&status=running&limit=1").await {
            Ok(reply) if reply.status == 200 => {
                if reply.body["workflows"].as_array().is_some_and(Vec::is_empty) {
                    return Ok(started.elapsed());
                }
            }
            Ok(reply) => return Err(format!("listing running orders: {} {}", reply.status, reply.text)),
            Err(e) => return Err(format!("listing running orders: {e:#}")),
        }
        if started.elapsed() > DRAIN_DEADLINE {
            return Err(format!("orders still PENDING {DRAIN_DEADLINE:?} after healing"));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

fn report(
    seed: u64,
    orders: usize,
    faults: &Faults,
    found: &Audit,
    drain: Duration,
    unacked: usize,
) -> serde_json::Value {
    serde_json::json!({
        "seed": seed,
        "orders": orders,
        "acknowledged": orders - unacked,
        "confirmed": found.confirmed,
        "cancelled": found.cancelled,
        "cancelled_payment_unavailable": found.payment_unavailable,
        "faults": {
            "engine_kills": faults.engine_kills,
            "worker_kills": faults.worker_kills,
            "freezes": faults.freezes,
            "during_recovery": faults.during_recovery,
        },
        "lost": found.count(ViolationKind::Lost),
        "duplicated_effects": found.count(ViolationKind::Duplicate),
        "violations": found.violations.len(),
        "drain_after_heal_ms": drain.as_millis() as u64,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn torture_kill_and_freeze_lose_and_double_nothing() {
    let seed = match std::env::var("TORTURE_SEED") {
        Ok(_) => env_number("TORTURE_SEED", 0),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default(),
    };
    let _seed_on_failure = SeedOnFailure(seed);
    let orders = env_number("TORTURE_ORDERS", DEFAULT_ORDERS as u64) as usize;
    let kills = env_number("TORTURE_KILLS", DEFAULT_KILLS as u64) as usize;
    let freezes = env_number("TORTURE_FREEZES", DEFAULT_FREEZES as u64) as usize;
    println!(
        "torture seed {seed} (replay with TORTURE_SEED={seed}): {orders} orders, {kills} kills, {freezes} freezes"
    );
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().expect("create the torture test's temporary dir");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let worker = |activities: &str, extra: &[&str]| {
        let mut args = vec!["--latency".to_owned(), WORKER_LATENCY.to_owned()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        WorkerOptions { activities: activities.to_owned(), args, ..WorkerOptions::default() }
    };
    let workers = [
        Worker::start(dir.path(), "inventory", &engine.url(), worker("inventory", &[])).await,
        Worker::start(
            dir.path(),
            "payment",
            &engine.url(),
            worker("payment", &["--payment-failure-rate", PAYMENT_FAILURE_RATE]),
        )
        .await,
        Worker::start(dir.path(), "notification", &engine.url(), worker("notification", &[])).await,
    ];
    let api = Api::new(&engine.url());
    let admins = Admins {
        inventory: Admin::new(&workers[0].url()),
        payment: Admin::new(&workers[1].url()),
        notification: Admin::new(&workers[2].url()),
    };
    let mut cluster = Cluster { engine, workers };

    for product in STOCKED_PRODUCTS {
        admins.inventory.set_stock(product, PLENTY).await;
    }
    admins.inventory.set_stock(SOLD_OUT_PRODUCT, 0).await;
    let initial: BTreeMap<i64, i64> = admins.inventory.stock().await.iter().map(|p| (p.product_id, p.stock)).collect();
    let planned = plan(&mut rng, orders, &initial);

    // The driver: a steady pace of new orders, each retried until acknowledged.
    let rate = MIN_ORDER_RATE.max(orders as f64 / PLACEMENT_SPAN.as_secs_f64());
    let acked = Arc::new(AtomicUsize::new(0));
    let acknowledged: Arc<Mutex<HashMap<String, Expected>>> = Arc::default();
    let driver = {
        let (api, acked, acknowledged) = (api.clone(), acked.clone(), acknowledged.clone());
        let planned = planned.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(PLACEMENT_CONCURRENCY));
            let mut placements = JoinSet::new();
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            for (input, expected) in planned {
                pace.tick().await;
                let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
                let (api, acked, acknowledged) = (api.clone(), acked.clone(), acknowledged.clone());
                placements.spawn(async move {
                    let _permit = permit;
                    let id = input.order_id.clone();
                    let placed = place_until_acknowledged(api, input).await;
                    if placed.is_ok() {
                        acknowledged.lock().expect("no placement panics holding the lock").insert(id, expected);
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    placed
                });
            }
            let mut failures = Vec::new();
            while let Some(placed) = placements.join_next().await {
                if let Err(e) = placed.expect("a placement task does not panic") {
                    failures.push(e);
                }
            }
            failures
        })
    };

    let faults = chaos(&mut cluster, &mut rng, kills, freezes, &acked, orders).await;
    let failures = driver.await.expect("the driver does not panic");
    // Healed: every fault restarted or resumed its process; all are up and none stopped.
    let drained = drain(&api).await;
    let expected = acknowledged.lock().expect("the driver is done").clone();
    let options =
        Options { initial_stock: InitialStock::Known(initial), expected: Some(expected), allow_running: false };
    let found = audit_stack(&api, &admins, &options).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));

    let drain_time = drained.as_ref().copied().unwrap_or(DRAIN_DEADLINE);
    let figures = report(seed, orders, &faults, &found, drain_time, failures.len());
    println!(
        "torture report (seed {seed}): {orders} orders ({} confirmed, {} cancelled of which {} for PAYMENT_UNAVAILABLE); \
         faults: {} engine kills, {} worker kills, {} freezes ({} right after a restart); \
         lost {}, duplicated effects {}, violations {}; drained {:.1} s after healing",
        found.confirmed,
        found.cancelled,
        found.payment_unavailable,
        faults.engine_kills,
        faults.worker_kills,
        faults.freezes,
        faults.during_recovery,
        found.count(ViolationKind::Lost),
        found.count(ViolationKind::Duplicate),
        found.violations.len(),
        drain_time.as_secs_f64(),
    );
    println!("TORTURE_REPORT {figures}");
    for violation in found.violations.iter().take(VIOLATIONS_SHOWN) {
        println!("  violation: {violation}");
        // The run's history, so a failure can be understood without the (deleted) data dir.
        if let Ok(history) = api.try_history(&violation.subject).await {
            let start_ms = history.first().map_or(0, |event| event.at_ms);
            for event in history {
                let step = event.step_name.as_deref().unwrap_or("");
                println!("    #{} +{}ms {step} {:?}", event.seq, event.at_ms.saturating_sub(start_ms), event.event);
            }
        }
    }
    assert!(failures.is_empty(), "seed {seed}: orders never acknowledged: {failures:#?}");
    if let Err(e) = drained {
        panic!("seed {seed}: {e}");
    }
    assert!(found.is_clean(), "seed {seed}: {} violation(s), listed above", found.violations.len());
    assert_eq!(found.orders, orders, "seed {seed}: every planned order was audited");
}
