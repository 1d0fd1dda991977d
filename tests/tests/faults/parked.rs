//! A compensation that keeps failing parks the run until an operator resumes it.
//! Like every test here it starts its own stack and must never leave a process running.

use super::*;
use shop_tests::variants::{order_with_quick_refund, QUICK_REFUND_MAX_ATTEMPTS as REFUND_MAX_ATTEMPTS};

/// Refund failures injected at first: far more than any attempt budget.
const REFUND_FAILURES: &str = "1000";
/// Refund failures left when the operator resumes the run: one less than a whole attempt budget, so
/// the resumed compensation succeeds only if its budget really starts afresh.
const REFUND_FAILURES_AFTER_RESUME: u32 = REFUND_MAX_ATTEMPTS - 1;
/// The order's product and quantity.
const PARKED_PRODUCT: i64 = 3;
const PARKED_QUANTITY: i64 = 2;
/// The version this test registers its variant as: above every version in `workflows/`, so
/// new orders run it.
const TEST_VERSION: u32 = 99;

/// A compensation that fails past its `max_attempts` parks the run: status FAILED (in the
/// order API, the `status=FAILED` list and `shopctl workflow list`), history ending with
/// RunParked, and the compensations after it not run. Once the cause is fixed, `shopctl
/// workflow resume` resumes it: the refund runs again with a fresh attempt budget, then the
/// release, the cancellation notice, and the run ends compensated with stock and money back
/// where they were. Resuming a run that is not parked is refused with 409 NOT_PARKED.
#[tokio::test(flavor = "multi_thread")]
async fn compensation_failing_for_good_parks_the_run_until_an_operator_resumes_it() {
    let stack =
        Stack::start_with(EngineOptions::default(), WorkerOptions::with_args(["--refund-fail-next", REFUND_FAILURES]))
            .await;
    let reply = stack.api.register_definition(&order_with_quick_refund(TEST_VERSION)).await;
    assert_eq!(reply.status, 201, "version {TEST_VERSION} is registered: {}", reply.text);
    let before = stack.admin.product(PARKED_PRODUCT).await;

    let id = stack.api.place_order_ok(&order_body(None, &[(PARKED_PRODUCT, PARKED_QUANTITY)], "DECLINED")).await;
    assert_eq!(
        stack.api.workflow(&id).await.definition_version,
        TEST_VERSION,
        "a new order runs the newest definition"
    );

    // Parked: FAILED everywhere an operator would look.
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, "FAILED", "reason: {:?}", order.reason);
    let run = stack.api.workflow(&id).await;
    assert_eq!(run.status, WorkflowStatus::Failed);
    let listed = stack.api.get("/v1/workflows?status=FAILED").await.expect("GET /v1/workflows?status=FAILED");
    assert_eq!(listed.status, 200, "{}", listed.text);
    let listed: WorkflowList = listed.parse();
    assert!(listed.workflows.iter().any(|w| w.id.as_str() == id), "the FAILED list holds {id}: {listed:?}");
    let cli = shopctl(stack.engine.url().as_str(), &["workflow", "list", "--status", "failed"]);
    assert!(cli.status.success(), "shopctl workflow list: {}", cli.stderr);
    assert!(cli.stdout.contains(&id), "shopctl lists the parked run {id}:\n{}", cli.stdout);

    let history = stack.api.history(&id).await;
    assert_eq!(event_labels(&history).last().map(String::as_str), Some("RunParked"), "{:?}", event_labels(&history));
    let refund_failures = failures(&step_events(&history, "charge_payment.compensation"));
    let expected: Vec<bool> = (1..=REFUND_MAX_ATTEMPTS).map(|a| a < REFUND_MAX_ATTEMPTS).collect();
    assert_eq!(refund_failures.iter().map(|f| f.2).collect::<Vec<_>>(), expected, "{refund_failures:?}");
    // Compensations run in reverse order, one after the other: the release waits its turn.
    assert!(step_events(&history, "reserve_stock.compensation").is_empty(), "the release has not run yet");

    // The operator fixes the cause (nearly: the refund still fails a few times) and resumes the run.
    let mut faults: FaultConfig = stack.admin.get("/faults").await.expect("GET /faults");
    faults.refund_fail_next = REFUND_FAILURES_AFTER_RESUME;
    stack.admin.set_faults(&faults).await;
    let resumed = shopctl(stack.engine.url().as_str(), &["workflow", "resume", &id]);
    assert!(resumed.status.success(), "shopctl workflow resume: {}", resumed.stderr);

    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CANCELLED, "reason: {:?}", order.reason);
    let history = stack.api.history(&id).await;
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let labels = event_labels(&history);
    assert_in_order(
        &labels,
        &[
            "RunParked",
            "RunResumedBy",
            "StepCompleted(charge_payment.compensation)",
            "StepCompleted(reserve_stock.compensation)",
            "StepCompleted(notify_cancelled)",
            "WorkflowCompensated",
        ],
    );
    let resumed_at = labels.iter().position(|l| l == "RunResumedBy").expect("the history holds RunResumedBy");
    // The engine runs --open here: the resume names that caller.
    assert_eq!(history[resumed_at].event.requested_by(), Some("open"), "who resumed it is recorded");
    let refund_after_resume = failures(&step_events(&history[resumed_at..], "charge_payment.compensation"));
    assert_eq!(
        refund_after_resume.len(),
        REFUND_FAILURES_AFTER_RESUME as usize,
        "the resumed refund failed as injected and still had attempts left: {refund_after_resume:?}"
    );

    let after = stack.admin.product(PARKED_PRODUCT).await;
    assert_eq!((after.stock, after.reserved), (before.stock, 0), "the reservation was released");
    let cancelled: Vec<_> =
        stack.admin.notifications_of(&id).await.into_iter().filter(|n| n.kind == ORDER_CANCELLED).collect();
    assert_eq!(cancelled.len(), 1, "one cancellation notice: {cancelled:?}");
    assert_eq!(net_charged(&stack.admin.payments_of(&id).await), 0, "nothing charged in the end");

    // Only a parked run can be resumed: a finished one is refused as finished, one still
    // running (its only step waits on a queue nobody serves) as not parked.
    let again = stack.api.post_json(&format!("/v1/workflows/{id}/resume"), &json!({})).await.expect("POST resume");
    again.assert_error(409, "ALREADY_FINISHED");
    // One name for the action: the route's old name is gone.
    let old_name = stack.api.post_json(&format!("/v1/workflows/{id}/retry"), &json!({})).await.expect("POST retry");
    assert_eq!(old_name.status, 404, "{}", old_name.text);
    let reply = stack.api.register_definition(UNSERVED_DEFINITION).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let reply = stack.api.start_workflow("unserved", Some(UNSERVED_RUN), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let running = stack.api.post_json(&format!("/v1/workflows/{UNSERVED_RUN}/resume"), &json!({})).await;
    running.expect("POST resume").assert_error(409, "NOT_PARKED");
    assert_eq!(stack.api.workflow(UNSERVED_RUN).await.status, WorkflowStatus::Running, "the refusal changed nothing");
}

/// A run that stays running for the whole test: its one step waits on a queue nobody polls,
/// for far longer than the test lasts.
const UNSERVED_DEFINITION: &str = r#"
name = "unserved"
version = 1

[[steps]]
name = "wait_for_nobody"
activity = "nobody.work"
queue = "nobody"
timeouts = { schedule_to_start = "10m" }
"#;
const UNSERVED_RUN: &str = "unserved-1";
