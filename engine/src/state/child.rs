//! The part of a run's state child workflows add: in a parent, the children in flight by
//! node; in a child, the link to its parent (`ParentLinked`).
//!
//! Like the rest of the state it changes only by applying events, so a replay rebuilds it
//! exactly; it must never decide anything about the child run itself (the core applies the
//! decider's effects to it).

use super::WorkflowState;
use crate::definition::{Definition, NodeId, OnFailure};
use shop_types::history::{Event, EventKind};
use shop_types::{StepRef, WorkflowId};

/// A child run in flight, started by a step of this run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenChild {
    pub step: StepRef,
    pub child: WorkflowId,
}

/// In a child: who started it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentLink {
    pub parent: WorkflowId,
    pub step: StepRef,
    /// Levels below a run nobody started (1 for a parent's child).
    pub depth: u32,
}

impl WorkflowState {
    /// Applies an event of a child workflow step (or a child's link to its parent).
    pub(super) fn apply_child(&mut self, definition: &Definition, event: &Event, node: Option<NodeId>) {
        match (&event.kind, node) {
            (EventKind::ChildStarted { step, child, .. }, Some(node)) => {
                self.children.insert(node, OpenChild { step: *step, child: child.clone() });
                // The child may have had effects; it compensates itself when cancelled.
                self.hand_out(node);
            }
            (EventKind::ChildCompleted { output, .. }, Some(node)) => {
                self.children.remove(&node);
                self.done.insert(node);
                self.settle(node);
                if let Some(def) = definition.node_def(node) {
                    self.results.push((def.name.to_string(), output.clone()));
                }
            }
            (EventKind::ChildFailed { .. }, Some(node)) => {
                self.children.remove(&node);
                self.settle(node);
                if definition.node_def(node).is_some_and(|d| d.on_failure == OnFailure::Continue) {
                    self.done.insert(node);
                }
            }
            (EventKind::ParentLinked { parent, step, depth }, _) => {
                self.parent = Some(ParentLink { parent: parent.clone(), step: *step, depth: *depth });
            }
            _ => {}
        }
    }

    /// How deep this run is below a run nobody started (0 for such a run).
    pub fn depth(&self) -> u32 {
        self.parent.as_ref().map_or(0, |p| p.depth)
    }
}
