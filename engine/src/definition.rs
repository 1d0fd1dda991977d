//! Workflow definitions: the TOML format of `workflows/*.toml`, parsed, validated and resolved
//! into [`Definition`] (every step's retry policy and timeouts filled in from the defaults).
//!
//! This module owns the format and its validation. It must never reject a definition without
//! saying which file, which line and why, and never accept one the engine cannot run. The
//! resolved lists are then resolved once more, to the nodes a run keeps in flight (`nodes`).

use serde::Deserialize;
use shop_types::limits::COMPENSATION_SUFFIX;
use shop_types::{ActivityName, JsonText, QueueName, StepName, StepPhase, StepRef, WorkflowType};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;
use std::time::Duration;

mod child;
mod circuit;
mod for_each;
mod language;
mod nodes;
mod predicate;
mod raw;
mod resolve;

use raw::{RawDefaults, RawDefinition, RawRetry, RawStep, RawTimeouts};

use resolve::{positive_ms, resolve_step, ResolveInput};

pub use child::{child_id, Child, CHILD_ID_SEPARATOR, MAX_CHILD_DEPTH};
pub use circuit::{
    CircuitConfig, MAX_CIRCUITS_DECLARED, MAX_CIRCUIT_MIN_CALLS, MAX_CIRCUIT_OPEN_FOR, MAX_CIRCUIT_WINDOW,
    MAX_HALF_OPEN_PROBES,
};
pub use for_each::{
    decode_instance, instance_index, ForEach, FOR_EACH_REF_BASE, INDEX_PARAM, ITEM_PARAM, MAX_FOR_EACH_CONCURRENCY,
    MAX_FOR_EACH_ITEMS, MAX_FOR_EACH_STEPS,
};
pub use language::{
    check_signal_name, Case, Construct, Sleep, Wait, MAX_BRANCHES, MAX_CHOICE_CASES, MAX_PARALLEL_BRANCHES,
    MAX_SIGNALS_DECLARED, MAX_SIGNAL_NAME_BYTES, MAX_SLEEP, MAX_WAIT_TIMEOUT,
};
pub use nodes::{Node, NodeId, NodeKind};
pub use predicate::{Predicate, Test, MAX_IN_VALUES, MAX_POINTER_BYTES};

/// Most steps in one list (forward steps, or steps after compensation).
pub const MAX_STEPS: usize = 64;
/// Highest `max_attempts` a retry policy may declare.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

const DEFAULT_INITIAL_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_BACKOFF_COEFFICIENT: f64 = 2.0;
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_START_TO_CLOSE: Duration = Duration::from_secs(60);
/// When `max_interval` is not declared it is this many times `initial_interval`.
const DEFAULT_MAX_INTERVAL_FACTOR: u32 = 100;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct DefinitionError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

/// What a step's permanent failure means for the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Compensate every step started so far, in reverse order (the default).
    Compensate,
    /// Record the failure and go on with the next step.
    Continue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_interval_ms: u64,
    pub max_attempts: u32,
    /// Fraction (0..=1) by which a delay is randomly stretched or shrunk.
    pub jitter: f64,
    pub non_retryable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub schedule_to_start_ms: Option<u64>,
    pub start_to_close_ms: u64,
    pub schedule_to_close_ms: Option<u64>,
    pub heartbeat_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    pub name: StepName,
    /// What the step does: an activity, a sleep, a wait or a choice.
    pub construct: Construct,
    /// When set, the step runs only if this holds when it would be scheduled; else it is
    /// recorded as skipped.
    pub when: Option<Predicate>,
    /// Set on an activity step run once per item of an array (see `for_each`).
    pub for_each: Option<ForEach>,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    pub on_failure: OnFailure,
    pub pivot: bool,
    pub params: JsonText,
}

impl StepDef {
    /// The activity of an activity step.
    pub fn activity(&self) -> Option<&ActivityName> {
        match &self.construct {
            Construct::Activity { activity, .. } => Some(activity),
            _ => None,
        }
    }

    /// The task queue of an activity step.
    pub fn queue(&self) -> Option<&QueueName> {
        match &self.construct {
            Construct::Activity { queue, .. } => Some(queue),
            _ => None,
        }
    }
}

/// Labels a definition gives to workflow statuses (e.g. completed = "CONFIRMED").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusLabels {
    pub running: Option<String>,
    pub completed: Option<String>,
    pub compensated: Option<String>,
    pub failed: Option<String>,
    pub terminated: Option<String>,
}

impl StatusLabels {
    pub fn label(&self, status: shop_types::api::WorkflowStatus) -> Option<&str> {
        use shop_types::api::WorkflowStatus::*;
        match status {
            Running => self.running.as_deref(),
            Completed => self.completed.as_deref(),
            Compensated => self.compensated.as_deref(),
            Failed => self.failed.as_deref(),
            Terminated => self.terminated.as_deref(),
        }
    }
}

/// A validated, resolved workflow definition. Runs are pinned to `(name, version)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: WorkflowType,
    pub version: u32,
    pub execution_timeout_ms: Option<u64>,
    pub statuses: StatusLabels,
    /// Every forward step: the main line (`..main_len`) in order, then each branch's steps,
    /// branches in name order. A forward `StepRef` indexes this list.
    pub steps: Vec<StepDef>,
    /// How many of `steps` are the main line.
    pub main_len: usize,
    /// Each branch's steps, as a range of `steps`.
    pub branches: BTreeMap<String, Range<usize>>,
    /// The signal names this version accepts.
    pub signals: BTreeSet<String>,
    /// Indexed like `steps`: the compensation of forward step i, if it has one.
    pub compensations: Vec<Option<StepDef>>,
    pub after_compensation: Vec<StepDef>,
    /// The lists above as nodes, with their ids. Derived from the lists when parsed. Boxed:
    /// a definition travels by value in the core's commands, which stay small.
    nodes: Box<nodes::Nodes>,
    /// The TOML text this was parsed from, kept so a registered version can be compared.
    pub source: String,
    /// The circuit breakers it declares, per activity (`[activities."<name>".circuit]`).
    pub circuits: BTreeMap<ActivityName, CircuitConfig>,
    /// `sha256:<hex>` of `source` (`registry::content_hash`), computed once here: every new
    /// run records it (`DefinitionPinned`).
    pub content_hash: String,
}

impl Definition {
    /// The step a stored ref names; an instance ref of a `for_each` names its step (or,
    /// in the compensation phase, that step's compensation).
    pub fn step(&self, step: StepRef) -> Option<&StepDef> {
        let index = match decode_instance(step.index) {
            Some(_) if step.phase == StepPhase::AfterCompensation => return None,
            Some((ordinal, _)) => self.nodes.for_each_step(ordinal)?,
            None => usize::from(step.index),
        };
        match step.phase {
            StepPhase::Forward => self.steps.get(index),
            StepPhase::Compensation => self.compensations.get(index)?.as_ref(),
            StepPhase::AfterCompensation => self.after_compensation.get(index),
        }
    }

    /// The lane a stored step ref runs in, as timelines show it: a `for_each` instance's
    /// `<step>[<item>]`, a branch step's branch (its compensation's too); `None` on the main
    /// line and after compensation.
    pub fn lane(&self, step: StepRef) -> Option<String> {
        if step.phase == StepPhase::AfterCompensation {
            return None;
        }
        if let Some((_, item)) = decode_instance(step.index) {
            let name = &self.step(StepRef::forward(step.index))?.name;
            return Some(format!("{name}[{item}]"));
        }
        let index = usize::from(step.index);
        self.branches.iter().find(|(_, range)| range.contains(&index)).map(|(name, _)| name.clone())
    }
}

/// Parses and validates one definition. `file` names the source in errors.
pub fn parse(file: &str, source: &str) -> Result<Definition, DefinitionError> {
    let fail = |span: Option<std::ops::Range<usize>>, reason: String| DefinitionError {
        file: file.to_owned(),
        line: span.map(|s| line_of(source, s.start)),
        reason,
    };
    let raw: RawDefinition = toml::from_str(source).map_err(|e| fail(e.span(), e.message().to_owned()))?;

    // A workflow type and a declared step name follow the ID rule (they appear in URLs and
    // keys); a compensation's name adds its suffix to a declared one.
    let name = WorkflowType::parse(raw.name.get_ref().as_str())
        .map_err(|e| fail(Some(raw.name.span()), format!("workflow name: {e}")))?;
    let version = *raw.version.get_ref();
    if version == 0 {
        return Err(fail(Some(raw.version.span()), "version must be 1 or more".into()));
    }
    let execution_timeout_ms = raw
        .execution_timeout
        .map(|d| positive_ms(d, "execution_timeout"))
        .transpose()
        .map_err(|reason| fail(None, reason))?;

    let mut signals = BTreeSet::new();
    if raw.signals.len() > MAX_SIGNALS_DECLARED {
        return Err(fail(None, format!("at most {MAX_SIGNALS_DECLARED} signals")));
    }
    for name in raw.signals.keys() {
        check_signal_name(name).map_err(|reason| fail(None, format!("[signals]: {reason}")))?;
        signals.insert(name.clone());
    }
    if raw.branches.len() > MAX_BRANCHES {
        return Err(fail(None, format!("at most {MAX_BRANCHES} branches")));
    }
    let mut branch_index = BTreeMap::new();
    for (i, (name, steps)) in raw.branches.iter().enumerate() {
        check_signal_name(name).map_err(|r| fail(None, format!("branch: {}", r.replace("signal name", "name"))))?;
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(fail(None, format!("branch {name:?} needs 1 to {MAX_STEPS} steps")));
        }
        branch_index.insert(name.clone(), i);
    }
    // Every step name a `/steps/<name>` pointer may read.
    let all_names: HashSet<String> =
        raw.steps.iter().chain(raw.branches.values().flatten()).map(|s| s.name.get_ref().clone()).collect();
    let known_step = |name: &str| all_names.contains(name);
    let lang_names = language::Names { signals: &signals, branches: &branch_index, steps: &known_step };

    let mut names = HashSet::new();
    let resolve =
        |raw_step: &RawStep, in_branch: bool, names: &mut HashSet<StepName>| {
            let span = raw_step.name.span();
            shop_types::WorkflowId::parse(raw_step.name.get_ref().as_str())
                .map_err(|e| fail(Some(span.clone()), format!("step name: {e}")))?;
            let step_name = StepName::parse(raw_step.name.get_ref().as_str())
                .map_err(|e| fail(Some(span.clone()), format!("step name: {e}")))?;
            if !names.insert(step_name.clone()) {
                return Err(fail(Some(span), format!("step name {step_name:?} is used twice")));
            }
            let construct = resolve_construct(raw_step, in_branch, &lang_names)
                .map_err(|reason| fail(Some(raw_step.name.span()), format!("step {step_name:?}: {reason}")))?;
            let when =
                raw_step.when.as_ref().map(|w| w.resolve(&known_step)).transpose().map_err(|reason| {
                    fail(Some(raw_step.name.span()), format!("step {step_name:?}: when: {reason}"))
                })?;
            if raw_step.pivot && !matches!(construct, Construct::Activity { .. }) {
                return Err(fail(Some(raw_step.name.span()), "only an activity step can be the pivot".into()));
            }
            resolve_step(
                ResolveInput {
                    name: step_name,
                    construct,
                    retry: &raw_step.retry,
                    timeouts: &raw_step.timeouts,
                    params: raw_step.params.as_ref(),
                },
                &raw.defaults,
            )
            .map(|mut step| {
                step.on_failure = raw_step.on_failure.unwrap_or(OnFailure::Compensate);
                step.pivot = raw_step.pivot;
                step.when = when;
                step
            })
            .and_then(|mut step| {
                let Some(raw_for_each) = &raw_step.for_each else {
                    return Ok(step);
                };
                let mut keys = raw_step.params.iter().flat_map(|t| t.keys());
                let resolved = raw_for_each.resolve(&step, in_branch, &mut keys, &known_step);
                step.for_each = Some(resolved.map_err(|r| format!("step {:?}: {r}", step.name))?);
                Ok(step)
            })
            .map_err(|reason| fail(Some(raw_step.name.span()), reason))
        };

    if raw.steps.is_empty() {
        return Err(fail(None, "a workflow needs at least one step".into()));
    }
    if raw.steps.len() > MAX_STEPS || raw.after_compensation.len() > MAX_STEPS {
        return Err(fail(None, format!("at most {MAX_STEPS} steps per list")));
    }
    let mut steps = raw.steps.iter().map(|s| resolve(s, false, &mut names)).collect::<Result<Vec<_>, _>>()?;
    let main_len = steps.len();
    if let Some(step) = raw.steps.iter().filter(|s| s.for_each.is_some()).nth(MAX_FOR_EACH_STEPS) {
        return Err(fail(Some(step.name.span()), format!("at most {MAX_FOR_EACH_STEPS} for_each steps")));
    }
    let mut branches = BTreeMap::new();
    for (name, raw_steps) in &raw.branches {
        if let Some(step) = raw_steps.iter().find(|s| s.pivot) {
            return Err(fail(Some(step.name.span()), "a step in a branch cannot be the pivot".into()));
        }
        let first = steps.len();
        for raw_step in raw_steps {
            steps.push(resolve(raw_step, true, &mut names)?);
        }
        branches.insert(name.clone(), first..steps.len());
    }
    language::check_branches_used(&steps[..main_len], raw.branches.keys()).map_err(|reason| fail(None, reason))?;
    let pivots: Vec<&RawStep> = raw.steps.iter().filter(|s| s.pivot).collect();
    if pivots.len() > 1 {
        return Err(fail(Some(pivots[1].name.span()), "at most one step may be the pivot".into()));
    }
    if let Some(step) = raw.after_compensation.iter().find(|s| s.pivot) {
        return Err(fail(Some(step.name.span()), "a step after compensation cannot be a pivot".into()));
    }
    let after_compensation =
        raw.after_compensation.iter().map(|s| resolve(s, true, &mut names)).collect::<Result<Vec<_>, _>>()?;
    if let Some((step, _)) = raw
        .after_compensation
        .iter()
        .zip(&after_compensation)
        .find(|(_, d)| !matches!(d.construct, Construct::Activity { .. }) || d.when.is_some())
    {
        return Err(fail(Some(step.name.span()), "a step after compensation is a plain activity step".into()));
    }

    let mut compensations: Vec<Option<StepDef>> = vec![None; steps.len()];
    for comp in &raw.compensations {
        let target = comp.step.get_ref();
        let Some(index) = steps.iter().position(|s| s.name == target.as_str()) else {
            return Err(fail(
                Some(comp.step.span()),
                format!("compensation for step {target:?}, which does not exist"),
            ));
        };
        if matches!(steps[index].construct, Construct::Child(_)) {
            return Err(fail(
                Some(comp.step.span()),
                format!("step {target:?} runs a child workflow: compensating it makes the child compensate itself"),
            ));
        }
        if matches!(steps[index].construct, Construct::Sleep(_) | Construct::Choice(_) | Construct::Parallel(_)) {
            return Err(fail(
                Some(comp.step.span()),
                format!("step {target:?} is a sleep, a choice or a parallel: it has no effect of its own to undo (its branches' steps do)"),
            ));
        }
        if compensations[index].is_some() {
            return Err(fail(Some(comp.step.span()), format!("step {target:?} has two compensations")));
        }
        let name = StepName::parse(format!("{target}{COMPENSATION_SUFFIX}"))
            .map_err(|e| fail(Some(comp.step.span()), format!("compensation name: {e}")))?;
        let construct = activity_construct(&name, &comp.activity, &comp.queue)
            .map_err(|reason| fail(Some(comp.step.span()), reason))?;
        let resolved = resolve_step(
            ResolveInput {
                name,
                construct,
                retry: &comp.retry,
                timeouts: &comp.timeouts,
                params: comp.params.as_ref(),
            },
            &raw.defaults,
        )
        .map_err(|reason| fail(Some(comp.step.span()), reason))?;
        compensations[index] = Some(resolved);
    }

    let used: BTreeSet<ActivityName> = steps
        .iter()
        .chain(compensations.iter().flatten())
        .chain(&after_compensation)
        .filter_map(|step| step.activity().cloned())
        .collect();
    let circuits = circuit::resolve(&raw.activities, &used).map_err(|reason| fail(None, reason))?;
    let nodes = Box::new(nodes::Nodes::resolve(&steps, &compensations, &after_compensation));
    Ok(Definition {
        name,
        version,
        execution_timeout_ms,
        statuses: raw.statuses,
        steps,
        main_len,
        branches,
        signals,
        compensations,
        after_compensation,
        nodes,
        circuits,
        source: source.to_owned(),
        content_hash: crate::registry::content_hash(source),
    })
}

fn activity_construct(name: &StepName, activity: &str, queue: &toml::Spanned<String>) -> Result<Construct, String> {
    let activity = ActivityName::parse(activity).map_err(|e| format!("step {name:?}: {e}"))?;
    let queue = QueueName::parse(queue.get_ref().as_str()).map_err(|e| format!("step {name:?}: {e}"))?;
    Ok(Construct::Activity { activity, queue })
}

fn resolve_construct(raw: &RawStep, in_branch: bool, names: &language::Names<'_>) -> Result<Construct, String> {
    if let Some(child) = &raw.workflow {
        let others = [
            raw.activity.is_some() || raw.queue.is_some(),
            raw.sleep.is_some() || raw.sleep_until.is_some(),
            raw.wait_for.is_some() || raw.fail_on.is_some() || raw.timeout.is_some(),
            raw.choice.is_some() || raw.parallel.is_some() || raw.for_each.is_some(),
        ];
        if others.iter().any(|o| *o) {
            return Err(
                "a child workflow step (workflow = ...) has no activity, sleep, wait, choice, parallel or for_each"
                    .into(),
            );
        }
        return child.resolve(raw.name.get_ref(), in_branch).map(Construct::Child);
    }
    let activity = match (&raw.activity, &raw.queue) {
        (Some(activity), Some(queue)) => {
            let name = StepName::parse(raw.name.get_ref().as_str()).map_err(|e| e.to_string())?;
            match activity_construct(&name, activity, queue)? {
                Construct::Activity { activity, queue } => Some((activity, queue)),
                _ => None,
            }
        }
        _ => None,
    };
    let construct = language::RawConstruct {
        activity,
        has_activity: raw.activity.is_some() || raw.queue.is_some(),
        sleep: raw.sleep.as_deref(),
        sleep_until: raw.sleep_until.as_deref(),
        wait_for: raw.wait_for.as_deref(),
        fail_on: raw.fail_on.as_deref(),
        timeout: raw.timeout.as_deref(),
        choice: raw.choice.as_deref(),
        parallel: raw.parallel.as_deref(),
        in_branch,
    };
    language::resolve(&construct, names)
}

fn line_of(source: &str, offset: usize) -> usize {
    source.as_bytes()[..offset.min(source.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
