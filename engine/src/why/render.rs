//! `why`'s sentences: the summary and the advice, made from a [`WhyView`]'s facts so the API,
//! `shopctl why` and the console say the same thing. Pure text; it must never look at
//! anything but the view it is given.

use shop_types::describe::millis;
use shop_types::why::{WhyStep, WhyStepState, WhyView, WhyWait};
use shop_types::WorkflowId;

/// The gist of `view` in one sentence.
pub(super) fn summary(id: &WorkflowId, view: &WhyView) -> String {
    if let Some(ended) = &view.ended {
        let by = ended.by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default();
        let why = match (&ended.reason, &ended.failure) {
            (Some(reason), Some(failure)) => format!(": {reason} ({} at {})", failure.code, failure.step),
            (Some(reason), None) => format!(": {reason}"),
            (None, _) => String::new(),
        };
        return format!("{} {}{by}{why}", ended.status.as_str(), describe_end(ended.status));
    }
    if let Some(parked) = &view.parked {
        return format!(
            "parked: {}; resume it with `shopctl workflow resume {id}` once the cause is fixed",
            parked.reason
        );
    }
    let mut clauses: Vec<String> = view.steps.iter().map(|step| step_clause(step, view.as_of_ms)).collect();
    clauses.extend(view.waits.iter().map(wait_clause));
    let gist = if clauses.is_empty() { "between steps: its next turn is due".to_owned() } else { clauses.join("; ") };
    match &view.compensating {
        Some(reason) => format!("compensating ({reason}): {gist}"),
        None => gist,
    }
}

/// What an operator can do about `view`, one sentence each.
pub(super) fn advice(id: &WorkflowId, view: &WhyView) -> Vec<String> {
    let mut advice = Vec::new();
    for step in &view.steps {
        if step.pollers == Some(0) {
            let line = no_poller(&step.queue);
            if !advice.contains(&line) {
                advice.push(line);
            }
        }
    }
    for wait in &view.waits {
        if let WhyWait::Signal { signals, .. } = wait {
            let names = signals.join("|");
            advice.push(format!("send it with `shopctl workflow signal {id} <{names}> --data '{{...}}'`"));
        }
    }
    if view.parked.is_some() {
        advice.push(format!("resume it with `shopctl workflow resume {id}` once the cause is fixed"));
    }
    advice
}

/// The sentence for a queue nobody serves. Queues are named after the workers' activity
/// groups (`shop-worker --activities`).
pub(super) fn no_poller(queue: &str) -> String {
    format!("no worker polls queue `{queue}`: start one with `shop-worker --activities {queue}`")
}

fn describe_end(status: shop_types::api::WorkflowStatus) -> &'static str {
    use shop_types::api::WorkflowStatus::*;
    match status {
        Completed => "(every step done)",
        Compensated => "(what it did was undone)",
        Failed => "(it could not finish or undo its work)",
        Terminated => "(stopped without compensating)",
        Running => "",
    }
}

fn step_clause(step: &WhyStep, now_ms: u64) -> String {
    let what = if step.compensation { "compensation" } else { "step" };
    let attempt = format!("attempt {} of {}", step.policy_attempt, step.max_attempts);
    match step.state {
        WhyStepState::WaitingForWorker => {
            let waited = millis(step.waited_ms.unwrap_or(0));
            if let Some(circuit) = &step.circuit {
                let state = match (circuit.open_until_ms, circuit.left_ms) {
                    (Some(until), Some(left)) => format!("is open until {until} ({} left)", millis(left)),
                    _ => "is half-open (its probes are out)".to_owned(),
                };
                return format!(
                    "{what} `{}` ({attempt}) has waited {waited}: activity {}'s circuit {state}; tasks wait",
                    step.step, step.activity
                );
            }
            match step.pollers {
                Some(0) | None => format!(
                    "{what} `{}` ({attempt}) has waited {waited} for a worker: no worker polls queue `{}`",
                    step.step, step.queue
                ),
                Some(n) => format!(
                    "{what} `{}` ({attempt}) has waited {waited} for a worker; {n} poll queue `{}`",
                    step.step, step.queue
                ),
            }
        }
        WhyStepState::Running => {
            let on = step.worker.as_deref().map(|w| format!(" on worker {w}")).unwrap_or_default();
            format!("{what} `{}` runs{on} ({attempt})", step.step)
        }
        WhyStepState::BackingOff => {
            let error = step.last_error.as_ref().map(|e| format!(" after {}", e.code)).unwrap_or_default();
            let next = step.policy_attempt;
            let due = millis(step.retry_due_ms.unwrap_or(now_ms).saturating_sub(now_ms));
            format!("{what} `{}` backs off{error}: attempt {next} of {} is due in {due}", step.step, step.max_attempts)
        }
    }
}

fn wait_clause(wait: &WhyWait) -> String {
    match wait {
        WhyWait::Signal { step, signals, left_ms, .. } => {
            format!("`{step}` waits for signal {} ({} left)", signals.join(" | "), millis(*left_ms))
        }
        WhyWait::Sleep { step, left_ms, .. } => format!("`{step}` sleeps ({} left)", millis(*left_ms)),
        WhyWait::Child { step, child, status } => {
            let status = status.map_or("unknown", |s| s.as_str());
            format!("`{step}` waits for child {child} ({status})")
        }
        WhyWait::HeldByParent { parent, .. } => {
            format!("its work is done; held by its parent {parent} until the parent ends")
        }
    }
}
