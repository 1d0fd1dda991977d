//! Drives a whole worker (`shop_worker::run`) against a fake engine that hands out a fixed
//! set of tasks and records what comes back: polling, concurrent execution, heartbeats,
//! batch reports, recovery from an overloaded engine, and a graceful shutdown that leaves
//! every store flushed and closed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use shop_types::api::{
    ActivityTask, ErrorDetail, HeartbeatRequest, PollRequest, PollResponse, ReportBatchRequest, ReportBatchResponse,
    TaskOutcome, TaskReport,
};
use shop_types::order::FaultConfig;
use shop_types::{JsonText, StepRef, TaskToken, WorkflowId};
use shop_worker::activities::Domain;
use shop_worker::payment::Payment;
use shop_worker::{store, Options};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the test waits for the worker to report everything.
const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Engine {
    queues: HashMap<String, Vec<ActivityTask>>,
    reports: Vec<TaskReport>,
    heartbeats: usize,
    /// Polls still to answer with 503, to prove the worker backs off and comes back.
    overloaded_polls: usize,
    /// Tokens whose report the fake refuses as stale.
    stale: Vec<String>,
}

type Shared = Arc<Mutex<Engine>>;

fn lock(engine: &Shared) -> std::sync::MutexGuard<'_, Engine> {
    engine.lock().expect("the fake engine never panics while locked")
}

async fn poll(State(engine): State<Shared>, Json(request): Json<PollRequest>) -> Response {
    let tasks = {
        let mut engine = lock(&engine);
        if engine.overloaded_polls > 0 {
            engine.overloaded_polls -= 1;
            let body = serde_json::json!({"error": {"code": "OVERLOADED", "message": "busy"}});
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
        let queue = engine.queues.entry(request.queue.to_string()).or_default();
        let take = queue.len().min(request.max_tasks as usize);
        queue.drain(..take).collect::<Vec<_>>()
    };
    if tasks.is_empty() {
        // A short stand-in for the long-poll, so the test does not wait `wait_ms`.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Json(PollResponse { tasks }).into_response()
}

async fn report(State(engine): State<Shared>, Json(batch): Json<ReportBatchRequest>) -> Json<ReportBatchResponse> {
    let mut engine = lock(&engine);
    let results = batch
        .reports
        .iter()
        .map(|report| {
            engine
                .stale
                .contains(&report.token.to_string())
                .then(|| ErrorDetail { code: "STALE_TASK".to_owned(), message: "no longer current".to_owned() })
        })
        .collect();
    engine.reports.extend(batch.reports);
    Json(ReportBatchResponse { results, tasks: Vec::new() })
}

async fn heartbeat(State(engine): State<Shared>, Json(_): Json<HeartbeatRequest>) -> StatusCode {
    lock(&engine).heartbeats += 1;
    StatusCode::OK
}

fn task(index: u16, activity: &str, results: serde_json::Value, params: serde_json::Value) -> ActivityTask {
    let workflow_id = WorkflowId::parse("o-1").expect("valid");
    ActivityTask {
        token: TaskToken { workflow_id: workflow_id.clone(), step: StepRef::forward(index), attempt: 1, mac: None },
        workflow_id,
        workflow_type: "order".parse().expect("valid"),
        step_name: format!("step-{index}").parse().expect("valid"),
        activity: activity.parse().expect("valid"),
        attempt: 1,
        idempotency_key: format!("o-1:{index}"),
        input: JsonText::from_value(&serde_json::json!({
            "orderId": "o-1",
            "orderItems": [{"productId": 1, "quantity": 2}],
            "shippingAddress": "1 Main St",
            "paymentMethod": "CREDIT_CARD",
        })),
        results: JsonText::from_value(&results),
        params: JsonText::from_value(&params),
        start_to_close_ms: 10_000,
        heartbeat_ms: None,
        traceparent: None,
    }
}

#[tokio::test]
async fn a_worker_runs_reports_heartbeats_and_shuts_down_cleanly() {
    let engine: Shared = Arc::default();
    let mut charge =
        task(1, "payment.charge", serde_json::json!({"reserve_stock": {"totalCents": 4998}}), serde_json::json!({}));
    // The charge hangs (an injected fault) long enough to need several heartbeats.
    charge.heartbeat_ms = Some(150);
    let stale_echo = task(3, "echo.run", serde_json::json!({}), serde_json::json!({"n": 1}));
    {
        let mut engine = lock(&engine);
        engine.overloaded_polls = 3;
        engine.stale.push(stale_echo.token.to_string());
        engine.queues.insert(
            "inventory".to_owned(),
            vec![task(0, "inventory.reserve", serde_json::json!({}), serde_json::json!({}))],
        );
        engine.queues.insert("payment".to_owned(), vec![charge]);
        engine.queues.insert(
            "notification".to_owned(),
            vec![task(2, "notification.send", serde_json::json!({}), serde_json::json!({"kind": "ORDER_CONFIRMED"}))],
        );
        engine.queues.insert("echo".to_owned(), vec![stale_echo]);
    }
    let app = Router::new()
        .route("/v1/tasks/poll", post(poll))
        .route("/v1/tasks/report", post(report))
        .route("/v1/tasks/heartbeat", post(heartbeat))
        .with_state(Arc::clone(&engine));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let engine_addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let data_dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        engine: format!("http://{engine_addr}").parse().expect("valid url"),
        data_dir: data_dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().expect("valid addr"),
        domains: Domain::ALL.to_vec(),
        concurrency: 2,
        // This fake speaks the long-poll protocol only.
        protocol: shop_worker::Protocol::Poll,
        durability: store::Durability::PowerSafe,
        faults: FaultConfig { payment_hang_next: 1, payment_hang_ms: 500, ..FaultConfig::default() },
        token: None,
        open: true,
        otlp_endpoint: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(shop_worker::run(options, async move {
        let _ = stopped.await;
    }));

    let started = tokio::time::Instant::now();
    while lock(&engine).reports.len() < 4 {
        assert!(started.elapsed() < DEADLINE, "the worker did not report all tasks in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).expect("the worker is running");
    tokio::time::timeout(DEADLINE, worker)
        .await
        .expect("the worker stops in time")
        .expect("the worker does not panic")
        .expect("the worker shuts down cleanly");

    let engine = lock(&engine);
    assert!(engine.heartbeats >= 2, "heartbeats: {}", engine.heartbeats);
    let by_step: HashMap<u16, &TaskOutcome> =
        engine.reports.iter().map(|report| (report.token.step.index, &report.outcome)).collect();
    let completed = |index: u16| match by_step.get(&index) {
        Some(TaskOutcome::Completed { output }) => output.to_value(),
        other => panic!("step {index} did not complete: {other:?}"),
    };
    assert_eq!(completed(0), serde_json::json!({"totalCents": 4998}));
    assert_eq!(completed(1), serde_json::json!({"amountCents": 4998}));
    assert_eq!(completed(2)["message"], "Order o-1 confirmed");
    assert_eq!(completed(3)["params"], serde_json::json!({"n": 1}));

    // The worker released its stores and flushed them: they reopen with the charge in them.
    let store = store::WorkerStore::open(data_dir.path(), store::Durability::PowerSafe).expect("reopens");
    let payment = Payment::open(store.domain("payment").expect("opens its tree")).expect("loads");
    assert_eq!(payment.ledger().len(), 1);
}
