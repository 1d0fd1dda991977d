//! `for_each` end to end (issue 9, part 5): a definition registered through the API, run by
//! a real engine and an `echo` worker slowed by `--latency` so instances overlap. Six items
//! run two at once; kill -9 of the engine while they run loses none and repeats none; the
//! step's output is the instances' outputs in item order, each echoing its `item` and
//! `index` params. A second run is cancelled while instances run: the step stops, held
//! instances settle, and every instance handed to a worker is compensated with its item.
//! No timing is asserted; waits are bounded.

use serde_json::{json, Value};
use shop_tests::{Api, EngineOptions, Stack, WorkerOptions};
use shop_types::api::{HistoryEventView, WorkflowStatus};
use shop_types::history::EventKind;
use shop_types::StepPhase;
use std::time::{Duration, Instant};

const DEFINITION: &str = r#"
name = "for_each_e2e"
version = 1

[[steps]]
name = "prepare"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "each"
activity = "echo.run"
queue = "echo"
for_each = { items = "/input/items", max_concurrency = 2, tolerated_failures = 0 }
params = { label = "ship" }

[[steps]]
name = "finish"
activity = "echo.run"
queue = "echo"

[[compensations]]
step = "each"
activity = "echo.run"
queue = "echo"
"#;

/// Longest the test waits for a run to reach a state it must reach.
const DEADLINE: Duration = Duration::from_secs(60);
const ITEMS: usize = 6;
/// Instance refs start here (`FOR_EACH_REF_BASE` in the engine).
const INSTANCE_BASE: u16 = 32_768;

fn items() -> Value {
    Value::Array((0..ITEMS).map(|i| json!({ "sku": format!("sku-{i}") })).collect())
}

fn completions(history: &[HistoryEventView], phase: StepPhase) -> Vec<u16> {
    history
        .iter()
        .filter_map(|e| match e.event {
            EventKind::StepCompleted { step, .. } if step.phase == phase && step.index >= INSTANCE_BASE => {
                Some(step.index - INSTANCE_BASE)
            }
            _ => None,
        })
        .collect()
}

/// Waits until the run's history shows at least `n` completed instances.
async fn wait_for_completions(api: &Api, id: &str, n: usize) -> Vec<HistoryEventView> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let history = api.history(id).await;
        if completions(&history, StepPhase::Forward).len() >= n {
            return history;
        }
        assert!(Instant::now() < deadline, "{id} never completed {n} instances: {history:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn for_each_end_to_end_with_kill_9_and_a_cancel() {
    let worker = WorkerOptions {
        activities: "echo".into(),
        args: vec!["--latency".into(), "300ms".into()],
        ..WorkerOptions::default()
    };
    let mut stack = Stack::start_with(EngineOptions::default(), worker).await;
    let reply = stack.api.register_definition(DEFINITION).await;
    assert!(reply.is_success(), "registers: {} {:?}", reply.status, reply.body);
    let reply = stack.api.start_workflow("for_each_e2e", Some("fe-ok"), json!({ "items": items() })).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);

    // kill -9 while instances run (one has completed, most have not).
    let before = wait_for_completions(&stack.api, "fe-ok", 1).await;
    stack.engine.kill9();
    stack.engine.restart().await;

    let view = stack.api.wait_workflow("fe-ok").await;
    assert_eq!(view.status, WorkflowStatus::Completed, "{view:?}");
    let history = stack.api.history("fe-ok").await;
    let names: Vec<&str> = history.iter().map(|e| e.event.name()).collect();
    assert_eq!(names.iter().filter(|n| **n == "ForEachStarted").count(), 1, "{names:?}");
    assert!(history.len() > before.len());
    // Every instance completed exactly once, whatever the restart did.
    let mut done = completions(&history, StepPhase::Forward);
    done.sort_unstable();
    assert_eq!(done, (0..ITEMS as u16).collect::<Vec<_>>(), "{names:?}");
    // Never more than max_concurrency instances scheduled and not yet settled.
    let mut open = std::collections::BTreeSet::new();
    for event in &history {
        match &event.event {
            EventKind::StepScheduled { step, .. } if step.index >= INSTANCE_BASE => {
                open.insert(step.index);
            }
            EventKind::StepCompleted { step, .. } => {
                open.remove(&step.index);
            }
            _ => {}
        }
        assert!(open.len() <= 2, "more than 2 instances at once: {names:?}");
    }
    // The step's output: each instance's echo, in item order, with its item and index.
    let output = view.output.expect("a completed run has an output").to_value();
    let each = output["each"].as_array().expect("each's output is an array");
    assert_eq!(each.len(), ITEMS);
    for (i, echoed) in each.iter().enumerate() {
        assert_eq!(echoed["params"]["index"], json!(i), "{echoed}");
        assert_eq!(echoed["params"]["item"], items()[i], "{echoed}");
        assert_eq!(echoed["params"]["label"], "ship", "{echoed}");
    }

    // A cancel while instances run: the step stops, held instances settle, and every
    // instance a worker took is compensated, with its item.
    let reply = stack.api.start_workflow("for_each_e2e", Some("fe-cancel"), json!({ "items": items() })).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    wait_for_completions(&stack.api, "fe-cancel", 1).await;
    let reply = stack.api.post_json("/v1/workflows/fe-cancel/cancel", &json!({ "reason": "test" })).await;
    let reply = reply.expect("the engine answers a cancel");
    assert!(reply.is_success(), "{} {:?}", reply.status, reply.body);
    let view = stack.api.wait_workflow("fe-cancel").await;
    assert_eq!(view.status, WorkflowStatus::Compensated, "{view:?}");
    let history = stack.api.history("fe-cancel").await;
    let names: Vec<&str> = history.iter().map(|e| e.event.name()).collect();
    let stopped = names.iter().position(|n| *n == "ForEachStopped").expect("stopped");
    let compensating = names.iter().position(|n| *n == "CompensationStarted").expect("compensates");
    assert!(stopped < compensating, "{names:?}");
    let mut handed_out: Vec<u16> = history
        .iter()
        .filter_map(|e| match e.event {
            EventKind::StepStarted { step, .. } if step.phase == StepPhase::Forward && step.index >= INSTANCE_BASE => {
                Some(step.index - INSTANCE_BASE)
            }
            _ => None,
        })
        .collect();
    handed_out.sort_unstable();
    handed_out.dedup();
    let mut undone = completions(&history, StepPhase::Compensation);
    undone.sort_unstable();
    assert!(!handed_out.is_empty(), "{names:?}");
    assert_eq!(undone, handed_out, "every handed-out instance undone once: {names:?}");
    for event in &history {
        if let EventKind::StepCompleted { step, output, .. } = &event.event {
            if step.phase == StepPhase::Compensation {
                let index = usize::from(step.index - INSTANCE_BASE);
                assert_eq!(output.to_value()["params"]["item"], items()[index], "{output:?}");
            }
        }
    }
}
