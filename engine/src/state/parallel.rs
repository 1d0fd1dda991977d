//! The part of a run's state `parallel` steps add: the parallel steps open (their branches
//! and which have completed) and, once one stops, why (until compensation starts).
//!
//! Like the rest of the state it changes only by applying events, so a replay rebuilds it
//! exactly; it must never decide what a branch runs next (the decider's `parallel` does).

use super::{AttemptStatus, WorkflowState};
use crate::definition::{Definition, NodeId};
use shop_types::history::{Event, EventKind};
use shop_types::StepRef;
use std::collections::BTreeSet;

/// A `parallel` step in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenParallel {
    pub step: StepRef,
    /// Its branches, in declared order.
    pub branches: Vec<String>,
    /// Those whose every step is finished with.
    pub completed: BTreeSet<String>,
}

impl WorkflowState {
    /// Applies an event of a `parallel` step. `node` is the node the event's step names.
    pub(super) fn apply_parallel(&mut self, _definition: &Definition, event: &Event, node: Option<NodeId>) {
        match (&event.kind, node) {
            (EventKind::ParallelStarted { step, branches }, Some(node)) => {
                let open = OpenParallel { step: *step, branches: branches.clone(), completed: BTreeSet::new() };
                self.parallels.insert(node, open);
            }
            (EventKind::BranchCompleted { branch, .. }, Some(node)) => {
                let Some(open) = self.parallels.get_mut(&node) else {
                    return;
                };
                open.completed.insert(branch.clone());
                if open.branches.iter().all(|b| open.completed.contains(b)) {
                    self.parallels.remove(&node);
                    self.done.insert(node);
                }
            }
            (EventKind::ParallelStopped { reason, .. }, _) => self.stop_in_flight(reason),
            _ => {}
        }
    }

    /// A `parallel` or `for_each` step stopped for `reason`: what no worker holds ends here
    /// (it had no effect); what a worker holds is left to settle, so no effect is ever left
    /// behind uncompensated.
    pub(super) fn stop_in_flight(&mut self, reason: &str) {
        self.stopping = Some(reason.to_owned());
        self.attempts.retain(|_, attempt| matches!(attempt.status, AttemptStatus::Started { .. }));
        self.sleeps.clear();
        self.waits.clear();
    }

    /// Whether `node` has an attempt, a sleep or a wait in flight.
    pub fn node_in_flight(&self, node: NodeId) -> bool {
        self.attempts.contains_key(&node) || self.sleeps.contains_key(&node) || self.waits.contains_key(&node)
    }
}
