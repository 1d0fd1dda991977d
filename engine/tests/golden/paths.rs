//! The paths of the order saga the goldens record, and the driver that walks them through the
//! decider with a fixed clock. Used only by `regenerate`; the golden test itself only replays.

use super::{INPUT, RUN_ID};
use shop_engine::decider::{self, Context, Input, Rejection};
use shop_engine::definition::Definition;
use shop_engine::state::{AttemptStatus, WorkflowState};
use shop_types::history::{ActivityError, Event, EventKind};
use shop_types::{JsonText, WorkflowId};

/// When every golden run starts (milliseconds since the epoch).
const T0: u64 = 1_700_000_000_000;
/// The engine's default history limit.
const LIMIT: u64 = shop_types::limits::DEFAULT_MAX_HISTORY_EVENTS;

pub struct Path {
    pub name: &'static str,
    pub about: &'static str,
    pub definition: &'static str,
    pub max_history_events: u64,
    /// The run's input (`INPUT` but for the for_each goldens, which need several items).
    pub input: &'static str,
    /// Started as the engine starts runs since the hash is recorded (`start_pinned`: a
    /// `DefinitionPinned` event right after `WorkflowStarted`); the older paths were recorded
    /// before it and keep their histories.
    pub pinned: bool,
    /// Started as a child run (`start_child`: `ParentLinked` after `DefinitionPinned`), the
    /// child of step f1 of run `golden-0`.
    pub child: bool,
    /// Started traced (`TraceLinked` with this `traceparent` in the start batch).
    pub trace: Option<&'static str>,
    walk: fn(&mut Driver),
}

const fn path(name: &'static str, about: &'static str, walk: fn(&mut Driver)) -> Path {
    Path {
        name,
        about,
        definition: "order.toml",
        max_history_events: LIMIT,
        input: INPUT,
        pinned: false,
        child: false,
        trace: None,
        walk,
    }
}

/// A path of the parallel definition (`parallel.toml`): f0 reserve, f1 the parallel step,
/// f2 confirm, f3 charge (branch "payment"), f4 pick and f5 pack (branch "stock").
const fn par(name: &'static str, about: &'static str, walk: fn(&mut Driver)) -> Path {
    Path {
        name,
        about,
        definition: "parallel.toml",
        max_history_events: LIMIT,
        input: INPUT,
        pinned: false,
        child: false,
        trace: None,
        walk,
    }
}

/// A path of the for_each definition (`for_each.toml`), on `FE_INPUT`'s three items:
/// f0 reserve, f1 ship (for_each, 2 at once; item i's instance is forward ref `FE + i`),
/// f2 confirm.
const fn fe(name: &'static str, about: &'static str, walk: fn(&mut Driver)) -> Path {
    Path {
        name,
        about,
        definition: "for_each.toml",
        max_history_events: LIMIT,
        input: FE_INPUT,
        pinned: false,
        child: false,
        trace: None,
        walk,
    }
}

/// The input of the for_each goldens: three items.
const FE_INPUT: &str = r#"{"orderId":"golden-1","orderItems":[{"productId":1,"quantity":2},{"productId":2,"quantity":1},{"productId":3,"quantity":5}],"shippingAddress":"1 Main St","paymentMethod":"CREDIT_CARD"}"#;
/// The ref index of item 0 of the first for_each step.
const FE: u16 = shop_engine::definition::FOR_EACH_REF_BASE;

/// A path of the workflow language's definition (`language.toml`).
const fn lang(name: &'static str, about: &'static str, walk: fn(&mut Driver)) -> Path {
    Path {
        name,
        about,
        definition: "language.toml",
        max_history_events: LIMIT,
        input: INPUT,
        pinned: false,
        child: false,
        trace: None,
        walk,
    }
}

/// A path of the child workflow definition (`child.toml`, started pinned and itself a child
/// of `golden-0`): f0 reserve, f1 the child step (`payment` v2, child id `golden-1.pay`),
/// f2 confirm.
const fn child(name: &'static str, about: &'static str, walk: fn(&mut Driver)) -> Path {
    Path {
        name,
        about,
        definition: "child.toml",
        max_history_events: LIMIT,
        input: INPUT,
        pinned: true,
        child: true,
        trace: None,
        walk,
    }
}

/// The child run of `child.toml`'s step f1.
fn child_id() -> WorkflowId {
    WorkflowId::parse("golden-1.pay").expect("valid id")
}

pub const PATHS: &[Path] = &[
    child("child_completed", "reserve, the child completes with its output, confirm: CONFIRMED", |d| {
        d.step_ok();
        let output = JsonText::parse(r#"{"paid":true}"#).expect("valid json");
        let step = shop_types::StepRef::forward(1);
        d.feed(Input::ChildEnded { step, child: child_id(), outcome: Ok(output) }).expect("completes");
        d.step_ok();
    }),
    child("child_failed", "the child ends compensated: the step fails for good, release, COMPENSATED", |d| {
        d.step_ok();
        let step = shop_types::StepRef::forward(1);
        let outcome = Err("child golden-1.pay ended COMPENSATED: declined".to_owned());
        d.feed(Input::ChildEnded { step, child: child_id(), outcome }).expect("fails");
        d.finish_ok();
    }),
    child("child_cancelled", "a cancel while the child runs: compensation waits for the child", |d| {
        d.step_ok();
        d.feed(Input::Cancel { reason: "customer changed their mind".into(), by: None }).expect("cancels");
    }),
    child(
        "child_held",
        "reserve, the child completes (held), confirm: this run, a child itself, is held by golden-0",
        |d| {
            d.step_ok();
            let output = JsonText::parse(r#"{"paid":true}"#).expect("valid json");
            let step = shop_types::StepRef::forward(1);
            d.feed(Input::ChildEnded { step, child: child_id(), outcome: Ok(output) }).expect("completes");
            d.step_ok();
        },
    ),
    child(
        "child_compensates_held",
        "the child completes (held), confirm fails for good: the held child compensates itself, then release",
        |d| {
            d.step_ok();
            let output = JsonText::parse(r#"{"paid":true}"#).expect("valid json");
            let step = shop_types::StepRef::forward(1);
            d.feed(Input::ChildEnded { step, child: child_id(), outcome: Ok(output) }).expect("completes");
            d.wait(1_000);
            d.take();
            d.wait(500);
            d.fail("CONFIRM_REFUSED", false);
            d.wait(2_000);
            let outcome = Err("child golden-1.pay ended COMPENSATED: cancelled: the parent compensates".to_owned());
            d.feed(Input::ChildEnded { step, child: child_id(), outcome }).expect("compensated");
            d.finish_ok();
        },
    ),
    path("confirmed", "every step completes: CONFIRMED", |d| {
        (0..4).for_each(|_| d.step_ok());
    }),
    path("out_of_stock", "reserve fails for good: release (it was started), notify, COMPENSATED", |d| {
        d.take();
        d.fail("OUT_OF_STOCK", false);
        d.finish_ok();
    }),
    path("payment_declined", "charge declined: refund, release, notify, COMPENSATED", |d| {
        d.step_ok();
        d.take();
        d.fail("PAYMENT_DECLINED", false);
        d.finish_ok();
    }),
    path("payment_retried", "charge fails twice (transient), then everything completes", |d| {
        d.step_ok();
        for _ in 0..2 {
            d.take();
            d.fail("PAYMENT_UNAVAILABLE", true);
            d.wait(6_000);
        }
        d.finish_ok();
    }),
    path("timeout_start_to_close", "reserve hangs past start_to_close, is retried, then all completes", |d| {
        d.take();
        d.wait(10_500);
        d.finish_ok();
    }),
    path("timeout_schedule_to_start", "no worker takes reserve: timed out, nothing to undo, notify", |d| {
        d.wait(60_000);
        d.finish_ok();
    }),
    path("timeout_schedule_to_close", "charge hangs, its retry waits: the step's budget ends it", |d| {
        d.step_ok();
        d.wait(59_000);
        d.take();
        d.wait(60_000);
        d.finish_ok();
    }),
    Path {
        definition: "order_heartbeat.toml",
        ..path("timeout_heartbeat", "charge stops heartbeating: timed out, retried, completes", |d| {
            d.step_ok();
            d.take();
            d.wait(3_000);
            d.finish_ok();
        })
    },
    path("execution_timeout", "slow retried steps: the run's 5m timeout compensates before the pivot", |d| {
        d.slow_retried_step();
        d.slow_retried_step();
        d.wait(55_000);
        d.take();
        d.wait(5_000);
        d.fail("INVENTORY_UNAVAILABLE", true);
        d.wait(20_000);
        d.finish_ok();
    }),
    path("cancelled_mid_run", "cancel while charging: refund, release, notify; the late charge is stale", |d| {
        d.step_ok();
        let (step, attempt) = d.take();
        d.feed(Input::Cancel { reason: "customer changed their mind".into(), by: None }).expect("cancels");
        let late = Input::Completed { step, attempt, output: JsonText::null() };
        assert_eq!(d.feed(late), Err(Rejection::Stale));
        d.finish_ok();
    }),
    path("cancel_past_pivot", "confirmed, then a cancel is refused; notify_confirmed in flight", |d| {
        (0..3).for_each(|_| d.step_ok());
        assert_eq!(d.feed(Input::Cancel { reason: "too late".into(), by: None }), Err(Rejection::PastPivot));
    }),
    path("terminated", "an operator terminates the run while it charges", |d| {
        d.step_ok();
        d.take();
        d.feed(Input::Terminate { reason: "operator says stop".into(), by: None }).expect("terminates");
    }),
    path("compensation_parked", "the refund fails for good: the run is parked for an operator", |d| {
        d.step_ok();
        d.take();
        d.fail("PAYMENT_DECLINED", false);
        d.take();
        d.fail("REFUND_REJECTED", false);
    }),
    path("parked_resumed_compensated", "parked, resumed by an operator, then COMPENSATED", |d| {
        d.step_ok();
        d.take();
        d.fail("PAYMENT_DECLINED", false);
        d.take();
        d.fail("REFUND_REJECTED", false);
        d.wait(1_000);
        assert_eq!(d.feed(Input::Cancel { reason: "no-op".into(), by: None }), Ok(()));
        d.feed(Input::Resume { reason: "provider fixed".into(), by: None }).expect("resumes");
        d.finish_ok();
    }),
    Path {
        max_history_events: 12,
        ..path("history_limit", "compensation does not fit a 12-event history: FAILED at the limit", |d| {
            d.step_ok();
            d.take();
            d.fail("PAYMENT_DECLINED", false);
            d.finish_ok();
        })
    },
    Path {
        max_history_events: 28,
        ..path("history_soft_limit", "charge retries pass 3/4 of 28 events: compensating, FAILED at the limit", |d| {
            d.step_ok();
            // Even a worker taking an attempt may be the event that passes the soft limit.
            while !d.compensating() {
                d.take();
                if !d.compensating() {
                    d.fail("PAYMENT_UNAVAILABLE", true);
                    d.wait(6_000);
                }
            }
            d.finish_ok();
        })
    },
    path("charging", "stops mid-run: reserve done, a worker is charging", |d| {
        d.step_ok();
        d.take();
    }),
    path("charge_backing_off", "stops mid-run: the charge failed once and waits for its retry", |d| {
        d.step_ok();
        d.take();
        d.fail("PAYMENT_UNAVAILABLE", true);
    }),
    path("compensating", "stops mid-run: the charge was declined, a worker is refunding", |d| {
        d.step_ok();
        d.take();
        d.fail("PAYMENT_DECLINED", false);
        d.take();
    }),
    path("notify_failed_continues", "notify_confirmed fails for good: the order stays CONFIRMED", |d| {
        (0..3).for_each(|_| d.step_ok());
        d.take();
        d.fail("SMTP_DOWN", false);
    }),
    path("notify_cancelled_failed", "after compensation, notify_cancelled fails for good: COMPENSATED", |d| {
        d.take();
        d.fail("OUT_OF_STOCK", false);
        d.step_ok();
        d.take();
        d.fail("SMTP_DOWN", false);
    }),
    // The workflow language (issue 9), on language.toml.
    lang("lang_sleeping", "reserve done, the 10s sleep is under way", |d| {
        d.step_ok();
        d.wait(3_000);
    }),
    lang("lang_waiting", "the sleep ended: the wait for the payment signal is open", |d| {
        d.step_ok();
        d.wait(10_000);
    }),
    lang("lang_signal_completes", "confirmed arrives while waiting: card branch taken, gift wrap skipped", |d| {
        d.step_ok();
        d.wait(10_000);
        d.signal("confirmed", "k-1").expect("accepted");
        assert_eq!(d.signal("confirmed", "k-1"), Err(Rejection::DuplicateSignal));
        d.finish_ok();
    }),
    lang("lang_early_signal", "confirmed arrives while reserving: buffered, consumed when the wait opens", |d| {
        d.signal("confirmed", "k-early").expect("accepted");
        d.finish_ok();
    }),
    lang("lang_fail_on", "the failed signal ends the wait for good: release the stock, COMPENSATED", |d| {
        d.step_ok();
        d.wait(10_000);
        d.signal("failed", "k-2").expect("accepted");
        d.finish_ok();
    }),
    lang("lang_wait_timeout", "no signal in 15m: the wait times out, release the stock, COMPENSATED", |d| {
        d.step_ok();
        d.wait(10_000);
        d.wait(15 * 60_000);
        d.finish_ok();
    }),
    // Parallel branches (issue 9, part 4), on parallel.toml.
    par("par_running", "both branches in flight: pick held by a worker, charge waiting for one", |d| {
        d.step_ok();
        d.wait(1_000);
        d.take_step(4);
    }),
    par("par_completed", "both branches complete, in any order: confirm, COMPLETED", |d| {
        d.step_ok();
        d.wait(1_000);
        d.take_step(3);
        d.take_step(4);
        d.wait(500);
        d.complete_step(4);
        d.take_step(5);
        d.complete_step(3);
        d.wait(500);
        d.complete_step(5);
        d.finish_ok();
    }),
    par("par_branch_fails", "charge declined while pick is held: stop, pick settles, unpick, refund, release", |d| {
        d.step_ok();
        d.wait(1_000);
        d.take_step(3);
        d.take_step(4);
        d.wait(500);
        d.fail_step(3, "PAYMENT_DECLINED");
        d.wait(500);
        assert_eq!(d.feed(Input::Cancel { reason: "no-op while stopping".into(), by: None }), Ok(()));
        d.complete_step(4);
        d.finish_ok();
    }),
    par("par_cancelled", "a cancel while charge is held and pick waits: pick dropped, charge settles, refund", |d| {
        d.step_ok();
        d.wait(1_000);
        let (step, attempt) = d.take_step(3);
        d.feed(Input::Cancel { reason: "customer changed their mind".into(), by: None }).expect("cancels");
        let late =
            Input::Started { step: shop_types::StepRef::forward(4), attempt: 1, worker: "w".parse().expect("valid") };
        assert_eq!(d.feed(late), Err(Rejection::Stale));
        d.wait(500);
        let error =
            ActivityError { error_type: "PAYMENT_UNAVAILABLE".into(), message: "transient".into(), retryable: true };
        d.feed(Input::Failed { step, attempt, error }).expect("settles without a retry");
        d.finish_ok();
    }),
    fe("fe_running", "three items, two at once: item 0 held by a worker, item 1 waiting for one", |d| {
        d.step_ok();
        d.wait(1_000);
        d.take_step(FE);
    }),
    fe("fe_completed", "items complete out of order, item 2 starts when one ends: output in item order", |d| {
        d.step_ok();
        d.wait(1_000);
        d.take_step(FE);
        d.take_step(FE + 1);
        d.wait(500);
        d.complete_step(FE + 1);
        d.take_step(FE + 2);
        d.wait(500);
        d.complete_step(FE + 2);
        d.complete_step(FE);
        d.finish_ok();
    }),
    fe("fe_item_fails", "item 1 declined while item 0 is held: stop, item 0 settles, unship 0 and 1, release", |d| {
        d.step_ok();
        d.wait(1_000);
        d.take_step(FE);
        d.take_step(FE + 1);
        d.wait(500);
        d.fail_step(FE + 1, "ADDRESS_INVALID");
        d.wait(500);
        assert_eq!(d.feed(Input::Cancel { reason: "no-op while stopping".into(), by: None }), Ok(()));
        d.complete_step(FE);
        d.finish_ok();
    }),
    Path {
        name: "pinned_confirmed",
        about: "started with the definition's hash pinned (event #2); every step completes: CONFIRMED",
        definition: "order.toml",
        max_history_events: LIMIT,
        input: INPUT,
        pinned: true,
        child: false,
        trace: None,
        walk: |d| (0..4).for_each(|_| d.step_ok()),
    },
    fe("fe_cancelled", "a cancel while item 0 is held and item 1 waits: item 1 dropped, item 0 settles, unship", |d| {
        d.step_ok();
        d.wait(1_000);
        d.take_step(FE);
        d.feed(Input::Cancel { reason: "customer changed their mind".into(), by: None }).expect("cancels");
        d.wait(500);
        d.complete_step(FE);
        d.finish_ok();
    }),
    audited("audited_cancelled", "an operator's cancel names who asked (CancelRequestedBy), then compensates", |d| {
        d.step_ok();
        d.take();
        let by = Some(AUDITED_BY.to_owned());
        d.feed(Input::Cancel { reason: "customer changed their mind".into(), by }).expect("cancels");
        d.finish_ok();
    }),
    audited("audited_terminated", "an operator's terminate names who asked (WorkflowTerminatedBy)", |d| {
        d.step_ok();
        d.take();
        let by = Some(AUDITED_BY.to_owned());
        d.feed(Input::Terminate { reason: "operator says stop".into(), by }).expect("terminates");
    }),
    audited("audited_resumed", "parked, resumed by a named operator (RunResumedBy), then COMPENSATED", |d| {
        d.step_ok();
        d.take();
        d.fail("PAYMENT_DECLINED", false);
        d.take();
        d.fail("REFUND_REJECTED", false);
        d.wait(1_000);
        let by = Some(AUDITED_BY.to_owned());
        d.feed(Input::Resume { reason: "provider fixed".into(), by }).expect("resumes");
        d.finish_ok();
    }),
    Path {
        trace: Some(TRACEPARENT),
        ..audited("traced_declined", "started traced (TraceLinked in the start batch), declined, COMPENSATED", |d| {
            d.step_ok();
            d.take();
            d.fail("PAYMENT_DECLINED", false);
            d.finish_ok();
        })
    },
];

/// The `traceparent` of the traced golden's request span.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Who asks for the audited goldens' actions: a token's subject as the API records it.
const AUDITED_BY: &str = "token:tok_golden";

/// A path of the order saga started as the engine starts runs today (pinned), whose operator
/// actions name who asked for them.
const fn audited(name: &'static str, about: &'static str, walk: fn(&mut Driver)) -> Path {
    Path { pinned: true, ..path(name, about, walk) }
}

/// A run being driven: the state, and the history as records (one per transition).
pub struct Driver<'a> {
    definition: &'a Definition,
    pub state: WorkflowState,
    pub records: Vec<Vec<Event>>,
    now: u64,
    limit: u64,
}

pub fn drive<'a>(path: &Path, definition: &'a Definition) -> Driver<'a> {
    let input = JsonText::parse(path.input).expect("valid json");
    let id = WorkflowId::parse(RUN_ID).expect("valid id");
    let mut state = WorkflowState::new(id, definition, input.clone(), T0);
    let ctx = Context { trace: path.trace, ..Context::new(T0, path.max_history_events) };
    let first = if path.child {
        let parent = WorkflowId::parse("golden-0").expect("valid id");
        let link = shop_engine::state::ParentLink { parent, step: shop_types::StepRef::forward(1), depth: 1 };
        decider::start_child(definition, &mut state, &input, link, ctx).events
    } else if path.pinned {
        decider::start_pinned(definition, &mut state, &input, ctx).events
    } else {
        decider::start(definition, &mut state, &input, ctx).events
    };
    let mut driver = Driver { definition, state, records: vec![first], now: T0, limit: path.max_history_events };
    (path.walk)(&mut driver);
    driver
}

impl Driver<'_> {
    pub fn feed(&mut self, input: Input) -> Result<(), Rejection> {
        let ctx = Context::new(self.now, self.limit);
        let events = decider::decide(self.definition, &mut self.state, input, ctx)?.events;
        if !events.is_empty() {
            self.records.push(events);
        }
        Ok(())
    }

    fn in_flight(&self) -> Option<(shop_types::StepRef, u32, AttemptStatus)> {
        self.state.in_flight().next().map(|(s, a, st)| (s, a, st.clone()))
    }

    fn compensating(&self) -> bool {
        self.records.iter().flatten().any(|e| matches!(e.kind, EventKind::CompensationStarted { .. }))
    }

    /// Lets `ms` pass, firing every timer that falls due on the way, each at its due time.
    pub fn wait(&mut self, ms: u64) {
        let until = self.now + ms;
        loop {
            let next = decider::timers(self.definition, &self.state).into_iter().filter(|t| t.due_ms <= until).min();
            let Some(timer) = next else { break };
            self.now = self.now.max(timer.due_ms);
            self.feed(Input::TimerFired(timer.kind)).expect("a live timer fires");
        }
        self.now = until;
    }

    /// A worker takes the scheduled attempt of forward step `index`.
    pub fn take_step(&mut self, index: u16) -> (shop_types::StepRef, u32) {
        let step = shop_types::StepRef::forward(index);
        let attempt = self.attempt_of(step);
        self.feed(Input::Started { step, attempt, worker: "golden-worker".parse().expect("valid") }).expect("starts");
        (step, attempt)
    }

    /// The attempt of forward step `index` in flight completes.
    pub fn complete_step(&mut self, index: u16) {
        let step = shop_types::StepRef::forward(index);
        let attempt = self.attempt_of(step);
        let output = JsonText::parse(format!(r#"{{"done":"{index}#{attempt}"}}"#)).expect("valid json");
        self.feed(Input::Completed { step, attempt, output }).expect("completes");
    }

    /// The attempt of forward step `index` in flight fails for good with `error_type`.
    pub fn fail_step(&mut self, index: u16, error_type: &str) {
        let step = shop_types::StepRef::forward(index);
        let attempt = self.attempt_of(step);
        let error = ActivityError { error_type: error_type.into(), message: "golden failure".into(), retryable: false };
        self.feed(Input::Failed { step, attempt, error }).expect("fails");
    }

    fn attempt_of(&self, step: shop_types::StepRef) -> u32 {
        self.state.in_flight().find(|(s, _, _)| *s == step).map(|(_, a, _)| a).expect("the step is in flight")
    }

    /// A signal arrives, with an empty object as its payload.
    pub fn signal(&mut self, name: &str, key: &str) -> Result<(), Rejection> {
        let payload = JsonText::parse(r#"{"signal":true}"#).expect("valid json");
        self.feed(Input::Signal { name: name.into(), key: key.into(), payload })
    }

    /// A worker takes the scheduled attempt in flight.
    pub fn take(&mut self) -> (shop_types::StepRef, u32) {
        let (step, attempt, status) = self.in_flight().expect("an attempt is in flight");
        assert!(matches!(status, AttemptStatus::Scheduled { .. }), "{step:?} is {status:?}");
        self.feed(Input::Started { step, attempt, worker: "golden-worker".parse().expect("valid") }).expect("starts");
        (step, attempt)
    }

    pub fn complete(&mut self) {
        let (step, attempt, _) = self.in_flight().expect("an attempt is in flight");
        let output = JsonText::parse(format!(r#"{{"done":"{}#{attempt}"}}"#, step.index)).expect("valid json");
        self.feed(Input::Completed { step, attempt, output }).expect("completes");
    }

    pub fn fail(&mut self, error_type: &str, retryable: bool) {
        let (step, attempt, _) = self.in_flight().expect("an attempt is in flight");
        let error = ActivityError { error_type: error_type.into(), message: "golden failure".into(), retryable };
        self.feed(Input::Failed { step, attempt, error }).expect("fails");
    }

    /// The attempt in flight is taken after 1s and completes 500ms later.
    /// Near a small history limit, taking it may be what ends or redirects the run; then
    /// there is nothing to complete.
    pub fn step_ok(&mut self) {
        self.wait(1_000);
        let taken = self.take();
        self.wait(500);
        if self.in_flight().is_some_and(|(step, attempt, _)| (step, attempt) == taken) {
            self.complete();
        }
    }

    /// Taken late, fails once, retried and taken late again, then completes: almost two
    /// minutes for one step.
    pub fn slow_retried_step(&mut self) {
        self.wait(55_000);
        self.take();
        self.wait(5_000);
        self.fail("INVENTORY_UNAVAILABLE", true);
        self.wait(50_000);
        self.take();
        self.wait(5_000);
        self.complete();
    }

    /// Workers complete whatever is in flight until the run ends (or waits for an operator).
    pub fn finish_ok(&mut self) {
        for _ in 0..100 {
            if self.state.terminal.is_some() || self.state.parked.is_some() {
                return;
            }
            match self.in_flight() {
                Some((_, _, AttemptStatus::BackingOff { until_ms })) => self.wait(until_ms - self.now),
                Some(_) => self.step_ok(),
                // A sleep in flight: let it end.
                None if !self.state.sleeps.is_empty() => {
                    let until = self.state.sleeps.values().map(|s| s.until_ms).min().unwrap_or(self.now);
                    self.wait(until.saturating_sub(self.now));
                }
                None => panic!("a running run with nothing in flight"),
            }
        }
        panic!("the run did not end");
    }
}
