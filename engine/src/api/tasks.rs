//! `/v1/tasks`: the worker protocol. Workers long-poll a queue for activity attempts and
//! report each one's outcome with the task token it came with; a report for an attempt that
//! is no longer current is refused (409 `STALE_TASK`) and changes nothing. A token carries a
//! MAC that only this engine can make, checked here before anything reaches the core: a
//! token whose MAC is wrong or missing was not handed out by this engine for this attempt,
//! so it gets the same answer as a stale one (409 `STALE_TASK`) and changes nothing. A worker
//! credential reaches only the queues it names (403 `FORBIDDEN`, checked before anything
//! happens); a report's queue is the one its task was dispatched on.

use super::auth::{check_queue, check_task_queues};
use super::{ApiError, ApiJson, AppState};
use crate::auth::Principal;
use crate::core::CoreError;
use axum::extract::State;
use axum::Extension;
use axum::Json;
use shop_types::api::{
    ActivityTask, CompleteRequest, ErrorDetail, FailRequest, HeartbeatRequest, PollRequest, PollResponse,
    ReportBatchRequest, ReportBatchResponse, TaskAck, TaskOutcome, TaskReport,
};
use shop_types::limits::{MAX_REPORTS_PER_BATCH, MAX_TASKS_PER_POLL, MAX_WAIT_MS};
use shop_types::TaskToken;
use std::time::Duration;

/// Refuses a token this engine did not hand out for its attempt, like a stale one: to its
/// sender, a forged token and one for an attempt long gone are the same thing.
fn check_mac(state: &AppState, token: &TaskToken) -> Result<(), CoreError> {
    if state.core.signer.verify(token) {
        return Ok(());
    }
    Err(CoreError::Stale("the task token was not handed out for this attempt".into()))
}

/// How long past its deadline a poll waits for the core before answering empty by itself.
const POLL_GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn poll(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<PollRequest>,
) -> Result<Json<PollResponse>, ApiError> {
    check_queue(&principal, &request.queue)?;
    Ok(Json(PollResponse { tasks: poll_tasks(&state, request).await? }))
}

fn check_poll(request: &PollRequest) -> Result<(), ApiError> {
    if !(1..=MAX_TASKS_PER_POLL).contains(&request.max_tasks) {
        return Err(ApiError::invalid(format!("max_tasks must be between 1 and {MAX_TASKS_PER_POLL}")));
    }
    if request.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid(format!("wait_ms may be at most {MAX_WAIT_MS}")));
    }
    Ok(())
}

/// Long-polls one queue: answers as soon as a task is ready, or empty after `wait_ms`.
async fn poll_tasks(state: &AppState, request: PollRequest) -> Result<Vec<ActivityTask>, ApiError> {
    check_poll(&request)?;
    let deadline_ms = state.clock.now_ms() + request.wait_ms;
    let call = state.core.poll(request.queue, request.worker_id, request.max_tasks as usize, deadline_ms);
    match tokio::time::timeout(Duration::from_millis(request.wait_ms) + POLL_GRACE, call).await {
        Ok(tasks) => Ok(tasks?),
        Err(_) => Ok(Vec::new()),
    }
}

async fn report_one(state: &AppState, report: TaskReport) -> Result<Json<TaskAck>, ApiError> {
    let mut results = state.core.report(vec![report]).await?;
    results.pop().unwrap_or(Err(CoreError::ShuttingDown))?;
    Ok(Json(TaskAck {}))
}

pub(crate) async fn complete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<Json<TaskAck>, ApiError> {
    // The MAC first: a forged token learns nothing, not even whether its run exists.
    check_mac(&state, &request.token)?;
    check_task_queues(&state, &principal, [&request.token])?;
    let report = TaskReport {
        token: request.token,
        outcome: TaskOutcome::Completed { output: request.output },
        traceparent: request.traceparent,
    };
    report_one(&state, report).await
}

pub(crate) async fn fail(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<FailRequest>,
) -> Result<Json<TaskAck>, ApiError> {
    // The MAC first: a forged token learns nothing, not even whether its run exists.
    check_mac(&state, &request.token)?;
    check_task_queues(&state, &principal, [&request.token])?;
    let report = TaskReport {
        token: request.token,
        outcome: TaskOutcome::Failed { error: request.error },
        traceparent: request.traceparent,
    };
    report_one(&state, report).await
}

pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<Json<TaskAck>, ApiError> {
    // The MAC first: a forged token learns nothing, not even whether its run exists.
    check_mac(&state, &request.token)?;
    check_task_queues(&state, &principal, [&request.token])?;
    state.core.heartbeat(request.token).await?;
    Ok(Json(TaskAck {}))
}

/// Many reports in one request and one commit; each gets its own verdict. With `then_poll`
/// the same request then long-polls for the next tasks.
pub(crate) async fn report(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<ReportBatchRequest>,
) -> Result<Json<ReportBatchResponse>, ApiError> {
    if request.reports.len() > MAX_REPORTS_PER_BATCH {
        return Err(ApiError::invalid(format!("at most {MAX_REPORTS_PER_BATCH} reports per batch")));
    }
    // Reports whose MAC fails are refused first, each with its own verdict (and without a
    // look at the store, so a forged token learns nothing); only the others go further, and
    // their verdicts are put back in the batch's order.
    let verdicts: Vec<Result<(), CoreError>> = request.reports.iter().map(|r| check_mac(&state, &r.token)).collect();
    // One credential sends the whole batch: if it may not report one of its genuine reports,
    // none is recorded, so a 403 means nothing happened.
    let signed = request.reports.iter().zip(&verdicts).filter(|(_, v)| v.is_ok()).map(|(r, _)| &r.token);
    check_task_queues(&state, &principal, signed)?;
    // Refuse a bad poll before recording anything, so a 422 means nothing happened.
    if let Some(poll) = &request.then_poll {
        check_poll(poll)?;
        check_queue(&principal, &poll.queue)?;
    }
    let genuine: Vec<TaskReport> =
        request.reports.into_iter().zip(&verdicts).filter(|(_, v)| v.is_ok()).map(|(r, _)| r).collect();
    let mut recorded = if genuine.is_empty() { Vec::new() } else { state.core.report(genuine).await? }.into_iter();
    let results: Vec<Result<(), CoreError>> = verdicts
        .into_iter()
        .map(|verdict| verdict.and_then(|()| recorded.next().unwrap_or(Err(CoreError::ShuttingDown))))
        .collect();
    // A batch refused for want of disk is refused whole, so the worker retries all of it.
    if results.iter().any(|result| matches!(result, Err(CoreError::DiskFull))) {
        return Err(CoreError::DiskFull.into());
    }
    let tasks = match request.then_poll {
        Some(poll) => poll_tasks(&state, poll).await?,
        None => Vec::new(),
    };
    let results = results
        .into_iter()
        .map(|result| {
            result.err().map(|error| {
                let error = ApiError::from(error);
                ErrorDetail { code: error.code.to_owned(), message: error.message }
            })
        })
        .collect();
    Ok(Json(ReportBatchResponse { results, tasks }))
}
