//! A definition resolved to nodes: every step a run can have in flight gets a [`NodeId`].
//!
//! Today every forward step, every compensation and every step after compensation is one
//! node. Ids are assigned in that order (forward steps, then compensations in the order of
//! the steps they undo, then the steps after compensation), so they are the same every time
//! the same definition is loaded. Node ids are never stored: histories and task tokens name
//! steps by [`StepRef`], which maps to and from a node id here, so the history format does
//! not depend on this resolution. This module must never parse or validate TOML.
//!
//! A `for_each` step adds, after all of those, one node per possible item
//! (`MAX_FOR_EACH_ITEMS`, kind `Instance`) and, when it has a compensation, one compensation
//! node per item: each instance is a node of its own, so its attempts, timers, hand-outs and
//! reports are keyed exactly like any step's. Their refs are the instance refs of
//! `for_each`.

use super::for_each::{decode_instance, instance_index, MAX_FOR_EACH_ITEMS};
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
    /// One item's instance of a `for_each` step (the step's own node is never scheduled).
    Instance,
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
    /// By `for_each` ordinal: the forward index of the step, the node of its item 0, and the
    /// node of its item 0's compensation (if the step has a compensation).
    for_each: Vec<ForEachNodes>,
}

#[derive(Debug, Clone, PartialEq)]
struct ForEachNodes {
    step: usize,
    first: u16,
    first_compensation: Option<u16>,
}

impl Nodes {
    /// The forward index of the `ordinal`-th `for_each` step.
    pub(super) fn for_each_step(&self, ordinal: usize) -> Option<usize> {
        self.for_each.get(ordinal).map(|f| f.step)
    }
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
        let mut for_each = Vec::new();
        for (ordinal, index) in
            steps.iter().enumerate().filter(|(_, s)| s.for_each.is_some()).map(|(i, _)| i).enumerate()
        {
            let first = step_index(nodes.len());
            let refs = (0..MAX_FOR_EACH_ITEMS).filter_map(|item| instance_index(ordinal, item));
            for ref_index in refs.clone() {
                push(&mut nodes, StepRef::forward(ref_index), NodeKind::Instance);
            }
            let first_compensation = compensations.get(index).and_then(Option::as_ref).map(|_| {
                let first = step_index(nodes.len());
                for ref_index in refs {
                    push(
                        &mut nodes,
                        StepRef { phase: StepPhase::Compensation, index: ref_index },
                        NodeKind::Compensation,
                    );
                }
                first
            });
            for_each.push(ForEachNodes { step: index, first, first_compensation });
        }
        Nodes { nodes, compensation_nodes, after_base, for_each }
    }
}

/// A list position as a `u16`: lists hold at most `MAX_STEPS` steps, so it always fits.
fn step_index(index: usize) -> u16 {
    u16::try_from(index).unwrap_or(u16::MAX)
}

impl Definition {
    /// The node a stored step ref names, if the definition has it.
    pub fn node_id(&self, step: StepRef) -> Option<NodeId> {
        if let Some((ordinal, item)) = decode_instance(step.index) {
            let nodes = self.nodes.for_each.get(ordinal)?;
            let first = match step.phase {
                StepPhase::Forward => nodes.first,
                StepPhase::Compensation => nodes.first_compensation?,
                StepPhase::AfterCompensation => return None,
            };
            return Some(NodeId(first + step_index(item)));
        }
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

    /// The compensation of a forward step's node (or of a `for_each` instance), if it has one.
    pub fn compensation_of(&self, forward: NodeId) -> Option<NodeId> {
        match self.node(forward)? {
            Node { kind: NodeKind::Step, step, .. } => *self.nodes.compensation_nodes.get(usize::from(step.index))?,
            Node { kind: NodeKind::Instance, step, .. } => {
                self.node_id(StepRef { phase: StepPhase::Compensation, index: step.index })
            }
            _ => None,
        }
    }

    /// The child workflow a forward step's node runs, if it is a child workflow step. Such a
    /// step has no compensation node: compensating it means its child compensates itself.
    pub fn child_of(&self, node: NodeId) -> Option<&super::Child> {
        match (self.node_kind(node)?, &self.node_def(node)?.construct) {
            (NodeKind::Step, super::Construct::Child(spec)) => Some(spec),
            _ => None,
        }
    }

    /// The `for_each` step node an instance node belongs to, and the instance's item.
    pub fn instance_of(&self, node: NodeId) -> Option<(NodeId, usize)> {
        let (ordinal, item) = decode_instance(self.node(node)?.step.index)?;
        Some((NodeId(step_index(self.nodes.for_each.get(ordinal)?.step)), item))
    }

    /// The node of item `item` of the `for_each` step `step`.
    pub fn instance_node(&self, step: NodeId, item: usize) -> Option<NodeId> {
        let ordinal = self.nodes.for_each.iter().position(|f| f.step == step.index())?;
        self.node_id(StepRef::forward(instance_index(ordinal, item)?))
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
