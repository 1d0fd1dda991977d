//! Child workflows: a main-line step that runs another workflow as a run of its own.
//!
//! Starting the step records `ChildStarted { step, child, version }` and asks the core
//! (`Effect::Start`) to start the child in the same batch: id `<parent>.<step>`, input the
//! parent's context `{"input": ..., "steps": ...}`, one level deeper than the parent (at most
//! `MAX_CHILD_DEPTH`). When the child ends, its own terminal decision carries
//! `Effect::ChildEnded` back, which becomes `ChildCompleted` (the step completes with the
//! child's output) or `ChildFailed` (a permanent failure: the parent compensates). A parent
//! that compensates, is cancelled or is terminated while a child runs asks it to cancel
//! (`Effect::Cancel`); the parent's compensation waits for the child's terminal outcome
//! (a child in flight keeps the run from being idle). It must never start a child twice for
//! one step, nor let a compensation go on while a child is in flight.

use super::attempt::FailedForGood;
use super::{emit, step, Context, Effect, Rejection};
use crate::definition::{child_id, Child, Definition, NodeId, MAX_CHILD_DEPTH};
use crate::state::WorkflowState;
use shop_types::api::WorkflowStatus;
use shop_types::history::{Event, EventKind};
use shop_types::{JsonText, StepRef, WorkflowId};
use std::collections::BTreeMap;

/// The version `ChildStarted` carries until [`effects`] resolves "the latest" (a version is
/// never 0 otherwise; one that stays 0 names no definition, and the child fails to start).
pub(super) const LATEST_UNRESOLVED: u32 = 0;

/// How a child ended, as its parent hears it.
pub type ChildOutcome = Result<JsonText, String>;

/// Starts child step `node`, or fails it for good when the child would be too deep or its
/// derived id does not fit.
pub(super) fn begin(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    spec: &Child,
) {
    let name = definition.node_def(node).map(|d| d.name.to_string()).unwrap_or_default();
    let depth = state.depth().saturating_add(1);
    let child = if depth > MAX_CHILD_DEPTH {
        Err(format!("a child here would be {depth} levels deep, more than {MAX_CHILD_DEPTH}"))
    } else {
        child_id(&state.id, &name)
    };
    match child {
        Ok(child) => {
            let version = spec.version.unwrap_or(LATEST_UNRESOLVED);
            emit(definition, state, out, now, EventKind::ChildStarted { step, child, version });
        }
        Err(reason) => fail(definition, state, out, now, node, step, reason),
    }
}

/// The child of step `step` ended with `outcome` (the core delivers it from the child's
/// terminal decision, or from recovery). Stale unless that child is in flight for the step.
pub(super) fn ended(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
    child: &WorkflowId,
    outcome: ChildOutcome,
) -> Result<(), Rejection> {
    let node = definition.node_id(step).ok_or(Rejection::Stale)?;
    if state.children.get(&node).is_none_or(|open| open.child != *child) {
        return Err(Rejection::Stale);
    }
    match outcome {
        Ok(output) => emit(definition, state, out, now, EventKind::ChildCompleted { step, output }),
        Err(reason) => fail(definition, state, out, now, node, step, reason),
    }
    Ok(())
}

/// Records `ChildFailed` and what it means for the run: nothing more while compensating (the
/// compensation was waiting for it), else a permanent failure of the step.
fn fail(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    reason: String,
) {
    emit(definition, state, out, now, EventKind::ChildFailed { step, reason: reason.clone() });
    if state.compensation_plan.is_some() || state.stopping.is_some() || state.terminal.is_some() {
        return;
    }
    let Some(def) = definition.node_def(node) else {
        return;
    };
    let name = def.name.to_string();
    let failed = FailedForGood { name: &name, on_failure: def.on_failure, cause: reason, attempts_made: 1 };
    step::failed_for_good(definition, state, out, now, &failed);
}

/// What a decision's events ask of other runs, given the children in flight before it:
/// start the children it started (resolving "the latest" version through the context, and
/// recording it in the event), cancel those in flight when the run compensates or ends, and
/// tell the parent when this run, a child, ends.
pub(super) fn effects(
    definition: &Definition,
    before: &BTreeMap<NodeId, crate::state::OpenChild>,
    state: &WorkflowState,
    events: &mut [Event],
    ctx: Context<'_>,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    let mut in_flight: BTreeMap<NodeId, WorkflowId> = before.iter().map(|(n, c)| (*n, c.child.clone())).collect();
    let mut stopping = None;
    for event in events.iter_mut() {
        let node = event.kind.step().and_then(|s| definition.node_id(s));
        match (&mut event.kind, node) {
            (EventKind::ChildStarted { step, child, version }, Some(node)) => {
                let Some(Child { name, version: _ }) = definition.node_def(node).and_then(|d| match &d.construct {
                    crate::definition::Construct::Child(spec) => Some(spec),
                    _ => None,
                }) else {
                    continue;
                };
                if *version == LATEST_UNRESOLVED {
                    *version = ctx.latest_version(name).unwrap_or(LATEST_UNRESOLVED);
                }
                in_flight.insert(node, child.clone());
                effects.push(Effect::Start {
                    run: child.clone(),
                    workflow_type: name.clone(),
                    version: *version,
                    input: JsonText::from_value(&state.context_json()),
                    parent: state.id.clone(),
                    step: *step,
                    depth: state.depth().saturating_add(1),
                });
            }
            (EventKind::ChildCompleted { .. } | EventKind::ChildFailed { .. }, Some(node)) => {
                in_flight.remove(&node);
            }
            (EventKind::CompensationStarted { reason }, _) => {
                stopping = Some(format!("the parent compensates: {reason}"))
            }
            (kind, _) if kind.is_terminal() => stopping = Some(format!("the parent ended ({})", kind.name())),
            _ => {}
        }
    }
    if let Some(reason) = stopping {
        effects.extend(in_flight.into_values().map(|run| Effect::Cancel { run, reason: reason.clone() }));
    }
    let ended_now = events.iter().any(|e| e.kind.is_terminal());
    if let (true, Some(link), Some(terminal)) = (ended_now, &state.parent, &state.terminal) {
        let outcome = match (&terminal.status, &terminal.output) {
            (WorkflowStatus::Completed, Some(output)) => Ok(output.clone()),
            (status, _) => Err(format!(
                "child {} ended {}: {}",
                state.id,
                status.as_str(),
                terminal.reason.clone().unwrap_or_default()
            )),
        };
        effects.push(Effect::ChildEnded {
            parent: link.parent.clone(),
            step: link.step,
            child: state.id.clone(),
            outcome,
        });
    }
    effects
}
