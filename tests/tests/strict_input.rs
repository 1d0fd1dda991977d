//! Strict reading of what clients send: a body is exactly one JSON object of the documented
//! shape, or it is refused with a precise status and nothing changes. Each case here was once
//! accepted and placed an order (or broke the order views), found by a hostile-client review.

use serde_json::{json, Value};
use shop_tests::{order_body, Api, Reply, Stack};

const ORDER: &str =
    r#"{"orderItems":[{"productId":1,"quantity":1}],"shippingAddress":"1 Main St","paymentMethod":"CREDIT_CARD"}"#;

async fn post(api: &Api, path: &str, body: &str) -> Reply {
    api.post_raw(path, "application/json", body.as_bytes().to_vec(), &[]).await.expect("the engine answers")
}

/// Asserts the JSON error and that the engine holds as many runs as before.
async fn refused(api: &Api, what: &str, status: u16, code: &str, path: &str, body: &str) -> Reply {
    let before = api.workflow_count().await;
    let reply = post(api, path, body).await;
    assert_eq!((reply.status, reply.code()), (status, Some(code)), "{what}: {}", reply.text);
    assert_eq!(api.workflow_count().await, before, "{what}: nothing changed");
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn order_bodies_are_read_strictly() {
    let stack = Stack::start().await;
    let api = &stack.api;
    api.wait_order(&api.place_order_ok(&serde_json::from_str(ORDER).expect("an order")).await).await;

    refused(api, "trailing garbage", 400, "MALFORMED_JSON", "/api/orders", &format!("{ORDER}garbage")).await;
    refused(api, "two documents", 400, "MALFORMED_JSON", "/api/orders", &format!("{ORDER} {ORDER}")).await;
    let array = r#"[null,[[1,1]],"1 Main St","CREDIT_CARD"]"#;
    let reply = refused(api, "an array for the object", 422, "INVALID_BODY", "/api/orders", array).await;
    assert!(reply.message().contains("object"), "{}", reply.text);
    let priced = ORDER.replace(r#""quantity":1}"#, r#""quantity":1,"priceCents":0}"#);
    let reply = refused(api, "unknown field in a line", 422, "INVALID_BODY", "/api/orders", &priced).await;
    assert!(reply.message().contains("priceCents"), "the message names the field: {}", reply.text);

    let token = format!("o-1~f0~1~{}", "0".repeat(32));
    let junk = format!(r#"{{"reports":[{{"token":"{token}","outcome":{{"completed":{{"output":{{}},"junk":1}}}}}}]}}"#);
    let reply =
        refused(api, "unknown field in a report's outcome", 422, "INVALID_BODY", "/v1/tasks/report", &junk).await;
    assert!(reply.message().contains("junk"), "{}", reply.text);

    let bitcoin = serde_json::to_string(&order_body(None, &[(1, 1)], "BITCOIN")).expect("serializes");
    let reply = refused(api, "unknown payment method", 422, "INVALID_VALUE", "/api/orders", &bitcoin).await;
    assert!(reply.message().contains("paymentMethod"), "{}", reply.text);
    let mut no_address = order_body(None, &[(1, 1)], "CREDIT_CARD");
    no_address.as_object_mut().expect("an object").remove("shippingAddress");
    let reply = refused(api, "no shipping address", 422, "INVALID_BODY", "/api/orders", &no_address.to_string()).await;
    assert!(reply.message().contains("shippingAddress"), "{}", reply.text);
    let blank = ORDER.replace("1 Main St", "  ");
    let reply = refused(api, "blank shipping address", 422, "INVALID_VALUE", "/api/orders", &blank).await;
    assert!(reply.message().contains("shippingAddress"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn lone_surrogates_are_refused_on_every_path_with_the_same_answer() {
    let stack = Stack::start().await;
    let api = &stack.api;
    let lone = "\\ud800";
    refused(api, "order", 400, "MALFORMED_JSON", "/api/orders", &ORDER.replace("1 Main St", lone)).await;
    let input = format!(r#"{{"type":"order","input":{{"note":"{lone}"}}}}"#);
    refused(api, "workflow input", 400, "MALFORMED_JSON", "/v1/workflows", &input).await;
    let output = format!(r#"{{"token":"o-1~f0~1","output":{{"note":"{lone}"}}}}"#);
    refused(api, "task output", 400, "MALFORMED_JSON", "/v1/tasks/complete", &output).await;
    let low = r#"{"token":"o-1~f0~1","error":{"type":"X","message":"\udc00"}}"#;
    refused(api, "task failure", 400, "MALFORMED_JSON", "/v1/tasks/fail", low).await;
    // A proper pair is one character and goes through.
    let id = api
        .place_order_ok(
            &serde_json::from_str(&ORDER.replace("1 Main St", "\\ud83c\\udfe0 1 Main St")).expect("an order"),
        )
        .await;
    assert_eq!(api.order(&id).await.shipping_address, "\u{1f3e0} 1 Main St");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_run_started_through_the_generic_api_must_be_an_order() {
    let stack = Stack::start().await;
    let api = &stack.api;
    let before = api.workflow_count().await;
    for (what, input) in [
        ("not an order", json!({"x": 1})),
        ("an order for another id", order_input("someone-else", "CREDIT_CARD")),
        ("an unknown payment method", order_input("generic-1", "BITCOIN")),
    ] {
        let reply = api.start_workflow("order", Some("generic-1"), input).await;
        assert_eq!((reply.status, reply.code()), (422, Some("INVALID_VALUE")), "{what}: {}", reply.text);
        assert!(reply.message().starts_with("input"), "{what}: names the field: {}", reply.text);
    }
    assert_eq!(api.workflow_count().await, before, "nothing started");

    let reply = api.start_workflow("order", Some("generic-1"), order_input("generic-1", "CREDIT_CARD")).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let order = api.wait_order("generic-1").await;
    assert_eq!(order.status, shop_tests::CONFIRMED);
    let list = api.get("/api/orders?limit=1000").await.expect("GET /api/orders");
    assert_eq!(list.status, 200, "the order list still reads: {}", list.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn step_params_nest_no_deeper_than_payloads() {
    let stack = Stack::start().await;
    let params = |levels: usize| format!("params = {}1{}\n", "{ a = ".repeat(levels), " }".repeat(levels));
    let definition = |levels: usize| {
        format!(
            "name = \"deep\"\nversion = {levels}\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\nqueue = \"q\"\n{}",
            params(levels)
        )
    };
    let deepest = shop_types::json::MAX_JSON_DEPTH;
    let reply = stack.api.register_definition(&definition(70)).await;
    assert_eq!((reply.status, reply.code()), (422, Some("INVALID_DEFINITION")), "{}", reply.text);
    assert!(reply.message().contains("nests deeper"), "{}", reply.text);
    let reply = stack.api.register_definition(&definition(deepest)).await;
    assert!(reply.is_success(), "at the limit: {}", reply.text);
}

fn order_input(order_id: &str, payment_method: &str) -> Value {
    order_body(Some(order_id), &[(1, 1)], payment_method)
}
