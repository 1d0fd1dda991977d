//! The part of a run's state `for_each` steps add: the open ones (how many items, how many
//! instances begun, the outputs and permanent failures so far) and every started step's
//! items, kept for the life of the run so an instance's compensation gets its item too.
//!
//! Like the rest of the state it changes only by applying events. The items pointer is
//! evaluated here, once, when `ForEachStarted` is applied, against the context of that
//! moment, which a replay rebuilds exactly; the event records the count the decider saw. It
//! must never decide what to schedule (the decider's `for_each` does).

use super::WorkflowState;
use crate::definition::{Definition, NodeId};
use shop_types::history::{Event, EventKind};
use shop_types::{JsonText, StepRef};
use std::collections::{BTreeMap, BTreeSet};

/// A `for_each` step in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenForEach {
    pub step: StepRef,
    pub count: usize,
    /// Instances begun (scheduled once): items `0..begun`.
    pub begun: usize,
    /// Outputs of the instances that completed, by item.
    pub outputs: BTreeMap<usize, JsonText>,
    /// Items whose instance failed for good.
    pub failed: BTreeSet<usize>,
}

impl OpenForEach {
    pub fn settled(&self) -> usize {
        self.outputs.len() + self.failed.len()
    }
}

impl WorkflowState {
    /// Applies `ForEachStarted` / `ForEachStopped`. `node` is the node the event's step names.
    pub(super) fn apply_for_each(&mut self, definition: &Definition, event: &Event, node: Option<NodeId>) {
        match (&event.kind, node) {
            (EventKind::ForEachStarted { step, count }, Some(node)) => {
                let count = usize::try_from(*count).unwrap_or(usize::MAX);
                let items = definition
                    .node_def(node)
                    .and_then(|d| d.for_each.as_ref())
                    .map(|f| for_each_items(&self.context_json(), &f.items).unwrap_or_default())
                    .unwrap_or_default();
                let items: Vec<JsonText> = items.into_iter().take(count).collect();
                let count = items.len();
                self.for_each_items.insert(node, items);
                let open =
                    OpenForEach { step: *step, count, begun: 0, outputs: BTreeMap::new(), failed: BTreeSet::new() };
                self.for_eachs.insert(node, open);
                self.finish_for_each(definition, node);
            }
            (EventKind::ForEachStopped { reason, .. }, _) => self.stop_in_flight(reason),
            _ => {}
        }
    }

    /// An instance's attempt 1 was scheduled.
    pub(super) fn instance_begun(&mut self, definition: &Definition, node: NodeId) {
        let Some((step, item)) = definition.instance_of(node) else {
            return;
        };
        if let Some(open) = self.for_eachs.get_mut(&step) {
            open.begun = open.begun.max(item + 1);
        }
    }

    /// An instance settled: completed with `output`, or (`None`) failed for good.
    pub(super) fn instance_settled(&mut self, definition: &Definition, node: NodeId, output: Option<&JsonText>) {
        let Some((step, item)) = definition.instance_of(node) else {
            return;
        };
        let Some(open) = self.for_eachs.get_mut(&step) else {
            return;
        };
        match output {
            Some(output) => {
                open.outputs.insert(item, output.clone());
            }
            None => {
                open.failed.insert(item);
            }
        }
        self.finish_for_each(definition, step);
    }

    /// Completes the `for_each` step `step` once every instance settled within its
    /// tolerance: its output is the instances' outputs in item order (`null` for a failed
    /// one). Past the tolerance it stays open, for the decider to stop it.
    fn finish_for_each(&mut self, definition: &Definition, step: NodeId) {
        let (Some(open), Some(def)) = (self.for_eachs.get(&step), definition.node_def(step)) else {
            return;
        };
        let tolerated = def.for_each.as_ref().map_or(0, |f| f.tolerated_failures as usize);
        if open.settled() < open.count || open.failed.len() > tolerated {
            return;
        }
        let null = JsonText::null();
        let outputs: Vec<String> =
            (0..open.count).map(|i| open.outputs.get(&i).unwrap_or(&null).as_str().to_owned()).collect();
        let array = JsonText::parse(format!("[{}]", outputs.join(","))).unwrap_or_else(|_| JsonText::null());
        self.for_eachs.remove(&step);
        self.done.insert(step);
        self.results.push((def.name.to_string(), array));
    }

    /// The item and index an instance node's task (or its compensation's) gets.
    pub fn instance_item(&self, definition: &Definition, node: NodeId) -> Option<(usize, &JsonText)> {
        let forward = definition.node(node).map(|n| shop_types::StepRef::forward(n.step.index))?;
        let (step, item) = definition.instance_of(definition.node_id(forward)?)?;
        Some((item, self.for_each_items.get(&step)?.get(item)?))
    }
}

/// The items the context holds at `pointer`: an array, or why not.
pub fn for_each_items(context: &serde_json::Value, pointer: &str) -> Result<Vec<JsonText>, String> {
    match context.pointer(pointer) {
        Some(serde_json::Value::Array(items)) => Ok(items.iter().map(JsonText::from_value).collect()),
        Some(_) => Err(format!("for_each items: {pointer} does not hold an array")),
        None => Err(format!("for_each items: the context holds nothing at {pointer}")),
    }
}
