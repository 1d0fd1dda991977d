//! Parallel branches end to end (issue 9, part 4): a definition registered through the API,
//! run by a real engine and an `echo` worker. Two branches run at once (one waits for a
//! signal, the other sleeps); the run view's `waiting_for` shows both; kill -9 of the engine
//! while they run loses neither; a signal completes the first and the run completes. In a
//! second run a `fail_on` signal fails one branch for good: the parallel step stops and every
//! step handed to a worker is compensated. Durations are short; no timing is asserted.

use serde_json::json;
use shop_tests::{Api, EngineOptions, Stack, WorkerOptions};
use shop_types::api::{InFlightView, WorkflowStatus};
use std::time::{Duration, Instant};

const DEFINITION: &str = r#"
name = "parallel_e2e"
version = 1

[signals]
go = {}
stop = {}

[[steps]]
name = "prepare"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "both"
parallel = ["left", "right"]

[[steps]]
name = "finish"
activity = "echo.run"
queue = "echo"

[[branches.left]]
name = "left_work"
activity = "echo.run"
queue = "echo"

[[branches.left]]
name = "left_wait"
wait_for = ["go", "stop"]
fail_on = ["stop"]
timeout = "60s"

[[branches.right]]
name = "right_work"
activity = "echo.run"
queue = "echo"

[[branches.right]]
name = "right_nap"
sleep = "2s"

[[compensations]]
step = "prepare"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "left_work"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "right_work"
activity = "echo.run"
queue = "echo"
"#;

/// Longest the test waits for a run to reach a state it must reach.
const DEADLINE: Duration = Duration::from_secs(60);

async fn signal(api: &Api, id: &str, name: &str, key: &str) {
    let body = serde_json::to_vec(&json!({})).expect("serializes");
    let reply = api
        .post_raw(&format!("/v1/workflows/{id}/signals/{name}"), "application/json", body, &[("Idempotency-Key", key)])
        .await
        .expect("the engine answers a signal");
    assert!(reply.is_success(), "{id}: {} {:?}", reply.status, reply.body);
}

/// Waits until the run's view shows the open wait of the left branch.
async fn wait_for_open_wait(api: &Api, id: &str) -> Vec<InFlightView> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = api.workflow(id).await;
        if view.waiting_for.iter().any(|w| matches!(w, InFlightView::Wait { .. })) {
            return view.waiting_for;
        }
        assert!(Instant::now() < deadline, "{id} never showed its open wait: {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_branches_end_to_end_with_kill_9() {
    let worker = WorkerOptions { activities: "echo".into(), ..WorkerOptions::default() };
    let mut stack = Stack::start_with(EngineOptions::default(), worker).await;
    let reply = stack.api.register_definition(DEFINITION).await;
    assert!(reply.is_success(), "registers: {} {:?}", reply.status, reply.body);
    for id in ["par-ok", "par-stop"] {
        let reply = stack.api.start_workflow("parallel_e2e", Some(id), json!({"n": 1})).await;
        assert_eq!(reply.status, 202, "{id}: {:?}", reply.body);
    }

    // Both branches in flight at once: the left one waits, the right one sleeps (or is
    // still at its echo step) -- the view shows more than one thing in flight.
    let waiting = wait_for_open_wait(&stack.api, "par-ok").await;
    assert!(
        waiting.len() >= 2 || stack.api.history("par-ok").await.iter().any(|e| e.event.name() == "BranchCompleted"),
        "both branches show in waiting_for: {waiting:?}"
    );

    // kill -9 while the branches run: everything they did is in the history.
    stack.engine.kill9();
    stack.engine.restart().await;

    wait_for_open_wait(&stack.api, "par-ok").await;
    signal(&stack.api, "par-ok", "go", "g1").await;
    let view = stack.api.wait_workflow("par-ok").await;
    assert_eq!(view.status, WorkflowStatus::Completed, "{view:?}");
    let names: Vec<&str> = stack.api.history("par-ok").await.iter().map(|e| e.event.name()).collect();
    assert_eq!(names.iter().filter(|n| **n == "ParallelStarted").count(), 1, "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "BranchCompleted").count(), 2, "{names:?}");

    // A fail_on signal fails the left branch for good: the step stops, and every step a
    // worker ran is compensated (left_work, right_work, prepare).
    wait_for_open_wait(&stack.api, "par-stop").await;
    signal(&stack.api, "par-stop", "stop", "s1").await;
    let view = stack.api.wait_workflow("par-stop").await;
    assert_eq!(view.status, WorkflowStatus::Compensated, "{view:?}");
    let history = stack.api.history("par-stop").await;
    let names: Vec<&str> = history.iter().map(|e| e.event.name()).collect();
    let stopped = names.iter().position(|n| *n == "ParallelStopped").expect("stopped");
    let compensating = names.iter().position(|n| *n == "CompensationStarted").expect("compensates");
    assert!(stopped < compensating, "{names:?}");
    let is_comp = |e: &&shop_types::api::HistoryEventView| matches!(e.event, shop_types::history::EventKind::StepCompleted { step, .. } if step.phase == shop_types::StepPhase::Compensation);
    // Distinct steps: an attempt that timed out (a loaded machine, the kill -9) is retried and
    // started again, but its step is undone once.
    let handed_out = history
        .iter()
        .filter_map(|e| match e.event {
            shop_types::history::EventKind::StepStarted { step, .. }
                if step.phase == shop_types::StepPhase::Forward =>
            {
                Some(step)
            }
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    // Every forward step a worker took here has a compensation: each is undone once.
    assert!(handed_out >= 2, "prepare and left_work ran: {names:?}");
    assert_eq!(history.iter().filter(is_comp).count(), handed_out, "every handed-out step undone: {names:?}");
}
