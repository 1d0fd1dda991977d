//! Signals and waits. A signal is accepted once per idempotency key (the key is looked up in
//! the run's state, rebuilt from its history, so de-duplication survives restarts) and
//! recorded as `SignalReceived`; it stays buffered until a wait for its name opens. A wait
//! opens with its deadline recorded (`WaitOpened`), consumes the oldest buffered signal it
//! listens for, or the next one to arrive (`WaitCompleted`), or times out (`WaitTimedOut`).
//! A `fail_on` signal or the timeout is a permanent failure of the step; a consumed signal's
//! payload becomes the step's output. It must never consume a signal twice or accept one the
//! run's version does not declare.

use super::attempt::FailedForGood;
use super::{advance, emit, step, Rejection};
use crate::definition::{Construct, Definition, NodeId, Wait};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};
use shop_types::{JsonText, StepRef};

/// Most signals one run accepts; past it a signal is refused (409 `TOO_MANY_SIGNALS`), so
/// no caller can grow a run's history and state without bound.
pub const MAX_SIGNALS_PER_RUN: usize = 256;

/// Opens a wait, and completes it at once with a buffered signal if one is there.
pub(super) fn open(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    wait: &Wait,
) {
    let deadline_ms = now.saturating_add(wait.timeout_ms);
    emit(definition, state, out, now, EventKind::WaitOpened { step, signals: wait.signals.clone(), deadline_ms });
    if let Some(buffered) = state.buffered_signal(&wait.signals) {
        let (signal, seq) = (buffered.name.clone(), buffered.seq);
        complete(definition, state, out, now, node, step, signal, seq);
    }
}

/// A signal arrives: refused, a duplicate, or recorded (and consumed by the open wait that
/// listens for it, if any).
pub(super) fn signal(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    name: String,
    key: String,
    payload: JsonText,
) -> Result<(), Rejection> {
    if !definition.signals.contains(&name) {
        return Err(Rejection::UnknownSignal(name));
    }
    if let Some(seen) = state.signal_by_key(&key) {
        return Err(if seen.name == name && same_json(&seen.payload, &payload) {
            Rejection::DuplicateSignal
        } else {
            Rejection::KeyReused
        });
    }
    if state.signals.len() >= MAX_SIGNALS_PER_RUN {
        return Err(Rejection::TooManySignals);
    }
    let seq = state.next_seq;
    emit(definition, state, out, now, EventKind::SignalReceived { name: name.clone(), key, payload });
    let listening = state.waits.iter().find(|(_, w)| w.signals.contains(&name)).map(|(node, w)| (*node, w.step));
    if let Some((node, step)) = listening {
        complete(definition, state, out, now, node, step, name, seq);
        advance(definition, state, out, now);
    }
    Ok(())
}

/// The wait of `step` reached its deadline (the caller checked the timer is live).
pub(super) fn timed_out(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    step: StepRef,
) {
    emit(definition, state, out, now, EventKind::WaitTimedOut { step });
    if let Some(def) = definition.node_id(step).and_then(|node| definition.node_def(node)) {
        let cause = "no signal before its deadline".to_owned();
        let failed = FailedForGood { name: def.name.as_str(), on_failure: def.on_failure, cause, attempts_made: 1 };
        step::failed_for_good(definition, state, out, now, &failed);
    }
}

#[allow(clippy::too_many_arguments)]
fn complete(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    signal: String,
    seq: u64,
) {
    let fails = definition
        .node_def(node)
        .is_some_and(|d| matches!(&d.construct, Construct::Wait(w) if w.fail_on.contains(&signal)));
    emit(definition, state, out, now, EventKind::WaitCompleted { step, signal: signal.clone(), seq });
    if fails {
        if let Some(def) = definition.node_def(node) {
            let cause = format!("signal {signal} received");
            let failed = FailedForGood { name: def.name.as_str(), on_failure: def.on_failure, cause, attempts_made: 1 };
            step::failed_for_good(definition, state, out, now, &failed);
        }
    }
}

/// Whether two payloads are the same value (a retried signal may format it differently).
fn same_json(a: &JsonText, b: &JsonText) -> bool {
    a.as_str() == b.as_str()
        || matches!(
            (serde_json::from_str::<serde_json::Value>(a.as_str()), serde_json::from_str::<serde_json::Value>(b.as_str())),
            (Ok(x), Ok(y)) if x == y
        )
}
