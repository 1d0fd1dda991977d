//! Retries, timeouts and fencing, with faults injected into a real worker:
//! - transient payment failures are retried with a growing backoff and the order confirms;
//! - more failures than `max_attempts` (6) fail the step for good and the order compensates;
//! - a hung charge is timed out (`start_to_close`), retried, charged exactly once, and the
//!   hung attempt's late completion is refused;
//! - a report with a stale task token is answered 409 `STALE_TASK` and changes nothing;
//! - a step nobody serves times out `schedule_to_start` and the run compensates.

use serde_json::json;
use shop_tests::{
    assert_in_order, event_labels, history_violations, order_body, EngineOptions, Stack, WorkerOptions, CANCELLED,
    CONFIRMED,
};
use shop_types::api::{HistoryEventView, WorkflowStatus};
use shop_types::history::{EventKind, TimeoutKind};
use std::time::{Duration, Instant};

/// `max_attempts` of `charge_payment` in `workflows/order.toml`.
const CHARGE_MAX_ATTEMPTS: u32 = 6;
/// Transient failures the retried order survives.
const TRANSIENT_FAILURES: u32 = 2;
/// More failures than the policy allows attempts.
const TOO_MANY_FAILURES: u32 = 10;
/// Longer than `start_to_close` (10s) of the order's steps, so the first attempt times out.
const HANG: &str = "12s";
/// How long to wait for the hung attempt to wake up and report.
const LATE_REPORT_DEADLINE: Duration = Duration::from_secs(40);
/// What the worker logs (at debug) when the engine refuses a stale report.
const STALE_REPORT_LOG: &str = "report refused: the attempt is no longer current";

/// The `charge_payment` events, `(name, attempt)`, in history order.
fn charge_events(history: &[HistoryEventView]) -> Vec<&HistoryEventView> {
    history.iter().filter(|e| e.step_name.as_deref() == Some("charge_payment")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_payment_failures_are_retried_with_growing_backoff() {
    let fail = TRANSIENT_FAILURES.to_string();
    let stack = Stack::start_with(Default::default(), WorkerOptions::with_args(["--payment-fail-next", &fail])).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CONFIRMED, "reason: {:?}", order.reason);

    let history = stack.api.history(&id).await;
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let mut failures = Vec::new();
    let mut delays = Vec::new();
    for event in charge_events(&history) {
        match &event.event {
            EventKind::StepFailed { attempt, error, will_retry, .. } => {
                assert!(will_retry, "attempt {attempt} is retried");
                assert_eq!(error.error_type, "PAYMENT_UNAVAILABLE");
                failures.push(*attempt);
            }
            EventKind::StepRetryScheduled { attempt, delay_ms, .. } => delays.push((*attempt, *delay_ms)),
            EventKind::StepCompleted { attempt, .. } => assert_eq!(*attempt, TRANSIENT_FAILURES + 1),
            _ => {}
        }
    }
    assert_eq!(failures, [1, 2], "two failed attempts");
    assert_eq!(delays.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [2, 3], "retries of attempts 2 and 3");
    assert!(delays[0].1 > 0, "a retry waits: {delays:?}");
    assert!(delays[1].1 > delays[0].1, "the backoff grows: {delays:?}");

    let ledger = stack.admin.payments_of(&id).await;
    assert_eq!(ledger.iter().filter(|e| e.kind == "charge").count(), 1, "charged once: {ledger:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_failing_beyond_max_attempts_compensates_the_order() {
    let fail = TOO_MANY_FAILURES.to_string();
    let stack = Stack::start_with(Default::default(), WorkerOptions::with_args(["--payment-fail-next", &fail])).await;
    let before = stack.admin.product(1).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 3)], "CREDIT_CARD")).await;
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CANCELLED);

    let history = stack.api.history(&id).await;
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let failed: Vec<(u32, bool)> = charge_events(&history)
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::StepFailed { attempt, will_retry, .. } => Some((*attempt, *will_retry)),
            _ => None,
        })
        .collect();
    let expected: Vec<(u32, bool)> = (1..=CHARGE_MAX_ATTEMPTS).map(|a| (a, a < CHARGE_MAX_ATTEMPTS)).collect();
    assert_eq!(failed, expected, "six attempts, the last one final");
    assert_in_order(
        &event_labels(&history),
        &[
            "StepFailed(charge_payment)",
            "CompensationStarted",
            "StepCompleted(charge_payment.compensation)",
            "StepCompleted(reserve_stock.compensation)",
            "StepCompleted(notify_cancelled)",
            "WorkflowCompensated",
        ],
    );

    let after = stack.admin.product(1).await;
    assert_eq!((after.stock, after.reserved), (before.stock, 0), "the reservation was released");
    assert_eq!(shop_tests::client::net_charged(&stack.admin.payments_of(&id).await), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_charge_times_out_is_retried_and_charges_once() {
    let options = WorkerOptions {
        args: ["--payment-hang-next", "1", "--payment-hang", HANG].map(str::to_owned).to_vec(),
        // The worker logs refused stale reports at debug level.
        env: vec![("RUST_LOG".to_owned(), "info,shop_worker::poller=debug,shop_worker::stream=debug".to_owned())],
        ..WorkerOptions::default()
    };
    // Order v1: the tokens below name its steps (`f0` reserve, `f1` charge).
    let workflows = shop_tests::process::order_v1_only();
    let engine = EngineOptions { workflows: workflows.path().to_owned(), ..EngineOptions::default() };
    let stack = Stack::start_with(engine, options).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;

    // While attempt 1 of the charge hangs, a report for the completed reserve step, or for an
    // attempt that was never handed out, is stale.
    let deadline = Instant::now() + LATE_REPORT_DEADLINE;
    while !charge_events(&stack.api.history(&id).await)
        .iter()
        .any(|e| matches!(e.event, EventKind::StepStarted { attempt: 1, .. }))
    {
        assert!(Instant::now() < deadline, "the charge never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for token in [format!("{id}~f0~1"), format!("{id}~f1~2")] {
        let reply = stack
            .api
            .post_json("/v1/tasks/complete", &json!({"token": token, "output": {}}))
            .await
            .expect("POST /v1/tasks/complete");
        reply.assert_error(409, "STALE_TASK");
    }

    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CONFIRMED, "reason: {:?}", order.reason);

    // The hung attempt wakes up after the retry has won, charges with the same idempotency
    // key (a no-op) and reports; the engine refuses it.
    let deadline = Instant::now() + LATE_REPORT_DEADLINE;
    while !stack.worker.log().lines().any(|l| l.contains(STALE_REPORT_LOG) && l.contains(&format!("{id}~f1~1"))) {
        assert!(Instant::now() < deadline, "the hung attempt never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let history = stack.api.history(&id).await;
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let charge: Vec<String> = charge_events(&history)
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::StepTimedOut { attempt, timeout, will_retry, .. } => {
                Some(format!("timed out {attempt} {} {will_retry}", timeout.as_str()))
            }
            EventKind::StepCompleted { attempt, .. } => Some(format!("completed {attempt}")),
            EventKind::StepFailed { attempt, .. } => Some(format!("failed {attempt}")),
            _ => None,
        })
        .collect();
    assert_eq!(charge, ["timed out 1 start_to_close true", "completed 2"], "attempt 1 timed out, attempt 2 won");
    let ledger = stack.admin.payments_of(&id).await;
    assert_eq!(ledger.len(), 1, "exactly one charge, even after the hung attempt ran: {ledger:?}");
    assert_eq!(ledger[0].kind, "charge");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_completion_for_a_finished_order_changes_nothing() {
    let stack = Stack::start().await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    assert_eq!(stack.api.wait_order(&id).await.status, CONFIRMED);
    let before = stack.api.history(&id).await;

    let reply = stack
        .api
        .post_json("/v1/tasks/complete", &json!({"token": format!("{id}~f1~1"), "output": {}}))
        .await
        .expect("POST /v1/tasks/complete");
    reply.assert_error(409, "STALE_TASK");

    let after = stack.api.history(&id).await;
    assert_eq!(serde_json::to_value(&after).ok(), serde_json::to_value(&before).ok(), "history unchanged");
    assert_eq!(stack.admin.payments_of(&id).await.len(), 1);
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

#[tokio::test(flavor = "multi_thread")]
async fn step_nobody_serves_times_out_schedule_to_start_and_compensates() {
    let stack = Stack::start().await;
    let reply = stack.api.register_definition(LONELY_DEFINITION).await;
    assert_eq!(reply.status, 201, "a new definition is created: {}", reply.text);

    let reply = stack.api.start_workflow("lonely", Some("lonely-1"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let run = stack.api.wait_workflow("lonely-1").await;
    assert_eq!(run.status, WorkflowStatus::Compensated, "reason: {:?}", run.reason);

    let history = stack.api.history("lonely-1").await;
    assert_eq!(history_violations("lonely-1", &history), Vec::<String>::new());
    let timed_out: Vec<_> = history
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::StepTimedOut { timeout, will_retry, .. } => Some((*timeout, *will_retry)),
            _ => None,
        })
        .collect();
    assert_eq!(timed_out, [(TimeoutKind::ScheduleToStart, false)]);
    assert!(!history.iter().any(|e| matches!(e.event, EventKind::StepStarted { .. })), "nobody ever started the step");
    assert_eq!(event_labels(&history).last().map(String::as_str), Some("WorkflowCompensated"));
}
