//! Idempotent order placement: a POST retried with the same `orderId` (or the same
//! `Idempotency-Key` header) returns the same order (200) instead of placing a second one:
//! one workflow, one charge, one notification, also when the duplicates race each other.
//! The same id with a different body is a conflict (409 ALREADY_EXISTS) and changes nothing;
//! the same body formatted differently (spaces, key order) is the same request.

use shop_tests::{order_body, Api, Stack, CONFIRMED};
use shop_types::order::OrderView;
use tokio::task::JoinSet;

/// Duplicate POSTs sent at the same moment.
const RACING_DUPLICATES: usize = 10;

/// Waits for the order and checks it exists once: one run, one charge, one notification.
async fn assert_placed_once(stack: &Stack, id: &str) {
    assert_eq!(stack.api.wait_order(id).await.status, CONFIRMED);
    assert_eq!(stack.api.workflow_count().await, 1, "one workflow");
    let ledger = stack.admin.payments_of(id).await;
    assert_eq!(ledger.len(), 1, "one charge: {ledger:?}");
    assert_eq!(stack.admin.notifications_of(id).await.len(), 1, "one notification");
}

async fn post_with_key(api: &Api, key: &str, body: &serde_json::Value) -> shop_tests::Reply {
    let bytes = serde_json::to_vec(body).expect("serialize an order");
    api.post_raw("/api/orders", "application/json", bytes, &[("Idempotency-Key", key)]).await.expect("POST /api/orders")
}

#[tokio::test(flavor = "multi_thread")]
async fn same_order_id_twice_returns_the_same_order() {
    let stack = Stack::start().await;
    let body = order_body(Some("idem-body-1"), &[(1, 2)], "CREDIT_CARD");
    let first = stack.api.place_order(&body).await.expect("POST /api/orders");
    assert_eq!(first.status, 202, "{}", first.text);
    let second = stack.api.place_order(&body).await.expect("POST /api/orders");
    assert_eq!(second.status, 200, "a retried POST finds the existing order: {}", second.text);
    let (first, second): (OrderView, OrderView) = (first.parse(), second.parse());
    assert_eq!(first.order_id, "idem-body-1");
    assert_eq!(
        (&second.order_id, &second.order_items, second.created_at_ms),
        (&first.order_id, &first.order_items, first.created_at_ms),
        "the same order"
    );
    assert_placed_once(&stack, "idem-body-1").await;

    // After the order is final, a retry still returns it, final.
    let late = stack.api.place_order(&body).await.expect("POST /api/orders");
    assert_eq!(late.status, 200, "{}", late.text);
    assert_eq!(late.parse::<OrderView>().status, CONFIRMED);
    assert_placed_once(&stack, "idem-body-1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_header_twice_returns_the_same_order() {
    let stack = Stack::start().await;
    let body = order_body(None, &[(2, 1)], "CREDIT_CARD");
    let first = post_with_key(&stack.api, "idem-header-1", &body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.parse::<OrderView>().order_id, "idem-header-1", "the key becomes the order id");
    let second = post_with_key(&stack.api, "idem-header-1", &body).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.parse::<OrderView>().order_id, "idem-header-1");
    assert_placed_once(&stack, "idem-header-1").await;

    // A body id and a header key that disagree are refused.
    let both = order_body(Some("idem-other"), &[(2, 1)], "CREDIT_CARD");
    let reply = post_with_key(&stack.api, "idem-header-1", &both).await;
    reply.assert_error(422, "INVALID_VALUE");
    assert_eq!(stack.api.workflow_count().await, 1, "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_duplicates_place_one_order() {
    let stack = Stack::start().await;
    let body = order_body(Some("idem-race-1"), &[(3, 1)], "CREDIT_CARD");
    let mut posts = JoinSet::new();
    for _ in 0..RACING_DUPLICATES {
        let (api, body) = (stack.api.clone(), body.clone());
        posts.spawn(async move { api.place_order(&body).await.expect("POST /api/orders").status });
    }
    let mut statuses = Vec::new();
    while let Some(status) = posts.join_next().await {
        statuses.push(status.expect("a POST task does not panic"));
    }
    statuses.sort_unstable();
    let mut expected = vec![200; RACING_DUPLICATES - 1];
    expected.push(202);
    assert_eq!(statuses, expected, "exactly one POST created the order");
    assert_placed_once(&stack, "idem-race-1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn same_order_id_with_another_body_is_a_conflict() {
    let stack = Stack::start().await;
    let before = stack.admin.product(4).await;
    let original = order_body(Some("idem-conflict-1"), &[(4, 1)], "CREDIT_CARD");
    stack.api.place_order_ok(&original).await;
    let different = order_body(Some("idem-conflict-1"), &[(4, 5)], "CREDIT_CARD");
    let reply = stack.api.place_order(&different).await.expect("POST /api/orders");
    reply.assert_error(409, "ALREADY_EXISTS");

    let order = stack.api.wait_order("idem-conflict-1").await;
    assert_eq!(order.order_items[0].quantity, 1, "the original order stands");
    assert_placed_once(&stack, "idem-conflict-1").await;
    let after = stack.admin.product(4).await;
    assert_eq!((after.stock, after.reserved), (before.stock - 1, 0), "only the original order took stock");
}

/// The same order as `order_body(None, &[(1, 1), (2, 3)], "CREDIT_CARD")`, with other
/// spacing and key order.
const ORDER_COMPACT: &str = r#"{"orderItems":[{"productId":1,"quantity":1},{"productId":2,"quantity":3}],"shippingAddress":"1 Main St","paymentMethod":"CREDIT_CARD"}"#;
const ORDER_REFORMATTED: &str = r#"{
  "paymentMethod" : "CREDIT_CARD",
  "shippingAddress" : "1 Main St",
  "orderItems" : [ { "quantity" : 1, "productId" : 1 }, { "quantity" : 3, "productId" : 2 } ]
}"#;

async fn post_text(api: &Api, path: &str, body: String, headers: &[(&str, &str)]) -> shop_tests::Reply {
    api.post_raw(path, "application/json", body.into_bytes(), headers).await.expect("POST")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_formatted_differently_is_the_same_request() {
    let stack = Stack::start().await;
    // The order API, keyed by the Idempotency-Key header.
    let key = [("Idempotency-Key", "idem-fmt-1")];
    let first = post_text(&stack.api, "/api/orders", ORDER_COMPACT.into(), &key).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let second = post_text(&stack.api, "/api/orders", ORDER_REFORMATTED.into(), &key).await;
    assert_eq!(second.status, 200, "the same order, formatted differently: {}", second.text);
    assert_placed_once(&stack, "idem-fmt-1").await;

    // The generic API, keyed by the run's id: its input is kept as sent, so only the
    // duplicate check may see past the formatting.
    let start = |input: &str| {
        let input = input.replacen('{', r#"{"orderId":"idem-fmt-2","#, 1);
        format!(r#"{{"type": "order", "id": "idem-fmt-2", "input": {input}}}"#)
    };
    let first = post_text(&stack.api, "/v1/workflows", start(ORDER_COMPACT), &[]).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let second = post_text(&stack.api, "/v1/workflows", start(ORDER_REFORMATTED), &[]).await;
    assert_eq!(second.status, 200, "the same input, formatted differently: {}", second.text);
    // Still a conflict when the value differs.
    let other = ORDER_COMPACT.replacen(r#""quantity":1"#, r#""quantity":2"#, 1);
    post_text(&stack.api, "/v1/workflows", start(&other), &[]).await.assert_error(409, "ALREADY_EXISTS");
    assert_eq!(stack.api.wait_order("idem-fmt-2").await.status, CONFIRMED);
    assert_eq!(stack.admin.payments_of("idem-fmt-2").await.len(), 1, "one charge");
}
