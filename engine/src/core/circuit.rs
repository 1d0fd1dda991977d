//! Circuit breakers, one per activity that a registered definition declares one for
//! (`[activities."<name>".circuit]`): the state machine, and the core's side of it (feeding
//! it attempt outcomes, asking it before a hand-out, publishing its state).
//!
//! Closed, it counts attempt outcomes in a sliding window and opens when, within the window,
//! at least `min_calls` ended and at least `failure_ratio` of them failed (a ratio exactly at
//! the threshold opens). Open, the activity's ready tasks stay queued and no poll is handed
//! one; after `open_for` it is half-open and lets `half_open_probes` attempts through: the
//! first probe to succeed closes it (with an empty window), the first to fail opens it again.
//! A probe whose attempt ends without an outcome (its run was cancelled) gives its place back.
//!
//! What counts: a success, a retryable failure and a lost attempt (start-to-close or
//! heartbeat timeout) count; a non-retryable business error (`PAYMENT_DECLINED`) does not,
//! since it says the provider works and answered no, and must never hold other orders back.
//!
//! State is in memory and every breaker starts closed when the engine starts: a breaker is
//! an opinion about a provider now, which a restart may as well form afresh from the next
//! few calls (at most `min_calls` attempts), and keeping it durable would put a write in
//! every outcome's path for no safety gain (a run's own history stays the truth).
//!
//! This module must never decide anything about a run (timeouts and retries stay the
//! decider's), never write, and never read a clock (time is passed in).

use super::{Core, Turn};
use crate::decider::{Input, Timer, TimerKind};
use crate::definition::{CircuitConfig, Definition};
use crate::state::AttemptStatus;
use shop_types::{ActivityName, QueueName, StepRef, WorkflowId};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Outcomes one breaker's window keeps at most; beyond it the oldest are forgotten first, so
/// a busy activity with a long window cannot grow the core's memory without bound.
pub const MAX_CIRCUIT_WINDOW_CALLS: usize = 10_000;

/// A breaker's state, as `/v1/stats`, `why`, the console and `/metrics` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The value of the `shop_circuit_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

/// One breaker as of the core's last turn.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitView {
    pub state: CircuitState,
    /// While open: when it turns half-open (clock ms).
    pub open_until_ms: Option<u64>,
    /// Outcomes in the window now, and how many of them failed.
    pub calls: usize,
    pub failures: usize,
    /// State changes since start, by the state entered.
    pub transitions: BTreeMap<CircuitState, u64>,
    /// Attempts handed out since start, by the state the breaker was in (never `open`).
    pub handed_out: BTreeMap<CircuitState, u64>,
    /// The breaker's settings, in one line.
    pub config: String,
}

/// What an attempt's end says about its activity's provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// The attempt a probe was handed out as.
pub type ProbeKey = (WorkflowId, StepRef, u32);

#[derive(Debug, Clone, PartialEq)]
enum State {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { left: u32, probes: Vec<ProbeKey> },
}

/// A state change, for the log line, the metrics and the stats.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    pub open_until_ms: Option<u64>,
}

/// One activity's breaker: a pure state machine with time passed in.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: CircuitConfig,
    state: State,
    /// (end time, failed) of the outcomes in the window, oldest first.
    window: VecDeque<(u64, bool)>,
    failures: usize,
    transitions: BTreeMap<CircuitState, u64>,
    handed_out: BTreeMap<CircuitState, u64>,
}

impl Breaker {
    pub fn new(config: CircuitConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed,
            window: VecDeque::new(),
            failures: 0,
            transitions: BTreeMap::new(),
            handed_out: BTreeMap::new(),
        }
    }

    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn open_until_ms(&self) -> Option<u64> {
        match self.state {
            State::Open { until_ms } => Some(until_ms),
            _ => None,
        }
    }

    /// Whether one more attempt may be handed out now.
    pub fn allows(&self) -> bool {
        match &self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { left, .. } => *left > 0,
        }
    }

    /// Notes a hand-out (the caller asked [`Breaker::allows`]); half-open, it is a probe.
    pub fn handed_out(&mut self, key: ProbeKey) {
        *self.handed_out.entry(self.state()).or_default() += 1;
        if let State::HalfOpen { left, probes } = &mut self.state {
            *left = left.saturating_sub(1);
            probes.push(key);
        }
    }

    /// An attempt of the activity ended at `now` with `outcome`.
    pub fn record(&mut self, key: &ProbeKey, outcome: Outcome, now: u64) -> Option<Transition> {
        let failed = outcome == Outcome::Failure;
        if self.window.len() == MAX_CIRCUIT_WINDOW_CALLS {
            self.forget_oldest();
        }
        self.window.push_back((now, failed));
        self.failures += usize::from(failed);
        self.slide(now);
        match &self.state {
            State::Closed if failed && self.tripped() => self.open(now),
            State::HalfOpen { probes, .. } if probes.contains(key) => {
                if failed {
                    self.open(now)
                } else {
                    self.window.clear();
                    self.failures = 0;
                    self.enter(State::Closed)
                }
            }
            _ => None,
        }
    }

    /// Moves an open breaker whose time is up to half-open.
    pub fn tick(&mut self, now: u64) -> Option<Transition> {
        match self.state {
            State::Open { until_ms } if until_ms <= now => {
                self.enter(State::HalfOpen { left: self.config.half_open_probes, probes: Vec::new() })
            }
            _ => None,
        }
    }

    /// Gives back the place of every probe `lost` says ended without an outcome.
    pub fn release_lost_probes(&mut self, lost: impl Fn(&ProbeKey) -> bool) {
        if let State::HalfOpen { left, probes } = &mut self.state {
            let before = probes.len();
            probes.retain(|probe| !lost(probe));
            *left += u32::try_from(before - probes.len()).unwrap_or(0);
        }
    }

    /// Whether the window holds enough calls, failing often enough, to open.
    fn tripped(&self) -> bool {
        let calls = self.window.len();
        calls >= self.config.min_calls as usize && self.failures as f64 >= self.config.failure_ratio * calls as f64
    }

    /// Forgets the outcomes that ended `window_ms` or longer before `now`.
    fn slide(&mut self, now: u64) {
        while self.window.front().is_some_and(|(at, _)| at.saturating_add(self.config.window_ms) <= now) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, failed)) = self.window.pop_front() {
            self.failures -= usize::from(failed);
        }
    }

    fn open(&mut self, now: u64) -> Option<Transition> {
        self.enter(State::Open { until_ms: now.saturating_add(self.config.open_for_ms) })
    }

    fn enter(&mut self, state: State) -> Option<Transition> {
        let from = self.state();
        self.state = state;
        let to = self.state();
        *self.transitions.entry(to).or_default() += 1;
        Some(Transition { from, to, open_until_ms: self.open_until_ms() })
    }

    pub fn view(&self, now: u64) -> CircuitView {
        let in_window = self.window.iter().filter(|(at, _)| at.saturating_add(self.config.window_ms) > now);
        let (calls, failures) = in_window.fold((0, 0), |(c, f), (_, failed)| (c + 1, f + usize::from(*failed)));
        CircuitView {
            state: self.state(),
            open_until_ms: self.open_until_ms(),
            calls,
            failures,
            transitions: self.transitions.clone(),
            handed_out: self.handed_out.clone(),
            config: self.config.describe(),
        }
    }
}

/// Every activity's breaker. One per activity, engine-wide: a provider that fails, fails for
/// every workflow that calls it. Its settings are those of the last registered definition
/// that declares one (at start-up, the registry's definitions in name and version order).
#[derive(Default)]
pub(super) struct Circuits {
    breakers: HashMap<ActivityName, Breaker>,
}

impl Circuits {
    /// Takes the breakers `definition` declares; a breaker already there keeps its state and
    /// takes the new settings.
    pub(super) fn configure(&mut self, definition: &Definition) {
        for (activity, config) in &definition.circuits {
            match self.breakers.get_mut(activity) {
                Some(breaker) => breaker.config = config.clone(),
                None => {
                    self.breakers.insert(activity.clone(), Breaker::new(config.clone()));
                }
            }
        }
    }

    pub(super) fn has(&self, activity: &ActivityName) -> bool {
        self.breakers.contains_key(activity)
    }

    pub(super) fn allows(&self, activity: &ActivityName) -> bool {
        self.breakers.get(activity).is_none_or(Breaker::allows)
    }

    /// When a held task's activity lets tasks through next: open, its `until`; half-open,
    /// `None` (as soon as a probe reports); closed or without a breaker, `Some(now)`.
    pub(super) fn next_release_ms(&self, activity: &ActivityName, now: u64) -> Option<u64> {
        match self.breakers.get(activity).map(|b| &b.state) {
            Some(State::Open { until_ms }) => Some(*until_ms),
            Some(State::HalfOpen { .. }) => None,
            Some(State::Closed) | None => Some(now),
        }
    }

    /// Whether the activity has a breaker that does not let tasks through freely.
    pub(super) fn holds(&self, activity: &ActivityName) -> bool {
        self.breakers.get(activity).is_some_and(|b| b.state() != CircuitState::Closed)
    }

    /// The soonest time an open breaker turns half-open.
    pub(super) fn next_wake_ms(&self) -> Option<u64> {
        self.breakers.values().filter_map(Breaker::open_until_ms).min()
    }

    pub(super) fn get_mut(&mut self, activity: &ActivityName) -> Option<&mut Breaker> {
        self.breakers.get_mut(activity)
    }

    pub(super) fn views(&self, now: u64) -> BTreeMap<String, CircuitView> {
        self.breakers.iter().map(|(activity, breaker)| (activity.to_string(), breaker.view(now))).collect()
    }
}

/// The core's side: outcomes in, hand-outs checked, state changes made visible.
impl Core {
    /// Feeds the end of an attempt of `activity` to its breaker, if it has one.
    pub(super) fn circuit_outcome(
        &mut self,
        turn: &mut Turn,
        activity: &ActivityName,
        key: &ProbeKey,
        outcome: Outcome,
        now: u64,
    ) {
        let Some(breaker) = self.circuits.get_mut(activity) else {
            return;
        };
        if let Some(transition) = breaker.record(key, outcome, now) {
            self.circuit_changed(turn, activity, &transition);
        }
    }

    /// What the decider's `input` for run `id` says about an activity with a breaker: the
    /// activity, the attempt, and its outcome; `None` for anything else, and for a
    /// non-retryable failure (see the module doc).
    pub(super) fn circuit_input(&self, id: &WorkflowId, input: &Input) -> Option<(ActivityName, ProbeKey, Outcome)> {
        let (step, attempt, error) = match input {
            Input::Completed { step, attempt, .. } => (*step, *attempt, None),
            Input::Failed { step, attempt, error } => (*step, *attempt, Some(error)),
            Input::TimerFired(TimerKind::StartToClose { step, attempt } | TimerKind::Heartbeat { step, attempt }) => {
                (*step, *attempt, None)
            }
            _ => return None,
        };
        let step_def = self.runs.get(id)?.definition.step(step)?;
        let activity = step_def.activity()?;
        if !self.circuits.has(activity) {
            return None;
        }
        let outcome = match (input, error) {
            (Input::Completed { .. }, _) => Outcome::Success,
            (_, Some(error)) if !error.retryable || step_def.retry.non_retryable.contains(&error.error_type) => {
                return None
            }
            _ => Outcome::Failure,
        };
        Some((activity.clone(), (id.clone(), step, attempt), outcome))
    }

    /// A schedule-to-start timer that comes due while its task's circuit holds it is put
    /// off, not fired: the task is not waiting for a worker but for the provider, and failing
    /// it would turn every held task into a permanent failure at once. It is re-armed one
    /// full `schedule_to_start` after the circuit next lets tasks through (its `open_for`
    /// end; from now when half-open), and fires then only if no worker took the task. The
    /// step's `schedule_to_close` budget is not put off: it is the step's business deadline.
    /// Returns whether the timer was held.
    pub(super) fn hold_schedule_to_start(&mut self, id: &WorkflowId, kind: TimerKind, now: u64) -> bool {
        let TimerKind::ScheduleToStart { step, .. } = kind else {
            return false;
        };
        let Some(run) = self.runs.get_mut(id) else {
            return false;
        };
        let Some(step_def) = run.definition.step(step) else {
            return false;
        };
        let (Some(activity), Some(limit)) = (step_def.activity(), step_def.timeouts.schedule_to_start_ms) else {
            return false;
        };
        if !self.circuits.holds(activity) {
            return false;
        }
        let from = self.circuits.next_release_ms(activity, now).unwrap_or(now).max(now);
        let timer = Timer { due_ms: from.saturating_add(limit), kind };
        tracing::debug!(workflow_id = %id, %activity, due_ms = timer.due_ms, "schedule-to-start held by the circuit");
        run.timers.push(timer);
        self.timers.insert((timer.due_ms, id.clone(), kind));
        true
    }

    /// Turns open breakers whose time is up half-open, and gives lost probes back; polls
    /// waiting on any queue are looked at again this turn, as tasks may be let through.
    pub(super) fn tick_circuits(&mut self, turn: &mut Turn, now: u64) {
        let runs = &self.runs;
        let lost = |(id, step, attempt): &ProbeKey| {
            let current = runs.get(id).and_then(|run| {
                let node = run.definition.node_id(*step)?;
                run.state.attempts.get(&node).filter(|a| a.step == *step && a.attempt == *attempt)
            });
            !current.is_some_and(|a| matches!(a.status, AttemptStatus::Started { .. }))
        };
        let mut changed = Vec::new();
        for (activity, breaker) in &mut self.circuits.breakers {
            breaker.release_lost_probes(lost);
            if let Some(transition) = breaker.tick(now) {
                changed.push((activity.clone(), transition));
            }
        }
        for (activity, transition) in changed {
            self.circuit_changed(turn, &activity, &transition);
        }
    }

    /// Every state change: a log line, and waiting polls looked at again (tasks may flow).
    fn circuit_changed(&mut self, turn: &mut Turn, activity: &ActivityName, transition: &Transition) {
        let (from, to) = (transition.from.as_str(), transition.to.as_str());
        match transition.open_until_ms {
            Some(until_ms) => {
                tracing::warn!(%activity, from, to, until_ms, "circuit opened: the activity's tasks wait")
            }
            None => tracing::info!(%activity, from, to, "circuit changed state"),
        }
        if transition.to != CircuitState::Open {
            let queues: Vec<QueueName> = self.waiting_polls.queues().cloned().collect();
            turn.queues_with_new_tasks.extend(queues);
        }
    }
}
