//! `explain` over runs driven through the decider: each state of a step, waits, a parked and
//! a finished run, with the live parts (queue gauges, heartbeats) given by hand.

use super::*;
use crate::core::QueueGauges;
use crate::decider::{decide, start, Context, Input};
use shop_types::history::ActivityError;
use shop_types::JsonText;

const DEF: &str = r#"
name = "why"
version = 1
execution_timeout = "5m"
[signals]
approved = {}

[[steps]]
name = "charge"
activity = "payment.charge"
queue = "payment"
retry = { max_attempts = 4, initial_interval = "2s", jitter = 0.0 }
timeouts = { schedule_to_start = "1m", start_to_close = "10s", heartbeat = "3s" }

[[steps]]
name = "approve"
wait_for = ["approved"]
timeout = "15m"

[[compensations]]
step = "charge"
activity = "payment.refund"
queue = "payment"
retry = { max_attempts = 1 }
"#;

const T0: u64 = 1_000_000;

struct Run {
    def: Definition,
    state: WorkflowState,
    history: Vec<Event>,
    now: u64,
}

impl Run {
    fn new() -> Run {
        let def = crate::definition::parse("why.toml", DEF).expect("valid");
        let input = JsonText::parse("{}").expect("valid");
        let mut state = WorkflowState::new(WorkflowId::parse("run-1").expect("valid"), &def, input.clone(), T0);
        let history = start(&def, &mut state, &input, Context::new(T0, 10_000)).events;
        Run { def, state, history, now: T0 }
    }

    fn feed(&mut self, input: Input) {
        let events =
            decide(&self.def, &mut self.state, input, Context::new(self.now, 10_000)).expect("accepted").events;
        self.history.extend(events);
    }

    fn take(&mut self, step: StepRef, attempt: u32) {
        self.feed(Input::Started { step, attempt, worker: "worker-7".parse().expect("valid") });
    }

    fn fail(&mut self, step: StepRef, attempt: u32, code: &str, retryable: bool) {
        let error = ActivityError { error_type: code.into(), message: format!("{code} said the provider"), retryable };
        self.feed(Input::Failed { step, attempt, error });
    }

    fn explain(&self, queues: &BTreeMap<String, QueueGauges>, heartbeats: &[(StepRef, u32, u64)]) -> WhyView {
        let status_of = |_: &WorkflowId| None;
        let circuits = BTreeMap::new();
        let live = Live { now_ms: self.now, queues, circuits: &circuits, heartbeats, status_of: &status_of };
        explain(&self.def, self.state.clone(), &self.history, &live)
    }
}

fn no_queues() -> BTreeMap<String, QueueGauges> {
    BTreeMap::new()
}

const CHARGE: StepRef = StepRef { phase: StepPhase::Forward, index: 0 };

#[test]
fn a_task_no_worker_polls_for_says_so_and_its_wait_grows() {
    let mut run = Run::new();
    run.now = T0 + 4_000;
    let why = run.explain(&no_queues(), &[]);
    let step = &why.steps[0];
    assert_eq!(step.state, WhyStepState::WaitingForWorker);
    assert_eq!((step.waited_ms, step.pollers), (Some(4_000), Some(0)));
    assert_eq!((step.policy_attempt, step.max_attempts), (1, 4));
    assert_eq!(step.timeouts, vec![timeout(WhyTimeoutKind::ScheduleToStart, T0 + 60_000, run.now)]);
    assert_eq!(why.execution_timeout, Some(timeout(WhyTimeoutKind::Execution, T0 + 300_000, run.now)));
    assert!(why.summary.contains("no worker polls queue `payment`"), "{}", why.summary);
    assert_eq!(why.advice, vec!["no worker polls queue `payment`: start one with `shop-worker --activities payment`"]);
    run.now += 6_000;
    assert_eq!(run.explain(&no_queues(), &[]).steps[0].waited_ms, Some(10_000), "the wait grows with the clock");
}

#[test]
fn a_worker_seen_lately_counts_as_a_poller_though_none_waits_now() {
    let run = Run::new();
    let queues = BTreeMap::from([("payment".to_owned(), QueueGauges { recent_pollers: 2, ..QueueGauges::default() })]);
    let why = run.explain(&queues, &[]);
    assert_eq!(why.steps[0].pollers, Some(2));
    assert!(why.advice.is_empty(), "{:?}", why.advice);
}

#[test]
fn a_running_attempt_names_its_worker_and_its_lease_counts_from_the_last_heartbeat() {
    let mut run = Run::new();
    run.take(CHARGE, 1);
    run.now = T0 + 5_000;
    let why = run.explain(&no_queues(), &[(CHARGE, 1, T0 + 4_000)]);
    let step = &why.steps[0];
    assert_eq!(step.state, WhyStepState::Running);
    assert_eq!(step.worker.as_deref(), Some("worker-7"));
    assert_eq!(
        step.timeouts,
        vec![
            timeout(WhyTimeoutKind::Heartbeat, T0 + 7_000, run.now),
            timeout(WhyTimeoutKind::StartToClose, T0 + 10_000, run.now),
        ],
        "the heartbeat timeout counts from the core's last beat, not the start"
    );
    assert_eq!(step.pollers, None, "pollers matter only while it waits for one");
}

#[test]
fn a_retryable_failure_backs_off_with_the_next_retry_due_and_the_error() {
    let mut run = Run::new();
    run.take(CHARGE, 1);
    run.now = T0 + 1_000;
    run.fail(CHARGE, 1, "PROVIDER_DOWN", true);
    let why = run.explain(&no_queues(), &[]);
    let step = &why.steps[0];
    assert_eq!(step.state, WhyStepState::BackingOff);
    assert_eq!(step.retry_due_ms, Some(T0 + 3_000), "2s without jitter");
    assert_eq!((step.policy_attempt, step.max_attempts), (2, 4), "the attempt due next");
    let error = step.last_error.as_ref().expect("the failure");
    assert_eq!((error.code.as_str(), error.attempt, error.step.as_str()), ("PROVIDER_DOWN", 1, "charge"));
    assert!(why.summary.contains("attempt 2 of 4 is due in 2.000s"), "{}", why.summary);
}

#[test]
fn a_wait_names_its_signals_and_deadline() {
    let mut run = Run::new();
    run.take(CHARGE, 1);
    run.feed(Input::Completed { step: CHARGE, attempt: 1, output: JsonText::null() });
    run.now = T0 + 60_000;
    let why = run.explain(&no_queues(), &[]);
    assert!(why.steps.is_empty());
    assert_eq!(
        why.waits,
        vec![WhyWait::Signal {
            step: "approve".into(),
            signals: vec!["approved".into()],
            deadline_ms: T0 + 900_000,
            left_ms: 840_000
        }]
    );
    assert!(why.summary.contains("waits for signal approved"), "{}", why.summary);
    assert!(why.advice[0].contains("shopctl workflow signal run-1 <approved>"), "{:?}", why.advice);
}

#[test]
fn a_parked_run_shows_the_failure_that_parked_it_and_how_to_resume() {
    let mut run = Run::new();
    run.take(CHARGE, 1);
    run.feed(Input::Cancel { reason: "customer asked".into(), by: Some("admin".into()) });
    let refund = StepRef { phase: StepPhase::Compensation, index: 0 };
    let attempt = run.state.attempts.values().next().expect("the refund").attempt;
    run.take(refund, attempt);
    run.fail(refund, attempt, "LEDGER_LOCKED", false);
    assert!(run.state.parked.is_some(), "the refund failed for good");
    let why = run.explain(&no_queues(), &[]);
    let parked = why.parked.as_ref().expect("parked");
    assert_eq!(parked.resume, "shopctl workflow resume run-1");
    assert_eq!(parked.failure.as_ref().map(|f| f.code.as_str()), Some("LEDGER_LOCKED"));
    assert!(why.summary.starts_with("parked: "), "{}", why.summary);
    assert!(why.advice.iter().any(|a| a.contains("shopctl workflow resume run-1")), "{:?}", why.advice);
}

#[test]
fn a_finished_run_says_how_it_ended_and_why() {
    let mut run = Run::new();
    run.take(CHARGE, 1);
    run.fail(CHARGE, 1, "PAYMENT_DECLINED", false);
    let refund = StepRef { phase: StepPhase::Compensation, index: 0 };
    let attempt = run.state.attempts.values().next().expect("the refund").attempt;
    run.take(refund, attempt);
    run.feed(Input::Completed { step: refund, attempt, output: JsonText::null() });
    let why = run.explain(&no_queues(), &[]);
    let ended = why.ended.as_ref().expect("ended");
    assert_eq!(ended.status, WorkflowStatus::Compensated);
    assert_eq!(
        ended.failure.as_ref().map(|f| (f.code.as_str(), f.step.as_str())),
        Some(("PAYMENT_DECLINED", "charge"))
    );
    assert!(why.summary.starts_with("COMPENSATED"), "{}", why.summary);
    assert!(why.steps.is_empty() && why.waits.is_empty() && why.execution_timeout.is_none());

    let mut run = Run::new();
    run.feed(Input::Terminate { reason: "test over".into(), by: Some("ops".into()) });
    let why = run.explain(&no_queues(), &[]);
    assert_eq!(why.ended.as_ref().and_then(|e| e.by.as_deref()), Some("ops"));
    assert!(why.summary.contains("by ops: test over"), "{}", why.summary);
}
