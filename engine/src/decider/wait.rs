//! Signals and waits. A signal is accepted once per idempotency key (the key is looked up in
//! the run's state, rebuilt from its history, so de-duplication survives restarts) and
//! recorded as `SignalReceived`; it stays buffered until a wait for its name opens. A wait
//! opens with its deadline recorded (`WaitOpened`), consumes the oldest buffered signal it
//! listens for, or the next one to arrive (`WaitCompleted`), or times out (`WaitTimedOut`).
//! A `fail_on` signal or the timeout is a permanent failure of the step; a consumed signal's
//! payload becomes the step's output (the signal then keeps only its key and digest). It must
//! never consume a signal twice, let a wait consume one at or past its deadline, or accept
//! one the run's version does not declare, no wait can still take, or over the limits of
//! `shop_types::limits`.

use super::attempt::FailedForGood;
use super::{advance, emit, soft_limit, step, Context, Rejection};
use crate::definition::{Construct, Definition, NodeId, Wait};
use crate::state::{signal_digest, WorkflowState};
use shop_types::history::{Event, EventKind};
use shop_types::limits::{MAX_BUFFERED_SIGNAL_BYTES, MAX_SIGNAL_PAYLOAD_BYTES};
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
///
/// Refused, in this order: a name the version does not declare; a key already used (a
/// duplicate when name and payload match); a run that takes no more signals (compensating,
/// stopping, parked, or past its history's soft limit, so signals cannot eat the events
/// compensation needs); a payload over [`MAX_SIGNAL_PAYLOAD_BYTES`]; a signal no wait the
/// run can still open listens for, or one that would buffer more than
/// [`MAX_BUFFERED_SIGNAL_BYTES`]; and past [`MAX_SIGNALS_PER_RUN`].
pub(super) fn signal(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    ctx: Context,
    name: String,
    key: String,
    payload: JsonText,
) -> Result<(), Rejection> {
    let now = ctx.now_ms;
    if !definition.signals.contains(&name) {
        return Err(Rejection::UnknownSignal(name));
    }
    if let Some(seen) = state.signal_by_key(&key) {
        return Err(if seen.same(&name, &signal_digest(&payload)) {
            Rejection::DuplicateSignal
        } else {
            Rejection::KeyReused
        });
    }
    if let Some(why) = closed(state, ctx.max_history_events) {
        return Err(Rejection::SignalsClosed(why));
    }
    let size = payload.as_str().len();
    if size > MAX_SIGNAL_PAYLOAD_BYTES {
        return Err(Rejection::SignalTooLarge(size));
    }
    // A wait at or past its deadline has timed out, whether or not its timer has fired yet
    // (the core fires a bounded number per turn, so one may be overdue): it never consumes a
    // signal. The signal stays buffered, for a later wait, and the timer times the wait out.
    let listening = state
        .waits
        .iter()
        .find(|(_, w)| w.deadline_ms > now && w.signals.contains(&name))
        .map(|(node, w)| (*node, w.step));
    if listening.is_none() {
        if !may_still_wait_for(definition, state, &name) {
            return Err(Rejection::SignalNotAwaited(name));
        }
        if state.buffered_signal_bytes() + size > MAX_BUFFERED_SIGNAL_BYTES {
            return Err(Rejection::SignalBufferFull);
        }
    }
    if state.signals.len() >= MAX_SIGNALS_PER_RUN {
        return Err(Rejection::TooManySignals);
    }
    let seq = state.next_seq;
    emit(definition, state, out, now, EventKind::SignalReceived { name: name.clone(), key, payload });
    if let Some((node, step)) = listening {
        complete(definition, state, out, now, node, step, name, seq);
        advance(definition, state, out, now);
    }
    Ok(())
}

/// Why the run takes no more signals, if it does not.
fn closed(state: &WorkflowState, max_history_events: u64) -> Option<&'static str> {
    if state.parked.is_some() {
        Some("it is parked, waiting for an operator")
    } else if state.compensation_plan.is_some() || state.stopping.is_some() {
        Some("it is compensating")
    } else if state.next_seq > soft_limit(max_history_events) {
        Some("its history is past its soft limit; the rest is kept for compensation")
    } else {
        None
    }
}

/// Whether a wait for `name` is open or may still open: a forward wait not finished with,
/// and not in the branch of a choice that took another one.
fn may_still_wait_for(definition: &Definition, state: &WorkflowState, name: &str) -> bool {
    definition.forward_nodes().any(|node| {
        !state.done.contains(&node)
            && definition
                .node_def(node)
                .is_some_and(|d| matches!(&d.construct, Construct::Wait(w) if w.signals.iter().any(|s| s == name)))
            && reachable(definition, state, node)
    })
}

/// Whether forward `node` may still run: it is on the main line (or a parallel step's
/// branch), or in a branch some choice may still take or took.
fn reachable(definition: &Definition, state: &WorkflowState, node: NodeId) -> bool {
    let Some(branch) = definition.branches.keys().find(|b| definition.branch_nodes(b).any(|n| n == node)) else {
        return true;
    };
    let mut choosers = definition.forward_nodes().filter(|&n| {
        definition.node_def(n).is_some_and(
            |d| matches!(&d.construct, Construct::Choice(cases) if cases.iter().any(|c| &c.branch == branch)),
        )
    });
    let mut any = false;
    let open = choosers.any(|chooser| {
        any = true;
        state.choices.get(&chooser).is_none_or(|taken| taken == branch)
    });
    open || !any
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
