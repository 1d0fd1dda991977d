//! A worker killed after its effect (the charge) and before reporting it.
//! Like every test here it starts its own stack and must never leave a process running.

use super::*;

/// How long the charge hangs after charging: far longer than the test needs to kill the
/// worker, and longer than `start_to_close` (10s), so only a lease timeout can end attempt 1.
const HANG_AFTER_CHARGE: &str = "30s";

/// A worker that charged the card and died before reporting it leaves the engine with an
/// attempt it knows nothing about: the lease times out (`start_to_close`), attempt 2 runs on
/// the restarted worker (same data dir, no fault), hits the idempotency record of attempt 1
/// and reports its result, so the order confirms with exactly one charge.
#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_after_charging_before_reporting_charges_once() {
    let hang = WorkerOptions::with_args(["--payment-hang-after-next", "1", "--payment-hang", HANG_AFTER_CHARGE]);
    let mut stack = Stack::start_with(EngineOptions::default(), hang).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;

    // The kill must land after the effect: wait until the ledger holds the charge.
    let deadline = Deadline::new("the charge reaching the ledger");
    while !stack.admin.payments_of(&id).await.iter().any(|e| e.kind == "charge") {
        deadline.tick().await;
    }
    assert_eq!(stack.api.order(&id).await.status, PENDING, "the worker has not reported the charge yet");
    stack.worker.kill9();

    // Restart on the same data dir without the fault flags (`restart` would set them again).
    let engine_url = stack.engine.url();
    stack.worker = Worker::start(stack.dir(), STACK_WORKER, &engine_url, WorkerOptions::default()).await;
    stack.admin = Admin::new(&stack.worker.url());

    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CONFIRMED, "reason: {:?}", order.reason);
    let ledger = stack.admin.payments_of(&id).await;
    assert_eq!(ledger.len(), 1, "exactly one ledger entry, the charge of attempt 1: {ledger:?}");
    assert_eq!(ledger[0].kind, "charge");

    let history = stack.api.history(&id).await;
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let charge: Vec<String> = step_events(&history, "charge_payment")
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::StepTimedOut { attempt, timeout, .. } => {
                Some(format!("timed out {attempt} {}", timeout.as_str()))
            }
            EventKind::StepCompleted { attempt, .. } => Some(format!("completed {attempt}")),
            EventKind::StepFailed { attempt, .. } => Some(format!("failed {attempt}")),
            _ => None,
        })
        .collect();
    assert_eq!(charge, ["timed out 1 start_to_close", "completed 2"], "attempt 1 was lost with the worker");
}
