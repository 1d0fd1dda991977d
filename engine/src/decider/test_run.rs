//! A run driven through the decider by the construct tests (`parallel_tests`,
//! `for_each_tests`): a definition, the run's state, its history so far and the time the test
//! sets. Each test module adds, in its own `impl Run`, only what is particular to its
//! construct (how to build its run, what to look at).

use super::*;
use crate::state::AttemptStatus;

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
        let events = decide(&self.def, &mut self.state, input, Context::new(self.now, MAX_HISTORY))?.events;
        self.history.extend(events);
        Ok(())
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
