//! Child workflows end to end (issue 9, the last construct): a parent and a child definition
//! registered through the API, run by a real engine and an `echo` worker slowed by
//! `--latency`. The parent's step starts the child (`<parent>.<step>`), shows it in
//! `waiting_for`, survives kill -9 of the engine while the child runs, and completes with the
//! child's output. A second parent is cancelled while its child runs: the child is cancelled
//! and compensates itself, then the parent compensates. No timing is asserted; waits are
//! bounded.

use serde_json::json;
use shop_tests::{Api, EngineOptions, Stack, WorkerOptions};
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
