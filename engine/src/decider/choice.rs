//! `choice`: the first case whose `when` holds (a last case without one is the default)
//! picks a branch, recorded as `ChoiceTaken` so a replay never evaluates a case again; the
//! branch's steps then run in order as part of the main line (`step::next`). No match and no
//! default is a permanent failure of the step, which compensates (or fails the run past the
//! pivot). It must never take two branches in one run of a choice.

use super::attempt::FailedForGood;
use super::{emit, step};
use crate::definition::{Case, Definition, NodeId, OnFailure};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};
use shop_types::StepRef;

pub(super) fn take(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    cases: &[Case],
) {
    let context = state.context_json();
    let taken = cases.iter().find(|case| case.when.as_ref().is_none_or(|when| when.holds(&context)));
    match taken {
        Some(case) => emit(definition, state, out, now, EventKind::ChoiceTaken { step, branch: case.branch.clone() }),
        None => {
            let name = definition.node_def(node).map(|d| d.name.to_string()).unwrap_or_default();
            let cause = "no case of the choice matched and it has no default".to_owned();
            let failed = FailedForGood { name: &name, on_failure: OnFailure::Compensate, cause, attempts_made: 1 };
            step::failed_for_good(definition, state, out, now, &failed);
        }
    }
}
