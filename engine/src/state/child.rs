//! The part of a run's state child workflows add: in a parent, the children in flight and
//! the children held (completed, waiting for the parent's verdict), by node; in a child, the
//! link to its parent (`ParentLinked`) and, once its forward path completed, the output it
//! holds for its parent (`HeldByParent`).
//!
//! Like the rest of the state it changes only by applying events, so a replay rebuilds it
//! exactly; it must never decide anything about the child run itself (the core applies the
//! decider's effects to it).

use super::WorkflowState;
use crate::definition::{Definition, NodeId, OnFailure};
use shop_types::history::{Event, EventKind};
use shop_types::{StepRef, WorkflowId};

/// A child run started by a step of this run, which this run still has business with.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenChild {
    pub step: StepRef,
    pub child: WorkflowId,
    /// In `children`: the child was told to compensate itself (`ChildCompensating`), and the
    /// parent's compensation waits for its end. False while it runs forward, and when held.
    pub compensating: bool,
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
    /// Applies an event of a child workflow step (or of a child's link to its parent).
    pub(super) fn apply_child(&mut self, definition: &Definition, event: &Event, node: Option<NodeId>) {
        match (&event.kind, node) {
            (EventKind::ChildStarted { step, child, .. }, Some(node)) => {
                self.children.insert(node, OpenChild { step: *step, child: child.clone(), compensating: false });
                // The child may have had effects; it compensates itself when cancelled.
                self.hand_out(node);
            }
            (EventKind::ChildCompleted { step, output }, Some(node)) => {
                // The child is held until this run's verdict (a child that completed before
                // children were held is answered for by the core when the verdict comes).
                if let Some(open) = self.children.remove(&node) {
                    self.held_children.insert(node, OpenChild { step: *step, compensating: false, ..open });
                }
                // Already done when a child told to cancel went on past its pivot.
                if self.done.insert(node) {
                    self.settle(node);
                    if let Some(def) = definition.node_def(node) {
                        self.results.push((def.name.to_string(), output.clone()));
                    }
                }
            }
            (EventKind::ChildFailed { .. }, Some(node)) => {
                self.children.remove(&node);
                self.held_children.remove(&node);
                self.settle(node);
                if definition.node_def(node).is_some_and(|d| d.on_failure == OnFailure::Continue) {
                    self.done.insert(node);
                }
            }
            (EventKind::ChildCompensating { step, child }, Some(node)) => {
                self.held_children.remove(&node);
                self.children.insert(node, OpenChild { step: *step, child: child.clone(), compensating: true });
            }
            (EventKind::ParentLinked { parent, step, depth }, _) => {
                self.parent = Some(ParentLink { parent: parent.clone(), step: *step, depth: *depth });
            }
            (EventKind::HeldByParent { output }, _) => self.held_by_parent = Some(output.clone()),
            _ => {}
        }
    }

    /// How deep this run is below a run nobody started (0 for such a run).
    pub fn depth(&self) -> u32 {
        self.parent.as_ref().map_or(0, |p| p.depth)
    }

    /// In a child: its forward path completed and it waits for its parent's verdict (it has
    /// not begun compensating nor ended).
    pub fn held(&self) -> bool {
        self.held_by_parent.is_some() && self.compensation_plan.is_none() && self.terminal.is_none()
    }
}
