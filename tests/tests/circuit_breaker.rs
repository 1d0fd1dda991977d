//! A circuit breaker on `payment.charge`, end to end: a real engine and worker, the payment
//! provider failing every charge (retryable) through the worker's fault API. The breaker
//! opens, the orders wait instead of retrying (no retry storm: while it is not closed, only
//! its probes are handed out, read from the engine's own counters and histories), `why`
//! says the circuit is open, and once the fault is cleared every order ends CONFIRMED.
//! Every wait is a condition with a deadline; no timing is asserted.

use serde_json::Value;
use shop_tests::variants::order_with_circuit;
use shop_tests::{event_labels, history_violations, order_body, Api, Stack, CONFIRMED};
use shop_types::order::FaultConfig;
use std::time::{Duration, Instant};

/// Orders placed while the provider fails.
const ORDERS: usize = 20;
/// The variant's version: above every version in `workflows/`, so new orders run it.
const TEST_VERSION: u32 = 97;
/// Half-open periods (each one probe, failing) the test watches while the fault holds.
const PROBES_WATCHED: u64 = 3;
const DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const ACTIVITY: &str = "payment.charge";

/// `payment.charge`'s breaker as `/v1/stats` shows it.
async fn circuit(api: &Api) -> Value {
    let reply = api.get("/v1/stats").await.expect("GET /v1/stats");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let stats: Value = reply.parse();
    stats["circuits"][ACTIVITY].clone()
}

fn count(circuit: &Value, field: &str, state: &str) -> u64 {
    circuit[field][state].as_u64().unwrap_or(0)
}

/// Polls the breaker until `done` holds, within [`DEADLINE`].
async fn wait_circuit(api: &Api, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let circuit = circuit(api).await;
        if done(&circuit) {
            return circuit;
        }
        assert!(Instant::now() < until, "{what} within {DEADLINE:?}: {circuit}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_circuit_holds_the_charges_then_every_order_confirms_once_the_provider_recovers() {
    let stack = Stack::start().await;
    let reply = stack.api.register_definition(&order_with_circuit(TEST_VERSION)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);

    let mut faults: FaultConfig = stack.admin.get("/faults").await.expect("GET /faults");
    faults.payment_failure_rate = 1.0;
    stack.admin.set_faults(&faults).await;
    let placed = (0..ORDERS).map(|i| {
        let body = order_body(None, &[((i % 10) as i64 + 1, 1)], "CREDIT_CARD");
        let api = &stack.api;
        async move { api.place_order_ok(&body).await }
    });
    let ids: Vec<String> = futures_util::future::join_all(placed).await;

    // The breaker opens and probes while the fault holds; every probe fails.
    let first =
        wait_circuit(&stack.api, "the circuit opens and goes half-open", |c| count(c, "transitions", "half_open") >= 1)
            .await;
    let watched = count(&first, "transitions", "half_open") + PROBES_WATCHED;
    let last = wait_circuit(&stack.api, "more probes fail", |c| {
        count(c, "transitions", "half_open") >= watched && c["state"] == "open"
    })
    .await;
    assert_eq!(count(&last, "handedOut", "open"), 0, "nothing is handed out while open: {last}");
    assert_eq!(
        count(&last, "handedOut", "closed"),
        count(&first, "handedOut", "closed"),
        "the breaker never closed while the provider failed: {last}"
    );
    let probes = count(&last, "handedOut", "half_open") - count(&first, "handedOut", "half_open");
    let half_opens = count(&last, "transitions", "half_open") - count(&first, "transitions", "half_open");
    assert!(probes <= half_opens, "one probe per half-open period, no more: {probes} probes in {half_opens}");

    // `why` says so, for an order whose charge waits.
    let until = Instant::now() + DEADLINE;
    let summary = loop {
        let mut found = None;
        for id in &ids {
            let view = stack.api.workflow(id).await;
            let summary = view.why.map(|why| why.summary).unwrap_or_default();
            if summary.contains("activity payment.charge's circuit is open until") {
                found = Some(summary);
                break;
            }
        }
        if let Some(summary) = found {
            break summary;
        }
        assert!(Instant::now() < until, "no order's why names the open circuit within {DEADLINE:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert!(summary.contains("tasks wait"), "{summary}");

    // The metrics say it too.
    let metrics = stack.api.get("/metrics").await.expect("GET /metrics");
    assert!(metrics.text.contains("shop_circuit_state{activity=\"payment.charge\"}"), "{}", metrics.text);
    assert!(metrics.text.contains("shop_circuit_transitions_total{activity=\"payment.charge\",state=\"open\"}"));

    // The provider recovers: the next probe closes the circuit and every order confirms.
    faults.payment_failure_rate = 0.0;
    stack.admin.set_faults(&faults).await;
    for id in &ids {
        let order = stack.api.wait_order(id).await;
        assert_eq!(order.status, CONFIRMED, "{id}: {:?}", order.reason);
    }
    let closed = wait_circuit(&stack.api, "the circuit closes", |c| c["state"] == "closed").await;

    // Every charge attempt the histories hold was handed out closed or as a probe.
    let mut attempts = 0;
    for id in &ids {
        let history = stack.api.history(id).await;
        assert_eq!(history_violations(id, &history), Vec::<String>::new());
        attempts += event_labels(&history).iter().filter(|l| *l == "StepStarted(charge_payment)").count() as u64;
    }
    assert_eq!(
        attempts,
        count(&closed, "handedOut", "closed") + count(&closed, "handedOut", "half_open"),
        "every hand-out is counted, none while open: {closed}"
    );
}
