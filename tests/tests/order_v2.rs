//! Order v2 end to end (issue 9, part 3), with a real engine and a worker serving the shop's
//! domains and the fraud check: every payment path (card, 3-D Secure confirmed by a callback
//! URL, 3-D Secure failed by a signal sent twice, 3-D Secure timed out, bank transfer
//! received, bank transfer timed out), a fraud refusal while stock was reserved,
//! signal-with-start, a callback used twice (410), and kill -9 of the engine while runs sleep
//! and wait. The audit of design.md section 7 holds at the end.
//!
//! The timeouts are the production file's (15m, 3d) for the paths a signal ends; the
//! timed-out paths run on a short-timeout variant registered as `order` v3 mid-test (the
//! production text with its timeouts and cancel window replaced), so nothing waits for long
//! and `workflows/order-v2.toml` is never changed for a test. No timing is asserted.

use serde_json::json;
use shop_tests::invariants::{audit_stack, Admins};
use shop_tests::{order_body, Api, EngineOptions, Reply, Stack, WorkerOptions};
use shop_types::api::{InFlightView, WorkflowStatus};
use shop_types::audit::{InitialStock, Options};
use shop_types::order::FRAUD_QUANTITY_THRESHOLD;
use shop_types::short_order::ShortOrderV2;
use std::time::{Duration, Instant};

const ORDER_V2: &str = include_str!("../../workflows/order-v2.toml");
/// Longest the test waits for a run to reach a state it must reach.
const DEADLINE: Duration = Duration::from_secs(60);

/// Order v2 with short waits and a 2s cancel window, as version 3 (built where the demo
/// builds its own, `shop_types::short_order`).
fn short_variant() -> String {
    ShortOrderV2 { version: 3, wait_timeout: "3s", cancel_window: "2s" }.build(ORDER_V2).expect("the variant builds")
}

async fn place(api: &Api, id: &str, items: &[(i64, i64)], method: &str, address: Option<&str>) {
    let mut body = order_body(Some(id), items, method);
    if let Some(address) = address {
        body["shippingAddress"] = json!(address);
    }
    let reply = api.place_order(&body).await.expect("the engine answers");
    assert_eq!(reply.status, 202, "{id}: {:?}", reply.body);
}

async fn signal(api: &Api, id: &str, name: &str, key: &str) -> Reply {
    api.post_raw(
        &format!("/v1/workflows/{id}/signals/{name}"),
        "application/json",
        b"{}".to_vec(),
        &[("Idempotency-Key", key)],
    )
    .await
    .expect("the engine answers a signal")
}

/// The callback path of `id`'s open wait, once it shows one.
async fn open_callback(api: &Api, id: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = api.workflow(id).await;
        let found = view.waiting_for.iter().find_map(|w| match w {
            InFlightView::Wait { callback, .. } => callback.clone(),
            _ => None,
        });
        if let Some(path) = found {
            return path;
        }
        assert!(Instant::now() < deadline, "{id} never showed an open wait: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_callback(api: &Api, path: &str, signal: &str) -> Reply {
    let body = serde_json::to_vec(&json!({"signal": signal, "payload": {"by": "provider"}})).expect("JSON");
    api.post_raw(path, "application/json", body, &[]).await.expect("the engine answers a callback")
}

async fn finished(api: &Api, id: &str) -> (WorkflowStatus, Vec<&'static str>) {
    let view = api.wait_workflow(id).await;
    let kinds = api.history(id).await.iter().map(|e| e.event.name()).collect();
    (view.status, kinds)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_payment_path_of_order_v2_end_to_end() {
    let worker = WorkerOptions { activities: "inventory,payment,notification,risk".into(), ..WorkerOptions::default() };
    let mut stack = Stack::start_with(EngineOptions::default(), worker).await;
    let api = stack.api.clone();
    let initial = stack.admin.stock().await;
    let fraud_product = 4;
    let held_before = stack.admin.product(fraud_product).await;

    // Phase 1, on v2 (the latest at start): the paths a signal ends.
    place(&api, "card", &[(1, 1)], "CREDIT_CARD", None).await;
    place(&api, "3ds-ok", &[(1, 1)], "CARD_3DS", None).await;
    place(&api, "3ds-fail", &[(2, 1)], "CARD_3DS", None).await;
    place(&api, "3ds-kill", &[(2, 1)], "CARD_3DS", None).await;
    place(&api, "transfer-ok", &[(3, 2)], "BANK_TRANSFER", None).await;
    let big = FRAUD_QUANTITY_THRESHOLD + 1;
    place(&api, "fraud", &[(fraud_product, big)], "PAYPAL", Some("PO Box 12, Springfield")).await;

    // Signal-with-start: the signal is buffered in the start's batch; a retry changes nothing.
    let mut start = json!({
        "type": "order",
        "id": "sws",
        "input": {"orderId": "sws", "orderItems": [{"productId": 1, "quantity": 1}],
                  "shippingAddress": "1 Main St", "paymentMethod": "CARD_3DS"},
        "signal": {"name": "payment_confirmed", "payload": {"via": "start"}, "idempotency_key": "sws-1"},
    });
    let first = api.post_json("/v1/workflows", &start).await.expect("answers");
    assert_eq!(first.status, 202, "{:?}", first.body);
    let again = api.post_json("/v1/workflows", &start).await.expect("answers");
    assert_eq!(again.status, 200, "a retried signal-with-start finds the run: {:?}", again.body);
    start["signal"]["name"] = json!("no_such_signal");
    start["id"] = json!("sws-bad");
    start["input"]["orderId"] = json!("sws-bad");
    api.post_json("/v1/workflows", &start).await.expect("answers").assert_error(422, "UNKNOWN_SIGNAL");
    let missing = api.get("/v1/workflows/sws-bad").await.expect("answers");
    missing.assert_error(404, "NOT_FOUND");

    // 3-D Secure confirmed through its callback URL, which is single use.
    let callback = open_callback(&api, "3ds-ok").await;
    assert!(callback.starts_with("/v1/callbacks/"), "{callback}");
    let wrong = post_callback(&api, &callback, "payment_received").await;
    wrong.assert_error(422, "UNKNOWN_SIGNAL");
    let used = post_callback(&api, &callback, "payment_confirmed").await;
    assert_eq!(used.status, 200, "{:?}", used.body);
    assert_eq!(used.body, json!({"outcome": "recorded"}));
    post_callback(&api, &callback, "payment_confirmed").await.assert_error(410, "GONE");
    let forged = format!("{}0", &callback[..callback.len() - 1]);
    let forged = if forged == callback { format!("{}1", &callback[..callback.len() - 1]) } else { forged };
    post_callback(&api, &forged, "payment_confirmed").await.assert_error(404, "NOT_FOUND");
    post_callback(&api, "/v1/callbacks/nonsense", "payment_confirmed").await.assert_error(404, "NOT_FOUND");

    // 3-D Secure failed, the signal sent twice: applied once.
    assert_eq!(signal(&api, "3ds-fail", "payment_failed", "f1").await.body, json!({"outcome": "recorded"}));
    assert_eq!(signal(&api, "3ds-fail", "payment_failed", "f1").await.body, json!({"outcome": "duplicate"}));
    // A bank transfer received (possibly before its wait opens: buffered).
    assert_eq!(signal(&api, "transfer-ok", "payment_received", "t1").await.body, json!({"outcome": "recorded"}));

    // Phase 2: the short variant becomes the latest; new orders start on it.
    let reply = api.register_definition(&short_variant()).await;
    assert!(reply.is_success(), "registers v3: {} {:?}", reply.status, reply.body);
    place(&api, "3ds-timeout", &[(1, 1)], "CARD_3DS", None).await;
    place(&api, "transfer-timeout", &[(3, 1)], "BANK_TRANSFER", None).await;
    place(&api, "card-sleeps", &[(1, 1)], "CREDIT_CARD", None).await;
    let timed_out_callback = open_callback(&api, "3ds-timeout").await;
    let _ = open_callback(&api, "3ds-kill").await;

    // kill -9 while runs sleep (card-sleeps' 2s window) and wait (3ds-kill, the timeouts).
    stack.engine.kill9();
    stack.engine.restart().await;
    assert_eq!(signal(&api, "3ds-kill", "payment_confirmed", "k1").await.body, json!({"outcome": "recorded"}));

    let expect = [
        ("card", WorkflowStatus::Completed, &["WorkflowCompleted"][..]),
        ("3ds-ok", WorkflowStatus::Completed, &["WaitOpened", "WaitCompleted"][..]),
        ("sws", WorkflowStatus::Completed, &["SignalReceived", "WaitCompleted"][..]),
        ("3ds-kill", WorkflowStatus::Completed, &["WaitCompleted"][..]),
        ("transfer-ok", WorkflowStatus::Completed, &["WaitCompleted"][..]),
        ("card-sleeps", WorkflowStatus::Completed, &["SleepStarted", "SleepEnded"][..]),
        ("3ds-fail", WorkflowStatus::Compensated, &["WaitCompleted", "CompensationStarted"][..]),
        ("3ds-timeout", WorkflowStatus::Compensated, &["WaitTimedOut", "CompensationStarted"][..]),
        ("transfer-timeout", WorkflowStatus::Compensated, &["WaitTimedOut", "CompensationStarted"][..]),
        ("fraud", WorkflowStatus::Compensated, &["StepFailed", "CompensationStarted"][..]),
    ];
    for (id, status, kinds) in expect {
        let (got, history) = finished(&api, id).await;
        assert_eq!(got, status, "{id}: {history:?}");
        for kind in kinds {
            assert!(history.contains(kind), "{id} lacks {kind}: {history:?}");
        }
        let received = history.iter().filter(|k| **k == "SignalReceived").count();
        assert!(received <= 1, "{id}: a signal applied once: {history:?}");
    }
    assert_eq!(api.workflow("card").await.definition_version, 2);
    assert_eq!(api.workflow("card-sleeps").await.definition_version, 3);
    post_callback(&api, &timed_out_callback, "payment_confirmed").await.assert_error(410, "GONE");

    // Money: card-like orders charged once; failed/timed-out 3-D Secure refunded to zero;
    // transfers and the fraud refusal never touch the ledger.
    let ledger = |id: &'static str| {
        let admin = stack.admin.clone();
        async move { admin.payments_of(id).await }
    };
    for id in ["card", "3ds-ok", "sws", "3ds-kill", "card-sleeps"] {
        let entries = ledger(id).await;
        assert_eq!(entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["charge"], "{id}");
    }
    for id in ["3ds-fail", "3ds-timeout"] {
        assert_eq!(shop_tests::client::net_charged(&ledger(id).await), 0, "{id} charged then refunded");
    }
    for id in ["transfer-ok", "transfer-timeout", "fraud"] {
        assert!(ledger(id).await.is_empty(), "{id} has no ledger entry");
    }
    let fraud_history = api.history("fraud").await;
    let names: Vec<_> = fraud_history.iter().map(shop_tests::event_label).collect();
    assert!(names.contains(&"StepCompleted(reserve_stock.compensation)".to_owned()), "stock released: {names:?}");
    assert_eq!(stack.admin.product(fraud_product).await, held_before, "the fraud order holds no stock");

    // The audit of design.md section 7 over everything.
    let options = Options {
        initial_stock: InitialStock::Known(initial.iter().map(|p| (p.product_id, p.stock)).collect()),
        expected: None,
        allow_running: false,
    };
    let audit = audit_stack(&api, &Admins::combined(&stack.admin), &options).await.expect("the stack reads");
    assert!(audit.violations.is_empty(), "{:#?}", audit.violations);
    assert_eq!((audit.confirmed, audit.cancelled), (6, 4), "{audit:?}");
}
