//! `/metrics` of a real engine and a real worker: orders that confirm, one declined (it
//! compensates) and one whose refund keeps failing (it parks); the scrapes parse as the
//! Prometheus text format, their counters say what happened, a drained queue's backlog is
//! there at 0, and no label value is a run id. Without a credential `/metrics` is 401.

use prometheus_parse::{Sample, Scrape, Value};
use shop_tests::variants::order_with_quick_refund;
use shop_tests::{order_body, Admin, Api, Engine, EngineOptions, Worker, WorkerOptions, CONFIRMED};
use shop_types::order::FaultConfig;
use std::time::{Duration, Instant};

/// The order version the runs use: above every version in `workflows/`.
const QUICK_REFUND_VERSION: u32 = 99;
/// Refund failures injected to park a run: far more than its attempt budget.
const REFUND_FAILURES: u32 = 1_000;
/// How long the follower may take to count what the stream published.
const COUNT_DEADLINE: Duration = Duration::from_secs(20);

fn parse(text: &str) -> Vec<Sample> {
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("a scrape in the text format").samples
}

/// The value of `name` (with or without `_total`) whose labels include `labels`, summed.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.metric == name || s.metric == format!("{name}_total"))
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            // Present is what the test asks of a histogram.
            Value::Histogram(_) | Value::Summary(_) => 1.0,
        })
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

async fn scrape(api: &Api) -> Vec<Sample> {
    let reply = api.get("/metrics").await.expect("GET /metrics");
    assert_eq!(reply.status, 200, "{}", reply.text);
    parse(&reply.text)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_happened_and_never_name_a_run() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let token_file = dir.path().join("admin.token");
    let args = vec!["--admin-token-file".to_owned(), token_file.display().to_string()];
    let engine = Engine::start(dir.path(), EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let token = std::fs::read_to_string(&token_file).expect("the admin token").trim().to_owned();
    let worker_args = vec!["--token".to_owned(), token.clone()];
    let worker = Worker::start(
        dir.path(),
        "worker",
        &engine.url(),
        WorkerOptions { args: worker_args, ..WorkerOptions::default() },
    )
    .await;
    let api = Api::with_token(&engine.url(), &token);
    let admin = Admin::new(&worker.url());
    let registered = api.register_definition(&order_with_quick_refund(QUICK_REFUND_VERSION)).await;
    assert!(registered.is_success(), "{}", registered.text);

    let anonymous = Api::new(&engine.url()).get("/metrics").await.expect("GET /metrics");
    assert_eq!(anonymous.status, 401, "metrics need a credential");

    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
        assert_eq!(api.wait_order(&id).await.status, CONFIRMED);
        ids.push(id);
    }
    let declined = api.place_order_ok(&order_body(None, &[(2, 1)], "DECLINED")).await;
    assert_eq!(api.wait_order(&declined).await.status, "CANCELLED");
    ids.push(declined);
    let mut faults: FaultConfig = admin.get("/faults").await.expect("GET /faults");
    faults.refund_fail_next = REFUND_FAILURES;
    admin.set_faults(&faults).await;
    let parked = api.place_order_ok(&order_body(None, &[(3, 1)], "DECLINED")).await;
    assert_eq!(api.wait_order(&parked).await.status, "FAILED", "the run is parked");
    ids.push(parked);

    let order = [("workflow_type", "order")];
    let until = Instant::now() + COUNT_DEADLINE;
    let samples = loop {
        let samples = scrape(&api).await;
        if value(&samples, "shop_runs_parked", &order) == Some(1.0) {
            break samples;
        }
        assert!(Instant::now() < until, "the park was not counted in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(value(&samples, "shop_runs_started", &order), Some(4.0));
    assert_eq!(
        value(&samples, "shop_runs_finished", &[("workflow_type", "order"), ("outcome", "completed")]),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "shop_runs_finished", &[("workflow_type", "order"), ("outcome", "compensated")]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "shop_compensations", &order), Some(2.0), "both declined orders compensated");
    let declines = [("queue", "payment"), ("activity", "payment.charge"), ("error_code", "PAYMENT_DECLINED")];
    assert_eq!(value(&samples, "shop_task_failed_attempts", &declines), Some(2.0));
    let charges = [("queue", "payment"), ("activity", "payment.charge")];
    assert_eq!(value(&samples, "shop_tasks_scheduled", &charges), Some(4.0), "one charge attempt per order");
    assert!(value(&samples, "shop_task_schedule_to_start_seconds", &charges).is_some());
    assert!(value(&samples, "shop_run_duration_seconds", &order).is_some());
    assert!(value(&samples, "shop_sync_duration_seconds", &[]).is_some());
    assert!(value(&samples, "shop_commit_batch_events", &[]).is_some());
    // The inventory queue drained: its backlog is there, at 0, and so is its oldest age.
    assert_eq!(value(&samples, "shop_queue_backlog_tasks", &[("queue", "inventory")]), Some(0.0));
    assert_eq!(value(&samples, "shop_queue_oldest_task_age_seconds", &[("queue", "inventory")]), Some(0.0));
    assert!(value(&samples, "shop_queue_pollers", &[("queue", "inventory")]).is_some());
    // Requests are counted by route template, never by path.
    let order_reads = [("route", "/api/orders/:id"), ("method", "GET")];
    assert!(value(&samples, "shop_http_requests", &order_reads).is_some_and(|n| n >= 4.0));
    assert_no_run_ids(&samples, &ids);

    // The worker's own metrics, on its admin API.
    let worker_metrics = reqwest::get(format!("{}/metrics", worker.url())).await.expect("GET worker /metrics");
    assert_eq!(worker_metrics.status(), 200);
    let samples = parse(&worker_metrics.text().await.expect("the body"));
    let charge = |outcome| [("activity", "payment.charge"), ("outcome", outcome)];
    assert_eq!(value(&samples, "shop_worker_activity_executions", &charge("completed")), Some(2.0));
    assert_eq!(value(&samples, "shop_worker_activity_executions", &charge("PAYMENT_DECLINED")), Some(2.0));
    assert!(value(&samples, "shop_worker_activity_duration_seconds", &[("activity", "payment.charge")]).is_some());
    assert!(value(&samples, "shop_worker_store_flush_duration_seconds", &[("domain", "payment")]).is_some());
    assert_no_run_ids(&samples, &ids);
}

fn assert_no_run_ids(samples: &[Sample], ids: &[String]) {
    for sample in samples {
        for (name, label) in sample.labels.iter() {
            assert!(
                !ids.iter().any(|id| label.contains(id.as_str())),
                "{}{{{name}={label}}} names a run",
                sample.metric
            );
        }
    }
}
