//! The part of a run's state the workflow language adds: sleeps and waits in flight, the
//! signals received (buffered until a wait consumes them, and the run's de-duplication
//! record), and the branches choices took.
//!
//! Like the rest of the state it changes only by applying events, so a replay rebuilds it
//! exactly; it must never evaluate a predicate or read a clock.

use super::WorkflowState;
use crate::definition::{Construct, Definition, NodeId, OnFailure};
use shop_types::history::{Event, EventKind};
use shop_types::{JsonText, StepRef};

/// A sleep in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSleep {
    pub step: StepRef,
    pub until_ms: u64,
}

/// A wait in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenWait {
    pub step: StepRef,
    pub signals: Vec<String>,
    pub deadline_ms: u64,
}

/// A signal the run accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSignal {
    /// The `SignalReceived` event's sequence number.
    pub seq: u64,
    pub name: String,
    pub key: String,
    pub payload: JsonText,
    /// A wait consumed it; until then it is buffered.
    pub consumed: bool,
}

impl WorkflowState {
    /// Applies an event of the workflow language. `node` is the node the event's step names.
    pub(super) fn apply_language(&mut self, definition: &Definition, event: &Event, node: Option<NodeId>) {
        let continues = |node: NodeId| definition.node_def(node).is_some_and(|d| d.on_failure == OnFailure::Continue);
        match (&event.kind, node) {
            (EventKind::SleepStarted { step, until_ms }, Some(node)) => {
                self.sleeps.insert(node, OpenSleep { step: *step, until_ms: *until_ms });
            }
            (EventKind::SleepEnded { .. }, Some(node)) => {
                self.sleeps.remove(&node);
                self.done.insert(node);
            }
            (EventKind::SignalReceived { name, key, payload }, _) => {
                let signal = ReceivedSignal {
                    seq: event.seq,
                    name: name.clone(),
                    key: key.clone(),
                    payload: payload.clone(),
                    consumed: false,
                };
                self.signals.push(signal);
            }
            (EventKind::WaitOpened { step, signals, deadline_ms }, Some(node)) => {
                let wait = OpenWait { step: *step, signals: signals.clone(), deadline_ms: *deadline_ms };
                self.waits.insert(node, wait);
            }
            (EventKind::WaitCompleted { signal, seq, .. }, Some(node)) => {
                self.waits.remove(&node);
                let payload = match self.signals.iter_mut().find(|s| s.seq == *seq) {
                    Some(received) => {
                        received.consumed = true;
                        received.payload.clone()
                    }
                    None => JsonText::null(),
                };
                let fails = definition
                    .node_def(node)
                    .is_some_and(|d| matches!(&d.construct, Construct::Wait(w) if w.fail_on.contains(signal)));
                if let Some(def) = definition.node_def(node) {
                    self.results.push((def.name.to_string(), payload));
                }
                if !fails {
                    // A consumed signal is the wait's effect: its compensation, if any, runs.
                    self.done.insert(node);
                    self.hand_out(node);
                } else if continues(node) {
                    self.done.insert(node);
                }
            }
            (EventKind::WaitTimedOut { .. }, Some(node)) => {
                self.waits.remove(&node);
                if continues(node) {
                    self.done.insert(node);
                }
            }
            (EventKind::StepSkipped { .. }, Some(node)) => {
                self.done.insert(node);
            }
            (EventKind::ChoiceTaken { branch, .. }, Some(node)) => {
                self.choices.insert(node, branch.clone());
                self.done.insert(node);
            }
            _ => {}
        }
    }

    /// The signal with idempotency key `key`, if the run accepted one.
    pub fn signal_by_key(&self, key: &str) -> Option<&ReceivedSignal> {
        self.signals.iter().find(|s| s.key == key)
    }

    /// The oldest buffered signal named in `names`.
    pub fn buffered_signal(&self, names: &[String]) -> Option<&ReceivedSignal> {
        self.signals.iter().find(|s| !s.consumed && names.contains(&s.name))
    }

    /// Nothing is in flight: no attempt, sleep, wait or parallel step.
    pub fn idle(&self) -> bool {
        self.attempts.is_empty()
            && self.sleeps.is_empty()
            && self.waits.is_empty()
            && self.parallels.is_empty()
            && self.for_eachs.is_empty()
    }

    /// The run's context as predicates and pointers read it:
    /// `{"input": ..., "steps": {"<name>": <output>, ...}}`.
    pub fn context_json(&self) -> serde_json::Value {
        let parse = |text: &JsonText| serde_json::from_str(text.as_str()).unwrap_or(serde_json::Value::Null);
        let steps: serde_json::Map<String, serde_json::Value> =
            self.results.iter().map(|(name, output)| (name.clone(), parse(output))).collect();
        serde_json::json!({ "input": parse(&self.input), "steps": steps })
    }
}
