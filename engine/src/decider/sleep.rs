//! Durable sleep: a step that waits until a time decided once, when it starts, and recorded
//! (`SleepStarted { until_ms }`), so a restart or replay wakes it at the same time. It must
//! never have an effect of its own: a cancel during a sleep compensates what came before.

use super::attempt::FailedForGood;
use super::{emit, step};
use crate::definition::{Definition, NodeId, OnFailure, Sleep, MAX_SLEEP};
use crate::state::WorkflowState;
use shop_types::history::{Event, EventKind};
use shop_types::StepRef;

/// Starts a sleep step: records when it ends, and ends it at once when that is not later
/// than now (`sleep = "0s"`, or a `sleep_until` in the past). A `sleep_until` whose pointer
/// does not hold a time, or holds one more than [`MAX_SLEEP`] away (a value from the input
/// or a signal could say `u64::MAX`), is a permanent failure of the step.
pub(super) fn begin(
    definition: &Definition,
    state: &mut WorkflowState,
    out: &mut Vec<Event>,
    now: u64,
    node: NodeId,
    step: StepRef,
    sleep: &Sleep,
) {
    let until_ms = match sleep {
        Sleep::For { ms } => Ok(now.saturating_add(*ms)),
        Sleep::Until { pointer } => {
            time_at(&state.context_json(), pointer).and_then(|until_ms| within_max(now, until_ms))
        }
    };
    match until_ms {
        Ok(until_ms) => {
            emit(definition, state, out, now, EventKind::SleepStarted { step, until_ms });
            if until_ms <= now {
                emit(definition, state, out, now, EventKind::SleepEnded { step });
            }
        }
        Err(cause) => {
            let name = definition.node_def(node).map(|d| d.name.to_string()).unwrap_or_default();
            // The run cannot go past a sleep it cannot time: whatever on_failure says, this
            // fails the step the way a permanent failure that compensates does.
            let failed = FailedForGood { name: &name, on_failure: OnFailure::Compensate, cause, attempts_made: 1 };
            step::failed_for_good(definition, state, out, now, &failed);
        }
    }
}

/// The sleep of `step` is due (the caller checked the timer is live).
pub(super) fn due(definition: &Definition, state: &mut WorkflowState, out: &mut Vec<Event>, now: u64, step: StepRef) {
    emit(definition, state, out, now, EventKind::SleepEnded { step });
}

/// `until_ms`, if it is at most [`MAX_SLEEP`] after `now`: the bound a `sleep = ".."`
/// duration has when the definition is parsed, applied to a time only known at run time.
fn within_max(now: u64, until_ms: u64) -> Result<u64, String> {
    let max_ms = u64::try_from(MAX_SLEEP.as_millis()).unwrap_or(u64::MAX);
    if until_ms > now.saturating_add(max_ms) {
        return Err(format!("sleep_until: {until_ms} is more than {} away", humantime::format_duration(MAX_SLEEP)));
    }
    Ok(until_ms)
}

/// The time (epoch ms) the context holds at `pointer`: a non-negative number of
/// milliseconds, or an RFC 3339 string.
fn time_at(context: &serde_json::Value, pointer: &str) -> Result<u64, String> {
    let not_a_time = || format!("sleep_until: {pointer} does not hold a time (epoch ms or RFC 3339)");
    match context.pointer(pointer) {
        Some(serde_json::Value::Number(n)) => n.as_u64().ok_or_else(not_a_time),
        Some(serde_json::Value::String(text)) => {
            let at = humantime::parse_rfc3339_weak(text).map_err(|_| not_a_time())?;
            let since = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| not_a_time())?;
            u64::try_from(since.as_millis()).map_err(|_| not_a_time())
        }
        _ => Err(not_a_time()),
    }
}

#[cfg(test)]
mod tests {
    use super::{time_at, within_max, MAX_SLEEP};
    use serde_json::json;

    #[test]
    fn a_time_is_epoch_ms_or_rfc3339() {
        let ctx =
            json!({"input": {"ms": 1_700_000_000_000u64, "at": "2023-11-14T22:13:20Z", "bad": "soon", "neg": -1}});
        assert_eq!(time_at(&ctx, "/input/ms"), Ok(1_700_000_000_000));
        assert_eq!(time_at(&ctx, "/input/at"), Ok(1_700_000_000_000));
        assert!(time_at(&ctx, "/input/bad").is_err());
        assert!(time_at(&ctx, "/input/neg").is_err());
        assert!(time_at(&ctx, "/input/missing").is_err());
    }

    #[test]
    fn a_time_is_at_most_max_sleep_away() {
        let max = u64::try_from(MAX_SLEEP.as_millis()).expect("fits");
        let now = 1_000;
        assert_eq!(within_max(now, now + max), Ok(now + max), "the limit itself is allowed");
        assert!(within_max(now, now + max + 1).is_err());
        assert!(within_max(now, u64::MAX).is_err());
        assert_eq!(within_max(now, 0), Ok(0), "a time in the past ends the sleep at once");
    }
}
