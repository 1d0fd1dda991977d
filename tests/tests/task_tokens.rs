//! Task tokens are bound to their hand-out: a token carries a MAC only the engine can make
//! (keyed by a secret kept in its store), so a worker that knows a started task's workflow,
//! step and attempt still cannot complete, fail or heartbeat it. A forged or unsigned token
//! gets the answer a stale one gets (409 `STALE_TASK`) and changes nothing; the real token
//! still works, also after the engine was killed and restarted.

use serde_json::{json, Value};
use shop_tests::{order_body, Api, Engine, EngineOptions};
use shop_types::api::{ActivityTask, PollResponse};
use std::time::{Duration, Instant};

/// How long the test polls for the task it placed before it gives up.
const POLL_DEADLINE: Duration = Duration::from_secs(20);

async fn poll_one(api: &Api, queue: &str) -> ActivityTask {
    let body = json!({"queue": queue, "worker_id": "token-test", "max_tasks": 1, "wait_ms": 2000});
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let reply = api.post_json("/v1/tasks/poll", &body).await.expect("poll");
        assert_eq!(reply.status, 200, "{}", reply.text);
        if let Some(task) = reply.parse::<PollResponse>().tasks.pop() {
            return task;
        }
        assert!(Instant::now() < deadline, "no task on {queue}");
    }
}

fn completed_steps(history: &[shop_types::api::HistoryEventView]) -> usize {
    history.iter().filter(|event| event.event.name() == "StepCompleted").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_token_is_refused_and_the_real_one_works_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Order v1: the token below names its first step, `f0`.
    let workflows = shop_tests::process::order_v1_only();
    let options = EngineOptions { workflows: workflows.path().to_owned(), ..EngineOptions::default() };
    let mut engine = Engine::start(dir.path(), options).await;
    let api = Api::new(&engine.url());
    let id = api.place_order_ok(&order_body(Some("signed"), &[(1, 1)], "CREDIT_CARD")).await;
    let task = poll_one(&api, "inventory").await;
    let real = task.token.to_string();
    let (unsigned, mac) = real.rsplit_once('~').expect("the token ends with its MAC");
    assert_eq!(unsigned, format!("{id}~f0~1"), "the MAC follows workflow, step and attempt");
    assert_eq!(mac.len(), 32, "128 bits in hex");

    // Right workflow, step and attempt; wrong or missing MAC.
    let flipped = format!("{unsigned}~{}{}", if mac.starts_with('0') { '1' } else { '0' }, &mac[1..]);
    let zeros = format!("{unsigned}~{}", "0".repeat(32));
    for forged in [flipped.as_str(), zeros.as_str(), unsigned] {
        let complete = json!({"token": forged, "output": {}});
        api.post_json("/v1/tasks/complete", &complete).await.expect("complete").assert_error(409, "STALE_TASK");
        let fail = json!({"token": forged, "error": {"error_type": "X", "message": "forged"}});
        api.post_json("/v1/tasks/fail", &fail).await.expect("fail").assert_error(409, "STALE_TASK");
        let heartbeat = json!({"token": forged});
        api.post_json("/v1/tasks/heartbeat", &heartbeat).await.expect("hb").assert_error(409, "STALE_TASK");
        let batch = json!({"reports": [{"token": forged, "outcome": {"completed": {"output": {}}}}]});
        let reply = api.post_json("/v1/tasks/report", &batch).await.expect("report");
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["results"][0]["code"], "STALE_TASK", "{}", reply.text);
    }
    let history = api.history(&id).await;
    assert_eq!(completed_steps(&history), 0, "forged reports changed nothing: {history:?}");

    // kill -9 and restart: the real token, handed out before, still verifies.
    engine.kill9();
    engine.restart().await;
    let heartbeat = api.post_json("/v1/tasks/heartbeat", &json!({"token": real})).await.expect("hb");
    assert_eq!(heartbeat.status, 200, "{}", heartbeat.text);
    let batch: Value = json!({"reports": [
        {"token": zeros, "outcome": {"completed": {"output": {}}}},
        {"token": real, "outcome": {"completed": {"output": {"reserved": true}}}},
    ]});
    let reply = api.post_json("/v1/tasks/report", &batch).await.expect("report");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["results"][0]["code"], "STALE_TASK", "the forged one of a batch is refused: {}", reply.text);
    assert_eq!(reply.body["results"][1], Value::Null, "the real one is recorded: {}", reply.text);
    let history = api.history(&id).await;
    assert_eq!(completed_steps(&history), 1, "{history:?}");
    assert_eq!(poll_one(&api, "payment").await.workflow_id.as_str(), id, "the run moved on");
}
