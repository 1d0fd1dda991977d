//! Unit and property tests of the decider over the order saga.

use super::*;
use crate::definition;
use crate::state::AttemptStatus;
use proptest::prelude::*;
use shop_types::api::WorkflowStatus;
use shop_types::{StepPhase, WorkflowId};
use std::collections::HashSet;

const MAX_HISTORY: u64 = 10_000;

fn order() -> Definition {
    definition::parse("order.toml", include_str!("../../../workflows/order.toml")).expect("valid")
}

fn ctx(now_ms: u64) -> Context<'static> {
    Context::new(now_ms, MAX_HISTORY)
}

struct Harness {
    def: Definition,
    state: WorkflowState,
    history: Vec<Event>,
    now: u64,
    limit: u64,
}

impl Harness {
    fn new(def: Definition) -> Self {
        let input = JsonText::parse(r#"{"orderId":"o-1"}"#).expect("valid");
        let now = 1_000_000;
        let mut state = WorkflowState::new(WorkflowId::parse("o-1").expect("valid"), &def, input.clone(), now);
        let history = start(&def, &mut state, &input, ctx(now)).events;
        Harness { def, state, history, now, limit: MAX_HISTORY }
    }

    fn feed(&mut self, input: Input) -> Result<(), Rejection> {
        let ctx = Context::new(self.now, self.limit);
        let events = decide(&self.def, &mut self.state, input, ctx)?.events;
        self.history.extend(events);
        Ok(())
    }

    fn current(&self) -> Option<(StepRef, u32)> {
        self.state.current().map(|c| (c.step, c.attempt))
    }

    fn take(&mut self) -> Option<(StepRef, u32)> {
        let (step, attempt) = self.current()?;
        self.feed(Input::Started { step, attempt, worker: "w".parse().expect("valid") }).ok()?;
        Some((step, attempt))
    }

    fn complete(&mut self) {
        let (step, attempt) = self.take().expect("a step is scheduled");
        self.feed(Input::Completed { step, attempt, output: JsonText::parse("{}").expect("valid") })
            .expect("current attempt completes");
    }

    fn fail(&mut self, error_type: &str, retryable: bool) {
        let (step, attempt) = self.take().expect("a step is scheduled");
        let error = ActivityError { error_type: error_type.into(), message: "boom".into(), retryable };
        self.feed(Input::Failed { step, attempt, error }).expect("current attempt fails");
    }

    fn fire_next_timer(&mut self) -> bool {
        let Some(timer) = timers(&self.def, &self.state).into_iter().min_by_key(|t| t.due_ms) else {
            return false;
        };
        self.now = self.now.max(timer.due_ms);
        self.feed(Input::TimerFired(timer.kind)).is_ok()
    }

    fn names(&self) -> Vec<&'static str> {
        self.history.iter().map(|e| e.kind.name()).collect()
    }
}

#[test]
fn the_happy_path_confirms() {
    let mut h = Harness::new(order());
    for _ in 0..4 {
        h.complete();
    }
    assert_eq!(h.state.status(), WorkflowStatus::Completed);
    assert_eq!(h.names().last(), Some(&"WorkflowCompleted"));
    assert!(timers(&h.def, &h.state).is_empty());
}

#[test]
fn out_of_stock_compensates_without_undoing_unstarted_steps() {
    let mut h = Harness::new(order());
    h.fail("OUT_OF_STOCK", false);
    // reserve was started, so its release runs (it is a no-op for a refused reservation).
    let (step, _) = h.current().expect("compensation scheduled");
    assert_eq!(step, StepRef { phase: StepPhase::Compensation, index: 0 });
    h.complete();
    h.complete(); // notify_cancelled
    assert_eq!(h.state.status(), WorkflowStatus::Compensated);
    assert!(h.state.terminal.as_ref().and_then(|t| t.reason.clone()).is_some_and(|r| r.contains("OUT_OF_STOCK")));
}

#[test]
fn a_declined_payment_refunds_then_releases() {
    let mut h = Harness::new(order());
    h.complete();
    h.fail("PAYMENT_DECLINED", false);
    // The plan names compensation nodes; each undoes the forward step of its index.
    let plan: Vec<u16> = h
        .state
        .compensation_plan
        .as_ref()
        .expect("compensating")
        .iter()
        .filter_map(|n| h.def.node(*n))
        .map(|n| n.step.index)
        .collect();
    assert_eq!(plan, vec![1, 0]);
    h.complete();
    h.complete();
    h.complete();
    assert_eq!(h.state.status(), WorkflowStatus::Compensated);
}

#[test]
fn transient_failures_retry_with_growing_backoff_until_the_cap() {
    let mut h = Harness::new(order());
    h.complete();
    let mut delays = Vec::new();
    for _ in 0..5 {
        h.fail("PAYMENT_UNAVAILABLE", true);
        match h.history.last().map(|e| &e.kind) {
            Some(EventKind::StepRetryScheduled { delay_ms, .. }) => delays.push(*delay_ms),
            other => panic!("expected a retry, got {other:?}"),
        }
        assert!(h.fire_next_timer(), "the backoff timer fires");
    }
    assert!(delays.windows(2).all(|w| w[1] > w[0]), "backoff grows: {delays:?}");
    // The sixth failure is past max_attempts = 6: compensation starts.
    h.fail("PAYMENT_UNAVAILABLE", true);
    assert!(h.state.compensation_plan.is_some());
}

#[test]
fn a_late_completion_after_a_timeout_is_stale() {
    let mut h = Harness::new(order());
    let (step, attempt) = h.take().expect("scheduled");
    assert!(h.fire_next_timer(), "start_to_close fires");
    assert!(matches!(h.history.last().map(|e| &e.kind), Some(EventKind::StepRetryScheduled { .. })));
    let late = Input::Completed { step, attempt, output: JsonText::null() };
    let before = h.history.len();
    assert_eq!(h.feed(late), Err(Rejection::Stale));
    assert_eq!(h.history.len(), before);
}

#[test]
fn no_worker_fails_the_step_at_schedule_to_start() {
    let mut h = Harness::new(order());
    // Nothing takes reserve_stock: schedule_to_start (1m) fires before the others.
    assert!(h.fire_next_timer());
    assert!(h.names().contains(&"StepTimedOut"));
    assert!(h.state.compensation_plan.as_ref().is_some_and(Vec::is_empty));
}

#[test]
fn a_failing_compensation_parks_the_run_until_an_operator_resumes_it() {
    let mut h = Harness::new(order());
    h.complete();
    h.fail("PAYMENT_DECLINED", false);
    // The refund fails until its policy gives up.
    while h.state.parked.is_none() {
        h.fail("PAYMENT_UNAVAILABLE", true);
        h.fire_next_timer();
    }
    let (_, last_attempt) = h.state.last_failed.expect("the refund failed for good");
    assert_eq!(h.state.status(), WorkflowStatus::Failed);
    assert!(h.state.terminal.is_none(), "parked, not finished");
    assert!(timers(&h.def, &h.state).is_empty(), "a parked run waits for nobody");
    assert_eq!(h.names().last(), Some(&"RunParked"));
    let refund = StepRef { phase: StepPhase::Compensation, index: 1 };
    let late = Input::Completed { step: refund, attempt: last_attempt, output: JsonText::null() };
    assert_eq!(h.feed(late), Err(Rejection::Stale));

    h.feed(Input::Resume { reason: "provider is back".into(), by: None }).expect("resumes");
    let (step, attempt) = h.current().expect("the refund is scheduled again");
    assert_eq!((step, attempt), (refund, last_attempt + 1));
    // The policy counts from the resume: one failure is retried again.
    h.fail("PAYMENT_UNAVAILABLE", true);
    assert!(matches!(h.history.last().map(|e| &e.kind), Some(EventKind::StepRetryScheduled { .. })));
    h.fire_next_timer();
    while h.state.terminal.is_none() {
        h.complete();
    }
    assert_eq!(h.state.status(), WorkflowStatus::Compensated);
    assert_eq!(h.feed(Input::Resume { reason: "again".into(), by: None }), Err(Rejection::Finished));
}

#[test]
fn only_a_parked_run_can_be_resumed() {
    let mut h = Harness::new(order());
    assert_eq!(h.feed(Input::Resume { reason: "x".into(), by: None }), Err(Rejection::NotParked));
}

#[test]
fn cancel_after_the_pivot_is_refused() {
    let mut h = Harness::new(order());
    for _ in 0..3 {
        h.complete();
    }
    assert_eq!(h.feed(Input::Cancel { reason: "changed my mind".into(), by: None }), Err(Rejection::PastPivot));
}

#[test]
fn a_run_that_needs_exactly_the_limit_completes() {
    let mut h = Harness::new(order());
    h.limit = 14;
    for _ in 0..4 {
        h.complete();
    }
    assert_eq!(h.state.status(), WorkflowStatus::Completed);
    assert_eq!(h.history.len() as u64, h.limit);
}

#[test]
fn the_history_limit_fails_the_run_at_the_limit() {
    let mut h = Harness::new(order());
    h.limit = 12;
    h.complete();
    h.fail("PAYMENT_DECLINED", false);
    while h.state.terminal.is_none() {
        h.complete();
    }
    assert_eq!(h.state.status(), WorkflowStatus::Failed);
    assert_eq!(h.history.len() as u64, h.limit);
    assert!(h.state.terminal.as_ref().and_then(|t| t.reason.as_deref()).is_some_and(|r| r.contains("limit")));
}

#[test]
fn endless_retries_compensate_at_three_quarters_of_the_limit() {
    let mut definition = order();
    definition.steps[1].retry.max_attempts = 100;
    definition.steps[1].timeouts.schedule_to_close_ms = None;
    let mut h = Harness::new(definition);
    h.limit = 80;
    h.complete();
    loop {
        h.fail("PAYMENT_UNAVAILABLE", true);
        if h.state.compensation_plan.is_some() {
            break;
        }
        assert!(h.fire_next_timer(), "the retry backoff fires");
    }
    let soft_limit = h.limit - h.limit / COMPENSATION_HEADROOM_DIVISOR;
    assert!(h.history.len() as u64 <= soft_limit + MAX_EVENTS_PER_DECISION, "{} events", h.history.len());
    while h.state.terminal.is_none() {
        h.complete();
    }
    assert_eq!(h.state.status(), WorkflowStatus::Compensated);
    assert!(h.history.len() as u64 <= h.limit);
}

#[derive(Debug, Clone)]
enum Action {
    Complete,
    Fail { retryable: bool, permanent_type: bool },
    StaleReport { attempt_offset: u32 },
    FireTimer,
    Cancel,
    Terminate,
    Resume,
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => Just(Action::Complete),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(retryable, permanent_type)| Action::Fail { retryable, permanent_type }),
        2 => (1u32..3).prop_map(|attempt_offset| Action::StaleReport { attempt_offset }),
        3 => Just(Action::FireTimer),
        1 => Just(Action::Cancel),
        1 => Just(Action::Terminate),
        1 => Just(Action::Resume),
        2 => Just(Action::Restart),
    ]
}

fn check_history(h: &Harness) {
    let history = &h.history;
    assert!(matches!(history[0].kind, EventKind::WorkflowStarted { .. }));
    for (i, event) in history.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "contiguous sequence numbers");
    }
    assert!(history.len() as u64 <= h.limit, "{} events over a limit of {}", history.len(), h.limit);
    let terminals = history.iter().filter(|e| e.kind.is_terminal()).count();
    assert!(terminals <= 1, "at most one terminal event");
    if terminals == 1 {
        assert!(history.last().is_some_and(|e| e.kind.is_terminal()), "the terminal event is last");
        assert!(timers(&h.def, &h.state).is_empty(), "no timer outlives the run");
    }
    let mut completed = HashSet::new();
    for event in history {
        if let EventKind::StepCompleted { step, attempt, .. } = event.kind {
            assert!(completed.insert((step, attempt)), "one completion per step attempt");
        }
    }
    let replayed = WorkflowState::replay(h.state.id.clone(), &h.def, history).expect("replays");
    assert_eq!(replayed, h.state, "replay reproduces the state");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_inputs_never_break_history_invariants(
        actions in proptest::collection::vec(action(), 1..80),
        small_limit in proptest::option::of(10u64..60),
    ) {
        let mut h = Harness::new(order());
        h.limit = small_limit.unwrap_or(MAX_HISTORY);
        for action in actions {
            match action {
                Action::Complete => {
                    if let Some((step, attempt)) = h.take() {
                        let _ = h.feed(Input::Completed { step, attempt, output: JsonText::parse("{\"ok\":true}").expect("valid") });
                    }
                }
                Action::Fail { retryable, permanent_type } => {
                    if let Some((step, attempt)) = h.take() {
                        let error_type = if permanent_type { "PAYMENT_DECLINED" } else { "FLAKY" };
                        let error = ActivityError { error_type: error_type.into(), message: "x".into(), retryable };
                        let _ = h.feed(Input::Failed { step, attempt, error });
                    }
                }
                Action::StaleReport { attempt_offset } => {
                    if let Some((step, attempt)) = h.current() {
                        let before = h.history.len();
                        let stale = Input::Completed { step, attempt: attempt + attempt_offset, output: JsonText::null() };
                        prop_assert_eq!(h.feed(stale), Err(Rejection::Stale));
                        prop_assert_eq!(h.history.len(), before);
                    }
                }
                Action::FireTimer => {
                    h.fire_next_timer();
                }
                Action::Cancel => {
                    let _ = h.feed(Input::Cancel { reason: "test".into(), by: None });
                }
                Action::Terminate => {
                    let _ = h.feed(Input::Terminate { reason: "test".into(), by: None });
                }
                Action::Resume => {
                    let _ = h.feed(Input::Resume { reason: "test".into(), by: None });
                }
                Action::Restart => {
                    h.state = WorkflowState::replay(h.state.id.clone(), &h.def, &h.history).expect("replays");
                }
            }
            check_history(&h);
        }
        // From any state, workers that answer (and an operator who resumes a parked run)
        // drive every run to an end.
        let mut guard = 0;
        while h.state.terminal.is_none() && guard < 500 {
            let current = h.state.current().map(|c| (c.step, c.attempt, c.status.clone()));
            match current {
                _ if h.state.parked.is_some() => {
                    h.feed(Input::Resume { reason: "operator".into(), by: None }).expect("a parked run resumes");
                }
                Some((_, _, AttemptStatus::Scheduled { .. })) => {
                    // Near a small history limit the start itself may end or redirect
                    // the run, so a refused completion is fine here.
                    if let Some((step, attempt)) = h.take() {
                        let _ = h.feed(Input::Completed { step, attempt, output: JsonText::null() });
                    }
                }
                Some((step, attempt, AttemptStatus::Started { .. })) => {
                    h.feed(Input::Completed { step, attempt, output: JsonText::null() }).expect("completes");
                }
                _ => {
                    h.fire_next_timer();
                }
            }
            guard += 1;
        }
        prop_assert!(h.state.terminal.is_some(), "the run ends");
        check_history(&h);
    }
}

/// A pinned start is the older start with `DefinitionPinned` (the source's hash) as event #2;
/// the run then goes on exactly as before, one sequence number later, and replays to the hash.
#[test]
fn a_pinned_start_records_the_definition_hash_right_after_workflow_started() {
    let def = order();
    let input = JsonText::parse(r#"{"orderId":"o-1"}"#).expect("valid");
    let id = WorkflowId::parse("o-1").expect("valid");
    let mut plain = WorkflowState::new(id.clone(), &def, input.clone(), 5);
    let mut pinned = WorkflowState::new(id.clone(), &def, input.clone(), 5);
    let old = start(&def, &mut plain, &input, ctx(5)).events;
    let new = start_pinned(&def, &mut pinned, &input, ctx(5)).events;
    assert_eq!(new.len(), old.len() + 1);
    assert_eq!(new[0], old[0]);
    assert_eq!(
        new[1],
        Event { seq: 2, at_ms: 5, kind: EventKind::DefinitionPinned { content_hash: def.content_hash.clone() } }
    );
    assert!(def.content_hash.starts_with("sha256:") && def.content_hash.len() == 7 + 64);
    for (a, b) in old[1..].iter().zip(&new[2..]) {
        assert_eq!((a.seq + 1, a.at_ms, &a.kind), (b.seq, b.at_ms, &b.kind));
    }
    assert_eq!(pinned.definition_hash.as_deref(), Some(def.content_hash.as_str()));
    assert_eq!(plain.definition_hash, None, "runs from before the pin have none");
    let replayed = WorkflowState::replay(id, &def, &new).expect("replays");
    assert_eq!(replayed, pinned);
}
