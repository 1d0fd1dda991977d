//! Many worker processes on one queue: three `shop-worker --activities echo` processes, each
//! with its own data dir, poll the `echo` queue of one engine. Every run of a three-step echo
//! workflow completes, each step exactly once, and the work is shared: the `StepStarted`
//! events name more than one worker, and only workers we started.

use serde_json::json;
use shop_tests::process::{Engine, EngineOptions, Worker, WorkerOptions};
use shop_tests::{history_violations, Api};
use shop_types::api::WorkflowStatus;
use shop_types::history::EventKind;
use std::collections::BTreeSet;
use tokio::task::JoinSet;

/// Worker processes polling the same queue.
const WORKERS: usize = 3;
/// Runs started at once.
const RUNS: usize = 60;
/// Steps of the echo workflow.
const STEPS: usize = 3;
/// Latency each worker adds to a task, so that a busy worker leaves tasks to the others.
const WORKER_LATENCY: &str = "10ms";

const ECHO_DEFINITION: &str = r#"
name = "echo3"
version = 1

[defaults.retry]
initial_interval = "100ms"
max_attempts = 3

[[steps]]
name = "first"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "second"
activity = "echo.run"
queue = "echo"

[[steps]]
name = "third"
activity = "echo.run"
queue = "echo"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn workers_share_one_queue_and_every_run_completes() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let options = WorkerOptions {
            activities: "echo".to_owned(),
            args: vec!["--latency".to_owned(), WORKER_LATENCY.to_owned()],
            ..WorkerOptions::default()
        };
        workers.push(Worker::start(dir.path(), &format!("echo-worker-{n}"), &engine.url(), options).await);
    }
    let pids: BTreeSet<String> =
        workers.iter().map(|w| w.proc().and_then(|p| p.pid()).expect("the worker runs").to_string()).collect();
    let api = Api::new(&engine.url());
    let reply = api.register_definition(ECHO_DEFINITION).await;
    assert_eq!(reply.status, 201, "{}", reply.text);

    let mut starts = JoinSet::new();
    for i in 0..RUNS {
        let api = api.clone();
        starts.spawn(async move {
            let id = format!("echo-{i:03}");
            let reply = api.start_workflow("echo3", Some(&id), json!({"n": i})).await;
            assert_eq!(reply.status, 202, "{id}: {}", reply.text);
            let run = api.wait_workflow(&id).await;
            assert_eq!(run.status, WorkflowStatus::Completed, "{id}: {:?}", run.reason);
            let history = api.history(&id).await;
            (id, history)
        });
    }

    let mut seen_workers = BTreeSet::new();
    while let Some(finished) = starts.join_next().await {
        let (id, history) = finished.expect("a run completes");
        assert_eq!(history_violations(&id, &history), Vec::<String>::new());
        let completed = history.iter().filter(|e| matches!(e.event, EventKind::StepCompleted { .. })).count();
        assert_eq!(completed, STEPS, "each step completed once");
        for event in &history {
            if let EventKind::StepStarted { worker, .. } = &event.event {
                seen_workers.insert(worker.clone());
            }
        }
    }
    assert!(seen_workers.len() > 1, "the work was shared, but only {seen_workers:?} took tasks");
    for worker in &seen_workers {
        let pid = worker.as_str().rsplit('-').next().unwrap_or_default();
        assert!(pids.contains(pid), "{worker} is one of our workers (pids {pids:?})");
    }
}
