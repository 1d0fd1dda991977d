//! The decider: what happens next in a workflow run, as a pure function of
//! (definition, state, input, now).
//!
//! It emits history events and folds each into the state as it goes, so the caller gets the
//! new events and the new state together, as a [`Decision`]. It must never do I/O, read a
//! clock or draw a random number: retry jitter is derived from the run, step and attempt, so a
//! replay of the same inputs gives the same history, and property tests can drive it with any
//! sequence of inputs.
//!
//! One entry point ([`decide`], and [`start`] for a new run) routes an input to the module of
//! the construct it concerns: `attempt` (what every activity attempt shares: starts,
//! reports, timeouts, retries), `step` (forward activity steps), `compensation` (undoing
//! them, parking, resuming), `after` (steps after compensation), and the workflow language:
//! `sleep`, `wait` (signals and waits), `choice` (and `when`, in `step`), `parallel` and
//! `for_each`, and `child` (child workflows, the one construct with effects on other runs).
//! `timers` derives a
//! run's live timers from its attempts, sleeps and waits in flight.

mod after;
mod attempt;
mod child;
mod choice;
mod compensation;
mod for_each;
mod parallel;
mod sleep;
mod step;
mod timers;
mod wait;

#[cfg(test)]
mod tests;

pub use child::{ended_reason, ChildOutcome, Verdict};
pub use timers::{retry_delay_ms, timers, Timer, TimerKind};
pub use wait::MAX_SIGNALS_PER_RUN;

use crate::definition::Definition;
use crate::state::WorkflowState;
use shop_types::history::{ActivityError, Event, EventKind};
use shop_types::{JsonText, StepRef, WorkflowId};

/// The most events one decision emits (with the history-limit compensation below). Far from
/// the limit a decision is applied in place; closer than this it is tried on a copy first.
pub const MAX_EVENTS_PER_DECISION: u64 = 8;
/// A run still in its forward steps when its history reaches `limit - limit / this` events
/// stops going forward and compensates, so the rest of the budget is left for undoing it.
pub const COMPENSATION_HEADROOM_DIVISOR: u64 = 4;

/// What happened to a run, as the decider sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A worker took the attempt from its queue.
    Started {
        step: StepRef,
        attempt: u32,
        worker: shop_types::WorkerId,
    },
    Completed {
        step: StepRef,
        attempt: u32,
        output: JsonText,
    },
    Failed {
        step: StepRef,
        attempt: u32,
        error: ActivityError,
    },
    TimerFired(TimerKind),
    /// Cancel the run (compensating). `by` names who asked (a credential's subject, recorded
    /// as `CancelRequestedBy`); `None` when the engine itself asks (a parent cancelling its child).
    Cancel {
        reason: String,
        by: Option<String>,
    },
    /// End the run at once; `by` as for `Cancel`.
    Terminate {
        reason: String,
        by: Option<String>,
    },
    /// An operator resumes a parked run; `by` as for `Cancel`.
    Resume {
        reason: String,
        by: Option<String>,
    },
    /// The child run `child` started by step `step` ended (from the child's terminal
    /// decision, or from recovery).
    ChildEnded {
        step: StepRef,
        child: WorkflowId,
        outcome: ChildOutcome,
    },
    /// A child held by its parent (`HeldByParent`) hears the parent's verdict: complete, or
    /// compensate itself.
    Verdict(Verdict),
    /// A signal for the run, de-duplicated by `key`.
    Signal {
        name: String,
        key: String,
        payload: JsonText,
    },
}

/// Why an input changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the attempt is no longer current")]
    Stale,
    #[error("the workflow has already finished")]
    Finished,
    #[error("the workflow is past its pivot step and can no longer be cancelled")]
    PastPivot,
    #[error("the workflow is not parked: only a parked run (its compensation failed for good) can be resumed")]
    NotParked,
    /// A child whose forward path completed belongs to its parent's outcome: cancelling the
    /// parent compensates it.
    #[error("the workflow is a child held by its parent {0}: cancel the parent instead")]
    HeldByParent(WorkflowId),
    #[error("the workflow's definition does not declare signal {0:?}")]
    UnknownSignal(String),
    /// The same key with the same name and payload: already recorded, nothing to do.
    #[error("the signal was already recorded")]
    DuplicateSignal,
    #[error("the idempotency key was already used for another signal or payload")]
    KeyReused,
    #[error("the workflow has received its most signals")]
    TooManySignals,
    /// The payload is over [`MAX_SIGNAL_PAYLOAD_BYTES`](shop_types::limits::MAX_SIGNAL_PAYLOAD_BYTES).
    #[error("the signal's payload is {0} bytes, over the limit of {max}", max = shop_types::limits::MAX_SIGNAL_PAYLOAD_BYTES)]
    SignalTooLarge(usize),
    /// Buffering it would pass [`MAX_BUFFERED_SIGNAL_BYTES`](shop_types::limits::MAX_BUFFERED_SIGNAL_BYTES).
    #[error("the run's buffered signals would pass {max} bytes; no wait has consumed them yet", max = shop_types::limits::MAX_BUFFERED_SIGNAL_BYTES)]
    SignalBufferFull,
    /// The run takes no more signals: it is compensating, stopping, parked, or its history
    /// is past its soft limit (what is left of it is kept for compensation).
    #[error("the workflow takes no more signals: {0}")]
    SignalsClosed(&'static str),
    /// No wait the run can still open listens for the signal.
    #[error("no remaining step of the workflow waits for signal {0:?}")]
    SignalNotAwaited(String),
}

/// The latest registered version of a workflow type, if it has one.
pub type LatestVersion = dyn Fn(&shop_types::WorkflowType) -> Option<u32>;

#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub now_ms: u64,
    pub max_history_events: u64,
    /// The latest registered version of a workflow type, for a child step that names no
    /// version (the core reads its registry; without it such a child fails to start). A
    /// lookup, not a clock or I/O: its answer is recorded in `ChildStarted`.
    pub latest_versions: Option<&'a LatestVersion>,
    /// The `traceparent` a new run is traced under (`TraceLinked` in its start batch), if any.
    pub trace: Option<&'a str>,
}

impl Context<'_> {
    /// A context with no registry to resolve a child's latest version.
    pub fn new(now_ms: u64, max_history_events: u64) -> Self {
        Context { now_ms, max_history_events, latest_versions: None, trace: None }
    }

    fn latest_version(&self, name: &shop_types::WorkflowType) -> Option<u32> {
        self.latest_versions.and_then(|latest| latest(name))
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("now_ms", &self.now_ms)
            .field("max_history_events", &self.max_history_events)
            .finish_non_exhaustive()
    }
}

/// Something a decision asks of another run: a parent starts or cancels its children, a
/// child tells its parent it ended.
///
/// How the core applies them: in the same turn, right after appending the deciding run's
/// events to the turn's batch, the core turns each effect into an input for the run it
/// addresses (`Start` creates that run; `Signal` and `Cancel` go through [`decide`] for it)
/// and appends what that decides to the same batch, so a parent's decision and its effects
/// on its children are written atomically, or not at all. An effect on a run that is not in
/// flight is answered by an event in the deciding run (e.g. a child that cannot start fails
/// its step), never dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start a new run of version `version` of `workflow_type` as `run`, the child of step
    /// `step` of `parent`, `depth` levels deep. If it cannot start, the parent's step fails
    /// (`ChildFailed`).
    Start {
        run: WorkflowId,
        workflow_type: shop_types::WorkflowType,
        version: u32,
        input: JsonText,
        parent: WorkflowId,
        step: StepRef,
        depth: u32,
    },
    /// Deliver a signal to `run`.
    Signal { run: WorkflowId, name: String, payload: JsonText },
    /// Cancel `run` (compensating a child cancels it).
    Cancel { run: WorkflowId, reason: String },
    /// Give held child `run` (of step `step` of `parent`) its parent's verdict. A child that
    /// is not held any more (it ended on its own) is answered for: told to compensate, the
    /// parent hears that it ended.
    Verdict { run: WorkflowId, parent: WorkflowId, step: StepRef, verdict: Verdict },
    /// Tell `parent` that its child `child`, started by step `step`, ended.
    ChildEnded { parent: WorkflowId, step: StepRef, child: WorkflowId, outcome: ChildOutcome },
}

/// The outcome of one decision: the run's new events (already applied to its state), and
/// what it asks of other runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub events: Vec<Event>,
    pub effects: Vec<Effect>,
}

impl Decision {
    fn events(events: Vec<Event>) -> Self {
        Decision { events, effects: Vec::new() }
    }
}

/// The events a new run of the engine starts with: `WorkflowStarted`, `DefinitionPinned`
/// (the hash of the definition's source) and the first step's schedule.
pub fn start_pinned(definition: &Definition, state: &mut WorkflowState, input: &JsonText, ctx: Context) -> Decision {
    start_with(definition, state, input, Some(None), ctx)
}

/// The events a child run starts with: those of [`start_pinned`] with `ParentLinked` (its
/// parent, the step that started it, its depth) right after `DefinitionPinned`.
pub fn start_child(
    definition: &Definition,
    state: &mut WorkflowState,
    input: &JsonText,
    link: crate::state::ParentLink,
    ctx: Context,
) -> Decision {
    start_with(definition, state, input, Some(Some(link)), ctx)
}

/// The events a run started before `DefinitionPinned` existed began with: `WorkflowStarted`
/// and the first step's schedule. Kept so the recorded goldens and the property tests drive
/// histories of that shape; the engine starts runs with [`start_pinned`].
pub fn start(definition: &Definition, state: &mut WorkflowState, input: &JsonText, ctx: Context) -> Decision {
    start_with(definition, state, input, None, ctx)
}

fn start_with(
    definition: &Definition,
    state: &mut WorkflowState,
    input: &JsonText,
    pin: Option<Option<crate::state::ParentLink>>,
    ctx: Context,
) -> Decision {
    let mut out = vec![Event {
        seq: 1,
        at_ms: ctx.now_ms,
        kind: EventKind::WorkflowStarted {
            workflow_type: definition.name.clone(),
            definition_version: definition.version,
            input: input.clone(),
        },
    }];
    if let Some(link) = pin {
        let kind = EventKind::DefinitionPinned { content_hash: definition.content_hash.clone() };
        emit(definition, state, &mut out, ctx.now_ms, kind);
        if let Some(crate::state::ParentLink { parent, step, depth }) = link {
            emit(definition, state, &mut out, ctx.now_ms, EventKind::ParentLinked { parent, step, depth });
        }
    }
    if let Some(traceparent) = ctx.trace {
        emit(definition, state, &mut out, ctx.now_ms, EventKind::TraceLinked { traceparent: traceparent.to_owned() });
    }
    advance(definition, state, &mut out, ctx.now_ms);
    let effects = child::effects(definition, child::Children::default(), state, &mut out, ctx);
    Decision { events: out, effects }
}

/// Decides what `input` does to the run, returning the new events (already applied to
/// `state`), or why it changes nothing.
pub fn decide(
    definition: &Definition,
    state: &mut WorkflowState,
    input: Input,
    ctx: Context,
) -> Result<Decision, Rejection> {
    let before = child::Children::of(state);
    let mut decision = decide_events(definition, state, input, ctx)?;
    decision.effects = child::effects(definition, before, state, &mut decision.events, ctx);
    Ok(decision)
}

fn decide_events(
    definition: &Definition,
    state: &mut WorkflowState,
    input: Input,
    ctx: Context,
) -> Result<Decision, Rejection> {
    let used = state.next_seq - 1;
    let limit = ctx.max_history_events;
    // Starting steps can emit up to two events per forward step (a sleep or wait that
    // starts and ends at once, a skip, a choice), on top of an activity's few.
    // A for_each can schedule up to its max_concurrency instances at once.
    let for_each: u64 =
        definition.steps.iter().filter_map(|s| s.for_each.as_ref()).map(|f| u64::from(f.max_concurrency)).sum();
    let bound = MAX_EVENTS_PER_DECISION + 2 * definition.steps.len() as u64 + for_each;
    if used + bound < limit {
        return decide_within_limit(definition, state, input, ctx).map(Decision::events);
    }
    // Near the limit: try the decision on a copy, and keep it only if it fits, leaving room
    // for a terminal event unless it is one. Otherwise the run fails here, at the limit.
    let mut trial = state.clone();
    let events = decide_within_limit(definition, &mut trial, input, ctx)?;
    let length = used + events.len() as u64;
    if length < limit || (length == limit && trial.terminal.is_some()) {
        *state = trial;
        return Ok(Decision::events(events));
    }
    // Keep as much of the decision as still leaves room for the failure: what happened
    // (a completion, say) stays recorded.
    let room = usize::try_from(limit.saturating_sub(used + 1)).unwrap_or(0).min(events.len());
    for event in &events[..room] {
        state.apply(definition, event);
    }
    let mut out = events;
    out.truncate(room);
    let reason = format!("history reached its limit of {limit} events; the run needs attention");
    emit(definition, state, &mut out, ctx.now_ms, EventKind::WorkflowFailed { reason });
    Ok(Decision::events(out))
}

fn decide_within_limit(
    definition: &Definition,
    state: &mut WorkflowState,
    input: Input,
    ctx: Context,
) -> Result<Vec<Event>, Rejection> {
    if state.terminal.is_some() {
        return Err(match input {
            Input::Cancel { .. }
            | Input::Terminate { .. }
            | Input::Resume { .. }
            | Input::Signal { .. }
            | Input::Verdict(_)
            | Input::ChildEnded { .. } => Rejection::Finished,
            _ => Rejection::Stale,
        });
    }
    let mut out = Vec::new();
    let now = ctx.now_ms;
    match input {
        Input::Started { step, attempt, worker } => {
            attempt::started(definition, state, &mut out, now, step, attempt, worker)?
        }
        Input::Completed { step, attempt, output } => {
            attempt::completed(definition, state, &mut out, now, step, attempt, output)?;
        }
        Input::Failed { step, attempt, error } => {
            attempt::failed(definition, state, &mut out, now, step, attempt, error)?
        }
        Input::TimerFired(kind) => {
            if !timers(definition, state).iter().any(|t| t.kind == kind && t.due_ms <= now) {
                return Err(Rejection::Stale);
            }
            match kind {
                TimerKind::ExecutionTimeout => compensation::execution_timed_out(definition, state, &mut out, now),
                TimerKind::SleepDue { step } => {
                    sleep::due(definition, state, &mut out, now, step);
                    advance(definition, state, &mut out, now);
                }
                TimerKind::WaitDeadline { step } => {
                    wait::timed_out(definition, state, &mut out, now, step);
                    advance(definition, state, &mut out, now);
                }
                kind => attempt::timer_fired(definition, state, &mut out, now, kind),
            }
        }
        Input::Cancel { reason, by } => compensation::cancel(definition, state, &mut out, now, reason, by)?,
        Input::Terminate { reason, by } => {
            let event = match by {
                Some(by) => EventKind::WorkflowTerminatedBy { reason, by },
                None => EventKind::WorkflowTerminated { reason },
            };
            emit(definition, state, &mut out, now, event);
        }
        Input::Resume { reason, by } => compensation::resume(definition, state, &mut out, now, reason, by)?,
        Input::Signal { name, key, payload } => wait::signal(definition, state, &mut out, ctx, name, key, payload)?,
        Input::Verdict(verdict) => child::verdict(definition, state, &mut out, now, verdict)?,
        Input::ChildEnded { step, child, outcome } => {
            child::ended(definition, state, &mut out, now, step, &child, outcome)?;
            advance(definition, state, &mut out, now);
        }
    }
    let soft_limit = soft_limit(ctx.max_history_events);
    // A held child has finished going forward: only its parent's verdict moves it on.
    let going_forward = state.terminal.is_none()
        && state.held_by_parent.is_none()
        && state.compensation_plan.is_none()
        && state.stopping.is_none()
        && !state.pivot_passed;
    if going_forward && state.next_seq > soft_limit {
        let reason = format!(
            "history passed {soft_limit} events, 3/4 of its limit of {}, before the order could finish",
            ctx.max_history_events
        );
        compensation::begin(definition, state, &mut out, now, reason);
    }
    Ok(out)
}

/// Past this many events a run going forward compensates, and takes no more signals.
fn soft_limit(max_history_events: u64) -> u64 {
    max_history_events - max_history_events / COMPENSATION_HEADROOM_DIVISOR
}

/// Appends one event and folds it into the state.
fn emit(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64, kind: EventKind) {
    let event = Event { seq: state.next_seq, at_ms: now, kind };
    state.apply(definition, &event);
    out.push(event);
}

/// Moves the run on: the branches of an open parallel step; a stopped parallel step, once
/// the attempts workers hold have settled, to compensation; and with nothing in flight, the
/// next forward step, or once compensating, the next compensation (a held child told to
/// compensate itself), then the steps after it; or finishes the run (a child, whose parent
/// decides its end, is held instead).
fn advance(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64) {
    while state.terminal.is_none() && state.parked.is_none() {
        if let (Some(reason), None) = (&state.stopping, &state.compensation_plan) {
            if !state.attempts.is_empty() {
                return;
            }
            let reason = reason.clone();
            let kind = if state.pivot_passed {
                EventKind::WorkflowFailed { reason }
            } else {
                EventKind::CompensationStarted { reason }
            };
            emit(definition, state, out, now, kind);
            continue;
        }
        if parallel::progress(definition, state, out, now) || for_each::progress(definition, state, out, now) {
            continue;
        }
        if !state.idle() {
            return;
        }
        let compensating = state.compensation_plan.is_some();
        let next = if compensating {
            compensation::next(definition, state).or_else(|| after::next(definition, state))
        } else {
            step::next(definition, state)
        };
        let kind = match next.and_then(|node| definition.node(node)) {
            Some(node) if !compensating => {
                step::begin(definition, state, out, now, node.id);
                continue;
            }
            Some(node) => match state.held_children.get(&node.id) {
                Some(held) => EventKind::ChildCompensating { step: held.step, child: held.child.clone() },
                None => EventKind::StepScheduled { step: node.step, attempt: 1 },
            },
            None if compensating => {
                EventKind::WorkflowCompensated { reason: state.compensation_reason.clone().unwrap_or_default() }
            }
            None if state.parent.is_some() => match state.held_by_parent {
                Some(_) => return,
                None => EventKind::HeldByParent { output: state.results_json() },
            },
            None => EventKind::WorkflowCompleted { output: state.results_json() },
        };
        emit(definition, state, out, now, kind);
    }
}

#[cfg(test)]
mod child_prop_tests;
#[cfg(test)]
mod child_tests;
#[cfg(test)]
mod for_each_tests;
#[cfg(test)]
mod language_tests;
#[cfg(test)]
mod parallel_tests;
#[cfg(test)]
mod test_run;
