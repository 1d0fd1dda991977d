//! The per-run history limit (`shop-engine --max-history-events N`), tested at its edges: a
//! run that needs exactly N events completes; a history never exceeds N events; a run still
//! going forward at 3/4 of N compensates while there is room, so its stock is released and
//! its customer told; a run that reaches N anyway is FAILED (needs attention) with the reason.

use shop_tests::invariants::ORDER_CANCELLED;
use shop_tests::{history_violations, order_body, EngineOptions, Stack, WorkerOptions, CONFIRMED};

/// Events of the normal order saga v1: started, its definition's hash pinned, 4 steps x 3
/// events, completed.
const NORMAL_ORDER_EVENTS: u64 = 15;
/// Events of a declined order: see `order_saga.rs`.
const DECLINED_ORDER_EVENTS: u64 = 19;
/// A limit the declined order's history cannot fit in.
const TIGHT_LIMIT: u64 = 12;
const FAILED: &str = "FAILED";

/// A stack whose engine knows only order v1 (`workflows/order.toml`), whose histories these
/// counts describe: the limit is what is under test, not the latest version's shape.
async fn stack_with_limit_on_v1(limit: u64, worker: WorkerOptions) -> (Stack, tempfile::TempDir) {
    let workflows = shop_tests::process::order_v1_only();
    let options = EngineOptions {
        max_history_events: Some(limit),
        workflows: workflows.path().to_owned(),
        ..EngineOptions::default()
    };
    (Stack::start_with(options, worker).await, workflows)
}

async fn stack_with_limit(limit: u64) -> (Stack, tempfile::TempDir) {
    stack_with_limit_on_v1(limit, WorkerOptions::default()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn history_never_exceeds_the_limit_and_the_run_fails_with_the_reason() {
    const { assert!(TIGHT_LIMIT < DECLINED_ORDER_EVENTS) };
    let (stack, _workflows) = stack_with_limit(TIGHT_LIMIT).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "DECLINED")).await;
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, FAILED);
    let reason = order.reason.unwrap_or_default();
    assert!(reason.contains("limit"), "the reason says the history limit was reached: {reason:?}");

    let history = stack.api.history(&id).await;
    assert!(history.len() as u64 <= TIGHT_LIMIT, "{} events over a limit of {TIGHT_LIMIT}", history.len());
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    assert_eq!(stack.admin.payments_of(&id).await, vec![], "nothing charged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_fits_the_limit_exactly_completes() {
    let (stack, _workflows) = stack_with_limit(NORMAL_ORDER_EVENTS).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CONFIRMED, "a 15-event run under a 15-event limit: {:?}", order.reason);
    assert_eq!(stack.api.history(&id).await.len() as u64, NORMAL_ORDER_EVENTS);
}

/// The order saga with a charge that may be retried a hundred times, quickly: left to fail
/// for ever, it would run past any history limit.
const PATIENT_ORDER: &str = r#"
name = "order"
version = 2
[statuses]
running = "PENDING"
completed = "CONFIRMED"
compensated = "CANCELLED"
failed = "FAILED"
[[steps]]
name = "reserve_stock"
activity = "inventory.reserve"
queue = "inventory"
[[steps]]
name = "charge_payment"
activity = "payment.charge"
queue = "payment"
retry = { max_attempts = 100, initial_interval = "1ms", max_interval = "2ms" }
[[steps]]
name = "confirm_order"
activity = "inventory.commit"
queue = "inventory"
pivot = true
[[compensations]]
step = "reserve_stock"
activity = "inventory.release"
queue = "inventory"
[[compensations]]
step = "charge_payment"
activity = "payment.refund"
queue = "payment"
[[after_compensation]]
name = "notify_cancelled"
activity = "notification.send"
queue = "notification"
params = { kind = "ORDER_CANCELLED" }
"#;
/// Room for the patient order to retry past 3/4 of it and still compensate.
const PATIENT_LIMIT: u64 = 80;

#[tokio::test(flavor = "multi_thread")]
async fn a_run_retrying_past_three_quarters_of_the_limit_compensates_in_the_room_left() {
    let worker = WorkerOptions { args: vec!["--payment-fail-next".into(), "1000".into()], ..WorkerOptions::default() };
    let (stack, _workflows) = stack_with_limit_on_v1(PATIENT_LIMIT, worker).await;
    let registered = stack.api.register_definition(PATIENT_ORDER).await;
    assert!(registered.is_success(), "the patient order registers: {}", registered.message());
    let before = stack.admin.product(1).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 2)], "CREDIT_CARD")).await;
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, "CANCELLED", "{:?}", order.reason);
    assert!(order.reason.unwrap_or_default().contains("3/4 of its limit"));
    let history = stack.api.history(&id).await;
    assert!(history.len() as u64 <= PATIENT_LIMIT, "{} events over a limit of {PATIENT_LIMIT}", history.len());
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let after = stack.admin.product(1).await;
    assert_eq!((after.stock, after.reserved), (before.stock, 0), "section 7 (4): no reservation left held");
    let kinds: Vec<String> = stack.admin.notifications_of(&id).await.into_iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [ORDER_CANCELLED], "section 7 (5): exactly one outcome notification");
    assert_eq!(stack.admin.payments_of(&id).await, vec![], "nothing charged");
}
