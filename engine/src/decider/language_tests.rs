//! Tests of the workflow language's constructs in the decider: sleep, signals and waits,
//! `when` and `choice`, including a property test with random signals, timer firings,
//! cancels and replays.

use super::*;
use crate::definition;
use proptest::prelude::*;
use shop_types::api::WorkflowStatus;

const DEF: &str = r#"
name = "lang"
version = 1
[signals]
confirmed = {}
failed = {}
other = {}

[[steps]]
name = "reserve"
activity = "x.reserve"
queue = "q"

[[steps]]
name = "pause"
sleep = "10s"

[[steps]]
name = "await"
wait_for = ["confirmed", "failed"]
fail_on = ["failed"]
timeout = "15m"

[[steps]]
name = "pay"
choice = [
  { when = { path = "/input/method", equals = "CARD" }, branch = "card" },
  { branch = "other" },
]

[[steps]]
name = "only_big"
when = { path = "/input/amount", gt = 100 }
activity = "x.big"
queue = "q"

[[branches.card]]
name = "charge"
activity = "x.charge"
queue = "q"

[[branches.other]]
name = "invoice"
activity = "x.invoice"
queue = "q"

[[compensations]]
step = "reserve"
activity = "x.release"
queue = "q"

[[compensations]]
step = "await"
activity = "x.unconfirm"
queue = "q"
"#;

fn def() -> Definition {
    definition::parse("lang.toml", DEF).expect("valid")
}

struct Run {
    def: Definition,
    state: WorkflowState,
    history: Vec<Event>,
    now: u64,
}

impl Run {
    fn new(input: &str) -> Self {
        let def = def();
        let input = JsonText::parse(input).expect("valid");
        let now = 1_000_000;
        let mut state = WorkflowState::new(WorkflowId::parse("r-1").expect("valid"), &def, input.clone(), now);
        let ctx = Context { now_ms: now, max_history_events: 10_000 };
        let history = start(&def, &mut state, &input, ctx).events;
        Run { def, state, history, now }
    }

    fn feed(&mut self, input: Input) -> Result<(), Rejection> {
        let ctx = Context { now_ms: self.now, max_history_events: 10_000 };
        let events = decide(&self.def, &mut self.state, input, ctx)?.events;
        self.history.extend(events);
        Ok(())
    }

    fn complete_current(&mut self) -> bool {
        let Some((step, attempt)) = self.state.current().map(|a| (a.step, a.attempt)) else {
            return false;
        };
        let started = Input::Started { step, attempt, worker: "w".parse().expect("valid") };
        if self.feed(started).is_err() {
            return false;
        }
        self.feed(Input::Completed { step, attempt, output: JsonText::parse("{}").expect("valid") }).is_ok()
    }

    fn fire_next_timer(&mut self) -> bool {
        let Some(timer) = timers(&self.def, &self.state).into_iter().min_by_key(|t| t.due_ms) else {
            return false;
        };
        self.now = self.now.max(timer.due_ms);
        self.feed(Input::TimerFired(timer.kind)).is_ok()
    }

    fn signal(&mut self, name: &str, key: &str) -> Result<(), Rejection> {
        let payload = JsonText::parse(format!(r#"{{"by":"{key}"}}"#)).expect("valid");
        self.feed(Input::Signal { name: name.into(), key: key.into(), payload })
    }

    fn names(&self) -> Vec<&'static str> {
        self.history.iter().map(|e| e.kind.name()).collect()
    }

    fn replayed(&self) -> WorkflowState {
        WorkflowState::replay(self.state.id.clone(), &self.def, &self.history).expect("replays")
    }
}

#[test]
fn a_signal_confirms_the_wait_and_the_choice_takes_its_branch() {
    let mut run = Run::new(r#"{"method":"CARD","amount":5}"#);
    assert!(run.complete_current(), "reserve");
    assert_eq!(run.names().last(), Some(&"SleepStarted"));
    assert!(run.fire_next_timer(), "the sleep ends");
    assert_eq!(run.names().last(), Some(&"WaitOpened"));
    run.signal("confirmed", "k1").expect("recorded");
    assert_eq!(run.signal("confirmed", "k1"), Err(Rejection::DuplicateSignal));
    assert_eq!(run.signal("failed", "k1"), Err(Rejection::KeyReused));
    assert_eq!(run.signal("nope", "k2"), Err(Rejection::UnknownSignal("nope".into())));
    assert!(run.names().contains(&"ChoiceTaken"));
    assert!(run.complete_current(), "charge");
    assert_eq!(run.state.status(), WorkflowStatus::Completed);
    assert!(run.names().contains(&"StepSkipped"), "only_big is skipped: {:?}", run.names());
    let output = run.state.terminal.as_ref().and_then(|t| t.output.clone()).expect("output");
    assert!(output.as_str().contains(r#""await":{"by":"k1"}"#), "{}", output.as_str());
    assert_eq!(run.replayed(), run.state);
}

#[test]
fn an_early_signal_is_buffered_until_its_wait_opens() {
    let mut run = Run::new(r#"{"method":"WIRE","amount":500}"#);
    run.signal("confirmed", "early").expect("buffered");
    assert!(run.complete_current(), "reserve");
    assert!(run.fire_next_timer(), "the sleep ends");
    let names = run.names();
    let opened = names.iter().position(|n| *n == "WaitOpened").expect("opened");
    assert_eq!(names[opened + 1], "WaitCompleted", "consumed at once: {names:?}");
    assert!(run.complete_current(), "invoice (the default branch)");
    assert!(run.complete_current(), "only_big runs: amount > 100");
    assert_eq!(run.state.status(), WorkflowStatus::Completed);
}

#[test]
fn a_timed_out_wait_compensates_and_its_own_compensation_does_not_run() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    assert!(run.complete_current());
    assert!(run.fire_next_timer(), "sleep");
    assert!(run.fire_next_timer(), "the wait's deadline");
    assert!(run.names().contains(&"WaitTimedOut"));
    assert!(run.state.compensation_plan.as_ref().is_some_and(|p| p.len() == 1), "only reserve is undone");
    assert!(run.complete_current(), "release");
    assert_eq!(run.state.status(), WorkflowStatus::Compensated);
}

#[test]
fn a_fail_on_signal_compensates() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    assert!(run.complete_current());
    assert!(run.fire_next_timer());
    run.signal("failed", "f").expect("recorded");
    assert!(run.names().contains(&"CompensationStarted"), "{:?}", run.names());
}

#[test]
fn a_cancel_during_a_sleep_compensates_what_came_before() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    assert!(run.complete_current());
    assert!(!run.state.sleeps.is_empty());
    run.feed(Input::Cancel { reason: "user".into() }).expect("cancels");
    assert!(run.state.sleeps.is_empty() && run.state.compensation_plan.as_ref().is_some_and(|p| p.len() == 1));
    assert!(timers(&run.def, &run.state).iter().all(|t| !matches!(t.kind, TimerKind::SleepDue { .. })));
}

#[test]
fn a_finished_run_refuses_signals() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    run.feed(Input::Terminate { reason: "t".into() }).expect("terminates");
    assert_eq!(run.signal("confirmed", "k"), Err(Rejection::Finished));
}

#[test]
fn signals_per_run_are_bounded() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    for i in 0..MAX_SIGNALS_PER_RUN {
        run.signal("other", &format!("k{i}")).expect("under the bound");
    }
    assert_eq!(run.signal("other", "one-more"), Err(Rejection::TooManySignals));
}

#[derive(Debug, Clone)]
enum Op {
    Complete,
    Timer,
    Signal(u8, u8),
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Complete),
        3 => Just(Op::Timer),
        3 => (0u8..4, 0u8..6).prop_map(|(n, k)| Op::Signal(n, k)),
        1 => Just(Op::Cancel),
    ]
}

proptest! {
    /// Any mix of completions, timer firings, signals (early, late, duplicate, unknown) and
    /// cancels: the history is contiguous, a replay reproduces the state (as a restart would),
    /// a signal is consumed at most once, and a run finishes at most once.
    #[test]
    fn replay_reproduces_state_under_random_signals(ops in proptest::collection::vec(op(), 0..40), card in any::<bool>()) {
        let mut run = Run::new(if card { r#"{"method":"CARD"}"# } else { r#"{"method":"WIRE"}"# });
        for op in ops {
            match op {
                Op::Complete => { run.complete_current(); }
                Op::Timer => { run.fire_next_timer(); }
                Op::Signal(n, k) => {
                    let name = ["confirmed", "failed", "other", "unknown"][usize::from(n)];
                    let _ = run.signal(name, &format!("k{k}"));
                }
                Op::Cancel => { let _ = run.feed(Input::Cancel { reason: "c".into() }); }
            }
            prop_assert_eq!(run.replayed(), run.state.clone());
        }
        for (i, event) in run.history.iter().enumerate() {
            prop_assert_eq!(event.seq, i as u64 + 1);
        }
        let consumed: Vec<u64> = run.history.iter().filter_map(|e| match &e.kind {
            EventKind::WaitCompleted { seq, .. } => Some(*seq),
            _ => None,
        }).collect();
        let unique: std::collections::BTreeSet<_> = consumed.iter().collect();
        prop_assert_eq!(unique.len(), consumed.len());
        prop_assert!(run.history.iter().filter(|e| e.kind.is_terminal()).count() <= 1);
        let keys: Vec<&str> = run.history.iter().filter_map(|e| match &e.kind {
            EventKind::SignalReceived { key, .. } => Some(key.as_str()),
            _ => None,
        }).collect();
        let unique_keys: std::collections::BTreeSet<_> = keys.iter().collect();
        prop_assert_eq!(unique_keys.len(), keys.len(), "a key is recorded once");
    }
}
