//! The core's waits and queues, end to end with a real engine and no worker:
//!
//! - a waiting read (`?wait=`) holds its slot only while its caller waits: thousands of
//!   short waits on one run do not use up the engine's slots, so a fresh wait still waits;
//! - one caller may hold at most `--max-waits-per-caller` waits (then 429 `TOO_MANY_WAITS`
//!   with `Retry-After`); a caller that hangs up gives its slot back;
//! - the backlog in `/v1/stats` is exact: attempts that time out at schedule_to_start, or
//!   whose run is terminated, leave their queue.
//!
//! Limits are small flags, so the test is quick; no assertion is a performance claim.

use serde_json::{json, Value};
use shop_tests::{order_body, Api, Engine, EngineOptions};
use shop_types::api::WorkflowStatus;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The engine's cap on waiting reads, over all callers.
const MAX_WATCHERS: usize = 16;
/// The engine's cap on one caller's waiting reads.
const MAX_WAITS_PER_CALLER: usize = 4;
/// Rounds of short waits: together far more waits than `MAX_WATCHERS`.
const SHORT_WAIT_ROUNDS: usize = 25;
/// How long a condition the engine reaches by itself may take before the test fails.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

async fn engine(dir: &std::path::Path) -> Engine {
    let args = vec![
        "--max-watchers".into(),
        MAX_WATCHERS.to_string(),
        "--max-waits-per-caller".into(),
        MAX_WAITS_PER_CALLER.to_string(),
    ];
    Engine::start(dir, EngineOptions { args, ..EngineOptions::default() }).await
}

async fn stats(api: &Api) -> Value {
    let reply = api.get("/v1/stats").await.expect("GET /v1/stats");
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

/// Polls `/v1/stats` until `done` holds for it, or fails after `SETTLE_DEADLINE`.
async fn until_stats(api: &Api, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let stats = stats(api).await;
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: /v1/stats is still {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_that_end_free_their_slots_and_each_caller_has_a_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let api = Api::new(&engine.url());
    // No worker: the order stays PENDING for the whole test (schedule_to_start is 1 min).
    let id = api.place_order_ok(&order_body(Some("waited-on"), &[(1, 1)], "CREDIT_CARD")).await;

    // Many short waits, each ending by timeout, a caller's cap at a time, on both APIs.
    for round in 0..SHORT_WAIT_ROUNDS {
        let mut waits = tokio::task::JoinSet::new();
        for i in 0..MAX_WAITS_PER_CALLER {
            let api = Api::new(&engine.url());
            let path = if (round + i) % 2 == 0 {
                format!("/api/orders/{id}?wait=20ms")
            } else {
                format!("/v1/workflows/{id}?wait=20ms")
            };
            waits.spawn(async move { api.get(&path).await.expect("GET with wait") });
        }
        while let Some(reply) = waits.join_next().await {
            let reply = reply.expect("the wait task ran");
            assert_eq!(reply.status, 200, "a short wait answers the current state: {}", reply.text);
        }
    }
    // Far more waits than slots have come and gone: a fresh wait still waits.
    let started = Instant::now();
    let reply = api.get(&format!("/v1/workflows/{id}?wait=1500ms")).await.expect("GET with wait");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the wait was answered at once ({:?}): the engine's slots leaked",
        started.elapsed()
    );

    // One caller (here: one client IP, the engine is open) holds its cap of waits...
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..MAX_WAITS_PER_CALLER {
        let api = Api::new(&engine.url());
        let path = format!("/api/orders/{id}?wait=3s");
        held.spawn(async move { api.get(&path).await.expect("GET with wait") });
    }
    until_stats(&api, "the held waits reach the core", |s| s["waitingReads"] == json!(MAX_WAITS_PER_CALLER)).await;
    // ...so one more is refused with a precise answer, and changes nothing.
    let response = reqwest::get(format!("{}/v1/workflows/{id}?wait=3s", engine.url())).await.expect("GET");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"), "429 says when to retry");
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "TOO_MANY_WAITS", "{body}");
    // A read without a wait is never limited by it.
    assert_eq!(api.get(&format!("/v1/workflows/{id}")).await.expect("GET").status, 200);
    while let Some(reply) = held.join_next().await {
        assert_eq!(reply.expect("the wait task ran").status, 200);
    }

    until_stats(&api, "the held waits ended", |s| s["waitingReads"] == json!(0)).await;

    // A caller that hangs up mid-wait gives its slot back at once: more hang-ups than the cap.
    for _ in 0..2 * MAX_WAITS_PER_CALLER {
        let mut socket =
            tokio::net::TcpStream::connect(engine.url().trim_start_matches("http://")).await.expect("connect");
        let request = format!("GET /api/orders/{id}?wait=30s HTTP/1.1\r\nHost: engine\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("send a request");
        until_stats(&api, "the wait is in progress", |s| s["waitingReads"] == json!(1)).await;
        drop(socket);
        until_stats(&api, "the hung-up wait gave its slot back", |s| s["waitingReads"] == json!(0)).await;
    }
    let reply = api.get(&format!("/v1/workflows/{id}?wait=100ms")).await.expect("GET with wait");
    assert_eq!(reply.status, 200, "this caller may wait again: {}", reply.text);
}

/// One step on a queue no worker polls, which must be started within a second.
const LONELY_DEFINITION: &str = r#"
name = "lonely"
version = 1

[[steps]]
name = "wait_for_nobody"
activity = "nobody.work"
queue = "nobody"
retry = { max_attempts = 1 }
timeouts = { schedule_to_start = "1s" }
"#;

/// Runs of each kind the backlog test starts.
const RUNS: usize = 5;

#[tokio::test(flavor = "multi_thread")]
async fn the_backlog_is_exact_when_attempts_time_out_or_runs_are_terminated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let api = Api::new(&engine.url());
    let reply = api.register_definition(LONELY_DEFINITION).await;
    assert_eq!(reply.status, 201, "{}", reply.text);

    let mut lonely = Vec::new();
    for i in 0..RUNS {
        let id = format!("lonely-{i}");
        let reply = api.start_workflow("lonely", Some(&id), json!({})).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        lonely.push(id);
    }
    let mut orders = Vec::new();
    for i in 0..RUNS {
        orders.push(api.place_order_ok(&order_body(Some(&format!("unserved-{i}")), &[(1, 1)], "CREDIT_CARD")).await);
    }
    let before = stats(&api).await;
    assert_eq!(before["queues"]["inventory"], json!(RUNS), "{before}");
    assert_eq!(before["readyTasks"].as_u64(), Some(2 * RUNS as u64), "{before}");

    // Terminated orders leave the inventory queue at once.
    for id in &orders {
        let reply = api.post_json(&format!("/v1/workflows/{id}/terminate"), &json!({})).await.expect("terminate");
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    assert_eq!(stats(&api).await["queues"]["inventory"], json!(0));
    // The lonely runs time out at schedule_to_start; nobody ever polled their queue.
    for id in &lonely {
        assert_eq!(api.wait_workflow(id).await.status, WorkflowStatus::Compensated);
    }
    let after = stats(&api).await;
    assert_eq!(after["queues"]["nobody"], json!(0), "no stale entry is left behind: {after}");
    assert_eq!(after["readyTasks"], json!(0), "{after}");
}
