//! The seed's three order scenarios through the seed-compatible `POST /api/orders`, on a real
//! engine and worker: a normal order is CONFIRMED (stock taken, charged once, told once); an
//! order for more than the stock is CANCELLED with OUT_OF_STOCK and touches nothing; a
//! declined card is CANCELLED with the stock given back and nothing charged. Each also
//! proves its history is the saga's exact event sequence, that the POST answers 202 PENDING
//! at once, and that `GET /api/orders/{id}?wait=30s` answers with the final state.

use serde_json::Value;
use shop_tests::invariants::{ORDER_CANCELLED, ORDER_CONFIRMED};
use shop_tests::{event_labels, history_violations, order_body, step_ok, Stack, CANCELLED, CONFIRMED, PENDING};
use shop_types::order::OrderView;

/// Units ordered by the normal and declined orders.
const QUANTITY: i64 = 2;
/// More than the default catalog's 100 units of a product, within the 1000 per line limit.
const TOO_MANY: i64 = 999;

/// Places `body`, checks the 202 PENDING answer, then reads the order once with `wait=30s`:
/// that single read must already be final.
async fn place_and_wait(stack: &Stack, body: &Value) -> OrderView {
    let reply = stack.api.place_order(body).await.expect("POST /api/orders");
    assert_eq!(reply.status, 202, "a new order is accepted at once: {}", reply.text);
    let placed: OrderView = reply.parse();
    assert_eq!(placed.status, PENDING, "the POST answers before the order is final");
    let id = placed.order_id;
    let reply = stack.api.get(&format!("/api/orders/{id}?wait=30s")).await.expect("GET /api/orders/{id}?wait=30s");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let order: OrderView = reply.parse();
    assert_ne!(order.status, PENDING, "wait=30s answers once the order is final");
    assert_eq!(order.order_id, id);
    order
}

/// The step events of one whole step: scheduled, started, completed.
fn ok(step: &str) -> Vec<String> {
    step_ok(step).to_vec()
}

fn labels(parts: &[&[String]]) -> Vec<String> {
    parts.concat()
}

fn one(label: &str) -> Vec<String> {
    vec![label.to_owned()]
}

#[tokio::test(flavor = "multi_thread")]
async fn normal_order_is_confirmed_charged_once_and_notified() {
    let stack = Stack::start().await;
    let before = stack.admin.product(1).await;

    let order = place_and_wait(&stack, &order_body(None, &[(1, QUANTITY)], "CREDIT_CARD")).await;
    assert_eq!(order.status, CONFIRMED, "reason: {:?}", order.reason);
    assert_eq!(order.order_items.len(), 1);
    let id = order.order_id.as_str();

    let after = stack.admin.product(1).await;
    assert_eq!((after.stock, after.reserved), (before.stock - QUANTITY, 0), "stock taken, nothing left reserved");

    let ledger = stack.admin.payments_of(id).await;
    assert_eq!(ledger.len(), 1, "exactly one ledger entry: {ledger:?}");
    assert_eq!(ledger[0].kind, "charge");
    assert_eq!(ledger[0].amount_cents, before.price_cents * QUANTITY, "charged the catalog price");

    let notes = stack.admin.notifications_of(id).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].kind, ORDER_CONFIRMED);

    let history = stack.api.history(id).await;
    assert_eq!(history_violations(id, &history), Vec::<String>::new());
    let expected = labels(&[
        &one("WorkflowStarted"),
        &one("DefinitionPinned"),
        // Order v2: the reservation and the fraud check are two parallel branches; a card
        // order skips the fraud check (its branch completes at once), takes the card branch
        // of the payment choice, and passes a zero-length cancel window: the same four
        // activities as v1 run.
        &one("ParallelStarted(screen_and_reserve)"),
        &one("StepScheduled(reserve_stock)"),
        &one("StepSkipped(fraud_check)"),
        &one("BranchCompleted(screen_and_reserve)"),
        &one("StepStarted(reserve_stock)"),
        &one("StepCompleted(reserve_stock)"),
        &one("BranchCompleted(screen_and_reserve)"),
        &one("ChoiceTaken(pay)"),
        &ok("charge_payment"),
        &one("SleepStarted(cancel_window)"),
        &one("SleepEnded(cancel_window)"),
        &ok("confirm_order"),
        &ok("notify_confirmed"),
        &one("WorkflowCompleted"),
    ]);
    assert_eq!(event_labels(&history), expected);

    // The wire shape other tools rely on: {"seq","at_ms","step_name","event":{"Name":{...}}}.
    let raw = stack.api.get(&format!("/v1/workflows/{id}/history")).await.expect("GET history");
    let events = raw.body["events"].as_array().expect("history has an events array");
    assert_eq!(events[0]["seq"], 1);
    assert!(events[0]["at_ms"].as_u64().is_some_and(|ms| ms > 0), "{}", events[0]);
    assert!(events[0]["event"]["WorkflowStarted"].is_object(), "{}", events[0]);
    assert!(events[1]["event"]["DefinitionPinned"]["content_hash"].as_str().is_some_and(|h| h.starts_with("sha256:")));
    assert_eq!(events[3]["step_name"], "reserve_stock");
    assert_eq!(events[3]["event"]["StepScheduled"]["attempt"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_stock_order_is_cancelled_and_touches_nothing() {
    let stack = Stack::start().await;
    let before = stack.admin.product(2).await;
    assert!(before.stock < TOO_MANY, "the default catalog has fewer than {TOO_MANY} units of product 2");

    let order = place_and_wait(&stack, &order_body(None, &[(2, TOO_MANY)], "CREDIT_CARD")).await;
    assert_eq!(order.status, CANCELLED);
    let reason = order.reason.clone().unwrap_or_default();
    assert!(reason.contains("OUT_OF_STOCK"), "reason names OUT_OF_STOCK: {reason:?}");
    let id = order.order_id.as_str();

    assert_eq!(stack.admin.product(2).await, before, "stock unchanged");
    assert_eq!(stack.admin.payments_of(id).await, vec![], "nothing charged");
    let notes = stack.admin.notifications_of(id).await;
    assert_eq!(notes.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>(), [ORDER_CANCELLED]);

    let history = stack.api.history(id).await;
    assert_eq!(history_violations(id, &history), Vec::<String>::new());
    let expected = labels(&[
        &one("WorkflowStarted"),
        &one("DefinitionPinned"),
        &one("ParallelStarted(screen_and_reserve)"),
        &one("StepScheduled(reserve_stock)"),
        &one("StepSkipped(fraud_check)"),
        &one("BranchCompleted(screen_and_reserve)"),
        &one("StepStarted(reserve_stock)"),
        &one("StepFailed(reserve_stock)"),
        &one("ParallelStopped(screen_and_reserve)"),
        &one("CompensationStarted"),
        &ok("reserve_stock.compensation"),
        &ok("notify_cancelled"),
        &one("WorkflowCompensated"),
    ]);
    assert_eq!(event_labels(&history), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn declined_card_is_cancelled_with_stock_released_and_nothing_charged() {
    let stack = Stack::start().await;
    let before = stack.admin.product(3).await;

    let order = place_and_wait(&stack, &order_body(None, &[(3, QUANTITY)], "DECLINED")).await;
    assert_eq!(order.status, CANCELLED);
    let reason = order.reason.clone().unwrap_or_default();
    assert!(reason.contains("PAYMENT_DECLINED"), "reason names PAYMENT_DECLINED: {reason:?}");
    let id = order.order_id.as_str();

    let after = stack.admin.product(3).await;
    assert_eq!((after.stock, after.reserved), (before.stock, 0), "the reservation was released");
    let ledger = stack.admin.payments_of(id).await;
    assert_eq!(shop_tests::client::net_charged(&ledger), 0, "net charged is zero: {ledger:?}");
    let notes = stack.admin.notifications_of(id).await;
    assert_eq!(notes.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>(), [ORDER_CANCELLED]);

    let history = stack.api.history(id).await;
    assert_eq!(history_violations(id, &history), Vec::<String>::new());
    let expected = labels(&[
        &one("WorkflowStarted"),
        &one("DefinitionPinned"),
        &one("ParallelStarted(screen_and_reserve)"),
        &one("StepScheduled(reserve_stock)"),
        &one("StepSkipped(fraud_check)"),
        &one("BranchCompleted(screen_and_reserve)"),
        &one("StepStarted(reserve_stock)"),
        &one("StepCompleted(reserve_stock)"),
        &one("BranchCompleted(screen_and_reserve)"),
        &one("ChoiceTaken(pay)"),
        &one("StepScheduled(charge_payment)"),
        &one("StepStarted(charge_payment)"),
        &one("StepFailed(charge_payment)"),
        &one("CompensationStarted"),
        &ok("charge_payment.compensation"),
        &ok("reserve_stock.compensation"),
        &ok("notify_cancelled"),
        &one("WorkflowCompensated"),
    ]);
    assert_eq!(event_labels(&history), expected);
}
