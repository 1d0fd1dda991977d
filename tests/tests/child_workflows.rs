//! Child workflows end to end (issue 9, the last construct): a parent and a child definition
//! registered through the API, run by a real engine and an `echo` worker slowed by
//! `--latency`. The parent's step starts the child (`<parent>.<step>`), shows it in
//! `waiting_for`, survives kill -9 of the engine while the child runs, and completes with the
//! child's output. A second parent is cancelled while its child runs: the child is cancelled
//! and compensates itself, then the parent compensates. A third parent is cancelled after its
//! child completed: the child, held by its parent until then, undoes its own effects with its
//! compensations (newest first) across a kill -9 of the engine, and only then does the
//! parent's compensation go on. No timing is asserted; waits are bounded.

use serde_json::json;
use shop_tests::{assert_in_order, event_labels, Api, EngineOptions, Stack, WorkerOptions};
use shop_types::api::{InFlightView, WorkflowStatus};
use shop_types::history::EventKind;
use std::time::{Duration, Instant};

const CHILD: &str = r#"
name = "child_e2e"
version = 1

[[steps]]
name = "charge"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "ship"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "charge"
activity = "echo.run"
queue = "echo"
"#;

const PARENT: &str = r#"
name = "parent_e2e"
version = 1

[[steps]]
name = "prepare"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "pay"
workflow = { name = "child_e2e" }

[[steps]]
name = "finish"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "prepare"
activity = "echo.run"
queue = "echo"
"#;

/// Longest the test waits for a run to reach a state it must reach.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until the parent's view shows its child in flight, and returns the child's id.
async fn wait_for_child(api: &Api, id: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = api.workflow(id).await;
        if let Some(child) = view.waiting_for.iter().find_map(|w| match w {
            InFlightView::Child { child, .. } => Some(child.clone()),
            _ => None,
        }) {
            return child;
        }
        assert!(Instant::now() < deadline, "{id} never showed its child: {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names(history: &[shop_types::api::HistoryEventView]) -> Vec<&'static str> {
    history.iter().map(|e| e.event.name()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_workflow_survives_kill_9_and_is_cancelled_with_its_parent() {
    let worker = WorkerOptions {
        activities: "echo".into(),
        args: vec!["--latency".into(), "300ms".into()],
        ..WorkerOptions::default()
    };
    let mut stack = Stack::start_with(EngineOptions::default(), worker).await;
    for definition in [CHILD, PARENT] {
        let reply = stack.api.register_definition(definition).await;
        assert!(reply.is_success(), "registers: {} {:?}", reply.status, reply.body);
    }
    let reply = stack.api.start_workflow("parent_e2e", Some("cw-ok"), json!({ "order": 1 })).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let child = wait_for_child(&stack.api, "cw-ok").await;
    assert_eq!(child, "cw-ok.pay");

    // kill -9 while the child runs.
    stack.engine.kill9();
    stack.engine.restart().await;

    let view = stack.api.wait_workflow("cw-ok").await;
    assert_eq!(view.status, WorkflowStatus::Completed, "{view:?}");
    let history = stack.api.history("cw-ok").await;
    let parent_names = names(&history);
    assert_eq!(parent_names.iter().filter(|n| **n == "ChildStarted").count(), 1, "{parent_names:?}");
    assert_eq!(parent_names.iter().filter(|n| **n == "ChildCompleted").count(), 1, "{parent_names:?}");
    assert!(history.iter().any(
        |e| matches!(&e.event, EventKind::ChildStarted { version: 1, child, .. } if child.as_str() == "cw-ok.pay")
    ));
    let child_view = stack.api.wait_workflow("cw-ok.pay").await;
    assert_eq!(child_view.status, WorkflowStatus::Completed, "{child_view:?}");
    let child_history = stack.api.history("cw-ok.pay").await;
    assert!(names(&child_history).contains(&"ParentLinked"), "{:?}", names(&child_history));
    // The child's input is the parent's context; the step's output is the child's.
    let EventKind::WorkflowStarted { input, .. } = &child_history[0].event else { panic!("starts") };
    assert_eq!(input.to_value()["input"], json!({ "order": 1 }));
    assert!(input.to_value()["steps"]["prepare"].is_object(), "{input:?}");
    let output = view.output.expect("a completed run has an output").to_value();
    assert_eq!(output["pay"], child_view.output.expect("the child's output").to_value());

    // A cancel while the child runs: the child compensates itself, then the parent does.
    let reply = stack.api.start_workflow("parent_e2e", Some("cw-cancel"), json!({ "order": 2 })).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let child = wait_for_child(&stack.api, "cw-cancel").await;
    let reply = stack.api.post_json("/v1/workflows/cw-cancel/cancel", &json!({ "reason": "test" })).await;
    let reply = reply.expect("the engine answers a cancel");
    assert!(reply.is_success(), "{} {:?}", reply.status, reply.body);
    let view = stack.api.wait_workflow("cw-cancel").await;
    assert_eq!(view.status, WorkflowStatus::Compensated, "{view:?}");
    let child_view = stack.api.wait_workflow(&child).await;
    assert_eq!(child_view.status, WorkflowStatus::Compensated, "{child_view:?}");
    let history = stack.api.history("cw-cancel").await;
    let parent_names = names(&history);
    let failed = parent_names.iter().position(|n| *n == "ChildFailed").expect("the child's end is recorded");
    let compensating = parent_names.iter().position(|n| *n == "CompensationStarted").expect("compensates");
    let last_completion = parent_names.iter().rposition(|n| *n == "StepCompleted").expect("release ran");
    assert!(compensating < failed && failed < last_completion, "compensation waits for the child: {parent_names:?}");
    let child_names = names(&stack.api.history(&child).await);
    assert!(child_names.contains(&"CancelRequested"), "{child_names:?}");
}

const CHILD_UNDO: &str = r#"
name = "child_undo"
version = 1

[[steps]]
name = "charge"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "ship"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "charge"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "ship"
activity = "echo.run"
queue = "echo"
"#;

/// The child completes, then the parent waits for a signal that never comes: a cancel
/// arrives while its child is held.
const PARENT_UNDO: &str = r#"
name = "parent_undo"
version = 1

[signals]
go = {}

[[steps]]
name = "prepare"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "pay"
workflow = { name = "child_undo" }

[[steps]]
name = "hold"
wait_for = ["go"]
timeout = "10m"

[[steps]]
name = "finish"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "prepare"
activity = "echo.run"
queue = "echo"
"#;

/// Waits until `check` holds for the run's view.
async fn wait_view(api: &Api, id: &str, what: &str, check: impl Fn(&shop_types::api::WorkflowView) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view = api.workflow(id).await;
        if check(&view) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never {what}: {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_child_is_held_and_undone_by_its_own_compensations_when_its_parent_compensates() {
    let worker = WorkerOptions {
        activities: "echo".into(),
        args: vec!["--latency".into(), "300ms".into()],
        ..WorkerOptions::default()
    };
    let mut stack = Stack::start_with(EngineOptions::default(), worker).await;
    for definition in [CHILD_UNDO, PARENT_UNDO] {
        let reply = stack.api.register_definition(definition).await;
        assert!(reply.is_success(), "registers: {} {:?}", reply.status, reply.body);
    }
    let reply = stack.api.start_workflow("parent_undo", Some("cw-undo"), json!({ "order": 3 })).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let child = "cw-undo.pay";

    // The child's forward path completes: the parent's step completes with its output and
    // the parent waits for its signal, while the child is held, still RUNNING.
    let waits =
        |v: &shop_types::api::WorkflowView| v.waiting_for.iter().any(|w| matches!(w, InFlightView::Wait { .. }));
    wait_view(&stack.api, "cw-undo", "waited for its signal", waits).await;
    let child_view = stack.api.workflow(child).await;
    assert_eq!(child_view.status, WorkflowStatus::Running, "{child_view:?}");
    assert_eq!(child_view.waiting_for, [InFlightView::HeldByParent { parent: "cw-undo".into() }]);
    // Held, the child belongs to its parent's outcome: it is not cancelled on its own.
    let reply = stack.api.post_json(&format!("/v1/workflows/{child}/cancel"), &json!({})).await;
    reply.expect("the engine answers a cancel").assert_error(409, "HELD_BY_PARENT");

    // The parent is cancelled: its compensation reaches the child, which undoes itself.
    let reply = stack.api.post_json("/v1/workflows/cw-undo/cancel", &json!({ "reason": "test" })).await;
    let reply = reply.expect("the engine answers a cancel");
    assert!(reply.is_success(), "{} {:?}", reply.status, reply.body);
    // kill -9 while the child compensates (or, if it was quick, once it has).
    let compensating = |v: &shop_types::api::WorkflowView| {
        v.status != WorkflowStatus::Running || v.waiting_for.iter().any(|w| matches!(w, InFlightView::Activity { .. }))
    };
    wait_view(&stack.api, child, "began compensating", compensating).await;
    stack.engine.kill9();
    stack.engine.restart().await;

    let view = stack.api.wait_workflow("cw-undo").await;
    assert_eq!(view.status, WorkflowStatus::Compensated, "{view:?}");
    let child_view = stack.api.wait_workflow(child).await;
    assert_eq!(child_view.status, WorkflowStatus::Compensated, "{child_view:?}");

    // The child: held, then its own compensations, newest first, each once.
    let child_labels = event_labels(&stack.api.history(child).await);
    assert_in_order(
        &child_labels,
        &[
            "StepCompleted(ship)",
            "HeldByParent",
            "CancelRequested",
            "CompensationStarted",
            "StepCompleted(ship.compensation)",
            "StepCompleted(charge.compensation)",
            "WorkflowCompensated",
        ],
    );
    for undo in ["StepCompleted(ship.compensation)", "StepCompleted(charge.compensation)"] {
        assert_eq!(child_labels.iter().filter(|l| *l == undo).count(), 1, "{child_labels:?}");
    }
    assert!(child_labels.last().is_some_and(|l| l == "WorkflowCompensated"), "{child_labels:?}");
    // The parent: its step completed with the child's output; its compensation told the child
    // and went on only once the child had compensated.
    let parent_labels = event_labels(&stack.api.history("cw-undo").await);
    assert_in_order(
        &parent_labels,
        &[
            "ChildCompleted(pay)",
            "CompensationStarted",
            "ChildCompensating(pay)",
            "ChildFailed(pay)",
            "StepCompleted(prepare.compensation)",
            "WorkflowCompensated",
        ],
    );
    assert_eq!(parent_labels.iter().filter(|l| l.starts_with("ChildCompensating")).count(), 1, "{parent_labels:?}");
    assert_eq!(parent_labels.iter().filter(|l| l.as_str() == "WorkflowCompensated").count(), 1);
}
