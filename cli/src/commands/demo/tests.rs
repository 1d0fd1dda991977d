//! Unit tests of the demo's outcomes and judgement.

use super::*;
use shop_types::history::ActivityError;
use shop_types::StepRef;

fn failed(seq: u64, error_type: &str, will_retry: bool) -> HistoryEventView {
    HistoryEventView {
        seq,
        at_ms: seq,
        step_name: Some("charge_payment".into()),
        lane: None,
        event: EventKind::StepFailed {
            step: StepRef::forward(1),
            attempt: 1,
            error: ActivityError { error_type: error_type.into(), message: "test".into(), retryable: will_retry },
            will_retry,
        },
    }
}

#[test]
fn outcomes_count_retried_failures_and_keep_the_final_error() {
    let events = vec![
        failed(1, "PAYMENT_UNAVAILABLE", true),
        failed(2, "PAYMENT_UNAVAILABLE", true),
        failed(3, PAYMENT_DECLINED, false),
    ];
    let outcome = Outcome::observe(CANCELLED, &events);
    assert_eq!(outcome, Outcome::new(CANCELLED, Some(PAYMENT_DECLINED), 2));
    assert_eq!(outcome.to_string(), "CANCELLED (PAYMENT_DECLINED) after 2 retried failures");
}

#[test]
fn the_expected_outcomes_follow_from_the_inputs() {
    let cases: Vec<Case> = cases().into_iter().chain(three_ds::cases()).collect();
    let ids: Vec<&str> = cases.iter().map(|c| c.id).collect();
    for id in &ids {
        assert!(WorkflowId::parse(*id).is_ok(), "{id}");
    }
    assert!(WorkflowId::parse(burst_id(BURST_ORDERS)).is_ok());
    for case in &cases {
        assert!(
            case.items.iter().all(|&(product, _)| product != BURST_PRODUCT),
            "({}) must not share the burst's product",
            case.label
        );
    }
}

#[test]
fn a_burst_summary_counts_each_status() {
    let view = |status: &str| OrderView {
        order_id: "x".into(),
        status: status.into(),
        reason: None,
        order_items: vec![],
        shipping_address: String::new(),
        payment_method: String::new(),
        customer_id: None,
        created_at_ms: 0,
        closed_at_ms: None,
    };
    let result = |outcome| BurstResult { id: "x".into(), outcome, latency: Duration::ZERO };
    let burst = vec![
        result(Ok(view(CONFIRMED))),
        result(Ok(view("PENDING"))),
        result(Ok(view(CONFIRMED))),
        result(Err("503".into())),
    ];
    assert_eq!(burst_summary(&burst), "2 × CONFIRMED, 1 × ERROR, 1 × PENDING");
}

#[test]
fn a_wait_is_summarised_by_its_signals_and_its_end() {
    let event = |seq, event| HistoryEventView { seq, at_ms: 0, step_name: None, lane: None, event };
    let received = event(
        1,
        EventKind::SignalReceived {
            name: three_ds::PAYMENT_CONFIRMED.into(),
            key: "k".into(),
            payload: shop_types::JsonText::null(),
        },
    );
    let completed = event(
        2,
        EventKind::WaitCompleted { step: StepRef::forward(1), signal: three_ds::PAYMENT_CONFIRMED.into(), seq: 1 },
    );
    let timed_out = event(1, EventKind::WaitTimedOut { step: StepRef::forward(1) });
    let [confirmed, unanswered] = <[Case; 2]>::try_from(three_ds::cases()).ok().expect("two 3-D Secure cases");
    assert_eq!(three_ds::wait_summary(&[received, completed]), three_ds::expected_wait(&confirmed));
    assert_eq!(three_ds::wait_summary(std::slice::from_ref(&timed_out)), three_ds::expected_wait(&unanswered));
    assert_eq!(three_ds::wait_summary(&[]), "no signal received, no wait ended");
    assert_eq!(Outcome::observe(CANCELLED, &[timed_out]), unanswered.expected);
}
