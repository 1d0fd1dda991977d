//! The engine on PostgreSQL (`--store postgres://...`), each test in its own database:
//! the seed's three order scenarios end as they do on sled; orders placed while the engine is
//! killed with SIGKILL and restarted are all there afterwards (nothing acknowledged lost, every
//! invariant of design.md section 7 holds); and a second engine started on the same database
//! shares the shards with the first (each serves its own, forwards the other's to it, and
//! takes them back when the other stops); a node paused (SIGSTOP) past its leases wakes up
//! serving and writing nothing of the shards it lost, then rejoins; and the event stream
//! spans shards. SKIPPED (loudly) where PostgreSQL is unreachable, unless
//! `SHOP_REQUIRE_POSTGRES=1`.

use shop_engine::store::postgres::test_db::TestDatabase;
use shop_tests::{
    assert_invariants, order_body, Engine, EngineOptions, PlacedOrder, Stack, WorkerOptions, CANCELLED, CONFIRMED,
};
use std::time::{Duration, Instant};

/// Orders placed around the kill.
const ORDER_COUNT: usize = 40;
/// How long shards may take to settle after a node joins or leaves: a join waits for the
/// hand-off (a second or two), a stop for the release. Generous; nothing times it.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

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

/// `GET /v1/cluster` of the engine at `api`.
async fn cluster(api: &shop_tests::Api) -> shop_types::cluster::ClusterStatus {
    let reply = api.get("/v1/cluster").await.expect("GET /v1/cluster");
    assert_eq!(reply.status, 200, "{}", reply.text);
    serde_json::from_str(&reply.text).expect("a cluster status")
}

/// Waits until `api`'s node sees `nodes` live nodes owning every shard between them, each at
/// least one; returns the status.
async fn settled(api: &shop_tests::Api, nodes: usize) -> shop_types::cluster::ClusterStatus {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let status = cluster(api).await;
        let live: Vec<_> = status.nodes.iter().filter(|node| node.live && node.shards_owned > 0).collect();
        let owned: u32 = live.iter().map(|node| node.shards_owned).sum();
        if live.len() == nodes && owned == status.shard_count && status.nodes.iter().filter(|n| n.live).count() == nodes
        {
            return status;
        }
        assert!(Instant::now() < deadline, "shards did not settle on {nodes} nodes: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An order id whose run is in a shard `node` owns in `status`.
fn order_owned_by(status: &shop_types::cluster::ClusterStatus, node: &str, tag: &str) -> String {
    (0..10_000)
        .map(|n| format!("{tag}-{n}"))
        .find(|id| {
            let shard =
                shop_engine::cluster::shard_of(&shop_types::WorkflowId::parse(id).expect("valid"), status.shard_count);
            status.shards.iter().any(|s| s.shard == shard.0 && s.owner.as_deref() == Some(node))
        })
        .expect("some id lands in every node's shards")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_engine_on_the_database_shares_the_shards() {
    let Some(database) = TestDatabase::create("a_second_engine_on_the_database_shares_the_shards") else { return };
    let (first_dir, second_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let first = Engine::start(first_dir.path(), on(&database)).await;
    let first_api = shop_tests::Api::new(&first.url());
    let alone = settled(&first_api, 1).await;
    let before = first_api.place_order_ok(&order_body(Some("before"), &[(1, 1)], "CREDIT_CARD")).await;

    let mut second = Engine::start(second_dir.path(), on(&database)).await;
    let second_api = shop_tests::Api::new(&second.url());
    let shared = settled(&second_api, 2).await;
    let (one, two) = (alone.node.clone(), shared.node.clone());
    assert_ne!(one, two);
    assert!(shared.shards.iter().all(|s| s.epoch >= 1), "every shard claimed: {shared:?}");
    // Reads reach the one database from any node.
    assert_eq!(second_api.order(&before).await.order_id, before, "the order is readable from the second node");

    // Each node starts runs in its own shards, and forwards the other's to their owner
    // (`api/forward`), so either node accepts both. The first node's map too (each node
    // reads the leases once a second).
    let status = settled(&first_api, 2).await;
    for (api, node, other) in [(&first_api, &one, &two), (&second_api, &two, &one)] {
        let mine = order_owned_by(&status, node, "mine");
        api.place_order_ok(&order_body(Some(&mine), &[(1, 1)], "CREDIT_CARD")).await;
        let theirs = order_owned_by(&status, other, "theirs");
        let forwarded = api.place_order(&order_body(Some(&theirs), &[(1, 1)], "CREDIT_CARD")).await.expect("answered");
        assert_eq!(forwarded.status, 202, "forwarded to its owner and accepted: {}", forwarded.text);
    }

    // shopctl shows the same cluster, as a table and as JSON.
    let mut command = std::process::Command::new(shop_tests::process::binary("shopctl"));
    command.env_remove("SHOP_ENGINE").env("NO_COLOR", "1").args(["--engine", &first.url(), "cluster", "status"]);
    let table = shop_tests::process::run_to_end(command, Duration::from_secs(60));
    assert!(table.status.success(), "{}", table.stderr);
    assert!(table.stdout.contains(&one) && table.stdout.contains(&two), "both nodes: {}", table.stdout);
    assert!(table.stdout.contains("EPOCH"), "{}", table.stdout);

    // The second stops gracefully: its shards are handed back, and the first serves them.
    assert!(second.stop().await.success(), "a graceful stop");
    let alone_again = settled(&first_api, 1).await;
    assert!(alone_again.nodes.iter().all(|node| node.id != two || !node.live), "the stopped node left");
    let theirs = order_owned_by(&status, &two, "after");
    first_api.place_order_ok(&order_body(Some(&theirs), &[(1, 1)], "CREDIT_CARD")).await;
    assert_eq!(cluster(&first_api).await.fence_rejections, 0, "a graceful hand-off refuses no write");
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
        assert_eq!(done.stdout.trim(), "schema at version 3");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().display().to_string();
    let refusals: [(&[&str], &str); 6] = [
        (&["--store", "postgres://postgres@127.0.0.1:1/nowhere"], "cannot open the PostgreSQL store"),
        (&["--store", "postgres://host:notaport/db"], "bad --store URL"),
        (&["--store", &database.url, "--shards", "0"], "a cluster has 1 to"),
        (&["--store", &database.url, "--lease-ms", "100"], "--lease-ms must be"),
        (&["--store", &database.url, "--node-id", "a b"], "--node-id must be"),
        (&["--store", &database.url, "--preload-completed", "10"], "works on sled only"),
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

/// The next `/v1/events` message's data and cursor (bounded wait: a broken stream fails the
/// test instead of hanging it).
async fn next_event(stream: &mut shop_client::events::EventStream) -> (shop_types::api::CommittedEventView, String) {
    let message = tokio::time::timeout(Duration::from_secs(120), stream.next())
        .await
        .expect("a message within the deadline")
        .expect("the stream goes on");
    (message.committed_event().expect("its data parses"), message.id.expect("every message has an id"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_follows_every_shard_and_resumes_from_its_cursor() {
    use shop_client::events::EventsQuery;
    let Some(database) = TestDatabase::create("the_event_stream_follows_every_shard") else { return };
    let stack = Stack::start_with(on(&database), WorkerOptions::default()).await;
    stack.admin.set_stock(1, 10_000).await;
    let ids: Vec<String> = (0..24).map(|n| format!("ev-{n:02}")).collect();
    for id in &ids {
        stack.api.place_order_ok(&order_body(Some(id), &[(1, 1)], "CREDIT_CARD")).await;
    }
    for id in &ids {
        stack.api.wait_order(id).await;
    }
    let shards: std::collections::BTreeSet<u32> = ids
        .iter()
        .map(|id| shop_engine::cluster::shard_of(&shop_types::WorkflowId::parse(id).expect("valid"), 16).0)
        .collect();
    assert!(shards.len() > 4, "the orders spread over shards: {shards:?}");
    let total: usize = {
        let mut total = 0;
        for id in &ids {
            total += stack.api.history(id).await.len();
        }
        total
    };
    // Half the events from the beginning, then resume from the last cursor for the rest.
    let events = |after: String| {
        stack.api.client().events(&EventsQuery { after: Some(after), ..EventsQuery::default() }).expect("a stream")
    };
    let mut stream = events("0".into());
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..total / 2 {
        let (event, id) = next_event(&mut stream).await;
        seen.push(event);
        cursor = id;
    }
    drop(stream);
    assert!(cursor.contains(','), "the cursor holds a position per shard: {cursor}");
    let mut stream = events(cursor);
    while seen.len() < total {
        seen.push(next_event(&mut stream).await.0);
    }
    for id in &ids {
        let expected: Vec<u64> = stack.api.history(id).await.iter().map(|e| e.seq).collect();
        let got: Vec<u64> = seen.iter().filter(|e| e.workflow_id.as_str() == id).map(|e| e.seq).collect();
        assert_eq!(got, expected, "run {id}: every event once, in order, across the resume");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_node_wakes_up_serving_nothing_of_the_shards_it_lost() {
    use shop_tests::process::send;
    let Some(database) = TestDatabase::create("a_paused_node_wakes_up_serving_nothing") else { return };
    let (first_dir, second_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let first = Engine::start(first_dir.path(), on(&database)).await;
    let second = Engine::start(second_dir.path(), on(&database)).await;
    let (first_api, second_api) = (shop_tests::Api::new(&first.url()), shop_tests::Api::new(&second.url()));
    settled(&second_api, 2).await;
    let status = settled(&first_api, 2).await;
    let zombie = order_owned_by(&status, &status.node, "zombie");

    // Paused for longer than its leases and its liveness: the other node takes every shard.
    send(first.proc().expect("running"), "STOP");
    let body = order_body(Some(&zombie), &[(1, 1)], "CREDIT_CARD");
    let queued = {
        let api = first_api.clone();
        tokio::spawn(async move { api.place_order(&body).await })
    };
    settled(&second_api, 1).await;
    // It wakes: its core refuses the order it had queued, because its own clock says the
    // lease may have lapsed, before anything of the shard is served or written. The API then
    // routes the refused request again (`api/forward`): once its map has caught up, to the new
    // owner, which accepts it (202); before that, the caller hears 503 and nothing is stored.
    send(first.proc().expect("running"), "CONT");
    let reply = queued.await.expect("the request task").expect("an answer");
    let stored = second_api.get(&format!("/api/orders/{zombie}")).await.expect("GET");
    match reply.status {
        202 => assert_eq!(stored.status, 200, "accepted by the new owner: {}", stored.text),
        503 => assert_eq!(stored.status, 404, "nothing of the refused order is stored: {}", stored.text),
        other => panic!("the queued order: {other} {}", reply.text),
    }
    let log = std::fs::read_to_string(first_dir.path().join("engine.log")).unwrap_or_default();
    assert!(log.contains("lapsed"), "the node says why it dropped its shards");
    // And it rejoins: placement gives it shards again.
    settled(&first_api, 2).await;
}

/// Polls `api`'s `GET /v1/workflows` until it answers `status`, for at most `SETTLE_DEADLINE`
/// (a node reads the stored tokens again every `TOKEN_RELOAD_INTERVAL`); nothing is timed.
async fn until_answers(api: &shop_tests::Api, status: u16, what: &str) {
    let started = Instant::now();
    loop {
        let reply = api.get("/v1/workflows?limit=1").await.expect("GET /v1/workflows");
        if reply.status == status {
            return;
        }
        assert!(started.elapsed() < SETTLE_DEADLINE, "{what}: still {} ({})", reply.status, reply.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_created_or_revoked_through_one_node_holds_on_the_other() {
    let Some(database) = TestDatabase::create("a_token_created_or_revoked_through_one_node_holds_on_the_other") else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let store = ["--store", database.url.as_str()];
    let (a, admin_a) =
        shop_tests::process::secured_engine(dir_a.path(), "a-jwt-key-the-two-nodes-share-32-bytes-or-more", &store)
            .await;
    let (b, admin_b) =
        shop_tests::process::secured_engine(dir_b.path(), "a-jwt-key-the-two-nodes-share-32-bytes-or-more", &store)
            .await;
    let admin_a = shop_tests::Api::with_token(&a.url(), &admin_a);
    let admin_b = shop_tests::Api::with_token(&b.url(), &admin_b);

    let body = serde_json::json!({"name": "shared", "role": "client"});
    let reply = admin_a.post_json("/v1/tokens", &body).await.expect("POST /v1/tokens through node a");
    assert_eq!(reply.status, 201, "{}", reply.text);
    let created: shop_types::auth::CreatedToken = reply.parse();
    let on_a = shop_tests::Api::with_token(&a.url(), &created.token);
    let on_b = shop_tests::Api::with_token(&b.url(), &created.token);
    until_answers(&on_a, 200, "node a accepts the token it created").await;
    until_answers(&on_b, 200, "node b accepts a token created through node a").await;

    let revoke = format!("/v1/tokens/{}/revoke", created.view.id);
    let reply = admin_b.post_json(&revoke, &serde_json::json!({})).await.expect("revoke through node b");
    assert_eq!(reply.status, 200, "{}", reply.text);
    until_answers(&on_b, 401, "node b refuses the token it revoked").await;
    until_answers(&on_a, 401, "node a refuses a token revoked through node b").await;
}
