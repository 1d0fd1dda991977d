//! The core's timers on a simulated clock: each test drives the core's turn function at
//! chosen times on a [`crate::clock::ManualClock`] over a temporary store, and checks that a
//! timer fires when the clock passes its due time and not one millisecond before. No thread,
//! no sleep.

use super::tests::{fixture_with, Fixture, T0};
use super::*;
use shop_types::history::ActivityError;

/// One step on queue `q` that must start within 1 s, run within 5 s, and may try twice with a
/// 2 s backoff (no jitter, so the backoff is exact).
const TIMED: &str = r#"
name = "timed"
version = 1

[[steps]]
name = "work"
activity = "q.work"
queue = "q"
retry = { max_attempts = 2, initial_interval = "2s", jitter = 0.0 }
timeouts = { schedule_to_start = "1s", start_to_close = "5s" }
"#;

fn run_id() -> WorkflowId {
    WorkflowId::parse("r").expect("valid")
}

/// The names of run `r`'s events, in order.
fn history(f: &Fixture) -> Vec<&'static str> {
    f.core.store.history(&run_id()).expect("reads").iter().map(|e| e.kind.name()).collect()
}

fn timed_out(f: &Fixture) -> bool {
    history(f).contains(&"StepTimedOut")
}

#[test]
fn schedule_to_start_fires_when_the_clock_passes_it_and_not_before() {
    let mut f = fixture_with(TIMED);
    assert_eq!(f.start("r", "{}", T0), Ok(StartOutcome::Created));
    f.turn(Vec::new(), T0 + 999);
    assert!(!timed_out(&f), "1 ms before its due time nothing fires");
    assert_eq!(f.backlog(), 1, "the task still waits for a worker");
    f.turn(Vec::new(), T0 + 1_000);
    assert!(timed_out(&f), "fires at its due time: {:?}", history(&f));
}

#[test]
fn a_retry_waits_out_its_backoff_on_the_clock() {
    let mut f = fixture_with(TIMED);
    assert_eq!(f.start("r", "{}", T0), Ok(StartOutcome::Created));
    let tasks = f.poll(T0, 0).try_recv().expect("answered");
    assert_eq!(tasks.len(), 1);
    let error = ActivityError { error_type: "BOOM".into(), message: "try again".into(), retryable: true };
    let report =
        TaskReport { token: tasks[0].token.clone(), outcome: TaskOutcome::Failed { error }, traceparent: None };
    let (reply, _answer) = oneshot::channel();
    f.turn(vec![Command::Report { reports: vec![report], reply }], T0 + 10);
    assert_eq!(history(&f).last(), Some(&"StepRetryScheduled"));
    assert_eq!(f.backlog(), 0, "the second attempt waits out its backoff");
    f.turn(Vec::new(), T0 + 10 + 1_999);
    assert_eq!(f.backlog(), 0, "1 ms before the backoff ends the attempt is not ready");
    f.turn(Vec::new(), T0 + 10 + 2_000);
    assert_eq!(f.backlog(), 1, "the second attempt is ready once the backoff ends: {:?}", history(&f));
}

#[test]
fn a_waiting_poll_is_answered_empty_at_its_deadline_and_not_before() {
    let mut f = fixture_with(TIMED);
    let mut answer = f.poll(T0, 3_000);
    assert_eq!(f.core.waiting_polls.count(), 1);
    assert_eq!(f.core.next_wake_ms(), Some(T0 + 3_000), "the loop would wake at the deadline");
    f.turn(Vec::new(), T0 + 2_999);
    assert!(answer.try_recv().is_err(), "still waiting 1 ms before its deadline");
    f.turn(Vec::new(), T0 + 3_000);
    assert!(answer.try_recv().expect("answered at its deadline").is_empty());
    assert_eq!(f.core.waiting_polls.count(), 0);
}

#[test]
fn start_to_close_times_out_a_started_attempt_when_the_clock_passes_it() {
    let mut f = fixture_with(TIMED);
    assert_eq!(f.start("r", "{}", T0), Ok(StartOutcome::Created));
    let tasks = f.poll(T0 + 100, 0).try_recv().expect("answered");
    assert_eq!(tasks.len(), 1, "started at T0 + 100");
    f.turn(Vec::new(), T0 + 100 + 4_999);
    assert!(!timed_out(&f), "1 ms before start_to_close nothing fires");
    f.turn(Vec::new(), T0 + 100 + 5_000);
    let events = f.core.store.history(&run_id()).expect("reads");
    let timeout = events.iter().find_map(|e| match &e.kind {
        shop_types::history::EventKind::StepTimedOut { timeout, .. } => Some(*timeout),
        _ => None,
    });
    assert_eq!(timeout, Some(shop_types::history::TimeoutKind::StartToClose));
}
