//! Distributed traces end to end: a real OTLP/HTTP receiver in the test (axum, decoding with
//! `opentelemetry-proto`), a real engine and a real worker serving all three domains pointed
//! at it. One order placed with a `traceparent` gives one trace across the engine and the
//! worker, with the right parents: the caller's span -> `Start:order` -> `Schedule:<step>`
//! -> the worker's attempt span. A declined order's failure is marked an error and its
//! compensations are `Compensate:<step>` spans. A run parked by a failing refund and resumed
//! through the API (with the operator's own `traceparent`) gets a `Resume:order` span in its
//! original trace, linked to the operator's span, and its later attempts are children of
//! that resume, each linked to the run's original request span. A signal-with-start is
//! traced like a start. Without `--otlp-endpoint` nothing connects.

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use shop_tests::process::{Engine, EngineOptions, Worker, WorkerOptions};
use shop_tests::variants::order_with_quick_refund;
use shop_tests::{order_body, Api, CANCELLED, CONFIRMED};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long spans may take to arrive (the batch exporters send every few seconds).
const SPAN_DEADLINE: Duration = Duration::from_secs(60);

/// The caller's span: the trace every span of the order must be in.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    error: bool,
    /// `(trace, span)` of each span link.
    links: Vec<(String, String)>,
}

#[derive(Default)]
struct Receiver {
    spans: Mutex<Vec<Span>>,
    requests: AtomicUsize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the OTLP/HTTP receiver; returns its URL and what it received.
async fn receiver() -> (String, Arc<Receiver>) {
    let received = Arc::new(Receiver::default());
    let state = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let state = state.clone();
            async move {
                state.requests.fetch_add(1, Ordering::SeqCst);
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut spans = state.spans.lock().expect("lock");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            let error = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
                            spans.push(Span {
                                service: service.clone(),
                                name: span.name,
                                trace: hex(&span.trace_id),
                                id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                error,
                                links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                            });
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Every span of trace `TRACE` received so far.
fn received_spans(received: &Receiver) -> Vec<Span> {
    received.spans.lock().expect("lock").iter().filter(|s| s.trace == TRACE).cloned().collect()
}

/// Waits until the spans of trace `TRACE` include every name in `names` (bounded).
async fn spans_named(received: &Receiver, names: &[&str]) -> Vec<Span> {
    spans_until(received, names, |_| true).await
}

/// Waits until the spans of trace `TRACE` include, for every name in `names`, one that
/// `matches` (bounded).
async fn spans_until(received: &Receiver, names: &[&str], matches: impl Fn(&Span) -> bool) -> Vec<Span> {
    let deadline = tokio::time::Instant::now() + SPAN_DEADLINE;
    loop {
        let spans = received_spans(received);
        if names.iter().all(|name| spans.iter().any(|s| s.name == *name && matches(s))) {
            return spans;
        }
        let seen: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert!(tokio::time::Instant::now() < deadline, "spans {names:?} did not all arrive; got {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name}"))
}

fn by_id(spans: &[Span]) -> HashMap<&str, &Span> {
    spans.iter().map(|s| (s.id.as_str(), s)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_order_is_one_trace_across_engine_and_worker_with_the_right_parents() {
    let (url, received) = receiver().await;
    let dir = tempfile::tempdir().expect("dir");
    let args = vec!["--otlp-endpoint".to_owned(), url.clone()];
    let engine = Engine::start(dir.path(), EngineOptions { args: args.clone(), ..EngineOptions::default() }).await;
    let worker =
        Worker::start(dir.path(), "worker", &engine.url(), WorkerOptions { args, ..WorkerOptions::default() }).await;
    let api = Api::new(&engine.url());
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");

    // A normal order: the caller's span -> Start:order -> Schedule:<step> -> the attempt.
    let body = serde_json::to_vec(&order_body(Some("traced-ok"), &[(1, 1)], "CREDIT_CARD")).expect("json");
    let reply = api
        .post_raw("/api/orders", "application/json", body, &[("traceparent", &traceparent)])
        .await
        .expect("POST /api/orders");
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(api.wait_order("traced-ok").await.status, CONFIRMED);
    let spans = spans_named(
        &received,
        &["Start:order", "Schedule:reserve_stock", "inventory.reserve", "payment.charge", "notification.send"],
    )
    .await;
    let ids = by_id(&spans);
    let start = one(&spans, "Start:order");
    assert_eq!(start.parent, CALLER_SPAN, "the request span continues the caller's");
    let mut services = std::collections::BTreeSet::new();
    for span in spans.iter().filter(|s| s.name.starts_with("Schedule:")) {
        assert_eq!(span.parent, start.id, "{} is a child of the order's span", span.name);
        assert!(span.service.contains("shop-engine"), "{span:?}");
        assert!(!span.error, "{span:?}");
    }
    for activity in ["inventory.reserve", "payment.charge", "notification.send"] {
        let attempt = one(&spans, activity);
        let schedule = ids.get(attempt.parent.as_str()).unwrap_or_else(|| panic!("{activity}'s parent was exported"));
        assert!(schedule.name.starts_with("Schedule:"), "{activity} is a child of a schedule span: {schedule:?}");
        assert!(attempt.service.contains("shop-worker"), "{attempt:?}");
        services.insert(activity.split('.').next().unwrap_or_default().to_owned());
    }
    assert_eq!(services.len(), 3, "all three worker domains are in the trace");

    // A declined order: its charge's spans are errors, its compensations are spans too.
    let body = serde_json::to_vec(&order_body(Some("traced-declined"), &[(1, 1)], "DECLINED")).expect("json");
    let reply = api
        .post_raw("/api/orders", "application/json", body, &[("traceparent", &traceparent)])
        .await
        .expect("POST /api/orders");
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(api.wait_order("traced-declined").await.status, CANCELLED);
    let spans = spans_named(&received, &["Compensate:reserve_stock"]).await;
    let ids = by_id(&spans);
    assert!(
        spans.iter().any(|s| s.name == "payment.charge" && s.error),
        "the declined charge is marked an error in the worker's span"
    );
    assert!(
        spans.iter().any(|s| s.name == "Schedule:charge_payment" && s.error),
        "and in the engine's span of its attempt"
    );
    let compensation = one(&spans, "Compensate:reserve_stock");
    let schedule = ids.get(compensation.parent.as_str()).expect("the compensation's schedule span was exported");
    assert!(schedule.name.starts_with("Schedule:"), "{schedule:?}");
    drop(worker);
    drop(engine);
}

/// The operator's span that resumes the parked run (another trace than the order's).
const OPERATOR_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const OPERATOR_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_run_resumed_through_the_api_links_its_later_attempts_to_its_original_trace() {
    let (url, received) = receiver().await;
    let dir = tempfile::tempdir().expect("dir");
    let otlp = vec!["--otlp-endpoint".to_owned(), url.clone()];
    let engine = Engine::start(dir.path(), EngineOptions { args: otlp.clone(), ..EngineOptions::default() }).await;
    // Every refund fails until the fault is fixed: a declined order's compensation parks it.
    let worker_args = [otlp, vec!["--refund-fail-next".to_owned(), "100000".to_owned()]].concat();
    let worker = Worker::start(
        dir.path(),
        "worker",
        &engine.url(),
        WorkerOptions { args: worker_args, ..WorkerOptions::default() },
    )
    .await;
    let api = Api::new(&engine.url());
    let reply = api.register_definition(&order_with_quick_refund(99)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let body = serde_json::to_vec(&order_body(Some("traced-parked"), &[(1, 1)], "DECLINED")).expect("json");
    let reply = api
        .post_raw("/api/orders", "application/json", body, &[("traceparent", &traceparent)])
        .await
        .expect("POST /api/orders");
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(api.wait_order("traced-parked").await.status, "FAILED", "the run parks");
    let before = spans_named(&received, &["Start:order", "Schedule:charge_payment"]).await;
    let start = one(&before, "Start:order").clone();

    // The refund provider is fixed; an operator resumes the run with their own trace context.
    let admin = shop_tests::Admin::new(&worker.url());
    let mut faults: shop_types::order::FaultConfig = admin.get("/faults").await.expect("GET /faults");
    faults.refund_fail_next = 0;
    admin.set_faults(&faults).await;
    let operator = format!("00-{OPERATOR_TRACE}-{OPERATOR_SPAN}-01");
    let reply = api
        .post_raw(
            "/v1/workflows/traced-parked/resume",
            "application/json",
            br#"{"reason":"refund provider fixed"}"#.to_vec(),
            &[("traceparent", &operator)],
        )
        .await
        .expect("POST resume");
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(api.wait_order("traced-parked").await.status, CANCELLED, "the resumed refund goes through");

    // The resume is a span of the run's trace, under its request span, linked to the operator's.
    let spans = spans_named(&received, &["Resume:order"]).await;
    let resume = one(&spans, "Resume:order").clone();
    assert_eq!(resume.parent, start.id, "the resume is under the run's request span");
    assert_eq!(resume.links, vec![(OPERATOR_TRACE.to_owned(), OPERATOR_SPAN.to_owned())], "linked to the operator's");
    // The attempts after it: the resume's children, each linked to the run's original span,
    // and the worker's span of the resumed refund continues the attempt's.
    let spans = spans_until(&received, &["Compensate:charge_payment"], |s| {
        let spans = received_spans(&received);
        let ids = by_id(&spans);
        ids.get(s.parent.as_str()).is_some_and(|schedule| schedule.parent == resume.id)
    })
    .await;
    let later: Vec<&Span> = spans.iter().filter(|s| s.name.starts_with("Schedule:") && s.parent == resume.id).collect();
    assert!(!later.is_empty(), "attempts after the resume are its children: {spans:#?}");
    for span in &later {
        assert_eq!(span.links, vec![(TRACE.to_owned(), start.id.clone())], "{} links to the original trace", span.name);
        assert!(span.service.contains("shop-engine"), "{span:?}");
    }
    // Before the resume, attempts are the request span's children, with no link.
    for span in spans.iter().filter(|s| s.name.starts_with("Schedule:") && s.parent != resume.id) {
        assert_eq!((span.parent.as_str(), span.links.len()), (start.id.as_str(), 0), "{span:?}");
    }
    drop(worker);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_with_start_is_traced_like_a_start() {
    let (url, received) = receiver().await;
    let dir = tempfile::tempdir().expect("dir");
    let args = vec!["--otlp-endpoint".to_owned(), url];
    let engine = Engine::start(dir.path(), EngineOptions { args, ..EngineOptions::default() }).await;
    let api = Api::new(&engine.url());
    // Order v2 (from `workflows/`, loaded at start) waits for `payment_confirmed` on 3-D Secure.
    let start = serde_json::json!({
        "type": "order",
        "id": "traced-sws",
        "input": {"orderId": "traced-sws", "orderItems": [{"productId": 1, "quantity": 1}],
                  "shippingAddress": "1 Main St", "paymentMethod": "CARD_3DS"},
        "signal": {"name": "payment_confirmed", "payload": {}, "idempotency_key": "sws-1"},
    });
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let body = serde_json::to_vec(&start).expect("json");
    let reply = api
        .post_raw("/v1/workflows", "application/json", body, &[("traceparent", &traceparent)])
        .await
        .expect("POST /v1/workflows");
    assert_eq!(reply.status, 202, "{}", reply.text);
    let spans = spans_named(&received, &["Start:order"]).await;
    assert_eq!(one(&spans, "Start:order").parent, CALLER_SPAN, "the request span continues the caller's");
    let history = api.get("/v1/workflows/traced-sws/history").await.expect("history");
    assert!(
        history.text.contains("TraceLinked") && history.text.contains(TRACE),
        "the run keeps the trace: {}",
        history.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_nothing_is_exported() {
    let (_url, received) = receiver().await;
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let _worker = Worker::start(dir.path(), "worker", &engine.url(), WorkerOptions::default()).await;
    let api = Api::new(&engine.url());
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let body = serde_json::to_vec(&order_body(Some("untraced"), &[(1, 1)], "CREDIT_CARD")).expect("json");
    let reply = api
        .post_raw("/api/orders", "application/json", body, &[("traceparent", &traceparent)])
        .await
        .expect("POST /api/orders");
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(api.wait_order("untraced").await.status, CONFIRMED);
    // The run still keeps the caller's trace (a worker with an endpoint would continue it).
    let history = api.get("/v1/workflows/untraced/history").await.expect("history");
    assert!(history.text.contains("TraceLinked"), "{}", history.text);
    assert_eq!(received.requests.load(Ordering::SeqCst), 0, "no connection to the receiver");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_traceparent_is_a_precise_400() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());
    let body = serde_json::to_vec(&order_body(Some("bad-trace"), &[(1, 1)], "CREDIT_CARD")).expect("json");
    let reply = api
        .post_raw("/api/orders", "application/json", body, &[("traceparent", "00-nope-01")])
        .await
        .expect("POST /api/orders");
    reply.assert_error(400, "INVALID_TRACEPARENT");
}
