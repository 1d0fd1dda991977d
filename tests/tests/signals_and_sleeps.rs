//! The workflow language end to end (issue 9, part 1): a small definition registered through
//! the API, run by a real engine and an `echo` worker. A sleep survives kill -9 of the engine;
//! a wait is confirmed by a signal; a wait times out and compensates; an early signal is
//! buffered until its wait opens; a duplicate signal is applied once, also when retried
//! after it completed the run; an unknown signal is 422, a payload over
//! `MAX_SIGNAL_PAYLOAD_BYTES` 413, a new signal to a finished run 409, an unknown run 404, a
//! signal without an Idempotency-Key 400.
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

/// Waits until some run shows a sleep in progress, and answers its id.
async fn wait_until_sleeping(api: &Api, ids: &[&'static str]) -> &'static str {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for id in ids {
            let view = api.workflow(id).await;
            if view.waiting_for.iter().any(|w| matches!(w, InFlightView::Sleep { .. })) {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no run of {ids:?} was ever seen sleeping");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn epoch_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    u64::try_from(since.as_millis()).expect("fits")
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
    // One byte over: `{"p":"<n x>"}` is n + 8 bytes as sent.
    let too_large = json!({"p": "x".repeat(shop_types::limits::MAX_SIGNAL_PAYLOAD_BYTES - 7)});
    signal(&stack.api, "silent", "confirmed", Some("big"), too_large).await.assert_error(413, "SIGNAL_TOO_LARGE");

    // An early signal (before the wait opens), then the same one again: applied once.
    let first = signal(&stack.api, "early", "confirmed", Some("e1"), json!({"by": "early"})).await;
    assert_eq!(first.body, json!({"outcome": "recorded"}), "{:?}", first.body);
    let again = signal(&stack.api, "early", "confirmed", Some("e1"), json!({"by": "early"})).await;
    assert_eq!(again.body, json!({"outcome": "duplicate"}), "{:?}", again.body);
    let reused = signal(&stack.api, "early", "failed", Some("e1"), json!({})).await;
    reused.assert_error(409, "IDEMPOTENCY_KEY_REUSED");

    // kill -9 the engine while a run sleeps: the sleep's wake time is in the history, so it
    // ends after the restart. The history then shows it started before the kill and ended
    // after it (the engine's clock is this machine's).
    let sleeper = wait_until_sleeping(&stack.api, &["early", "late", "silent"]).await;
    let killed_at = epoch_ms();
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

    let history = stack.api.history(sleeper).await;
    let at = |kind: &str| history.iter().find(|e| e.event.name() == kind).map(|e| e.at_ms);
    let (started, ended) = (at("SleepStarted").expect("slept"), at("SleepEnded").expect("woke"));
    assert!(
        started < killed_at && killed_at <= ended,
        "{sleeper} slept across the kill: {started} {killed_at} {ended}"
    );

    // The signal that completed the run, retried: still a duplicate (200), not 409; the same
    // key with another payload is a reused key; a new signal to a finished run is 409.
    let retried = signal(&stack.api, "late", "confirmed", Some("l1"), json!({"by": "late"})).await;
    assert_eq!((retried.status, &retried.body), (200, &json!({"outcome": "duplicate"})), "{:?}", retried.body);
    let retried = signal(&stack.api, "early", "confirmed", Some("e1"), json!({"by": "early"})).await;
    assert_eq!((retried.status, &retried.body), (200, &json!({"outcome": "duplicate"})), "{:?}", retried.body);
    signal(&stack.api, "late", "confirmed", Some("l1"), json!({"by": "other"}))
        .await
        .assert_error(409, "IDEMPOTENCY_KEY_REUSED");
    signal(&stack.api, "early", "confirmed", Some("e2"), json!({})).await.assert_error(409, "ALREADY_FINISHED");
}
