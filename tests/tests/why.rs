//! `why` end to end: a real engine, `GET /v1/workflows/{id}`'s `why` object and `shopctl why`
//! (text and `--json`). The test speaks the worker protocol itself where it must choose an
//! outcome (a retryable failure, a refund that fails for good), so each run is where the test
//! put it: waiting for a worker nobody runs, backing off, waiting for a signal, parked, ended.

use serde_json::{json, Value};
use shop_tests::process::{binary, run_to_end};
use shop_tests::{order_body, Api, Engine, EngineOptions};
use shop_types::api::{ActivityTask, PollResponse, WorkflowStatus};
use shop_types::why::{WhyStepState, WhyView, WhyWait};
use std::process::Command;
use std::time::{Duration, Instant};

/// A workflow the test drives by hand on queue `probe`: retries ten minutes apart (within its two-hour budget) (so a backoff
/// is still on when the test looks), then a wait for `approved`, and a refund that is tried
/// once (so its failure parks the run).
const PROBE: &str = r#"
name = "why_probe"
version = 1
execution_timeout = "3h"
[signals]
approved = {}

[[steps]]
name = "charge"
activity = "probe.charge"
queue = "probe"
retry = { max_attempts = 3, initial_interval = "10m", max_interval = "10m", jitter = 0.0 }
timeouts = { schedule_to_start = "30m", start_to_close = "10m", schedule_to_close = "2h" }

[[steps]]
name = "approve"
wait_for = ["approved"]
timeout = "30m"

[[compensations]]
step = "charge"
activity = "probe.refund"
queue = "probe"
retry = { max_attempts = 1 }
"#;

const CLI_DEADLINE: Duration = Duration::from_secs(30);
const POLL_DEADLINE: Duration = Duration::from_secs(20);

async fn why(api: &Api, id: &str) -> WhyView {
    let run = api.workflow(id).await;
    *run.why.unwrap_or_else(|| panic!("no why for {id}"))
}

/// Takes the one task of queue `probe`, as a worker would.
async fn take(api: &Api) -> ActivityTask {
    let body = json!({"queue": "probe", "worker_id": "probe-worker", "max_tasks": 1, "wait_ms": 2000});
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let reply = api.post_json("/v1/tasks/poll", &body).await.expect("poll");
        assert_eq!(reply.status, 200, "{}", reply.text);
        if let Some(task) = reply.parse::<PollResponse>().tasks.pop() {
            return task;
        }
        assert!(Instant::now() < deadline, "no task on probe");
    }
}

async fn complete(api: &Api, task: &ActivityTask) {
    let reply =
        api.post_json("/v1/tasks/complete", &json!({"token": task.token, "output": {}})).await.expect("complete");
    assert!(reply.is_success(), "{}", reply.text);
}

async fn fail(api: &Api, task: &ActivityTask, code: &str, retryable: bool) {
    let error = json!({"error_type": code, "message": format!("{code} from the test"), "retryable": retryable});
    let reply = api.post_json("/v1/tasks/fail", &json!({"token": task.token, "error": error})).await.expect("fail");
    assert!(reply.is_success(), "{}", reply.text);
}

async fn start_probe(api: &Api, id: &str) {
    let reply = api.start_workflow("why_probe", Some(id), json!({})).await;
    assert!(reply.is_success(), "{}", reply.text);
}

fn shopctl(engine: &str, args: &[&str]) -> String {
    let mut command = Command::new(binary("shopctl"));
    command.arg("--engine").arg(engine).args(args);
    let finished = run_to_end(command, CLI_DEADLINE);
    assert!(finished.status.success(), "shopctl {args:?} failed: {}", finished.stderr);
    finished.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn why_explains_runs_waiting_backing_off_signalled_parked_and_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflows = shop_tests::process::order_v1_only();
    std::fs::write(workflows.path().join("why_probe.toml"), PROBE).expect("write the probe workflow");
    let engine =
        Engine::start(dir.path(), EngineOptions { workflows: workflows.path().to_owned(), ..EngineOptions::default() })
            .await;
    let url = engine.url();
    let api = Api::new(&url);

    // No worker at all: the order's first step waits on `inventory`, which nobody polls.
    let order = api.place_order_ok(&order_body(Some("why-idle"), &[(1, 1)], "CREDIT_CARD")).await;
    let first = why(&api, &order).await;
    let step = &first.steps[0];
    assert_eq!(
        (step.step.as_str(), step.state, step.pollers),
        ("reserve_stock", WhyStepState::WaitingForWorker, Some(0))
    );
    let advice = "no worker polls queue `inventory`: start one with `shop-worker --activities inventory`";
    assert!(first.advice.iter().any(|a| a == advice), "{:?}", first.advice);
    assert!(first.execution_timeout.is_some(), "order v1 has an execution timeout");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = why(&api, &order).await;
    assert!(
        later.steps[0].waited_ms > step.waited_ms,
        "its wait grows: {:?} then {:?}",
        step.waited_ms,
        later.steps[0].waited_ms
    );
    let text = shopctl(&url, &["why", &order]);
    assert!(text.contains(advice), "{text}");
    assert!(text.contains("reserve_stock") && text.contains("1 of 6"), "{text}");
    let json: Value = serde_json::from_str(&shopctl(&url, &["--json", "why", &order])).expect("--json is JSON");
    assert_eq!(json["steps"][0]["pollers"], 0, "{json}");
    assert!(json["summary"].as_str().is_some_and(|s| s.contains("no worker polls queue `inventory`")), "{json}");

    // A retryable failure: backing off, the next retry due in ten minutes, the error named.
    start_probe(&api, "why-backoff").await;
    let task = take(&api).await;
    fail(&api, &task, "PROVIDER_DOWN", true).await;
    let backoff = why(&api, "why-backoff").await;
    let step = &backoff.steps[0];
    assert_eq!(
        step.state,
        WhyStepState::BackingOff,
        "{:?}",
        shop_tests::event_labels(&api.history("why-backoff").await)
    );
    assert_eq!((step.policy_attempt, step.max_attempts), (2, 3));
    let due = step.retry_due_ms.expect("a retry is due");
    assert!(due > backoff.as_of_ms, "the retry is ahead: due {due}, now {}", backoff.as_of_ms);
    assert_eq!(step.last_error.as_ref().map(|e| e.code.as_str()), Some("PROVIDER_DOWN"));
    let text = shopctl(&url, &["why", "why-backoff"]);
    assert!(text.contains("backing off") && text.contains("next retry in") && text.contains("PROVIDER_DOWN"), "{text}");

    // Charged: the run waits for `approved`, with its deadline.
    start_probe(&api, "why-signal").await;
    complete(&api, &take(&api).await).await;
    let signal = why(&api, "why-signal").await;
    let [WhyWait::Signal { step, signals, deadline_ms, .. }] = signal.waits.as_slice() else {
        panic!("one signal wait: {:?}", signal.waits);
    };
    assert_eq!((step.as_str(), signals.as_slice()), ("approve", &["approved".to_owned()][..]));
    assert!(*deadline_ms > signal.as_of_ms);
    assert!(signal.summary.contains("waits for signal approved"), "{}", signal.summary);
    let text = shopctl(&url, &["why", "why-signal"]);
    assert!(text.contains("signal approved until"), "{text}");

    // Cancelled, and its refund fails for good: parked, with how to resume.
    start_probe(&api, "why-parked").await;
    complete(&api, &take(&api).await).await;
    let reply = api.post_json("/v1/workflows/why-parked/cancel", &json!({"reason": "test"})).await.expect("cancel");
    assert!(reply.is_success(), "{}", reply.text);
    fail(&api, &take(&api).await, "LEDGER_LOCKED", false).await;
    let parked = why(&api, "why-parked").await;
    let parked = parked.parked.expect("parked");
    assert_eq!(parked.resume, "shopctl workflow resume why-parked");
    assert_eq!(parked.failure.map(|f| f.code), Some("LEDGER_LOCKED".to_owned()));
    let text = shopctl(&url, &["why", "why-parked"]);
    assert!(text.contains("shopctl workflow resume why-parked") && text.contains("LEDGER_LOCKED"), "{text}");

    // The signalled run cancelled and its refund done: compensated, and why.
    let reply =
        api.post_json("/v1/workflows/why-signal/cancel", &json!({"reason": "no approval"})).await.expect("cancel");
    assert!(reply.is_success(), "{}", reply.text);
    complete(&api, &take(&api).await).await;
    let ended = why(&api, "why-signal").await;
    let end = ended.ended.as_ref().expect("ended");
    assert_eq!((end.status, end.reason.as_deref()), (WorkflowStatus::Compensated, Some("cancelled: no approval")));
    assert!(ended.steps.is_empty() && ended.waits.is_empty() && ended.advice.is_empty());
    let text = shopctl(&url, &["why", "why-signal"]);
    assert!(text.contains("ended  COMPENSATED") && text.contains("no approval"), "{text}");
}
