//! The engine's side of distributed traces: the `traceparent` of a request that starts a run
//! (its request span, `Start:<type>`, whose context the run keeps as `TraceLinked`), the
//! context of each attempt a task carries, the span of each resume of a parked run
//! (`Resume:<type>`), and the follower that records each attempt's `Schedule:<step>` span
//! once the attempt is reported.
//!
//! Every span is recorded whole from recorded times (the history's events), never held open:
//! an attempt's span id is derived from its run, step and attempt, so the task handed out
//! and the span recorded when its report is committed name the same span, across restarts.
//! A resume's span id is derived likewise from its run and the sequence number of its
//! `RunResumed(By)` event: the request that resumed the run records it (linked to the
//! caller's span when the request carried a `traceparent`, whoever resumed: the API, the
//! console or a redrive job), and the attempts scheduled after it are its children, each
//! with a span link to the run's original request span, so a run retried days later reads
//! as one trace with the resume's causes linked.
//!
//! Must never: write or decide anything (it reads histories it is told about), slow the
//! core (it follows the stream; a lag loses spans, counted in the log, never blocks), or
//! export anything when tracing is off (no follower runs then).

use crate::api::ApiError;
use crate::core::stream::Subscription;
use crate::store::Store;
use axum::http::HeaderMap;
use shop_telemetry::{KeyValue, SpanKind, SpanRecord, TraceParent, Tracer};
use shop_types::history::{Event, EventKind};
use shop_types::{StepPhase, StepRef, WorkflowId};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// The W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The request's `traceparent`, if it sent one; a malformed one is 400 `INVALID_TRACEPARENT`.
pub fn incoming(headers: &HeaderMap) -> Result<Option<TraceParent>, ApiError> {
    let Some(value) = headers.get(TRACEPARENT_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiError::bad_request("INVALID_TRACEPARENT", "traceparent is not text"))?;
    TraceParent::parse(text).map(Some).map_err(|e| ApiError::bad_request("INVALID_TRACEPARENT", e.to_string()))
}

/// The context of the span of a request that starts a run: a child of the caller's span, or
/// a new trace when tracing is on and the caller sent none; `None` when nothing is traced.
pub fn request_span(tracer: &Tracer, incoming: Option<TraceParent>) -> Option<TraceParent> {
    match incoming {
        Some(parent) => Some(parent.new_child()),
        None if tracer.is_on() => Some(TraceParent::new_root()),
        None => None,
    }
}

/// The context of attempt `attempt` of `step` of run `run`, traced under `run_trace` (its
/// `TraceLinked`): the same wherever and whenever it is computed.
pub fn attempt_span(run_trace: &TraceParent, run: &WorkflowId, step: StepRef, attempt: u32) -> TraceParent {
    let phase: u8 = match step.phase {
        StepPhase::Forward => 0,
        StepPhase::Compensation => 1,
        StepPhase::AfterCompensation => 2,
    };
    run_trace.derived(&[run.as_str().as_bytes(), &[phase], &step.index.to_be_bytes(), &attempt.to_be_bytes()])
}

/// The context of the resume recorded at sequence number `seq` of run `run`, traced under
/// `run_trace`: the same wherever and whenever it is computed.
pub fn resume_span(run_trace: &TraceParent, run: &WorkflowId, seq: u64) -> TraceParent {
    run_trace.derived(&[run.as_str().as_bytes(), b"resume", &seq.to_be_bytes()])
}

/// The run's trace: its first `TraceLinked` (the request that started it).
fn run_trace(history: &[Event]) -> Option<TraceParent> {
    history.iter().find_map(|event| match &event.kind {
        EventKind::TraceLinked { traceparent } => TraceParent::parse(traceparent).ok(),
        _ => None,
    })
}

/// The sequence number of the run's latest resume (`RunResumed` or `RunResumedBy`) among
/// `events`, with who asked for it.
fn latest_resume(events: &[Event]) -> Option<(u64, &str)> {
    events.iter().rev().find_map(|event| match &event.kind {
        EventKind::RunResumedBy { by, .. } => Some((event.seq, by.as_str())),
        EventKind::RunResumed { .. } => Some((event.seq, "")),
        _ => None,
    })
}

/// Records the span of the resume of run `run` that a request just made (from `started_ms`
/// to `ended_ms`): `Resume:<type>` under the run's request span, with a link to `caller`
/// (the resume request's own context, when it sent a `traceparent`). Nothing when tracing
/// is off or the run is not traced. It reads the run's history once: call it only after
/// the resume was accepted (it is then committed).
pub fn record_resume(
    tracer: &Tracer,
    store: &Store,
    run: &WorkflowId,
    started_ms: u64,
    ended_ms: u64,
    caller: Option<TraceParent>,
) {
    if !tracer.is_on() {
        return;
    }
    let history = match store.history(run) {
        Ok(history) => history,
        Err(e) => {
            tracing::warn!(%run, error = %e, "cannot read a resumed run's history: its resume span is not recorded");
            return;
        }
    };
    let (Some(run_trace), Some((seq, by))) = (run_trace(&history), latest_resume(&history)) else {
        return;
    };
    let workflow_type = history.first().and_then(|event| match &event.kind {
        EventKind::WorkflowStarted { workflow_type, .. } => Some(workflow_type.to_string()),
        _ => None,
    });
    let mut span = SpanRecord::new(
        format!("Resume:{}", workflow_type.unwrap_or_default()),
        resume_span(&run_trace, run, seq),
        Some(run_trace),
    )
    .between_ms(started_ms, ended_ms)
    .attribute("workflow.id", run.as_str())
    .attribute("resumed.by", by);
    span.kind = SpanKind::Server;
    span.links.extend(caller);
    tracer.record(span);
}

/// The `traceparent` a task of this attempt carries, when its run is traced.
pub fn task_traceparent(run_trace: Option<&str>, run: &WorkflowId, step: StepRef, attempt: u32) -> Option<String> {
    let run_trace = TraceParent::parse(run_trace?).ok()?;
    Some(attempt_span(&run_trace, run, step, attempt).to_string())
}

/// Follows the stream and records a `Schedule:<step>` span for every attempt that ends
/// (completed, failed or timed out): from its `StepScheduled` to its end, a child of the
/// run's request span, an error when it failed.
pub async fn follow(tracer: Tracer, store: Arc<Store>, mut subscription: Subscription) {
    loop {
        let commit = match subscription.recv().await {
            Ok(commit) => commit,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "trace follower lagged: the spans of those commits are not recorded");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let ended: Vec<_> = commit
            .events
            .iter()
            .filter(|e| matches!(e.kind, "StepCompleted" | "StepFailed" | "StepTimedOut"))
            .filter_map(|e| e.task.clone().map(|task| (e.run.clone(), e.at_ms, task)))
            .collect();
        if ended.is_empty() {
            continue;
        }
        let (tracer, store) = (tracer.clone(), store.clone());
        // Histories are read from the store (sled: blocking), off the async workers.
        let recorded = tokio::task::spawn_blocking(move || {
            for (run, end_ms, task) in ended {
                if let Some(span) = schedule_span(store.as_ref(), &run, end_ms, &task) {
                    tracer.record(span);
                }
            }
        })
        .await;
        if recorded.is_err() {
            tracing::warn!("trace follower: recording spans panicked");
        }
    }
}

fn schedule_span(
    store: &Store,
    run: &WorkflowId,
    end_ms: u64,
    task: &crate::core::stream::TaskEvent,
) -> Option<SpanRecord> {
    let history = match store.history(run) {
        Ok(history) => history,
        Err(e) => {
            tracing::warn!(%run, error = %e, "trace follower cannot read a history");
            return None;
        }
    };
    let run_trace = run_trace(&history)?;
    let scheduled = history.iter().rposition(|event| {
        matches!(&event.kind, EventKind::StepScheduled { step, attempt } if *step == task.step && *attempt == task.attempt)
    })?;
    let scheduled_ms = history[scheduled].at_ms;
    // An attempt scheduled after a resume is the resume's child, linked to the run's start.
    let (parent, links) = match latest_resume(&history[..scheduled]) {
        Some((seq, _)) => (resume_span(&run_trace, run, seq), vec![run_trace]),
        None => (run_trace, Vec::new()),
    };
    let context = attempt_span(&run_trace, run, task.step, task.attempt);
    let mut span = SpanRecord::new(format!("Schedule:{}", task.step_name), context, Some(parent))
        .between_ms(scheduled_ms, end_ms)
        .attribute("workflow.id", run.as_str())
        .attribute("activity", task.activity.as_str())
        .attribute("queue", task.queue.as_str());
    span.attributes.push(KeyValue::new("attempt", i64::from(task.attempt)));
    span.error = task.error.clone();
    span.links = links;
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempts_span_is_the_same_wherever_it_is_computed_and_differs_per_attempt() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let run = WorkflowId::parse("o-1").expect("valid");
        let a = task_traceparent(Some(trace), &run, StepRef::forward(1), 1).expect("traced");
        assert_eq!(Some(a.clone()), task_traceparent(Some(trace), &run, StepRef::forward(1), 1));
        assert_ne!(Some(a.clone()), task_traceparent(Some(trace), &run, StepRef::forward(1), 2));
        let compensation = StepRef { phase: StepPhase::Compensation, index: 1 };
        assert_ne!(Some(a.clone()), task_traceparent(Some(trace), &run, compensation, 1));
        assert!(a.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "same trace");
        assert_eq!(task_traceparent(None, &run, StepRef::forward(1), 1), None);
    }

    #[test]
    fn a_malformed_traceparent_header_is_a_precise_400() {
        let mut headers = HeaderMap::new();
        assert!(matches!(incoming(&headers), Ok(None)));
        headers.insert(TRACEPARENT_HEADER, "00-nope".parse().expect("header"));
        let error = incoming(&headers).expect_err("refused");
        assert_eq!(error.code, "INVALID_TRACEPARENT");
    }
}
