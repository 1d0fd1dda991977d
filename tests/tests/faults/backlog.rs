//! A backlog with no worker on its queue.
//! Like every test here it starts its own stack and must never leave a process running.

use super::*;

/// Orders placed while no worker runs.
const BACKLOG_ORDERS: usize = 3;
/// The queue of the orders' first step.
const FIRST_QUEUE: &str = "inventory";

/// With no worker polling, tasks wait in their queue and `/v1/stats` shows the backlog per
/// queue; a worker that arrives later (well within `schedule_to_start`) drains it.
#[tokio::test(flavor = "multi_thread")]
async fn backlog_without_a_worker_shows_in_stats_and_drains_when_one_arrives() {
    let dir = tempfile::tempdir().expect("a temporary dir for the stack");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());
    let mut ids = Vec::with_capacity(BACKLOG_ORDERS);
    for _ in 0..BACKLOG_ORDERS {
        ids.push(api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await);
    }

    let deadline = Deadline::new("the backlog showing in /v1/stats");
    loop {
        let backlog = stats(&api).await.pointer(&format!("/queues/{FIRST_QUEUE}")).and_then(serde_json::Value::as_u64);
        if backlog == Some(BACKLOG_ORDERS as u64) {
            break;
        }
        deadline.tick().await;
    }
    for id in &ids {
        assert_eq!(api.order(id).await.status, PENDING, "nobody served {id} yet");
    }

    let _worker = Worker::start(dir.path(), "worker", &engine.url(), WorkerOptions::default()).await;
    for id in &ids {
        let order = api.wait_order(id).await;
        assert_eq!(order.status, CONFIRMED, "{id}: reason {:?}", order.reason);
    }
    let drained = stats(&api).await;
    assert_eq!(drained.pointer(&format!("/queues/{FIRST_QUEUE}")).and_then(serde_json::Value::as_u64).unwrap_or(0), 0);
}
