//! A workflow run's state: a fold over its history events.
//!
//! `WorkflowState::apply` is the only way state changes, both when the decider emits a new
//! event and when a history is replayed at start-up, so a replay reproduces exactly the state
//! the engine had. It does no I/O and reads no clock.

use crate::definition::{Definition, OnFailure};
use shop_types::api::WorkflowStatus;
use shop_types::history::{Event, EventKind};
use shop_types::{JsonText, StepPhase, StepRef, WorkflowId};

/// Where the current attempt of the current step stands.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptStatus {
    /// Waiting in its task queue for a worker.
    Scheduled { at_ms: u64 },
    /// Handed to a worker, under a lease.
    Started {
        at_ms: u64,
        /// Last sign of life from the worker. Kept in memory only (heartbeats are not history
        /// events); replay sets it to the start time.
        last_heartbeat_ms: u64,
    },
    /// Waiting for the retry backoff to end.
    BackingOff { until_ms: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CurrentStep {
    pub step: StepRef,
    pub attempt: u32,
    pub status: AttemptStatus,
    /// When attempt 1 was scheduled: the start of the `schedule_to_close` budget.
    pub first_scheduled_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Terminal {
    pub status: WorkflowStatus,
    pub at_ms: u64,
    pub reason: Option<String>,
    pub output: Option<JsonText>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowState {
    pub id: WorkflowId,
    pub workflow_type: String,
    pub definition_version: u32,
    pub input: JsonText,
    pub created_at_ms: u64,
    /// The sequence number the next event gets.
    pub next_seq: u64,
    /// Outputs of completed forward steps, in completion order.
    pub results: Vec<(String, JsonText)>,
    /// Per forward step: whether any attempt was handed to a worker (and so may have had an
    /// effect that compensation must undo).
    pub started: Vec<bool>,
    /// Index of the next forward step to schedule.
    pub next_forward: u16,
    /// The pivot step has completed: from here on nothing is compensated.
    pub pivot_passed: bool,
    pub cancel_requested: Option<String>,
    /// Set once compensation starts: the forward steps to undo, in the order to undo them.
    pub compensation_plan: Option<Vec<u16>>,
    pub compensation_reason: Option<String>,
    /// Position in `compensation_plan` of the next compensation to schedule.
    pub next_compensation: usize,
    /// Index of the next after-compensation step to schedule.
    pub next_after: u16,
    pub current: Option<CurrentStep>,
    /// The step that last failed for good, and its last attempt: what a resume retries.
    pub last_failed: Option<(StepRef, u32)>,
    /// Set while the run waits for an operator after a compensation failed for good.
    pub parked: Option<String>,
    /// Attempts of the current step made before the last resume: the retry policy counts
    /// from here, while attempt numbers (and so task tokens) keep growing.
    pub attempt_base: u32,
    pub terminal: Option<Terminal>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("history does not begin with WorkflowStarted")]
    NotStarted,
    #[error("event #{found} where #{expected} was expected")]
    Gap { expected: u64, found: u64 },
    #[error("event #{seq} comes after the terminal event")]
    AfterTerminal { seq: u64 },
    #[error("history is empty")]
    Empty,
}

impl WorkflowState {
    /// The state right after `WorkflowStarted` (event #1).
    pub fn new(id: WorkflowId, definition: &Definition, input: JsonText, at_ms: u64) -> Self {
        WorkflowState {
            id,
            workflow_type: definition.name.clone(),
            definition_version: definition.version,
            input,
            created_at_ms: at_ms,
            next_seq: 2,
            results: Vec::new(),
            started: vec![false; definition.steps.len()],
            next_forward: 0,
            pivot_passed: false,
            cancel_requested: None,
            compensation_plan: None,
            compensation_reason: None,
            next_compensation: 0,
            next_after: 0,
            current: None,
            last_failed: None,
            parked: None,
            attempt_base: 0,
            terminal: None,
        }
    }

    /// Rebuilds a state from a stored history, checking its shape as it goes.
    pub fn replay(id: WorkflowId, definition: &Definition, events: &[Event]) -> Result<Self, ReplayError> {
        let first = events.first().ok_or(ReplayError::Empty)?;
        let EventKind::WorkflowStarted { input, .. } = &first.kind else {
            return Err(ReplayError::NotStarted);
        };
        if first.seq != 1 {
            return Err(ReplayError::Gap { expected: 1, found: first.seq });
        }
        let mut state = WorkflowState::new(id, definition, input.clone(), first.at_ms);
        for event in &events[1..] {
            if state.terminal.is_some() {
                return Err(ReplayError::AfterTerminal { seq: event.seq });
            }
            if event.seq != state.next_seq {
                return Err(ReplayError::Gap { expected: state.next_seq, found: event.seq });
            }
            state.apply(definition, event);
        }
        Ok(state)
    }

    pub fn status(&self) -> WorkflowStatus {
        match (&self.terminal, &self.parked) {
            (Some(terminal), _) => terminal.status,
            (None, Some(_)) => WorkflowStatus::Failed,
            (None, None) => WorkflowStatus::Running,
        }
    }

    /// The attempts in flight, as (step, attempt, where it stands). Today's sequential saga
    /// has at most one.
    pub fn in_flight(&self) -> impl Iterator<Item = (StepRef, u32, &AttemptStatus)> + '_ {
        self.current.iter().map(|c| (c.step, c.attempt, &c.status))
    }

    /// The results of completed steps as one JSON object, by step name.
    pub fn results_json(&self) -> JsonText {
        JsonText::object(self.results.iter().map(|(name, output)| (name.as_str(), output)))
    }

    /// Applies one event. The caller guarantees `event.seq == self.next_seq`.
    pub fn apply(&mut self, definition: &Definition, event: &Event) {
        self.next_seq = event.seq + 1;
        let at = event.at_ms;
        match &event.kind {
            EventKind::WorkflowStarted { .. } => {}
            EventKind::StepScheduled { step, attempt } => {
                if *attempt == 1 {
                    self.attempt_base = 0;
                }
                let first_scheduled_at_ms = match &self.current {
                    Some(current) if current.step == *step => current.first_scheduled_at_ms,
                    _ => at,
                };
                self.current = Some(CurrentStep {
                    step: *step,
                    attempt: *attempt,
                    status: AttemptStatus::Scheduled { at_ms: at },
                    first_scheduled_at_ms,
                });
            }
            EventKind::StepStarted { step, .. } => {
                if step.phase == StepPhase::Forward {
                    if let Some(flag) = self.started.get_mut(usize::from(step.index)) {
                        *flag = true;
                    }
                }
                if let Some(current) = &mut self.current {
                    current.status = AttemptStatus::Started { at_ms: at, last_heartbeat_ms: at };
                }
            }
            EventKind::StepCompleted { step, output, .. } => {
                self.current = None;
                match step.phase {
                    StepPhase::Forward => {
                        if let Some(def) = definition.step(*step) {
                            self.results.push((def.name.clone(), output.clone()));
                            if def.pivot {
                                self.pivot_passed = true;
                            }
                        }
                        self.next_forward = step.index + 1;
                    }
                    StepPhase::Compensation => self.next_compensation += 1,
                    StepPhase::AfterCompensation => self.next_after = step.index + 1,
                }
            }
            EventKind::StepFailed { step, attempt, will_retry, .. }
            | EventKind::StepTimedOut { step, attempt, will_retry, .. } => {
                if *will_retry {
                    return;
                }
                self.current = None;
                self.last_failed = Some((*step, *attempt));
                // A permanent failure of a step that may continue moves past it; one that
                // compensates or fails the run is followed by the event that says so.
                let continues = definition.step(*step).is_some_and(|d| d.on_failure == OnFailure::Continue);
                match step.phase {
                    StepPhase::Forward if continues => self.next_forward = step.index + 1,
                    StepPhase::AfterCompensation => self.next_after = step.index + 1,
                    _ => {}
                }
            }
            EventKind::StepRetryScheduled { step, attempt, delay_ms } => {
                let first_scheduled_at_ms = self.current.as_ref().map_or(at, |c| c.first_scheduled_at_ms);
                self.current = Some(CurrentStep {
                    step: *step,
                    attempt: *attempt,
                    status: AttemptStatus::BackingOff { until_ms: at.saturating_add(*delay_ms) },
                    first_scheduled_at_ms,
                });
            }
            EventKind::CancelRequested { reason } => self.cancel_requested = Some(reason.clone()),
            EventKind::CompensationStarted { reason } => {
                // Undo, newest first, every forward step that was handed to a worker and has a
                // compensation. The step in flight is abandoned: a late report of it is stale.
                let plan = (0..self.started.len())
                    .rev()
                    .filter(|&i| self.started[i] && definition.compensations.get(i).is_some_and(Option::is_some))
                    .filter_map(|i| u16::try_from(i).ok())
                    .collect();
                self.compensation_plan = Some(plan);
                self.compensation_reason = Some(reason.clone());
                self.current = None;
            }
            EventKind::WorkflowCompleted { output } => {
                self.finish(WorkflowStatus::Completed, at, None, Some(output.clone()));
            }
            EventKind::WorkflowCompensated { reason } => {
                self.finish(WorkflowStatus::Compensated, at, Some(reason.clone()), None);
            }
            EventKind::WorkflowFailed { reason } => self.finish(WorkflowStatus::Failed, at, Some(reason.clone()), None),
            EventKind::WorkflowTerminated { reason } => {
                self.finish(WorkflowStatus::Terminated, at, Some(reason.clone()), None);
            }
            EventKind::RunParked { reason } => {
                self.current = None;
                self.parked = Some(reason.clone());
            }
            EventKind::RunResumed { .. } => {
                self.parked = None;
                self.attempt_base = self.last_failed.map_or(0, |(_, attempt)| attempt);
            }
        }
    }

    fn finish(&mut self, status: WorkflowStatus, at_ms: u64, reason: Option<String>, output: Option<JsonText>) {
        self.current = None;
        self.terminal = Some(Terminal { status, at_ms, reason, output });
    }
}
