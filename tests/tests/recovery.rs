//! Crash recovery: a few hundred orders placed concurrently while the engine (one test) or
//! the worker (the other) is killed with SIGKILL mid-flight and restarted on the same data
//! dir and address. Once everything is final, every invariant of design.md section 7 holds:
//! acknowledged orders exist, outcomes are what the inputs dictate, money and stock add up,
//! one notification per order, and every history is well formed.
//!
//! A POST that fails because the engine is down is retried with the same `orderId` until it
//! is acknowledged, which the engine must treat as the same order (idempotent start).

use shop_tests::{assert_invariants, order_body, Api, PlacedOrder, Stack, WorkerOptions, CANCELLED, CONFIRMED};
use shop_types::api::Health;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Orders placed per test.
const ORDER_COUNT: usize = 300;
/// POSTs in flight at once.
const PLACEMENT_CONCURRENCY: usize = 16;
/// Products normal orders draw from, each stocked so that no mix of orders can exhaust it.
const STOCKED_PRODUCTS: [i64; 5] = [1, 2, 3, 4, 5];
const PLENTY: i64 = 100_000;
/// A product with no stock at all: every order naming it is out of stock.
const SOLD_OUT_PRODUCT: i64 = 7;
const SOLD_OUT_QUANTITY: i64 = 999;
/// Most units per line of a normal order.
const MAX_NORMAL_QUANTITY: i64 = 5;
/// Latency the worker adds to every activity, so that runs are in flight when the kill lands.
const WORKER_LATENCY: &str = "20ms";
/// How long placing every order may take, outages included.
const PLACEMENT_DEADLINE: Duration = Duration::from_secs(120);
/// Pause before retrying a POST the engine could not take.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Orders awaited at once while draining.
const DRAIN_CONCURRENCY: usize = 32;

/// The deterministic order mix: 10% declined cards, 10% out of stock (half of them next to
/// an in-stock line, so reservation must be all or nothing), 80% normal orders of 1-3 lines.
fn plan(prefix: &str) -> Vec<PlacedOrder> {
    (0..ORDER_COUNT)
        .map(|i| {
            let order_id = format!("{prefix}-{i:04}");
            let i = i as i64;
            let line = |k: i64| {
                let product = STOCKED_PRODUCTS[((i + k) % STOCKED_PRODUCTS.len() as i64) as usize];
                (product, 1 + (i * 7 + k * 3) % MAX_NORMAL_QUANTITY)
            };
            let normal: Vec<(i64, i64)> = (0..1 + i % 3).map(line).collect();
            let sold_out = (SOLD_OUT_PRODUCT, SOLD_OUT_QUANTITY);
            let (items, payment_method, expected_status) = match i % 20 {
                0 | 10 => (normal, "DECLINED", CANCELLED),
                5 => (vec![line(0), sold_out], "CREDIT_CARD", CANCELLED),
                15 => (vec![sold_out], "CREDIT_CARD", CANCELLED),
                _ => (normal, "CREDIT_CARD", CONFIRMED),
            };
            PlacedOrder { order_id, items, payment_method: payment_method.to_owned(), expected_status }
        })
        .collect()
}

/// Posts one order until the engine acknowledges it (2xx), retrying with the same body
/// (and so the same `orderId`) while the engine is down or refusing for now.
async fn place_until_acknowledged(api: Api, order: PlacedOrder) -> Result<(), String> {
    let body = order_body(Some(&order.order_id), &order.items, &order.payment_method);
    let deadline = Instant::now() + PLACEMENT_DEADLINE;
    loop {
        match api.place_order(&body).await {
            Ok(reply) if reply.is_success() => return Ok(()),
            Ok(reply) if reply.status == 503 => {}
            Ok(reply) => return Err(format!("{}: {} {}", order.order_id, reply.status, reply.text)),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(format!("{}: not acknowledged within {PLACEMENT_DEADLINE:?}", order.order_id));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Which process the test kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Engine,
    Worker,
}

/// Waits until `count` orders are acknowledged (bounded).
async fn wait_for_acks(acked: &AtomicUsize, count: usize) {
    let deadline = Instant::now() + PLACEMENT_DEADLINE;
    while acked.load(Ordering::SeqCst) < count {
        assert!(Instant::now() < deadline, "{count} orders were not acknowledged within {PLACEMENT_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn crash_and_recover(victim: Victim, prefix: &str) {
    let options = WorkerOptions::with_args(["--latency", WORKER_LATENCY]);
    let mut stack = Stack::start_with(Default::default(), options).await;
    for product in STOCKED_PRODUCTS {
        stack.admin.set_stock(product, PLENTY).await;
    }
    stack.admin.set_stock(SOLD_OUT_PRODUCT, 0).await;
    let initial_stock = stack.admin.stock().await;

    let orders = plan(prefix);
    let acked = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(PLACEMENT_CONCURRENCY));
    let mut placements = JoinSet::new();
    for order in &orders {
        let (api, order, acked, permits) = (stack.api.clone(), order.clone(), acked.clone(), permits.clone());
        placements.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
            let placed = place_until_acknowledged(api, order).await;
            acked.fetch_add(1, Ordering::SeqCst);
            placed
        });
    }

    // Kill twice: once while orders are still being placed, once more while the later ones run.
    for kill_at in [ORDER_COUNT / 3, 2 * ORDER_COUNT / 3] {
        wait_for_acks(&acked, kill_at).await;
        // The test only proves something if the kill lands while runs are in flight.
        let health: Health = stack.api.get("/healthz").await.expect("GET /healthz").parse();
        assert!(health.active_workflows > 0, "no run in flight at the kill; slow the worker down");
        match victim {
            Victim::Engine => stack.engine.restart().await,
            Victim::Worker => stack.worker.restart().await,
        }
    }

    let mut failures = Vec::new();
    while let Some(placed) = placements.join_next().await {
        if let Err(e) = placed.expect("a placement task does not panic") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "orders not acknowledged: {failures:#?}");

    for chunk in orders.chunks(DRAIN_CONCURRENCY) {
        let mut drains = JoinSet::new();
        for order in chunk {
            let (api, id) = (stack.api.clone(), order.order_id.clone());
            drains.spawn(async move { api.wait_order(&id).await });
        }
        while let Some(done) = drains.join_next().await {
            done.expect("every order becomes final");
        }
    }
    assert_invariants(&stack.api, &stack.admin, &initial_stock, &orders).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_killed_mid_flight_loses_and_duplicates_nothing() {
    crash_and_recover(Victim::Engine, "crash-engine").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_mid_flight_loses_and_duplicates_nothing() {
    crash_and_recover(Victim::Worker, "crash-worker").await;
}
