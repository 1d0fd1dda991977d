//! The workflow language end to end (issue 9, part 1): a small definition registered through
//! the API, run by a real engine and an `echo` worker. A sleep survives kill -9 of the engine;
//! a wait is confirmed by a signal; a wait times out and compensates; an early signal is
//! buffered until its wait opens; a duplicate signal is applied once; an unknown signal is
//! 422, a finished run 409, an unknown run 404, a signal without an Idempotency-Key 400.
//! Durations are short (a 2s sleep, a 4s wait) so the test stays quick; no timing is asserted.

use serde_json::{json, Value};
use shop_tests::{Api, EngineOptions, Reply, Stack, WorkerOptions};
use shop_types::api::{InFlightView, WorkflowStatus};
use std::time::{Duration, Instant};

const DEFINITION: &str = r#"
name = "signals_e2e"
version = 1

[signals]
confirmed = {}
failed = {}

[[steps]]
name = "prepare"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "nap"
sleep = "2s"

[[steps]]
name = "await"
wait_for = ["confirmed", "failed"]
fail_on = ["failed"]
timeout = "4s"

[[compensations]]
step = "prepare"
activity = "echo.run"
queue = "echo"
"#;

/// Longest the test waits for a run to reach a state it must reach.
const DEADLINE: Duration = Duration::from_secs(60);

async fn signal(api: &Api, id: &str, name: &str, key: Option<&str>, payload: Value) -> Reply {
    let headers: Vec<(&str, &str)> = key.map(|k| vec![("Idempotency-Key", k)]).unwrap_or_default();
    let body = serde_json::to_vec(&payload).expect("serializes");
    api.post_raw(&format!("/v1/workflows/{id}/signals/{name}"), "application/json", body, &headers)
        .await
        .expect("the engine answers a signal")
}

async fn wait_until_waiting(api: &Api, id: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = api.workflow(id).await;
        if view.waiting_for.iter().any(|w| matches!(w, InFlightView::Wait { signals, .. } if signals.len() == 2)) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never showed its open wait: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds(events: &[shop_types::api::HistoryEventView]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.name()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sleeps_signals_and_waits_end_to_end() {
    let worker = WorkerOptions { activities: "echo".into(), ..WorkerOptions::default() };
    let mut stack = Stack::start_with(EngineOptions::default(), worker).await;
    let reply = stack.api.register_definition(DEFINITION).await;
    assert!(reply.is_success(), "registers: {} {:?}", reply.status, reply.body);

    for id in ["early", "late", "silent"] {
        let reply = stack.api.start_workflow("signals_e2e", Some(id), json!({"n": 1})).await;
        assert_eq!(reply.status, 202, "{id}: {:?}", reply.body);
    }
    // Refusals, while the runs are in flight.
    signal(&stack.api, "silent", "nope", Some("u1"), json!({})).await.assert_error(422, "UNKNOWN_SIGNAL");
    signal(&stack.api, "silent", "confirmed", None, json!({})).await.assert_error(400, "BAD_IDEMPOTENCY_KEY");
    signal(&stack.api, "no-such-run", "confirmed", Some("x"), json!({})).await.assert_error(404, "NOT_FOUND");

    // An early signal (before the wait opens), then the same one again: applied once.
    let first = signal(&stack.api, "early", "confirmed", Some("e1"), json!({"by": "early"})).await;
    assert_eq!(first.body, json!({"outcome": "recorded"}), "{:?}", first.body);
    let again = signal(&stack.api, "early", "confirmed", Some("e1"), json!({"by": "early"})).await;
    assert_eq!(again.body, json!({"outcome": "duplicate"}), "{:?}", again.body);
    let reused = signal(&stack.api, "early", "failed", Some("e1"), json!({})).await;
    reused.assert_error(409, "IDEMPOTENCY_KEY_REUSED");

    // kill -9 the engine while the runs sleep (or have not reached the sleep yet): the
    // sleep's wake time is in the history, so it ends after the restart.
    stack.engine.kill9();
    stack.engine.restart().await;

    // A late signal, once the wait is open.
    wait_until_waiting(&stack.api, "late").await;
    let late = signal(&stack.api, "late", "confirmed", Some("l1"), json!({"by": "late"})).await;
    assert_eq!(late.body, json!({"outcome": "recorded"}), "{:?}", late.body);

    for id in ["early", "late"] {
        let view = stack.api.wait_workflow(id).await;
        assert_eq!(view.status, WorkflowStatus::Completed, "{id}: {view:?}");
        let output: Value = serde_json::from_str(view.output.expect("an output").as_str()).expect("JSON");
        assert_eq!(output["await"]["by"], json!(id), "the consumed payload is the wait's output");
        let history = stack.api.history(id).await;
        let names = kinds(&history);
        assert_eq!(names.iter().filter(|n| **n == "SignalReceived").count(), 1, "{id}: {names:?}");
        for kind in ["SleepStarted", "SleepEnded", "WaitOpened", "WaitCompleted"] {
            assert!(names.contains(&kind), "{id}: {names:?}");
        }
    }
    let early = kinds(&stack.api.history("early").await);
    let received = early.iter().position(|n| *n == "SignalReceived").expect("received");
    let opened = early.iter().position(|n| *n == "WaitOpened").expect("opened");
    assert!(received < opened, "the early signal was buffered: {early:?}");

    // No signal: the wait times out, and what came before is compensated.
    let silent = stack.api.wait_workflow("silent").await;
    assert_eq!(silent.status, WorkflowStatus::Compensated, "{silent:?}");
    let names = kinds(&stack.api.history("silent").await);
    assert!(names.contains(&"WaitTimedOut") && names.contains(&"CompensationStarted"), "{names:?}");

    // A finished run refuses signals.
    signal(&stack.api, "early", "confirmed", Some("e2"), json!({})).await.assert_error(409, "ALREADY_FINISHED");
}
