//! Unit tests of the core's signal path, turn by turn on a `ManualClock`: a retried signal
//! to a run that has finished (in an earlier turn, or in the same turn) is a duplicate, not
//! 409; signal-with-start on a run that finishes as it starts answers `Finished`, not 404;
//! and a signal to a run whose wait is overdue meets the timed-out run.

use super::tests::{fixture_with, Fixture, T0};
use super::*;

/// One wait, the last step: a signal completes the run. With `{"skip": true}` as input the
/// wait is skipped and the run completes as it starts (`{"skip": false}` runs it).
const DEFINITION: &str = r#"
name = "last_wait"
version = 1
[signals]
go = {}

[[steps]]
name = "await"
wait_for = ["go"]
timeout = "10s"
when = { path = "/input/skip", not_equals = true }
"#;

fn id(text: &str) -> WorkflowId {
    WorkflowId::parse(text).expect("valid")
}

fn request(key: &str, payload: &str) -> SignalRequest {
    SignalRequest { name: "go".into(), idempotency_key: key.into(), payload: JsonText::parse(payload).expect("JSON") }
}

type Answer = oneshot::Receiver<Result<SignalOutcome, CoreError>>;

fn signal(run: &str, key: &str, payload: &str) -> (Command, Answer) {
    let (reply, answer) = oneshot::channel();
    (Command::Signal { id: id(run), signal: request(key, payload), reply }, answer)
}

fn answer(mut answer: Answer) -> Result<SignalOutcome, CoreError> {
    answer.try_recv().expect("answered")
}

fn kinds(f: &Fixture, run: &str) -> Vec<&'static str> {
    f.core.store.history(&id(run)).expect("reads").iter().map(|e| e.kind.name()).collect()
}

#[test]
fn a_retried_signal_to_a_run_it_finished_is_a_duplicate() {
    let mut f = fixture_with(DEFINITION);
    assert_eq!(f.start("r", r#"{"skip":false}"#, T0), Ok(StartOutcome::Created));
    let (command, first) = signal("r", "k1", r#"{"a":1}"#);
    f.turn(vec![command], T0 + 1);
    assert_eq!(answer(first), Ok(SignalOutcome::Recorded));
    assert_eq!(kinds(&f, "r").last(), Some(&"WorkflowCompleted"), "the signal completed the run");
    // Later turns: the run is only in the store.
    let (retry, retried) = signal("r", "k1", r#"{ "a": 1 }"#);
    let (reused, reused_answer) = signal("r", "k1", r#"{"a":2}"#);
    let (fresh, fresh_answer) = signal("r", "k2", r#"{"a":1}"#);
    let (unknown, unknown_answer) = signal("nobody", "k1", r#"{"a":1}"#);
    f.turn(vec![retry, reused, fresh, unknown], T0 + 2);
    assert_eq!(answer(retried), Ok(SignalOutcome::Duplicate));
    assert!(matches!(answer(reused_answer), Err(CoreError::KeyReused)));
    assert!(matches!(answer(fresh_answer), Err(CoreError::Finished)));
    assert!(matches!(answer(unknown_answer), Err(CoreError::NotFound(_))));
}

#[test]
fn a_retry_in_the_turn_that_finished_the_run_is_a_duplicate() {
    let mut f = fixture_with(DEFINITION);
    assert_eq!(f.start("r", r#"{"skip":false}"#, T0), Ok(StartOutcome::Created));
    let (command, first) = signal("r", "k1", "{}");
    let (retry, retried) = signal("r", "k1", "{}");
    let (fresh, fresh_answer) = signal("r", "k2", "{}");
    f.turn(vec![command, retry, fresh], T0 + 1);
    assert_eq!(answer(first), Ok(SignalOutcome::Recorded));
    assert_eq!(answer(retried), Ok(SignalOutcome::Duplicate));
    assert!(matches!(answer(fresh_answer), Err(CoreError::Finished)), "not NotFound");
}

#[test]
fn signal_with_start_on_a_run_that_finishes_as_it_starts_is_finished_not_not_found() {
    let mut f = fixture_with(DEFINITION);
    let (reply, mut answer) = oneshot::channel();
    let command = Command::StartWithSignal {
        id: id("s"),
        workflow_type: "last_wait".parse().expect("valid"),
        input: JsonText::parse(r#"{"skip":true}"#).expect("JSON"),
        signal: request("k", "{}"),
        trace: None,
        reply,
    };
    f.turn(vec![command], T0);
    assert!(matches!(answer.try_recv().expect("answered"), Err(CoreError::Finished)));
    assert_eq!(
        kinds(&f, "s"),
        ["WorkflowStarted", "DefinitionPinned", "StepSkipped", "WorkflowCompleted"],
        "the start stands"
    );
}

#[test]
fn a_signal_to_a_run_whose_wait_is_overdue_meets_the_timed_out_run() {
    let mut f = fixture_with(DEFINITION);
    assert_eq!(f.start("r", r#"{"skip":false}"#, T0), Ok(StartOutcome::Created));
    // Call the signal path directly, as a turn would after firing its capped share of
    // timers without reaching this run's deadline.
    let mut turn = Turn::default();
    let result = f.core.signal(&mut turn, &id("r"), request("late", "{}"), T0 + 10_000);
    assert!(matches!(result, Err(CoreError::Finished)), "{result:?}");
    let kinds: Vec<&str> = turn.events.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"WaitTimedOut") && !kinds.contains(&"WaitCompleted"), "{kinds:?}");
    assert!(!kinds.contains(&"SignalReceived"), "{kinds:?}");
}
