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

/// The span's name: the activity, or `Compensate:<step>` for a compensation.
pub fn span_name(task: &ActivityTask) -> String {
    match task.token.step.phase {
        StepPhase::Compensation => format!("Compensate:{}", task.step_name),
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
