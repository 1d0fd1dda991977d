//! Tests of the workflow language's constructs in the decider: sleep, signals and waits,
//! `when` and `choice`, the signal limits at their edges, including a property test with
//! random signals, timer firings in any order, time passing, cancels and replays.

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
    max_history_events: u64,
}

impl Run {
    fn new(input: &str) -> Self {
        Run::with(def(), input)
    }

    fn with(def: Definition, input: &str) -> Self {
        let input = JsonText::parse(input).expect("valid");
        let now = 1_000_000;
        let mut state = WorkflowState::new(WorkflowId::parse("r-1").expect("valid"), &def, input.clone(), now);
        let ctx = Context::new(now, 10_000);
        let history = start(&def, &mut state, &input, ctx).events;
        Run { def, state, history, now, max_history_events: 10_000 }
    }

    fn ctx(&self) -> Context<'static> {
        Context::new(self.now, self.max_history_events)
    }

    fn feed(&mut self, input: Input) -> Result<(), Rejection> {
        let ctx = self.ctx();
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

    /// Fires live timer number `pick` (modulo how many there are), whichever is due first:
    /// the core fires a bounded number per turn, so any may be overdue when another fires.
    fn fire_any_timer(&mut self, pick: usize) -> bool {
        let live = timers(&self.def, &self.state);
        let Some(timer) = live.get(pick % live.len().max(1)).copied() else {
            return false;
        };
        self.now = self.now.max(timer.due_ms);
        self.feed(Input::TimerFired(timer.kind)).is_ok()
    }

    fn signal(&mut self, name: &str, key: &str) -> Result<(), Rejection> {
        let payload = JsonText::parse(format!(r#"{{"by":"{key}"}}"#)).expect("valid");
        self.feed(Input::Signal { name: name.into(), key: key.into(), payload })
    }

    fn signal_with(&mut self, name: &str, key: &str, payload: &str) -> Result<(), Rejection> {
        let payload = JsonText::parse(payload).expect("valid");
        self.feed(Input::Signal { name: name.into(), key: key.into(), payload })
    }

    /// The inputs that could come next, each at the time it would come: a report for every
    /// attempt in flight, every live timer at its due time, a signal of each name, a cancel.
    fn probes(&self) -> Vec<(u64, Input)> {
        let mut probes = Vec::new();
        for (step, attempt, _) in self.state.in_flight() {
            probes.push((self.now, Input::Started { step, attempt, worker: "w".parse().expect("valid") }));
            let output = JsonText::parse("{}").expect("valid");
            probes.push((self.now, Input::Completed { step, attempt, output }));
        }
        for timer in timers(&self.def, &self.state) {
            probes.push((self.now.max(timer.due_ms), Input::TimerFired(timer.kind)));
        }
        for name in ["confirmed", "failed", "other"] {
            let payload = JsonText::parse("{}").expect("valid");
            probes.push((self.now, Input::Signal { name: name.into(), key: "probe".into(), payload }));
        }
        probes.push((self.now, Input::Cancel { reason: "probe".into(), by: None }));
        probes
    }

    /// Whether `other` (a replayed state) behaves as the live one does: the same live timers,
    /// and the same decision (or refusal) for every input that could come next. Comparing
    /// the states alone proves little, as both are built by the same `apply`.
    fn behaves_like(&self, other: &WorkflowState) -> Result<(), String> {
        if timers(&self.def, &self.state) != timers(&self.def, other) {
            return Err("the live timers differ".into());
        }
        for (now, input) in self.probes() {
            let ctx = Context::new(now, self.max_history_events);
            let live = decide(&self.def, &mut self.state.clone(), input.clone(), ctx);
            let replayed = decide(&self.def, &mut other.clone(), input.clone(), ctx);
            if live != replayed {
                return Err(format!("{input:?} at {now}: live {live:?}, replayed {replayed:?}"));
            }
        }
        Ok(())
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
    // The wait failed: it had no effect, so its own compensation (x.unconfirm) stays out.
    let reserve = run.def.main_line().next().expect("reserve");
    let release = run.def.compensation_of(reserve).expect("reserve has a compensation");
    assert_eq!(run.state.compensation_plan, Some(vec![release]), "only reserve is undone");
    assert!(run.complete_current(), "release");
    assert_eq!(run.state.status(), WorkflowStatus::Compensated);
    let scheduled: Vec<_> = run
        .history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepScheduled { step, .. } => run.def.step(*step).map(|d| d.name.to_string()),
            _ => None,
        })
        .collect();
    assert!(!scheduled.iter().any(|n| n.starts_with("await")), "{scheduled:?}");
}

#[test]
fn a_cancel_during_a_sleep_compensates_what_came_before() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    assert!(run.complete_current());
    assert!(!run.state.sleeps.is_empty());
    run.feed(Input::Cancel { reason: "user".into(), by: None }).expect("cancels");
    assert!(run.state.sleeps.is_empty() && run.state.compensation_plan.as_ref().is_some_and(|p| p.len() == 1));
    assert!(timers(&run.def, &run.state).iter().all(|t| !matches!(t.kind, TimerKind::SleepDue { .. })));
}

#[test]
fn a_finished_run_refuses_signals() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    run.feed(Input::Terminate { reason: "t".into(), by: None }).expect("terminates");
    assert_eq!(run.signal("confirmed", "k"), Err(Rejection::Finished));
}

#[test]
fn signals_per_run_are_bounded() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    for i in 0..MAX_SIGNALS_PER_RUN {
        run.signal("confirmed", &format!("k{i}")).expect("under the bound");
    }
    assert_eq!(run.signal("confirmed", "one-more"), Err(Rejection::TooManySignals));
}

/// Brings a run to its open wait (reserve done, the sleep over).
fn at_the_wait(input: &str) -> Run {
    let mut run = Run::new(input);
    assert!(run.complete_current(), "reserve");
    assert!(run.fire_next_timer(), "the sleep ends");
    assert!(!run.state.waits.is_empty(), "the wait is open: {:?}", run.names());
    run
}

/// A JSON string payload of exactly `bytes` bytes.
fn payload_of(bytes: usize) -> String {
    format!("\"{}\"", "x".repeat(bytes - 2))
}

#[test]
fn a_signal_payload_is_bounded_at_its_edge() {
    use shop_types::limits::MAX_SIGNAL_PAYLOAD_BYTES;
    let mut run = at_the_wait(r#"{"method":"CARD"}"#);
    let over = payload_of(MAX_SIGNAL_PAYLOAD_BYTES + 1);
    assert_eq!(
        run.signal_with("confirmed", "big", &over),
        Err(Rejection::SignalTooLarge(MAX_SIGNAL_PAYLOAD_BYTES + 1))
    );
    run.signal_with("confirmed", "edge", &payload_of(MAX_SIGNAL_PAYLOAD_BYTES)).expect("the limit itself is accepted");
    assert!(run.names().contains(&"WaitCompleted"));
}

#[test]
fn buffered_signal_bytes_are_bounded_at_their_edge_and_a_consumed_signal_keeps_only_its_digest() {
    use shop_types::limits::{MAX_BUFFERED_SIGNAL_BYTES, MAX_SIGNAL_PAYLOAD_BYTES};
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    // Before the wait opens, every signal is buffered: fill the buffer exactly.
    let full = MAX_BUFFERED_SIGNAL_BYTES / MAX_SIGNAL_PAYLOAD_BYTES;
    for i in 0..full {
        run.signal_with("confirmed", &format!("b{i}"), &payload_of(MAX_SIGNAL_PAYLOAD_BYTES)).expect("fits");
    }
    assert_eq!(run.state.buffered_signal_bytes(), MAX_BUFFERED_SIGNAL_BYTES);
    assert_eq!(run.signal_with("confirmed", "one-byte", "1"), Err(Rejection::SignalBufferFull));
    // The wait consumes the oldest: its payload leaves the buffer, and room opens.
    assert!(run.complete_current(), "reserve");
    assert!(run.fire_next_timer(), "the sleep ends; the wait consumes b0");
    let consumed = run.state.signal_by_key("b0").expect("recorded");
    assert!(consumed.consumed() && consumed.payload.is_none(), "only key, name and digest are kept");
    assert_eq!(run.state.buffered_signal_bytes(), MAX_BUFFERED_SIGNAL_BYTES - MAX_SIGNAL_PAYLOAD_BYTES);
    // A retry of the consumed signal is still told apart from a reused key, by its digest.
    assert_eq!(
        run.signal_with("confirmed", "b0", &payload_of(MAX_SIGNAL_PAYLOAD_BYTES)),
        Err(Rejection::DuplicateSignal)
    );
    assert_eq!(run.signal_with("confirmed", "b0", "2"), Err(Rejection::KeyReused));
}

#[test]
fn a_retry_formatted_differently_is_a_duplicate() {
    let mut run = at_the_wait(r#"{"method":"CARD"}"#);
    run.signal_with("confirmed", "k", r#"{"a":1,"b":[1,2]}"#).expect("recorded");
    assert_eq!(run.signal_with("confirmed", "k", r#"{ "b": [1, 2], "a": 1 }"#), Err(Rejection::DuplicateSignal));
}

#[test]
fn a_signal_no_wait_can_take_is_refused() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    assert_eq!(run.signal("other", "o"), Err(Rejection::SignalNotAwaited("other".into())), "no step waits for it");
    let mut run = at_the_wait(r#"{"method":"CARD"}"#);
    run.signal("confirmed", "c").expect("consumed");
    assert_eq!(run.signal("confirmed", "c2"), Err(Rejection::SignalNotAwaited("confirmed".into())), "the wait passed");
}

#[test]
fn signals_are_refused_while_compensating_and_past_the_soft_limit() {
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    assert!(run.complete_current(), "reserve");
    run.feed(Input::Cancel { reason: "user".into(), by: None }).expect("compensates");
    assert!(run.state.terminal.is_none(), "release is to run");
    assert!(matches!(run.signal("confirmed", "c"), Err(Rejection::SignalsClosed(_))));
    // Past the soft limit the rest of the history is kept for compensation.
    let soft_limit = |max: u64| max - max / COMPENSATION_HEADROOM_DIVISOR;
    let mut run = Run::new(r#"{"method":"CARD"}"#);
    // The smallest limit whose soft limit the run's history has already reached, and one
    // more event of room: at the edge the signal is refused, one further it is taken.
    let mut max = 1;
    while soft_limit(max + 1) < run.state.next_seq {
        max += 1;
    }
    let mut roomier = Run::new(r#"{"method":"CARD"}"#);
    roomier.max_history_events = (1..).map(|m| max + m).find(|m| soft_limit(*m) >= run.state.next_seq).expect("some");
    roomier.signal("confirmed", "c").expect("within the soft limit");
    run.max_history_events = max;
    assert!(run.state.next_seq > soft_limit(max));
    assert!(matches!(run.signal("confirmed", "c"), Err(Rejection::SignalsClosed(_))));
    assert!(!run.names().contains(&"SignalReceived"));
}

#[test]
fn a_wait_past_its_deadline_never_consumes_a_signal() {
    let mut run = at_the_wait(r#"{"method":"CARD"}"#);
    let deadline = run.state.waits.values().next().expect("open").deadline_ms;
    // The deadline timer is overdue but has not fired (the core caps timers per turn).
    run.now = deadline;
    run.signal("confirmed", "late").expect("recorded, not consumed");
    assert!(!run.names().contains(&"WaitCompleted"), "{:?}", run.names());
    assert!(!run.state.signal_by_key("late").expect("recorded").consumed());
    assert!(run.fire_next_timer(), "the deadline");
    assert!(run.names().contains(&"WaitTimedOut") && run.names().contains(&"CompensationStarted"));
    // One millisecond earlier, the same signal completes the wait.
    let mut run = at_the_wait(r#"{"method":"CARD"}"#);
    run.now = run.state.waits.values().next().expect("open").deadline_ms - 1;
    run.signal("confirmed", "in-time").expect("consumed");
    assert!(run.names().contains(&"WaitCompleted"));
}

#[test]
fn sleep_until_is_at_most_max_sleep_away() {
    let def = definition::parse(
        "until.toml",
        r#"
name = "until"
version = 1
[[steps]]
name = "nap"
sleep_until = "/input/at"
"#,
    )
    .expect("valid");
    let max = u64::try_from(crate::definition::MAX_SLEEP.as_millis()).expect("fits");
    let at_edge = Run::with(def.clone(), &format!(r#"{{"at":{}}}"#, 1_000_000 + max));
    assert_eq!(at_edge.names(), ["WorkflowStarted", "SleepStarted"], "the limit itself is allowed");
    let past = Run::with(def.clone(), &format!(r#"{{"at":{}}}"#, 1_000_000 + max + 1));
    assert!(!past.names().contains(&"SleepStarted"), "{:?}", past.names());
    assert_ne!(past.state.status(), WorkflowStatus::Running, "the step failed for good: {:?}", past.names());
    let forever = Run::with(def, &format!(r#"{{"at":{}}}"#, u64::MAX));
    assert!(!forever.names().contains(&"SleepStarted"), "{:?}", forever.names());
}

#[derive(Debug, Clone)]
enum Op {
    Complete,
    Timer,
    /// Fire one live timer, not necessarily the earliest.
    AnyTimer(usize),
    /// Let time pass without firing anything: timers fall overdue.
    Pass(u64),
    Signal(u8, u8),
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Complete),
        2 => Just(Op::Timer),
        2 => (0usize..4).prop_map(Op::AnyTimer),
        2 => (0u64..1_200_000).prop_map(Op::Pass),
        3 => (0u8..4, 0u8..6).prop_map(|(n, k)| Op::Signal(n, k)),
        1 => Just(Op::Cancel),
    ]
}

proptest! {
    /// Any mix of completions, timer firings in any order, time passing, signals (early, late,
    /// overdue, duplicate, unknown) and cancels: the history is contiguous, a replayed state
    /// behaves as the live one (same timers, same next decisions), a signal is consumed at
    /// most once and never at or past its wait's deadline, and a run finishes at most once.
    #[test]
    fn replay_reproduces_state_under_random_signals(ops in proptest::collection::vec(op(), 0..40), card in any::<bool>()) {
        let mut run = Run::new(if card { r#"{"method":"CARD"}"# } else { r#"{"method":"WIRE"}"# });
        for op in ops {
            match op {
                Op::Complete => { run.complete_current(); }
                Op::Timer => { run.fire_next_timer(); }
                Op::AnyTimer(pick) => { run.fire_any_timer(pick); }
                Op::Pass(ms) => run.now += ms,
                Op::Signal(n, k) => {
                    let name = ["confirmed", "failed", "other", "unknown"][usize::from(n)];
                    let _ = run.signal(name, &format!("k{k}"));
                }
                Op::Cancel => { let _ = run.feed(Input::Cancel { reason: "c".into(), by: None }); }
            }
            let replayed = run.replayed();
            prop_assert_eq!(&replayed, &run.state);
            if let Err(difference) = run.behaves_like(&replayed) {
                prop_assert!(false, "{}", difference);
            }
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
        let mut deadlines = std::collections::BTreeMap::new();
        for event in &run.history {
            match &event.kind {
                EventKind::WaitOpened { step, deadline_ms, .. } => { deadlines.insert(*step, *deadline_ms); }
                EventKind::WaitCompleted { step, .. } => {
                    let deadline = deadlines.get(step).copied().unwrap_or(0);
                    prop_assert!(event.at_ms < deadline, "consumed at {} by a wait due at {}", event.at_ms, deadline);
                }
                _ => {}
            }
        }
        prop_assert!(run.history.iter().filter(|e| e.kind.is_terminal()).count() <= 1);
        let keys: Vec<&str> = run.history.iter().filter_map(|e| match &e.kind {
            EventKind::SignalReceived { key, .. } => Some(key.as_str()),
            _ => None,
        }).collect();
        let unique_keys: std::collections::BTreeSet<_> = keys.iter().collect();
        prop_assert_eq!(unique_keys.len(), keys.len(), "a key is recorded once");
    }
}
