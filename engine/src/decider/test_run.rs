//! A run driven through the decider by the construct tests (`parallel_tests`,
//! `for_each_tests`, `child_prop_tests`): a definition, the run's state, its history so far and the time the test
//! sets. Each test module adds, in its own `impl Run`, only what is particular to its
//! construct (how to build its run, what to look at).

use super::*;
use crate::state::AttemptStatus;
use proptest::prelude::*;

pub(super) struct Run {
    pub(super) def: Definition,
    pub(super) state: WorkflowState,
    pub(super) history: Vec<Event>,
    pub(super) now: u64,
}

/// The history limit the test runs decide under: far above what they reach.
const MAX_HISTORY: u64 = 10_000;

impl Run {
    /// Starts a run of `toml` with `input`, at a fixed time.
    pub(super) fn start(file: &str, toml: &str, id: &str, input: JsonText) -> Run {
        let def = crate::definition::parse(file, toml).expect("valid");
        let now = 1_000_000;
        let mut state = WorkflowState::new(WorkflowId::parse(id).expect("valid"), &def, input.clone(), now);
        let history = start(&def, &mut state, &input, Context::new(now, MAX_HISTORY)).events;
        Run { def, state, history, now }
    }

    pub(super) fn feed(&mut self, input: Input) -> Result<(), Rejection> {
        self.feed_for_effects(input).map(drop)
    }

    /// [`feed`](Self::feed), returning what the decision asks of other runs.
    pub(super) fn feed_for_effects(&mut self, input: Input) -> Result<Vec<Effect>, Rejection> {
        let decision = decide(&self.def, &mut self.state, input, Context::new(self.now, MAX_HISTORY))?;
        self.history.extend(decision.events);
        Ok(decision.effects)
    }

    /// The attempts in flight that a worker holds (`started`) or that wait for one, by step.
    pub(super) fn standing(&self, started: bool) -> Vec<(StepRef, u32)> {
        self.state
            .attempts
            .values()
            .filter(|a| matches!(a.status, AttemptStatus::Started { .. }) == started)
            .filter(|a| !matches!(a.status, AttemptStatus::BackingOff { .. }))
            .map(|a| (a.step, a.attempt))
            .collect()
    }

    /// A worker takes forward step `index`'s scheduled attempt.
    pub(super) fn take(&mut self, index: u16) {
        let step = StepRef::forward(index);
        let (_, attempt) = *self.standing(false).iter().find(|(s, _)| *s == step).expect("scheduled");
        self.feed(Input::Started { step, attempt, worker: "w".parse().expect("valid") }).expect("starts");
    }

    /// The worker reports forward step `index`: completed with `{"i": index}`, or failed for
    /// good.
    pub(super) fn report(&mut self, index: u16, ok: bool) {
        let step = StepRef::forward(index);
        let (_, attempt) = *self.standing(true).iter().find(|(s, _)| *s == step).expect("started");
        let input = if ok {
            Input::Completed { step, attempt, output: JsonText::from_value(&serde_json::json!({ "i": index })) }
        } else {
            let error = ActivityError { error_type: "NO".into(), message: "no".into(), retryable: false };
            Input::Failed { step, attempt, error }
        };
        self.feed(input).expect("reported");
    }

    pub(super) fn names(&self) -> Vec<&'static str> {
        self.history.iter().map(|e| e.kind.name()).collect()
    }
}

/// One random thing that happens to a run, for the construct's property tests: a worker takes
/// or reports one of the attempts (picked by the number), the earliest timer fires, or the run
/// is cancelled.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Take(u8),
    Complete(u8),
    FailForGood(u8),
    FailRetryable(u8),
    Timer,
    Cancel,
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Take),
        4 => any::<u8>().prop_map(Op::Complete),
        1 => any::<u8>().prop_map(Op::FailForGood),
        1 => any::<u8>().prop_map(Op::FailRetryable),
        1 => Just(Op::Timer),
        1 => Just(Op::Cancel),
    ]
}

impl Run {
    /// Lets `op` happen and returns what it asks of other runs; a rejected input (a stale
    /// report, a cancel past the pivot) changes nothing, as in the engine.
    pub(super) fn act(&mut self, op: &Op) -> Vec<Effect> {
        let pick = |list: Vec<(StepRef, u32)>, i: u8| (!list.is_empty()).then(|| list[usize::from(i) % list.len()]);
        let input = match *op {
            Op::Take(i) => pick(self.standing(false), i).map(|(step, attempt)| Input::Started {
                step,
                attempt,
                worker: "w".parse().expect("valid"),
            }),
            Op::Complete(i) => pick(self.standing(true), i).map(|(step, attempt)| Input::Completed {
                step,
                attempt,
                output: JsonText::parse("{}").expect("valid"),
            }),
            Op::FailForGood(i) | Op::FailRetryable(i) => pick(self.standing(true), i).map(|(step, attempt)| {
                let retryable = matches!(op, Op::FailRetryable(_));
                let error = ActivityError { error_type: "E".into(), message: "e".into(), retryable };
                Input::Failed { step, attempt, error }
            }),
            Op::Timer => timers(&self.def, &self.state).into_iter().min_by_key(|t| t.due_ms).map(|timer| {
                self.now = self.now.max(timer.due_ms);
                Input::TimerFired(timer.kind)
            }),
            Op::Cancel => Some(Input::Cancel { reason: "c".into(), by: None }),
        };
        input.and_then(|input| self.feed_for_effects(input).ok()).unwrap_or_default()
    }
}

impl Run {
    /// Lets `op` happen, then checks what every construct that settles held attempts must
    /// keep (`settles` says which steps those are): a replay of the history reproduces the
    /// state; an attempt of such a step that a worker held is not dropped but by its own
    /// report or timeout; compensation never starts while one is held; and the compensation
    /// plan covers every handed-out step that has a compensation. Returns what `op` asks of
    /// other runs.
    pub(super) fn act_and_check(
        &mut self,
        op: &Op,
        settles: impl Fn(StepRef) -> bool,
    ) -> Result<Vec<Effect>, TestCaseError> {
        let held_before = self.standing(true);
        let before = self.history.len();
        let effects = self.act(op);
        let replayed = WorkflowState::replay(self.state.id.clone(), &self.def, &self.history).expect("replays");
        prop_assert_eq!(&replayed, &self.state);
        let new = &self.history[before..];
        for (step, attempt) in held_before.into_iter().filter(|(step, _)| settles(*step)) {
            let still = self.state.attempts.values().any(|a| a.step == step);
            let reported = new.iter().any(|e| {
                matches!(&e.kind,
                    EventKind::StepCompleted { step: s, attempt: a, .. }
                    | EventKind::StepFailed { step: s, attempt: a, .. }
                    | EventKind::StepTimedOut { step: s, attempt: a, .. } if *s == step && *a == attempt)
            });
            prop_assert!(still || reported, "{:?}#{} was dropped: {:?}", step, attempt, new);
        }
        // Replaying event by event: compensation never starts with such an attempt held.
        let mut state = WorkflowState::new(self.state.id.clone(), &self.def, self.state.input.clone(), 1_000_000);
        for event in &self.history[1..] {
            if matches!(event.kind, EventKind::CompensationStarted { .. }) {
                let held = state
                    .attempts
                    .values()
                    .any(|a| matches!(a.status, AttemptStatus::Started { .. }) && settles(a.step));
                prop_assert!(!held, "compensation started while an attempt was held");
            }
            state.apply(&self.def, event);
        }
        if let Some(plan) = &self.state.compensation_plan {
            for node in &self.state.handed_out {
                if let Some(comp) = self.def.compensation_of(*node) {
                    prop_assert!(plan.contains(&comp));
                }
            }
        }
        Ok(effects)
    }
}
