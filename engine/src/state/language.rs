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
    /// The payload's [`signal_digest`]: enough to tell a retry from a reused key once the
    /// payload itself is gone.
    pub digest: [u8; 32],
    /// The payload while the signal is buffered; `None` once a wait consumed it (the payload
    /// then lives on as the wait's output), so the de-duplication record of a run stays
    /// small however large its signals were.
    pub payload: Option<JsonText>,
}

impl ReceivedSignal {
    /// A wait consumed it; until then it is buffered.
    pub fn consumed(&self) -> bool {
        self.payload.is_none()
    }

    /// Whether `name` and `digest` are this signal's: a retry rather than a reused key.
    pub fn same(&self, name: &str, digest: &[u8; 32]) -> bool {
        self.name == name && self.digest == *digest
    }
}

/// SHA-256 of a payload's canonical JSON (object keys sorted, no spaces), so a retry that
/// formats the same value differently has the same digest. Text that does not parse (it
/// cannot reach here: payloads are validated JSON) is hashed as it is.
pub fn signal_digest(payload: &JsonText) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::from_str::<serde_json::Value>(payload.as_str())
        .map(|value| value.to_string())
        .unwrap_or_else(|_| payload.as_str().to_owned());
    Sha256::digest(canonical.as_bytes()).into()
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
                    digest: signal_digest(payload),
                    payload: Some(payload.clone()),
                };
                self.signals.push(signal);
            }
            (EventKind::WaitOpened { step, signals, deadline_ms }, Some(node)) => {
                let wait = OpenWait { step: *step, signals: signals.clone(), deadline_ms: *deadline_ms };
                self.waits.insert(node, wait);
            }
            (EventKind::WaitCompleted { signal, seq, .. }, Some(node)) => {
                self.waits.remove(&node);
                // The payload moves to the wait's output: the signal keeps only its digest.
                let payload = self
                    .signals
                    .iter_mut()
                    .find(|s| s.seq == *seq)
                    .and_then(|received| received.payload.take())
                    .unwrap_or_else(JsonText::null);
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
        self.signals.iter().find(|s| !s.consumed() && names.contains(&s.name))
    }

    /// Payload bytes of the signals buffered (received, not consumed): what
    /// [`MAX_BUFFERED_SIGNAL_BYTES`](shop_types::limits::MAX_BUFFERED_SIGNAL_BYTES) bounds.
    pub fn buffered_signal_bytes(&self) -> usize {
        self.signals.iter().filter_map(|s| s.payload.as_ref()).map(|p| p.as_str().len()).sum()
    }

    /// Nothing is in flight: no attempt, sleep, wait or parallel step.
    pub fn idle(&self) -> bool {
        self.attempts.is_empty()
            && self.sleeps.is_empty()
            && self.waits.is_empty()
            && self.parallels.is_empty()
            && self.for_eachs.is_empty()
            && self.children.is_empty()
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
