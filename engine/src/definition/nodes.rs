//! A definition resolved to nodes: every step a run can have in flight gets a [`NodeId`].
//!
//! Today every forward step, every compensation and every step after compensation is one
//! node. Ids are assigned in that order (forward steps, then compensations in the order of
//! the steps they undo, then the steps after compensation), so they are the same every time
//! the same definition is loaded. Node ids are never stored: histories and task tokens name
//! steps by [`StepRef`], which maps to and from a node id here, so the history format does
//! not depend on this resolution. This module must never parse or validate TOML.

use super::{Definition, StepDef};
use shop_types::{StepPhase, StepRef};

/// A node of a resolved definition: the key of a run's attempts in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u16);

impl NodeId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What construct a node is, which decides what its completion or failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A forward activity step.
    Step,
    /// The compensation of a forward step.
    Compensation,
    /// A step run after compensation has finished.
    AfterCompensation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: NodeId,
    /// How stored events and task tokens name this node.
    pub step: StepRef,
    pub kind: NodeKind,
}

/// The nodes of a definition and the maps between them and step refs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nodes {
    nodes: Vec<Node>,
    /// Indexed like the forward steps: the node of that step's compensation, if it has one.
    compensation_nodes: Vec<Option<NodeId>>,
    /// The id of the first step after compensation.
    after_base: u16,
}

impl Nodes {
    /// Resolves the lists of a definition. The lists are at most `MAX_STEPS` long each, so
    /// every id fits a `u16`.
    pub(super) fn resolve(steps: &[StepDef], compensations: &[Option<StepDef>], after: &[StepDef]) -> Self {
        let mut nodes: Vec<Node> = Vec::with_capacity(steps.len() * 2 + after.len());
        let push = |nodes: &mut Vec<Node>, step: StepRef, kind: NodeKind| {
            let id = NodeId(step_index(nodes.len()));
            nodes.push(Node { id, step, kind });
            id
        };
        for index in 0..steps.len() {
            push(&mut nodes, StepRef::forward(step_index(index)), NodeKind::Step);
        }
        let mut compensation_nodes = Vec::with_capacity(compensations.len());
        for (index, comp) in compensations.iter().enumerate() {
            let step = StepRef { phase: StepPhase::Compensation, index: step_index(index) };
            compensation_nodes.push(comp.as_ref().map(|_| push(&mut nodes, step, NodeKind::Compensation)));
        }
        let after_base = step_index(nodes.len());
        for index in 0..after.len() {
            let step = StepRef { phase: StepPhase::AfterCompensation, index: step_index(index) };
            push(&mut nodes, step, NodeKind::AfterCompensation);
        }
        Nodes { nodes, compensation_nodes, after_base }
    }
}

/// A list position as a `u16`: lists hold at most `MAX_STEPS` steps, so it always fits.
fn step_index(index: usize) -> u16 {
    u16::try_from(index).unwrap_or(u16::MAX)
}

impl Definition {
    /// The node a stored step ref names, if the definition has it.
    pub fn node_id(&self, step: StepRef) -> Option<NodeId> {
        let index = usize::from(step.index);
        match step.phase {
            StepPhase::Forward => (index < self.steps.len()).then_some(NodeId(step.index)),
            StepPhase::Compensation => *self.nodes.compensation_nodes.get(index)?,
            StepPhase::AfterCompensation => {
                (index < self.after_compensation.len()).then(|| NodeId(self.nodes.after_base + step.index))
            }
        }
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.nodes.get(id.index())
    }

    pub fn node_kind(&self, id: NodeId) -> Option<NodeKind> {
        self.node(id).map(|n| n.kind)
    }

    /// The step a node runs: its activity, queue, retry policy and timeouts.
    pub fn node_def(&self, id: NodeId) -> Option<&StepDef> {
        self.step(self.node(id)?.step)
    }

    /// The forward steps' nodes, in order.
    pub fn forward_nodes(&self) -> impl DoubleEndedIterator<Item = NodeId> + '_ {
        self.nodes.nodes.iter().filter(|n| n.kind == NodeKind::Step).map(|n| n.id)
    }

    /// The main line's forward steps, in order (a choice's branch runs where its choice is).
    pub fn main_line(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.main_len).map(|i| NodeId(step_index(i)))
    }

    /// The steps of `branch`, in order (none for a branch the definition does not have).
    pub fn branch_nodes(&self, branch: &str) -> impl Iterator<Item = NodeId> + '_ {
        self.branches.get(branch).cloned().unwrap_or(0..0).map(|i| NodeId(step_index(i)))
    }

    /// The steps after compensation, in order.
    pub fn after_compensation_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.nodes.iter().filter(|n| n.kind == NodeKind::AfterCompensation).map(|n| n.id)
    }

    /// The compensation of a forward step's node, if it has one.
    pub fn compensation_of(&self, forward: NodeId) -> Option<NodeId> {
        match self.node(forward)? {
            Node { kind: NodeKind::Step, step, .. } => *self.nodes.compensation_nodes.get(usize::from(step.index))?,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::definition::parse;

    #[test]
    fn every_step_of_the_order_saga_is_a_node_and_maps_back() {
        let def = parse("order.toml", include_str!("../../../workflows/order.toml")).expect("valid");
        // 4 forward steps, 2 compensations, 1 step after compensation.
        let all: Vec<_> = (0..10u16).filter_map(|i| def.node(super::NodeId(i))).collect();
        assert_eq!(all.len(), 7);
        for node in all {
            assert_eq!(def.node_id(node.step), Some(node.id), "{node:?}");
            assert_eq!(def.node_def(node.id).map(|d| &d.name), def.step(node.step).map(|d| &d.name));
        }
        let forward: Vec<_> = def.forward_nodes().collect();
        assert_eq!(forward.len(), 4);
        assert!(def.compensation_of(forward[0]).is_some() && def.compensation_of(forward[1]).is_some());
        assert_eq!(def.compensation_of(forward[2]), None);
        assert_eq!(def.after_compensation_nodes().count(), 1);
        let missing = shop_types::StepRef { phase: shop_types::StepPhase::Compensation, index: 2 };
        assert_eq!(def.node_id(missing), None, "confirm_order has no compensation");
        assert_eq!(def.node_id(shop_types::StepRef::forward(4)), None);
    }
}
