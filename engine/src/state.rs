//! A workflow run's state: a fold over its history events.
//!
//! `WorkflowState::apply` is the only way state changes, both when the decider emits a new
//! event and when a history is replayed at start-up, so a replay reproduces exactly the state
//! the engine had. It does no I/O and reads no clock.
//!
//! A run is a set of steps in flight: `attempts` maps each node of the definition that has an
//! attempt under way (scheduled, started or backing off) to that attempt, and `done` holds the
//! nodes that are finished with. What to schedule next is the decider's business, derived
//! from these sets and the definition's order; the state never holds a cursor into a list.
//! A sequential run has at most one attempt in flight; a `parallel` step has one per branch
//! (at most), keyed the same way; a `for_each` step one per instance in flight, each
//! instance being a node of its own.

use crate::definition::{Definition, NodeId, NodeKind, OnFailure};
use shop_types::api::WorkflowStatus;
use shop_types::history::{Event, EventKind};
use shop_types::{JsonText, StepRef, WorkflowId};
use std::collections::{BTreeMap, BTreeSet};

mod child;
mod for_each;
mod language;
mod parallel;

pub use child::{OpenChild, ParentLink};
pub use for_each::{for_each_items, OpenForEach};
pub use language::{signal_digest, OpenSleep, OpenWait, ReceivedSignal};
pub use parallel::OpenParallel;

/// Where an attempt in flight stands.
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

/// The attempt in flight of one node. Its timers are derived from it (see
/// `decider::timers`), so they live and die with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The node as stored events and task tokens name it.
    pub step: StepRef,
    pub attempt: u32,
    pub status: AttemptStatus,
    /// When attempt 1 was scheduled: the start of the `schedule_to_close` budget.
    pub first_scheduled_at_ms: u64,
    /// Attempts made before the last resume: the retry policy counts from here, while
    /// attempt numbers (and so task tokens) keep growing.
    pub attempt_base: u32,
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
    pub workflow_type: shop_types::WorkflowType,
    pub definition_version: u32,
    pub input: JsonText,
    pub created_at_ms: u64,
    /// The sequence number the next event gets.
    pub next_seq: u64,
    /// The hash of the definition the run was started on (`DefinitionPinned`); `None` for
    /// runs started before it was recorded.
    pub definition_hash: Option<String>,
    /// The run's trace (`TraceLinked`): the `traceparent` of the request span that started
    /// it; its attempts' spans are derived from it.
    pub trace: Option<String>,
    /// Outputs of completed forward steps, in completion order.
    pub results: Vec<(String, JsonText)>,
    /// The attempts in flight, by node.
    pub attempts: BTreeMap<NodeId, Attempt>,
    /// Nodes finished with: completed, or failed for good where the run goes on past them.
    pub done: BTreeSet<NodeId>,
    /// Forward nodes an attempt of which was handed to a worker (and so may have had an
    /// effect that compensation must undo), and waits that consumed a signal.
    pub handed_out: BTreeSet<NodeId>,
    /// `handed_out` in the order its nodes settled (completed, or failed for good), those
    /// still running after them in hand-out order: compensation undoes them newest first, so
    /// in reverse order of completion across parallel branches.
    pub handed_out_order: Vec<NodeId>,
    /// Sleeps in flight, by node.
    pub sleeps: BTreeMap<NodeId, OpenSleep>,
    /// Waits in flight, by node.
    pub waits: BTreeMap<NodeId, OpenWait>,
    /// Every signal accepted, in history order (buffered until consumed; the keys are the
    /// run's de-duplication record).
    pub signals: Vec<ReceivedSignal>,
    /// The branch each choice took.
    pub choices: BTreeMap<NodeId, String>,
    /// `parallel` steps in flight, by node.
    pub parallels: BTreeMap<NodeId, OpenParallel>,
    /// `for_each` steps in flight, by node.
    pub for_eachs: BTreeMap<NodeId, OpenForEach>,
    /// The items of every `for_each` step started, by node (kept after the step completes:
    /// an instance's compensation is given its item).
    pub for_each_items: BTreeMap<NodeId, Vec<JsonText>>,
    /// Child runs in flight, by the node of the step that started them. Kept when
    /// compensation starts: it waits for their terminal outcome.
    pub children: BTreeMap<NodeId, OpenChild>,
    /// Child runs that completed (their step did) and are held until this run's verdict:
    /// completed with it, or told to compensate when its compensation reaches their step.
    pub held_children: BTreeMap<NodeId, OpenChild>,
    /// Set in a child run: its parent and depth (`ParentLinked`).
    pub parent: Option<ParentLink>,
    /// Set in a child run whose forward path completed (`HeldByParent`): the output it went
    /// to its parent with, and completes with if the parent does.
    pub held_by_parent: Option<JsonText>,
    /// Set when a `parallel` step stopped (a branch failed for good, a cancel, a timeout):
    /// why the run will compensate once the attempts workers hold have settled.
    pub stopping: Option<String>,
    /// The pivot step has completed: from here on nothing is compensated.
    pub pivot_passed: bool,
    pub cancel_requested: Option<String>,
    /// Set once compensation starts: the compensation nodes to run, in the order to run them
    /// (a child step's own forward node stands for its child compensating itself).
    pub compensation_plan: Option<Vec<NodeId>>,
    pub compensation_reason: Option<String>,
    /// The node that last failed for good, and its last attempt: what a resume retries.
    pub last_failed: Option<(NodeId, u32)>,
    /// Set while the run is parked: waiting for an operator after a compensation failed for
    /// good.
    pub parked: Option<String>,
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
            definition_hash: None,
            trace: None,
            results: Vec::new(),
            attempts: BTreeMap::new(),
            done: BTreeSet::new(),
            handed_out: BTreeSet::new(),
            handed_out_order: Vec::new(),
            sleeps: BTreeMap::new(),
            waits: BTreeMap::new(),
            signals: Vec::new(),
            choices: BTreeMap::new(),
            parallels: BTreeMap::new(),
            for_eachs: BTreeMap::new(),
            for_each_items: BTreeMap::new(),
            children: BTreeMap::new(),
            held_children: BTreeMap::new(),
            parent: None,
            held_by_parent: None,
            stopping: None,
            pivot_passed: false,
            cancel_requested: None,
            compensation_plan: None,
            compensation_reason: None,
            last_failed: None,
            parked: None,
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

    /// The attempts in flight, as (step, attempt, where it stands).
    pub fn in_flight(&self) -> impl Iterator<Item = (StepRef, u32, &AttemptStatus)> + '_ {
        self.attempts.values().map(|a| (a.step, a.attempt, &a.status))
    }

    /// The one attempt in flight of a sequential run (the first by node, should there be
    /// more). Callers that must serve parallel branches look attempts up by node instead.
    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.values().next()
    }

    /// [`current`](Self::current), to update in place (a heartbeat).
    pub fn current_mut(&mut self) -> Option<&mut Attempt> {
        self.attempts.values_mut().next()
    }

    /// The attempt in flight of `node`, if any.
    pub fn attempt(&self, node: NodeId) -> Option<&Attempt> {
        self.attempts.get(&node)
    }

    /// The results of completed steps as one JSON object, by step name.
    pub fn results_json(&self) -> JsonText {
        JsonText::object(self.results.iter().map(|(name, output)| (name.as_str(), output)))
    }

    /// Applies one event. The caller guarantees `event.seq == self.next_seq`. An event that
    /// names a step the definition does not have changes nothing but the sequence.
    pub fn apply(&mut self, definition: &Definition, event: &Event) {
        self.next_seq = event.seq + 1;
        let at = event.at_ms;
        let node = event.kind.step().and_then(|step| definition.node_id(step));
        match (&event.kind, node) {
            (EventKind::WorkflowStarted { .. }, _) => {}
            (EventKind::DefinitionPinned { content_hash }, _) => self.definition_hash = Some(content_hash.clone()),
            (EventKind::TraceLinked { traceparent }, _) => self.trace = Some(traceparent.clone()),
            (EventKind::StepScheduled { step, attempt }, Some(node)) => {
                // A retry keeps its budget and its base; a first attempt starts both afresh;
                // a later attempt of a node with none in flight is the one a resume schedules.
                let (first_scheduled_at_ms, attempt_base) = match self.attempts.get(&node) {
                    Some(previous) if *attempt != 1 => (previous.first_scheduled_at_ms, previous.attempt_base),
                    _ if *attempt == 1 => (at, 0),
                    _ => (at, attempt - 1),
                };
                let status = AttemptStatus::Scheduled { at_ms: at };
                let entry = Attempt { step: *step, attempt: *attempt, status, first_scheduled_at_ms, attempt_base };
                self.attempts.insert(node, entry);
                if *attempt == 1 && definition.node_kind(node) == Some(NodeKind::Instance) {
                    self.instance_begun(definition, node);
                }
            }
            (EventKind::StepStarted { .. }, Some(node)) => {
                if matches!(definition.node_kind(node), Some(NodeKind::Step | NodeKind::Instance)) {
                    self.hand_out(node);
                }
                if let Some(entry) = self.attempts.get_mut(&node) {
                    entry.status = AttemptStatus::Started { at_ms: at, last_heartbeat_ms: at };
                }
            }
            (EventKind::StepCompleted { output, .. }, Some(node)) => {
                self.attempts.remove(&node);
                self.done.insert(node);
                self.settle(node);
                if definition.node_kind(node) == Some(NodeKind::Step) {
                    if let Some(def) = definition.node_def(node) {
                        self.results.push((def.name.to_string(), output.clone()));
                        self.pivot_passed |= def.pivot;
                    }
                }
                if definition.node_kind(node) == Some(NodeKind::Instance) {
                    self.instance_settled(definition, node, Some(output));
                }
            }
            (
                EventKind::StepFailed { attempt, will_retry, .. } | EventKind::StepTimedOut { attempt, will_retry, .. },
                Some(node),
            ) => {
                if *will_retry {
                    return;
                }
                self.attempts.remove(&node);
                self.settle(node);
                self.last_failed = Some((node, *attempt));
                // A permanent failure of a step that may continue moves past it, and so does
                // one after compensation (a failure there that ends the run is followed by the
                // event that says so); one that compensates or parks leaves the node undone.
                let continues = definition.node_def(node).is_some_and(|d| d.on_failure == OnFailure::Continue);
                match definition.node_kind(node) {
                    Some(NodeKind::Step) if continues => {
                        self.done.insert(node);
                    }
                    Some(NodeKind::AfterCompensation) => {
                        self.done.insert(node);
                    }
                    Some(NodeKind::Instance) => self.instance_settled(definition, node, None),
                    _ => {}
                }
            }
            (EventKind::StepRetryScheduled { step, attempt, delay_ms }, Some(node)) => {
                let entry = self.attempts.entry(node).or_insert_with(|| orphan(*step, *attempt, at));
                entry.attempt = *attempt;
                entry.status = AttemptStatus::BackingOff { until_ms: at.saturating_add(*delay_ms) };
            }
            (EventKind::CancelRequested { reason } | EventKind::CancelRequestedBy { reason, .. }, _) => {
                self.cancel_requested = Some(reason.clone())
            }
            (EventKind::CompensationStarted { reason }, _) => {
                // Undo, newest first, every forward step that was handed to a worker (or wait
                // that consumed a signal) and has a compensation, and every child step (its
                // child compensates itself, if it is held then). The steps in flight are
                // abandoned: a late report is stale; a sleep or wait in flight just ends.
                let plan = self
                    .handed_out_order
                    .iter()
                    .rev()
                    .filter_map(|&node| {
                        definition.compensation_of(node).or_else(|| definition.child_of(node).map(|_| node))
                    })
                    .collect();
                self.compensation_plan = Some(plan);
                self.compensation_reason = Some(reason.clone());
                self.stopping = None;
                self.clear_in_flight();
            }
            (EventKind::WorkflowCompleted { output }, _) => {
                self.finish(WorkflowStatus::Completed, at, None, Some(output.clone()));
            }
            (EventKind::WorkflowCompensated { reason }, _) => {
                self.finish(WorkflowStatus::Compensated, at, Some(reason.clone()), None);
            }
            (EventKind::WorkflowFailed { reason }, _) => {
                self.finish(WorkflowStatus::Failed, at, Some(reason.clone()), None);
            }
            (EventKind::WorkflowTerminated { reason } | EventKind::WorkflowTerminatedBy { reason, .. }, _) => {
                self.finish(WorkflowStatus::Terminated, at, Some(reason.clone()), None);
            }
            (EventKind::RunParked { reason }, _) => {
                self.clear_in_flight();
                self.parked = Some(reason.clone());
            }
            (EventKind::RunResumed { .. } | EventKind::RunResumedBy { .. }, _) => self.parked = None,
            // A step the definition does not have: nothing to key it by.
            (
                EventKind::StepScheduled { .. }
                | EventKind::StepStarted { .. }
                | EventKind::StepCompleted { .. }
                | EventKind::StepFailed { .. }
                | EventKind::StepTimedOut { .. }
                | EventKind::StepRetryScheduled { .. },
                None,
            ) => {}
            (
                EventKind::SleepStarted { .. }
                | EventKind::SleepEnded { .. }
                | EventKind::SignalReceived { .. }
                | EventKind::WaitOpened { .. }
                | EventKind::WaitCompleted { .. }
                | EventKind::WaitTimedOut { .. }
                | EventKind::StepSkipped { .. }
                | EventKind::ChoiceTaken { .. },
                node,
            ) => self.apply_language(definition, event, node),
            (
                EventKind::ParallelStarted { .. }
                | EventKind::BranchCompleted { .. }
                | EventKind::ParallelStopped { .. },
                node,
            ) => self.apply_parallel(definition, event, node),
            (EventKind::ForEachStarted { .. } | EventKind::ForEachStopped { .. }, node) => {
                self.apply_for_each(definition, event, node)
            }
            (
                EventKind::ChildStarted { .. }
                | EventKind::ChildCompleted { .. }
                | EventKind::ChildFailed { .. }
                | EventKind::ParentLinked { .. }
                | EventKind::HeldByParent { .. }
                | EventKind::ChildCompensating { .. },
                node,
            ) => self.apply_child(definition, event, node),
        }
    }

    /// Records that `node` may have had an effect compensation must undo.
    fn hand_out(&mut self, node: NodeId) {
        if self.handed_out.insert(node) {
            self.handed_out_order.push(node);
        }
    }

    /// A handed-out node settled: it moves behind every node that settled before it.
    fn settle(&mut self, node: NodeId) {
        if self.handed_out.contains(&node) {
            self.handed_out_order.retain(|n| *n != node);
            self.handed_out_order.push(node);
        }
    }

    fn clear_in_flight(&mut self) {
        self.parallels.clear();
        self.for_eachs.clear();
        self.attempts.clear();
        self.sleeps.clear();
        self.waits.clear();
    }

    fn finish(&mut self, status: WorkflowStatus, at_ms: u64, reason: Option<String>, output: Option<JsonText>) {
        self.clear_in_flight();
        // A finished run waits for nothing: a child still running was told to cancel, and
        // a held one was given the run's verdict.
        self.children.clear();
        self.held_children.clear();
        self.terminal = Some(Terminal { status, at_ms, reason, output });
    }
}

/// An attempt a history backs off without scheduling it first. The decider never writes
/// such a history; replay keeps going rather than lose the run.
fn orphan(step: StepRef, attempt: u32, at_ms: u64) -> Attempt {
    Attempt { step, attempt, status: AttemptStatus::Scheduled { at_ms }, first_scheduled_at_ms: at_ms, attempt_base: 0 }
}
