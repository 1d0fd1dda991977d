//! `/v1/tasks`: the worker protocol. Workers long-poll a queue for activity attempts and
//! report each one's outcome with the task token it came with; a report for an attempt that
//! is no longer current is refused (409 `STALE_TASK`) and changes nothing. A token carries a
//! MAC that only this engine can make, checked here before anything reaches the core: a
//! token whose MAC is wrong or missing was not handed out by this engine for this attempt,
//! so it gets the same answer as a stale one (409 `STALE_TASK`) and changes nothing. A worker
//! credential reaches only the queues it names (403 `FORBIDDEN`, checked before anything
//! happens); a report's queue is the one its task was dispatched on.

use super::auth::{check_queue, check_task_queues};
use super::{forward, ApiError, ApiJson, AppState};
use crate::auth::Principal;
use crate::cluster::Route;
use crate::core::CoreError;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::Extension;
use axum::Json;
use shop_types::api::{
    ActivityTask, CompleteRequest, ErrorBody, ErrorDetail, FailRequest, HeartbeatRequest, PollRequest, PollResponse,
    ReportBatchRequest, ReportBatchResponse, TaskAck, TaskOutcome, TaskReport,
};
use shop_types::cluster::{NodeAddress, NodeList};
use shop_types::limits::{MAX_REPORTS_PER_BATCH, MAX_TASKS_PER_POLL, MAX_WAIT_MS};
use shop_types::TaskToken;
use std::collections::BTreeMap;
use std::time::Duration;

/// Refuses a token this engine did not hand out for its attempt, like a stale one: to its
/// sender, a forged token and one for an attempt long gone are the same thing.
pub(crate) fn check_mac(state: &AppState, token: &TaskToken) -> Result<(), CoreError> {
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
pub(crate) async fn poll_tasks(state: &AppState, request: PollRequest) -> Result<Vec<ActivityTask>, ApiError> {
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
/// the same request then long-polls for the next tasks (of this node's shards). The reports
/// go through [`check_reports`] and [`route_reports`], as the task stream's do.
pub(crate) async fn report(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ReportBatchRequest>,
) -> Result<Json<ReportBatchResponse>, ApiError> {
    if request.reports.len() > MAX_REPORTS_PER_BATCH {
        return Err(ApiError::invalid(format!("at most {MAX_REPORTS_PER_BATCH} reports per batch")));
    }
    let verdicts = check_reports(&state, &principal, &request.reports)?;
    // Refuse a bad poll before recording anything, so a 422 means nothing happened.
    if let Some(poll) = &request.then_poll {
        check_poll(poll)?;
        check_queue(&principal, &poll.queue)?;
    }
    let results = route_reports(&state, &headers, request.reports, verdicts).await?;
    let tasks = match request.then_poll {
        Some(poll) => poll_tasks(&state, poll).await?,
        None => Vec::new(),
    };
    Ok(Json(ReportBatchResponse { results, tasks }))
}

/// The first verdict of each report, before anything reaches the core: a report whose MAC
/// fails is refused (as stale, and without a look at the store, so a forged token learns
/// nothing); `None` for the others. One credential sends the whole batch: if it may not
/// report one of its genuine reports, the batch is refused (403) and nothing is recorded.
pub(crate) fn check_reports(
    state: &AppState,
    principal: &Principal,
    reports: &[TaskReport],
) -> Result<Vec<Option<ErrorDetail>>, ApiError> {
    let verdicts: Vec<Option<ErrorDetail>> =
        reports.iter().map(|r| check_mac(state, &r.token).err().map(detail)).collect();
    let signed = reports.iter().zip(&verdicts).filter(|(_, v)| v.is_none()).map(|(r, _)| &r.token);
    check_task_queues(state, principal, signed)?;
    Ok(verdicts)
}

/// Records `reports` (checked by [`check_reports`], whose `verdicts` they keep: a report
/// already refused goes nowhere) and gives every verdict back in their order: the one place
/// that routes reports, for `POST /v1/tasks/report` and the task stream alike.
///
/// A batch may span owners (a worker reports to the node that handed each task out, and a
/// shard may have moved since): the reports of runs this node owns are recorded here in one
/// core call (one commit), the others are sent on to their owners in one batch per owner
/// (`forward`, with the caller's credential from `headers`). A report whose shard has no
/// owner, or one this node got forwarded but no longer owns, is refused 503-style
/// (`SHARD_UNAVAILABLE`/`SHARD_MOVED`), and the worker sends it again. A batch refused for
/// want of disk is refused whole (`Err`, before anything is sent on), so the worker retries
/// all of it.
pub(crate) async fn route_reports(
    state: &AppState,
    headers: &HeaderMap,
    reports: Vec<TaskReport>,
    mut results: Vec<Option<ErrorDetail>>,
) -> Result<Vec<Option<ErrorDetail>>, ApiError> {
    results.resize_with(reports.len(), || None);
    let forwarded = headers.contains_key(forward::FORWARDED_HEADER);
    let mut local: Vec<(usize, TaskReport)> = Vec::new();
    let mut remote: BTreeMap<(String, String), Vec<(usize, TaskReport)>> = BTreeMap::new();
    for (index, report) in reports.into_iter().enumerate() {
        if results[index].is_some() {
            continue;
        }
        match state.cluster.route(&report.token.workflow_id) {
            Route::Local => local.push((index, report)),
            Route::Remote { node, url } if !forwarded => remote.entry((node, url)).or_default().push((index, report)),
            Route::Remote { node, .. } => results[index] = Some(api_detail(forward::shard_moved(Some(&node)))),
            Route::Unowned => results[index] = Some(api_detail(forward::shard_unavailable())),
        }
    }
    let (indexes, reports): (Vec<usize>, Vec<TaskReport>) = local.into_iter().unzip();
    let mut recorded = if reports.is_empty() { Vec::new() } else { state.core.report(reports).await? };
    recorded.resize_with(indexes.len(), || Err(CoreError::ShuttingDown));
    if recorded.iter().any(|result| matches!(result, Err(CoreError::DiskFull))) {
        return Err(CoreError::DiskFull.into());
    }
    for (index, result) in indexes.into_iter().zip(recorded) {
        results[index] = result.err().map(detail);
    }
    let sent = remote.into_iter().map(|((node, url), group)| report_elsewhere(state, headers, node, url, group));
    for (index, result) in futures_util::future::join_all(sent).await.into_iter().flatten() {
        results[index] = result;
    }
    Ok(results)
}

/// Most bytes of an owner's answer to a forwarded report batch: one verdict per report, each
/// a code and a short message, for at most `MAX_REPORTS_PER_BATCH` reports.
const MAX_FORWARDED_REPORT_ANSWER_BYTES: usize = 1 << 20;

/// Sends `group` (reports of runs `node` owns, with their places in the batch) to `node` as
/// one batch with the caller's credential and trace headers, and gives back each verdict.
/// A batch the owner refuses whole, or that cannot be delivered, refuses each of its reports
/// with that answer.
async fn report_elsewhere(
    state: &AppState,
    headers: &HeaderMap,
    node: String,
    url: String,
    group: Vec<(usize, TaskReport)>,
) -> Vec<(usize, Option<ErrorDetail>)> {
    let (indexes, reports): (Vec<usize>, Vec<TaskReport>) = group.into_iter().unzip();
    let batch = ReportBatchRequest { reports, then_poll: None };
    let verdicts = match serde_json::to_vec(&batch) {
        Ok(body) => forward_batch(state, headers, &node, &url, body, indexes.len()).await,
        Err(error) => Err(ApiError::invalid(format!("cannot encode a report batch: {error}"))),
    };
    match verdicts {
        Ok(verdicts) => indexes.into_iter().zip(verdicts).collect(),
        Err(refusal) => {
            let refusal = api_detail(refusal);
            indexes.into_iter().map(|index| (index, Some(refusal.clone()))).collect()
        }
    }
}

async fn forward_batch(
    state: &AppState,
    headers: &HeaderMap,
    node: &str,
    url: &str,
    body: Vec<u8>,
    count: usize,
) -> Result<Vec<Option<ErrorDetail>>, ApiError> {
    let mut sent = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::HeaderName::from_static(crate::trace::TRACEPARENT_HEADER)] {
        if let Some(value) = headers.get(&name) {
            sent.insert(name, value.clone());
        }
    }
    sent.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    let outgoing = forward::http::Outgoing {
        method: Method::POST,
        uri: Uri::from_static("/v1/tasks/report"),
        headers: sent,
        body: body.into(),
    };
    let answer = state
        .forwarder
        .send(node, url, outgoing, Some(forward::http::FORWARD_TIMEOUT))
        .await
        .map_err(forward::http::ForwardError::api_error)?;
    let status = answer.status();
    let bytes = axum::body::to_bytes(answer.into_body(), MAX_FORWARDED_REPORT_ANSWER_BYTES).await.map_err(|error| {
        ApiError::new(StatusCode::BAD_GATEWAY, "FORWARD_FAILED", format!("node {node}'s answer broke off: {error}"))
    })?;
    if !status.is_success() {
        let error = serde_json::from_slice::<ErrorBody>(&bytes).map(|body| body.error).unwrap_or_else(|_| {
            ErrorDetail { code: "FORWARD_FAILED".into(), message: format!("node {node} answered {status}") }
        });
        return Err(ApiError::new(status, leak_code(&error.code), error.message));
    }
    let answer: ReportBatchResponse = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "FORWARD_FAILED",
            format!("node {node}'s answer is not a report batch: {error}"),
        )
    })?;
    if answer.results.len() != count {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "FORWARD_FAILED",
            format!("node {node} answered {} verdicts for {count} reports", answer.results.len()),
        ));
    }
    Ok(answer.results)
}

/// The owner's error code as one of ours (the codes an engine answers are a fixed set; an
/// unknown one is reported as a failed forward rather than invented).
fn leak_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        forward::SHARD_MOVED,
        forward::SHARD_UNAVAILABLE,
        forward::NOT_OWNER,
        "OVERLOADED",
        "SHUTTING_DOWN",
        "DISK_FULL",
        "STORAGE_UNAVAILABLE",
        "RATE_LIMITED",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "INVALID_VALUE",
    ];
    KNOWN.iter().find(|known| **known == code).copied().unwrap_or("FORWARD_FAILED")
}

pub(crate) fn detail(error: CoreError) -> ErrorDetail {
    api_detail(ApiError::from(error))
}

pub(crate) fn api_detail(error: ApiError) -> ErrorDetail {
    ErrorDetail { code: error.code.to_owned(), message: error.message }
}

/// `GET /v1/tasks/nodes`: the live engine nodes, for a worker given one engine URL to find
/// the others (each hands out the tasks of its own shards). Worker credentials may read it,
/// unlike `GET /v1/cluster`, which shows leases and is for operators.
pub(crate) async fn nodes(State(state): State<AppState>) -> Json<NodeList> {
    let nodes = state
        .cluster
        .status()
        .nodes
        .into_iter()
        .filter(|node| node.live && !node.url.is_empty())
        .map(|node| NodeAddress { id: node.id, url: node.url })
        .collect();
    Json(NodeList { nodes })
}
