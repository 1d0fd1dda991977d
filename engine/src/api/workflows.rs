//! `/v1/workflows`: start, read, list, cancel, terminate and resume runs; read histories.
//! (`/v1/definitions` is `definitions.rs`.)

use super::{parse_wait, query, view_after_wait, workflow_view, ApiError, ApiJson, AppState};
use crate::auth::Principal;
use crate::core::StartOutcome;
use crate::definition;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use shop_types::api::{
    HistoryEventView, HistoryResponse, ReasonRequest, SignalReply, StartWorkflowRequest, WorkflowList, WorkflowStatus,
    WorkflowView,
};
use shop_types::limits::MAX_LIST_LIMIT;
use shop_types::{JsonText, WorkflowId};

const DEFAULT_LIST_LIMIT: usize = 50;
/// Longest `Idempotency-Key` a signal may carry, in bytes (it is kept in the run's history).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// `POST /v1/workflows/{id}/signals/{name}`: records a signal for a run, once per
/// `Idempotency-Key` (required); the JSON body is its payload. 200 `recorded` or
/// `duplicate` (also for a run that has since finished: the key is looked up in its
/// history); 404 unknown run; 409 `ALREADY_FINISHED` (a new key on a finished run),
/// `IDEMPOTENCY_KEY_REUSED` (same key, other name or payload), `SIGNAL_NOT_AWAITED` (no wait
/// the run can still open takes it), `SIGNALS_CLOSED` (compensating, parked, or past the
/// history's soft limit); 413 `SIGNAL_TOO_LARGE` / `SIGNAL_BUFFER_FULL`; 422 a signal the
/// run's version does not declare.
/// A signaler gets 403 for a signal name its credential does not name (before the run is
/// looked up) and for a run of a type it does not name.
pub(crate) async fn signal(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    ApiJson(payload): ApiJson<JsonText>,
) -> Result<Json<SignalReply>, ApiError> {
    super::auth::check_signal_name(&principal, &name)?;
    let id = WorkflowId::parse(id)?;
    if principal.role != shop_types::auth::Role::Admin {
        // A run's type never changes, so checking it here cannot race the signal.
        let summary = state.store.run(&id)?.ok_or_else(|| ApiError::not_found(format!("no workflow {id}")))?;
        super::auth::check_signal_type(&principal, &summary.workflow_type)?;
    }
    let key = idempotency_key(&headers)?;
    let request = signal_request(name, &key, payload)?;
    let outcome = match state.core.signal(id, request).await? {
        crate::core::SignalOutcome::Recorded => "recorded",
        crate::core::SignalOutcome::Duplicate => "duplicate",
    };
    Ok(Json(SignalReply { outcome: outcome.to_owned() }))
}

/// The request's required `Idempotency-Key` (1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes of
/// visible ASCII once trimmed), or 400 `BAD_IDEMPOTENCY_KEY`.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let bad_key = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "BAD_IDEMPOTENCY_KEY", message);
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => return Err(bad_key("this request needs an Idempotency-Key header".into())),
        Some(Err(_)) => return Err(bad_key("the Idempotency-Key header must be visible ASCII".into())),
        Some(Ok(key)) => key.trim(),
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(bad_key(format!("the Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes")));
    }
    Ok(key.to_owned())
}

/// Checks a signal's name before it reaches the core (its key is checked by [`idempotency_key`]).
fn signal_request(name: String, key: &str, payload: JsonText) -> Result<crate::core::SignalRequest, ApiError> {
    if let Err(reason) = definition::check_signal_name(&name) {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_SIGNAL", reason));
    }
    Ok(crate::core::SignalRequest { name, idempotency_key: key.to_owned(), payload })
}

/// Starts a run, or returns the existing one for the same ID, type and input. With a
/// `signal` (signal-with-start), the start and the signal are recorded in one batch; a
/// retry with the same signal changes nothing (the start finds the run, the signal is a
/// duplicate).
pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<StartWorkflowRequest>,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    let id = match request.id {
        Some(id) => WorkflowId::parse(id)?,
        // One whose shard this node owns, so the start needs no hop.
        None => super::forward::local_id(&state.cluster),
    };
    if request.workflow_type == shop_types::order::ORDER_WORKFLOW_TYPE {
        request.input = super::orders::check_run_input(&principal, &id, request.input)?;
    }
    let trace = crate::trace::incoming(&headers)?;
    let Some(signal) = request.signal else {
        return start_run(&state, id, request.workflow_type, request.input, trace).await;
    };
    // Traced like a plain start: the run keeps the request span's context.
    let signal = signal_request(signal.name, &signal.idempotency_key, signal.payload)?;
    let started_ms = state.clock.now_ms();
    let span = crate::trace::request_span(&state.tracer, trace);
    let name = format!("Start:{}", request.workflow_type);
    let outcome = state
        .core
        .start_with_signal(
            id.clone(),
            request.workflow_type,
            request.input.clone(),
            signal,
            span.map(|s| s.to_string()),
        )
        .await;
    record_start_span(&state, name, &id, span, trace, started_ms, outcome.as_ref().err());
    started_view(&state, &id, outcome?.0, request.input)
}

/// Records the request span of a start (`Start:<type>`, a child of the caller's span), if
/// the start is traced.
fn record_start_span(
    state: &AppState,
    name: String,
    id: &WorkflowId,
    span: Option<shop_telemetry::TraceParent>,
    incoming: Option<shop_telemetry::TraceParent>,
    started_ms: u64,
    error: Option<&crate::core::CoreError>,
) {
    let Some(span) = span else {
        return;
    };
    let mut record = shop_telemetry::SpanRecord::new(name, span, incoming)
        .between_ms(started_ms, state.clock.now_ms())
        .attribute("workflow.id", id.as_str());
    record.kind = shop_telemetry::SpanKind::Server;
    record.error = error.map(|e| e.to_string());
    state.tracer.record(record);
}

pub(crate) fn new_id() -> WorkflowId {
    WorkflowId::parse(uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid workflow id")
}

/// Shared by the generic and the order API: 202 for a new run, 200 for an existing one.
pub(crate) async fn start_run(
    state: &AppState,
    id: WorkflowId,
    workflow_type: shop_types::WorkflowType,
    input: JsonText,
    incoming: Option<shop_telemetry::TraceParent>,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    let started_ms = state.clock.now_ms();
    let span = crate::trace::request_span(&state.tracer, incoming);
    let name = format!("Start:{workflow_type}");
    let outcome = state.core.start(id.clone(), workflow_type, input.clone(), span.map(|s| s.to_string())).await;
    record_start_span(state, name, &id, span, incoming, started_ms, outcome.as_ref().err());
    started_view(state, &id, outcome?, input)
}

/// 202 with the view of a new run, 200 with an existing one. A new run's input is `input`
/// as given, so only its summary is read; an existing run shows the input it was started
/// with (the same JSON, perhaps written differently).
fn started_view(
    state: &AppState,
    id: &WorkflowId,
    outcome: StartOutcome,
    input: JsonText,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    let (status, known_input) = match outcome {
        StartOutcome::Created => (StatusCode::ACCEPTED, Some(input)),
        StartOutcome::Existing => (StatusCode::OK, None),
    };
    let view = super::workflow_view_with_input(state, id, known_input)?
        .ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))?;
    Ok((status, Json(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    pub(crate) wait: Option<String>,
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<WorkflowView>, ApiError> {
    let id = WorkflowId::parse(id)?;
    let wait = parse_wait(query(wait)?.wait.as_deref())?;
    let view = view_after_wait(&state, &principal, &id, wait).await?;
    // One replay serves both what the run waits for and its `why`.
    let replay = super::replayed(&state, &id);
    let view = super::with_waiting_for_replayed(&state, view, replay.as_ref());
    Ok(Json(super::why::with_why(&state, view, replay).await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    workflow_type: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    let params = query(params)?;
    let status = params.status.as_deref().map(str::parse::<WorkflowStatus>).transpose().map_err(ApiError::invalid)?;
    let limit = list_limit(params.limit)?;
    let cursor = params.cursor.map(WorkflowId::parse).transpose()?;
    let (workflows, next_cursor) = list_views(&state, status, cursor, limit, |view| {
        params.workflow_type.as_deref().is_none_or(|t| view.workflow_type == t)
    })?;
    Ok(Json(WorkflowList { workflows, next_cursor }))
}

pub(crate) fn list_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIST_LIMIT) {
        0 => Err(ApiError::invalid("limit must be at least 1")),
        n if n > MAX_LIST_LIMIT => Err(ApiError::invalid(format!("limit may be at most {MAX_LIST_LIMIT}"))),
        n => Ok(n),
    }
}

/// One page of runs in ID order that pass `keep`. Filtering happens after the index scan, so
/// a page may be short; `next_cursor` is set whenever more runs may follow.
pub(crate) fn list_views(
    state: &AppState,
    status: Option<WorkflowStatus>,
    cursor: Option<WorkflowId>,
    limit: usize,
    keep: impl Fn(&WorkflowView) -> bool,
) -> Result<(Vec<WorkflowView>, Option<String>), ApiError> {
    let (ids, more) = state.store.list_ids(status, cursor.as_ref(), limit)?;
    let next_cursor = if more { ids.last().map(|id| id.to_string()) } else { None };
    let mut views = Vec::with_capacity(ids.len());
    for id in &ids {
        match workflow_view(state, id) {
            Ok(Some(view)) if keep(&view) => views.push(view),
            Ok(_) => {}
            // One unreadable run must not hide every other: it is logged and left out.
            Err(error) if error.code == "CORRUPT_RECORD" => {}
            Err(error) => return Err(error),
        }
    }
    Ok((views, next_cursor))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// Only the events after this sequence number.
    after: Option<u64>,
    /// With `after`: wait this long for an event after it (the long-poll twin of
    /// `/v1/workflows/{id}/events`).
    wait: Option<String>,
}

/// `GET /v1/workflows/{id}/history[?after=N[&wait=30s]]`: the run's events (after N). With
/// `wait`, answers at once when events after N exist or the run is terminal, else as soon as
/// the run commits one, or with none when the wait ends; the wait holds a waiting-read slot
/// like `GET /v1/workflows/{id}?wait=`.
pub(crate) async fn history(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    params: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let id = WorkflowId::parse(id)?;
    let params = query(params)?;
    let wait = parse_wait(params.wait.as_deref())?;
    let after = params.after.unwrap_or(0);
    let _slot = wait.map(|_| super::wait_slot(&state, &principal)).transpose()?;
    // Subscribed before the first read: an event committed after it wakes the wait.
    let mut subscription = wait.map(|_| state.core.subscribe());
    let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
    let mut stopping = state.streams.stopping();
    loop {
        let events = state.store.history(&id)?;
        let Some(first) = events.first() else {
            return Err(ApiError::not_found(format!("workflow {id} not found")));
        };
        let definition = definition_of(&state, &first.kind);
        let ended = events.last().is_some_and(|e| e.kind.is_terminal());
        let newer: Vec<HistoryEventView> = events
            .into_iter()
            .filter(|e| e.seq > after)
            .map(|event| history_view(definition.as_deref(), event))
            .collect();
        let (Some(subscription), Some(deadline)) = (subscription.as_mut(), deadline) else {
            return Ok(Json(HistoryResponse { workflow_id: id, events: newer }));
        };
        if !newer.is_empty() || ended {
            return Ok(Json(HistoryResponse { workflow_id: id, events: newer }));
        }
        // Until the run commits an event (or a lag may have hidden one), the wait ends, or
        // the engine shuts down: then read again.
        let committed = async {
            loop {
                match subscription.recv().await {
                    Ok(commit) if commit.events.iter().any(|e| e.run == id) => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            () = committed => {}
            () = tokio::time::sleep_until(deadline) => {
                return Ok(Json(HistoryResponse { workflow_id: id, events: Vec::new() }));
            }
            _ = stopping.wait_for(|stop| *stop) => {
                return Ok(Json(HistoryResponse { workflow_id: id, events: Vec::new() }));
            }
            // Its events commit elsewhere now: the waiting node asks the new owner (`forward`).
            () = super::forward::moved_away(&state.cluster, &id) => return Err(super::forward::shard_moved(None)),
        }
    }
}

/// A run's whole history as the API shows it (each step event with its step's name); 404
/// when there is no such run.
pub(crate) fn history_views(state: &AppState, id: &WorkflowId) -> Result<Vec<HistoryEventView>, ApiError> {
    let events = state.store.history(id)?;
    let Some(first) = events.first() else {
        return Err(ApiError::not_found(format!("workflow {id} not found")));
    };
    let definition = definition_of(state, &first.kind);
    Ok(events.into_iter().map(|event| history_view(definition.as_deref(), event)).collect())
}

/// The definition a run's first event names, if it is registered.
pub(crate) fn definition_of(
    state: &AppState,
    first: &shop_types::history::EventKind,
) -> Option<std::sync::Arc<crate::definition::Definition>> {
    match first {
        shop_types::history::EventKind::WorkflowStarted { workflow_type, definition_version, .. } => {
            state.registry.read().ok().and_then(|r| r.get(workflow_type.as_str(), *definition_version))
        }
        _ => None,
    }
}

/// One history entry as the API shows it, with its step's name from the run's definition.
pub(crate) fn history_view(
    definition: Option<&crate::definition::Definition>,
    event: shop_types::history::Event,
) -> HistoryEventView {
    HistoryEventView {
        seq: event.seq,
        at_ms: event.at_ms,
        step_name: event.kind.step().and_then(|step| definition?.step(step).map(|s| s.name.to_string())),
        lane: event.kind.step().and_then(|step| definition?.lane(step)),
        event: event.kind,
    }
}

/// An optional JSON body: absent or empty is the default, anything else must parse.
pub(crate) fn optional_reason(headers: &HeaderMap, body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "expected a body with Content-Type: application/json",
        ));
    }
    let request: ReasonRequest = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY", e.to_string())
        } else {
            ApiError::bad_request("MALFORMED_JSON", e.to_string())
        }
    })?;
    Ok(request.reason)
}

/// An operator's action on one run: what the API's action routes and the console's buttons do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Compensate what the run did (refused past its pivot).
    Cancel,
    /// End it at once, compensating nothing.
    Terminate,
    /// Run a parked run's failed compensation again.
    Resume,
}

impl Action {
    /// The reason recorded when the caller gives none.
    pub(crate) fn default_reason(self) -> &'static str {
        match self {
            Action::Cancel => "requested by the API",
            Action::Terminate => "terminated by the API",
            Action::Resume => "resumed by an operator",
        }
    }
}

/// Does `action` to run `id` for `principal`, whose subject the run's history records, and
/// returns the run as it is then. The role check is the caller's (the routes' `Access`).
pub(crate) async fn act(
    state: &AppState,
    principal: &Principal,
    id: WorkflowId,
    action: Action,
    reason: String,
) -> Result<WorkflowView, ApiError> {
    act_traced(state, principal, id, action, reason, None).await
}

/// [`act`] for a request that may carry a `traceparent` (`caller`): a resume records its
/// span in the run's trace, linked to the caller's (see `crate::trace`).
async fn act_traced(
    state: &AppState,
    principal: &Principal,
    id: WorkflowId,
    action: Action,
    reason: String,
    caller: Option<shop_telemetry::TraceParent>,
) -> Result<WorkflowView, ApiError> {
    let by = principal.subject.to_string();
    match action {
        Action::Cancel => state.core.cancel(id.clone(), reason, by).await?,
        Action::Terminate => state.core.terminate(id.clone(), reason, by).await?,
        Action::Resume => {
            let started_ms = state.clock.now_ms();
            state.core.resume(id.clone(), reason, by).await?;
            crate::trace::record_resume(
                &state.tracer,
                state.store.as_ref(),
                &id,
                started_ms,
                state.clock.now_ms(),
                caller,
            );
        }
    }
    workflow_view(state, &id)?.ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))
}

/// An action route: the run in the path, the reason in the optional body; 202 with the run.
async fn act_on_path(
    state: &AppState,
    principal: &Principal,
    id: String,
    headers: &HeaderMap,
    body: &Bytes,
    action: Action,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    let id = WorkflowId::parse(id)?;
    let reason = optional_reason(headers, body)?.unwrap_or_else(|| action.default_reason().to_owned());
    let caller = crate::trace::incoming(headers)?;
    Ok((StatusCode::ACCEPTED, Json(act_traced(state, principal, id, action, reason, caller).await?)))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    act_on_path(&state, &principal, id, &headers, &body, Action::Cancel).await
}

pub(crate) async fn terminate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    act_on_path(&state, &principal, id, &headers, &body, Action::Terminate).await
}

/// Resumes a parked run (FAILED because a compensation failed for good) once its cause is
/// fixed: the failed compensation runs again with a fresh attempt budget.
pub(crate) async fn resume(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    act_on_path(&state, &principal, id, &headers, &body, Action::Resume).await
}
