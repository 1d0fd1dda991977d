//! `POST /api/orders?wait=`: the start and its wait in one round trip, end to end with a real
//! engine and worker.
//!
//! - with a worker, the answer is 200 with the final order (and the saga really ran: the
//!   stock moved and the history ends completed);
//! - with no worker to run it, the wait runs out: 202 with `Location` naming the order, which
//!   is there and still pending; a second start of the same order with a wait answers the
//!   same way (idempotent), without a second run;
//! - a malformed `wait` is 400 `BAD_QUERY` and one beyond the limit 422, and neither places
//!   the order; when a caller's waiting slots are all held, 429 `TOO_MANY_WAITS` and no order.
//!
//! No assertion is about time.

use serde_json::Value;
use shop_client::Method;
use shop_tests::{order_body, Api, Engine, EngineOptions, Stack, CONFIRMED, PENDING};
use shop_types::order::OrderView;
use std::time::Duration;

/// One caller's cap on waiting reads in the no-worker engine.
const MAX_WAITS_PER_CALLER: usize = 2;
/// Reads of `/v1/stats`, 20 ms apart, before the held waits are declared lost (they wait 5 s).
const STATS_POLLS: usize = 200;

async fn post_with_wait(api: &Api, query: &str, body: &Value) -> shop_client::RawReply {
    let body = serde_json::to_vec(body).expect("encodes");
    api.client()
        .send(Method::POST, &format!("/api/orders{query}"), Some("application/json"), body, &[])
        .await
        .expect("the engine answers POST /api/orders")
}

fn order_of(reply: &shop_client::RawReply) -> OrderView {
    serde_json::from_slice(&reply.body).expect("an order")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_with_a_wait_answers_the_final_order() {
    let stack = Stack::start().await;
    let before = stack.admin.product(3).await;
    let reply = post_with_wait(&stack.api, "?wait=30s", &order_body(Some("sw-1"), &[(3, 2)], "CREDIT_CARD")).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.headers.get("location").is_none(), "a final answer names no place to wait");
    let order = order_of(&reply);
    assert_eq!((order.order_id.as_str(), order.status.as_str()), ("sw-1", CONFIRMED));
    assert_eq!(stack.admin.product(3).await.stock, before.stock - 2, "the saga really ran");
    let history = stack.api.history("sw-1").await;
    assert_eq!(history.last().map(|e| e.event.name()), Some("WorkflowCompleted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_that_runs_out_is_202_with_location_and_bad_waits_place_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = vec!["--max-waits-per-caller".into(), MAX_WAITS_PER_CALLER.to_string()];
    let engine = Engine::start(dir.path(), EngineOptions { args, ..EngineOptions::default() }).await;
    let api = Api::new(&engine.url());
    let body = order_body(Some("sw-pending"), &[(1, 1)], "CREDIT_CARD");

    // No worker: the order cannot finish within the wait.
    for attempt in 0..2 {
        let reply = post_with_wait(&api, "?wait=300ms", &body).await;
        assert_eq!(reply.status.as_u16(), 202, "attempt {attempt}: {}", String::from_utf8_lossy(&reply.body));
        let location = reply.headers.get("location").and_then(|v| v.to_str().ok());
        assert_eq!(location, Some("/api/orders/sw-pending"), "attempt {attempt}");
        assert_eq!(order_of(&reply).status, PENDING);
    }
    assert_eq!(api.order("sw-pending").await.status, PENDING, "Location names the order");
    assert_eq!(api.workflow_count().await, 1, "a repeated start is the same order");

    for (query, status, code) in
        [("?wait=soon", 400, "BAD_QUERY"), ("?wait=10m", 422, "INVALID_VALUE"), ("?wiat=1s", 400, "BAD_QUERY")]
    {
        let reply = post_with_wait(&api, query, &order_body(Some("sw-bad"), &[(1, 1)], "CREDIT_CARD")).await;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status.as_u16(), status, "{query}: {text}");
        let error: Value = serde_json::from_slice(&reply.body).expect("a JSON error");
        assert_eq!(error.pointer("/error/code").and_then(Value::as_str), Some(code), "{query}");
    }
    assert_eq!(api.get("/api/orders/sw-bad").await.expect("GET").status, 404, "a refused wait placed nothing");

    // Every waiting slot of this caller held: the start is refused before it places anything.
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..MAX_WAITS_PER_CALLER {
        let api = Api::new(&engine.url());
        held.spawn(async move { api.get("/api/orders/sw-pending?wait=5s").await.expect("GET with wait") });
    }
    let mut polls = 0;
    loop {
        let stats = api.get("/v1/stats").await.expect("GET /v1/stats");
        if stats.body["waitingReads"] == serde_json::json!(MAX_WAITS_PER_CALLER) {
            break;
        }
        polls += 1;
        assert!(polls < STATS_POLLS, "the held waits never reached the engine: {}", stats.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = post_with_wait(&api, "?wait=1s", &order_body(Some("sw-full"), &[(1, 1)], "CREDIT_CARD")).await;
    assert_eq!(reply.status.as_u16(), 429, "{}", String::from_utf8_lossy(&reply.body));
    let error: Value = serde_json::from_slice(&reply.body).expect("a JSON error");
    assert_eq!(error.pointer("/error/code").and_then(Value::as_str), Some("TOO_MANY_WAITS"));
    assert_eq!(api.get("/api/orders/sw-full").await.expect("GET").status, 404, "nothing placed");
    while let Some(joined) = held.join_next().await {
        assert_eq!(joined.expect("the wait task ran").status, 200);
    }
}
