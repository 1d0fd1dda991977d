//! Bad input at every door is refused with a precise status, a stable error code in the
//! documented JSON shape `{"error":{"code","message"}}`, and nothing changed: the engine holds
//! exactly the runs it held before.
//!
//! Product existence is the inventory's knowledge, not the engine's: an order naming an
//! unknown product is accepted at POST (the order API validates only shapes and limits) and
//! then CANCELLED by the reserve step with UNKNOWN_PRODUCT, with nothing charged.

use serde_json::{json, Value};
use shop_tests::process::{binary, run_to_end};
use shop_tests::{order_body, Api, Reply, Stack, CANCELLED};
use shop_types::limits::{MAX_BODY_BYTES, MAX_ID_LEN, MAX_LINE_QUANTITY, MAX_ORDER_LINES};
use std::process::Command;
use std::time::Duration;

/// A product the default catalog (products 1-10) does not have.
const UNKNOWN_PRODUCT: i64 = 999;
/// How long an engine given a bad definition may take to give up.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// A definition with an unknown key on line [`BAD_DEFINITION_LINE`].
const BAD_DEFINITION: &str =
    "name = \"broken\"\nversion = 1\n\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\nqueue = \"q\"\nbogus = 1\n";
const BAD_DEFINITION_LINE: usize = 8;
/// Array nesting far past what the API takes (64 levels for payloads, and serde_json's own
/// limit of 128).
const DEEP_NESTING: usize = 10_000;

/// Sends `request`, asserts the answer is the JSON error `status`/`code`, and that the
/// engine holds as many runs as before.
async fn refused(
    api: &Api,
    what: &str,
    status: u16,
    code: &str,
    request: impl std::future::Future<Output = Reply>,
) -> Reply {
    let before = api.workflow_count().await;
    let reply = request.await;
    assert_eq!((reply.status, reply.code()), (status, Some(code)), "{what}: {}", reply.text);
    assert!(!reply.message().is_empty(), "{what}: the error has a message");
    assert_eq!(api.workflow_count().await, before, "{what}: nothing changed");
    reply
}

async fn post_order(api: &Api, body: Value) -> Reply {
    api.place_order(&body).await.expect("POST /api/orders")
}

fn with_quantity(quantity: i64) -> Value {
    order_body(None, &[(1, quantity)], "CREDIT_CARD")
}

fn with_lines(count: usize) -> Value {
    let items: Vec<(i64, i64)> = (0..count).map(|i| (1 + (i as i64 % 10), 1)).collect();
    order_body(None, &items, "CREDIT_CARD")
}

#[tokio::test(flavor = "multi_thread")]
async fn order_bodies_that_are_wrong_are_refused_and_change_nothing() {
    let stack = Stack::start().await;
    let api = &stack.api;
    // One accepted order first, so "nothing changed" compares against a non-empty store.
    api.wait_order(&api.place_order_ok(&with_quantity(1)).await).await;

    let raw = |content_type: &'static str, body: Vec<u8>| {
        let api = api.clone();
        async move { api.post_raw("/api/orders", content_type, body, &[]).await.expect("POST /api/orders") }
    };
    refused(api, "malformed JSON", 400, "MALFORMED_JSON", raw("application/json", b"{\"orderItems\": [".to_vec()))
        .await;
    let valid = serde_json::to_vec(&with_quantity(1)).expect("serialize an order");
    refused(api, "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE", raw("text/plain", valid)).await;
    let mut huge = with_quantity(1);
    huge["shippingAddress"] = json!("x".repeat(MAX_BODY_BYTES + 1));
    let huge = serde_json::to_vec(&huge).expect("serialize an order");
    refused(api, "body over 256 KiB", 413, "BODY_TOO_LARGE", raw("application/json", huge)).await;

    for quantity in [0, -1, MAX_LINE_QUANTITY + 1] {
        let what = format!("quantity {quantity}");
        let reply = refused(api, &what, 422, "INVALID_VALUE", post_order(api, with_quantity(quantity))).await;
        assert!(reply.message().contains("quantity"), "{what}: the message names the field: {}", reply.text);
    }
    for lines in [0, MAX_ORDER_LINES + 1] {
        let what = format!("{lines} lines");
        let reply = refused(api, &what, 422, "INVALID_VALUE", post_order(api, with_lines(lines))).await;
        assert!(reply.message().contains("orderItems"), "{what}: the message names the field: {}", reply.text);
    }
    let invalid_utf8 = b"{\"orderItems\":[],\"paymentMethod\":\"\xff\xfe\"}".to_vec();
    refused(api, "invalid UTF-8", 400, "MALFORMED_JSON", raw("application/json", invalid_utf8)).await;
    let deep = format!("{{\"orderItems\":{}{}}}", "[".repeat(DEEP_NESTING), "]".repeat(DEEP_NESTING));
    refused(api, "deep nesting in a typed field", 422, "INVALID_BODY", raw("application/json", deep.into_bytes()))
        .await;
    let deep_input =
        format!("{{\"type\":\"order\",\"input\":{}{}}}", "[".repeat(DEEP_NESTING), "]".repeat(DEEP_NESTING));
    let request = async {
        api.post_raw("/v1/workflows", "application/json", deep_input.into_bytes(), &[])
            .await
            .expect("POST /v1/workflows")
    };
    let reply = refused(api, "deep nesting in a free-form input", 422, "INVALID_BODY", request).await;
    assert!(reply.message().contains("deeper"), "the message says why: {}", reply.text);
    // A token for a run that does not exist, in the right shape: forged, so stale.
    let forged = json!({"token": "nobody-at-all~f0~1", "output": {}});
    let request = async { api.post_json("/v1/tasks/complete", &forged).await.expect("POST /v1/tasks/complete") };
    refused(api, "forged task token", 409, "STALE_TASK", request).await;

    let mut unknown_field = with_quantity(1);
    unknown_field["couponCode"] = json!("FREE");
    refused(api, "unknown field", 422, "INVALID_BODY", post_order(api, unknown_field)).await;

    for bad_id in ["a/b".to_owned(), "x".repeat(MAX_ID_LEN + 1), "..".to_owned(), String::new()] {
        let body = order_body(Some(&bad_id), &[(1, 1)], "CREDIT_CARD");
        refused(api, &format!("orderId {bad_id:?}"), 400, "INVALID_ID", post_order(api, body)).await;
        let header = [("Idempotency-Key", bad_id.as_str())];
        let valid = serde_json::to_vec(&with_quantity(1)).expect("serialize an order");
        let request = async { api.post_raw("/api/orders", "application/json", valid, &header).await.expect("POST") };
        refused(api, &format!("Idempotency-Key {bad_id:?}"), 400, "INVALID_ID", request).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_types_and_definitions_on_the_generic_api_are_refused() {
    let stack = Stack::start().await;
    let api = &stack.api;

    // An encoded slash decodes into the id, which then fails validation: 400, not a lookup.
    for path in ["/api/orders/..%2F..", "/v1/workflows/a%2Fb", "/v1/workflows/a%2Fb/history"] {
        let request = async { api.get(path).await.expect("GET") };
        refused(api, path, 400, "INVALID_ID", request).await;
    }
    // A bare `..` segment is no id at all: no route matches it.
    let request = async { api.get("/v1/workflows/..").await.expect("GET") };
    refused(api, "/v1/workflows/..", 404, "NOT_FOUND", request).await;
    let request = async { api.get("/api/orders/no-such-order").await.expect("GET") };
    refused(api, "unknown order", 404, "NOT_FOUND", request).await;

    let request = api.start_workflow("no_such_type", None, json!({}));
    refused(api, "unknown workflow type", 422, "UNKNOWN_WORKFLOW_TYPE", request).await;

    let definitions_before = api.get("/v1/definitions").await.expect("GET /v1/definitions").body;
    let reply =
        refused(api, "bad definition", 422, "INVALID_DEFINITION", api.register_definition(BAD_DEFINITION)).await;
    assert!(
        reply.message().contains(&format!(":{BAD_DEFINITION_LINE}:")) && reply.message().contains("bogus"),
        "the message gives the line and the reason: {}",
        reply.message()
    );
    let definitions_after = api.get("/v1/definitions").await.expect("GET /v1/definitions").body;
    assert_eq!(definitions_after, definitions_before, "no definition was registered");
    let request = api.start_workflow("broken", None, json!({}));
    refused(api, "the refused definition's type", 422, "UNKNOWN_WORKFLOW_TYPE", request).await;

    // Typed names in a body are validated as the body is read, like a queue name: 422.
    let start = json!({"type": "a/b", "input": {}});
    let request = async { api.post_json("/v1/workflows", &start).await.expect("POST") };
    let reply = refused(api, "workflow type a/b", 422, "INVALID_BODY", request).await;
    assert!(reply.message().contains("workflow type"), "the message names the field's rule: {}", reply.message());
    let start = json!({"type": "order", "id": "a/b", "input": {}});
    let request = async { api.post_json("/v1/workflows", &start).await.expect("POST") };
    refused(api, "workflow id a/b in the body", 400, "INVALID_ID", request).await;
    for bad_worker in [String::new(), " ".to_owned(), "w\nforged".to_owned(), "w".repeat(MAX_ID_LEN + 1)] {
        let poll = json!({"queue": "inventory", "worker_id": bad_worker, "max_tasks": 1, "wait_ms": 0});
        let request = async { api.post_json("/v1/tasks/poll", &poll).await.expect("POST") };
        let reply = refused(api, &format!("worker id {bad_worker:?}"), 422, "INVALID_BODY", request).await;
        assert!(reply.message().contains("worker id"), "the message names the field's rule: {}", reply.message());
    }
}

#[test]
fn engine_refuses_to_start_with_a_bad_definition_and_names_file_and_line() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let workflows = dir.path().join("workflows");
    std::fs::create_dir(&workflows).expect("create the workflows dir");
    std::fs::write(workflows.join("broken.toml"), BAD_DEFINITION).expect("write the bad definition");

    let mut command = Command::new(binary("shop-engine"));
    command
        .arg("--data-dir")
        .arg(dir.path().join("engine"))
        .arg("--listen")
        .arg(shop_tests::process::free_addr().to_string())
        .arg("--workflows")
        .arg(&workflows)
        .env("RUST_BACKTRACE", "0");
    let finished = run_to_end(command, EXIT_DEADLINE);
    assert!(!finished.status.success(), "the engine must not start; stderr:\n{}", finished.stderr);
    let location = format!("broken.toml:{BAD_DEFINITION_LINE}");
    assert!(finished.stderr.contains(&location), "stderr names {location}:\n{}", finished.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_product_is_accepted_then_cancelled_by_the_inventory() {
    let stack = Stack::start().await;
    let stock_before = stack.admin.stock().await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1), (UNKNOWN_PRODUCT, 1)], "CREDIT_CARD")).await;
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CANCELLED);
    let reason = order.reason.unwrap_or_default();
    assert!(reason.contains("UNKNOWN_PRODUCT"), "reason names UNKNOWN_PRODUCT: {reason:?}");
    assert_eq!(stack.admin.payments_of(&id).await, vec![], "nothing charged");
    assert_eq!(stack.admin.stock().await, stock_before, "no stock taken, nothing reserved");
}
