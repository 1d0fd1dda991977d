//! The worker's span of each attempt it executes: a child of the engine's span of the
//! attempt (the task's `traceparent`), named after the activity (`Compensate:<step>` for a
//! compensation), an error when the attempt failed; its context goes back on the report.
//!
//! Must never: fail or delay an attempt (a task without a valid `traceparent` is simply not
//! traced), or record anything when tracing is off.

use shop_telemetry::{SpanKind, SpanRecord, TraceParent, Tracer};
use shop_types::api::{ActivityTask, TaskOutcome};
use shop_types::StepPhase;
use std::time::SystemTime;

/// The span's name: the activity, or `Compensate:<step>` (the step undone) for a compensation.
pub fn span_name(task: &ActivityTask) -> String {
    match task.token.step.phase {
        StepPhase::Compensation => {
            // A compensation's step is named after the step it undoes plus a suffix.
            let name = task.step_name.as_str();
            format!("Compensate:{}", name.strip_suffix(shop_types::limits::COMPENSATION_SUFFIX).unwrap_or(name))
        }
        StepPhase::Forward | StepPhase::AfterCompensation => task.activity.to_string(),
    }
}

/// Records the attempt's span (from `started` to now) and returns its `traceparent` for the
/// report; `None` when tracing is off or the task carries no valid context.
pub fn record_attempt(
    tracer: &Tracer,
    task: &ActivityTask,
    started: SystemTime,
    outcome: &TaskOutcome,
) -> Option<String> {
    if !tracer.is_on() {
        return None;
    }
    let parent = match TraceParent::parse(task.traceparent.as_deref()?) {
        Ok(parent) => parent,
        Err(e) => {
            tracing::debug!(error = %e, "a task's traceparent is not valid; the attempt is not traced");
            return None;
        }
    };
    let context = parent.new_child();
    let mut span = SpanRecord::new(span_name(task), context, Some(parent))
        .attribute("workflow.id", task.workflow_id.as_str())
        .attribute("step", task.step_name.as_str());
    span.attributes.push(shop_telemetry::KeyValue::new("attempt", i64::from(task.attempt)));
    span.kind = SpanKind::Consumer;
    span.start = started;
    span.end = SystemTime::now();
    if let TaskOutcome::Failed { error } = outcome {
        span.error = Some(format!("{}: {}", error.error_type, error.message));
    }
    tracer.record(span);
    Some(context.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::{JsonText, StepRef, TaskToken, WorkflowId};

    fn task(phase: StepPhase, step_name: &str) -> ActivityTask {
        let workflow_id = WorkflowId::parse("o-1").expect("valid");
        ActivityTask {
            token: TaskToken {
                workflow_id: workflow_id.clone(),
                step: StepRef { phase, index: 0 },
                attempt: 1,
                mac: None,
            },
            workflow_id,
            workflow_type: "order".parse().expect("valid"),
            step_name: step_name.parse().expect("valid"),
            activity: "inventory.release".parse().expect("valid"),
            attempt: 1,
            idempotency_key: "k".into(),
            input: JsonText::null(),
            results: JsonText::null(),
            params: JsonText::null(),
            start_to_close_ms: 1_000,
            heartbeat_ms: None,
            traceparent: Some("00-nope".into()),
        }
    }

    #[test]
    fn spans_are_named_after_the_activity_or_the_step_a_compensation_undoes() {
        assert_eq!(span_name(&task(StepPhase::Forward, "reserve_stock")), "inventory.release");
        assert_eq!(span_name(&task(StepPhase::Compensation, "reserve_stock.compensation")), "Compensate:reserve_stock");
    }

    #[test]
    fn nothing_is_recorded_off_or_with_a_bad_traceparent() {
        let outcome = TaskOutcome::Completed { output: JsonText::null() };
        let started = SystemTime::now();
        assert_eq!(record_attempt(&Tracer::off(), &task(StepPhase::Forward, "s"), started, &outcome), None);
    }
}
