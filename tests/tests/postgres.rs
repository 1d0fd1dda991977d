//! The engine on PostgreSQL (`--store postgres://...`), each test in its own database:
//! the seed's three order scenarios end as they do on sled; orders placed while the engine is
//! killed with SIGKILL and restarted are all there afterwards (nothing acknowledged lost, every
//! invariant of design.md section 7 holds); and a second engine started on the same database
//! takes every shard over, so the first one's next write is refused and it exits with
//! `EXIT_FENCED` (75) without acknowledging it. SKIPPED (loudly) where PostgreSQL is
//! unreachable, unless `SHOP_REQUIRE_POSTGRES=1`.

use shop_engine::store::postgres::test_db::TestDatabase;
use shop_tests::{
    assert_invariants, order_body, Engine, EngineOptions, PlacedOrder, Stack, WorkerOptions, CANCELLED, CONFIRMED,
};
use std::time::{Duration, Instant};

/// Orders placed around the kill.
const ORDER_COUNT: usize = 40;
/// How long a fenced engine may take to notice and exit.
const FENCED_EXIT_DEADLINE: Duration = Duration::from_secs(30);

fn on(database: &TestDatabase) -> EngineOptions {
    EngineOptions { args: vec!["--store".into(), database.url.clone()], ..EngineOptions::default() }
}

fn order(i: usize) -> PlacedOrder {
    let (items, payment_method, expected_status) = match i % 3 {
        0 => (vec![(1, 2)], "CREDIT_CARD", CONFIRMED),
        1 => (vec![(2, 999)], "CREDIT_CARD", CANCELLED),
        _ => (vec![(3, 1)], "DECLINED", CANCELLED),
    };
    PlacedOrder { order_id: format!("pg-{i:04}"), items, payment_method: payment_method.into(), expected_status }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_on_postgres_survive_a_kill_9_of_the_engine() {
    let Some(database) = TestDatabase::create("orders_on_postgres_survive_a_kill_9_of_the_engine") else { return };
    let mut stack = Stack::start_with(on(&database), WorkerOptions::with_args(["--latency", "20ms"])).await;
    for product in [1, 3] {
        stack.admin.set_stock(product, 10_000).await;
    }
    stack.admin.set_stock(2, 10).await;
    let initial_stock = stack.admin.stock().await;
    let orders: Vec<PlacedOrder> = (0..ORDER_COUNT).map(order).collect();

    // The three scenarios first, each to its end.
    for placed in &orders[..3] {
        let body = order_body(Some(&placed.order_id), &placed.items, &placed.payment_method);
        stack.api.place_order_ok(&body).await;
        let done = stack.api.wait_order(&placed.order_id).await;
        assert_eq!(done.status, placed.expected_status, "{}: {:?}", placed.order_id, done.reason);
    }
    // The rest acknowledged, then the engine killed while they run, then restarted.
    for placed in &orders[3..] {
        stack.api.place_order_ok(&order_body(Some(&placed.order_id), &placed.items, &placed.payment_method)).await;
    }
    stack.engine.restart().await;
    for placed in &orders {
        stack.api.wait_order(&placed.order_id).await;
    }
    assert_invariants(&stack.api, &stack.admin, &initial_stock, &orders).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_engine_on_the_database_fences_the_first() {
    let Some(database) = TestDatabase::create("a_second_engine_on_the_database_fences_the_first") else { return };
    let (first_dir, second_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let mut first = Engine::start(first_dir.path(), on(&database)).await;
    let first_api = shop_tests::Api::new(&first.url());
    let before = first_api.place_order_ok(&order_body(Some("before"), &[(1, 1)], "CREDIT_CARD")).await;

    let second = Engine::start(second_dir.path(), on(&database)).await;
    let second_api = shop_tests::Api::new(&second.url());
    assert_eq!(second_api.order(&before).await.order_id, before, "the new owner recovered the first one's order");

    // The first engine's next write is refused: no answer, and it exits, fenced.
    let refused = first_api.place_order(&order_body(Some("refused"), &[(1, 1)], "CREDIT_CARD")).await;
    assert!(refused.as_ref().map_or(true, |reply| !reply.is_success()), "a fenced write is never acknowledged");
    let deadline = Instant::now() + FENCED_EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = first.exit_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "the fenced engine did not exit within {FENCED_EXIT_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(shop_engine::core::EXIT_FENCED), "exits as fenced");
    let log = std::fs::read_to_string(first_dir.path().join("engine.log")).unwrap_or_default();
    assert!(log.contains("fenced"), "says why: {log}");

    let missing = second_api.get("/api/orders/refused").await.expect("GET");
    assert_eq!(missing.status, 404, "nothing of the refused write is stored: {}", missing.text);
    second_api.place_order_ok(&order_body(Some("after"), &[(1, 1)], "CREDIT_CARD")).await;
}

#[test]
fn migrate_is_idempotent_and_bad_flags_are_one_line_refusals() {
    use shop_tests::process::{binary, run_to_end};
    let Some(database) = TestDatabase::create("migrate_is_idempotent_and_bad_flags_are_one_line_refusals") else {
        return;
    };
    let engine = || std::process::Command::new(binary("shop-engine"));
    for _ in 0..2 {
        let mut migrate = engine();
        migrate.args(["migrate", "--store", &database.url]);
        let done = run_to_end(migrate, Duration::from_secs(60));
        assert!(done.status.success(), "{}", done.stderr);
        assert_eq!(done.stdout.trim(), "schema at version 2");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().display().to_string();
    let refusals: [(&[&str], &str); 3] = [
        (&["--store", "postgres://postgres@127.0.0.1:1/nowhere"], "cannot open the PostgreSQL store"),
        (&["--store", "postgres://host:notaport/db"], "bad --store URL"),
        (&["--store", &database.url, "--shards", "0"], "a cluster has 1 to"),
    ];
    for (args, reason) in refusals {
        let mut start = engine();
        start.args(["--data-dir", &data_dir, "--listen", "127.0.0.1:0", "--open"]).args(args);
        let done = run_to_end(start, Duration::from_secs(60));
        assert!(!done.status.success(), "{args:?} must be refused");
        let last = done.stderr.trim().lines().last().unwrap_or_default();
        assert!(last.starts_with("shop-engine: ") && last.contains(reason), "{args:?}: {}", done.stderr);
    }
}
