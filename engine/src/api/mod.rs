//! The engine's HTTP API (axum): the generic `/v1` API, the seed-compatible `/api/orders`,
//! `/healthz` (liveness), `/readyz` (readiness) and the OpenAPI document (`openapi`).
//!
//! Handlers validate input, then either read the store (views, histories, lists) or send one
//! command to the core and wait for its answer. They must never write workflow state to the
//! store themselves: every such write goes through the core, which is what makes it durable
//! before it is acknowledged. (Tokens are not workflow state: `auth` stores them itself.)
//!
//! Every route but `/healthz`, `/readyz`, `/v1/openapi.json`, callbacks and the web console (`crate::console`,
//! behind its own session layer) sits behind [`auth::authenticate`] (deny by default, also
//! for unknown paths), and each group of routes behind the [`auth::Access`] it needs. Everything, those two included, sits behind [`edge::edge`]: head limits, the
//! early 413, and one JSON error shape for every answer.

pub(crate) mod auth;
mod body;
mod callbacks;
pub(crate) mod definitions;
mod edge;
mod error;
pub mod forward;
pub(crate) mod live_stats;
mod notifications;
pub mod openapi;
mod orders;
mod redrive;
mod stats;
mod streams;
pub mod task_stream;
mod tasks;
pub(crate) mod why;
pub(crate) mod workflows;

pub use body::ApiJson;
pub use edge::{MAX_HEAD_BYTES, MAX_URI_BYTES};
pub use error::ApiError;
pub(crate) use redrive::api_error as redrive_error;

use crate::auth::Authenticator;
use crate::auth::Principal;
use crate::clock::Clock;
use crate::core::{CoreError, Handle};
use crate::rate_limit::{FailureThrottle, RateLimiter};
use crate::registry::Registry;
use crate::store::{Durability, Store};
use crate::stream_stats::StreamStats;
use crate::streams::StreamHub;
use crate::watch::{WaitRefused, WatchHub};
use auth::Access;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use shop_types::api::{Health, WorkflowStatus, WorkflowView};
use shop_types::history::EventKind;
use shop_types::limits::{MAX_BODY_BYTES, MAX_WAIT_MS};
use shop_types::{JsonText, WorkflowId};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What every handler can reach. axum clones the state for every request and layer, so it is
/// one `Arc` (a clone is one atomic increment, not one per part: the profile showed the
/// clones and drops of twenty `Arc`s at about 1.5% of the engine's CPU).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    pub core: Handle,
    /// Which node owns which run's shard: handlers forward what is not theirs.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// The client that passes requests on to the node owning their run (`forward`).
    pub forwarder: Arc<forward::http::Forwarder>,
    pub store: Arc<Store>,
    pub registry: Arc<RwLock<Registry>>,
    pub durability: Durability,
    pub auth: Arc<Authenticator>,
    /// `None` when rate limits are off.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Failed authentications per client address (always on).
    pub auth_failures: Arc<FailureThrottle>,
    pub lifecycle: Arc<Lifecycle>,
    /// The engine's time: handlers read it here, never the system clock, so tests can set it.
    pub clock: Arc<dyn Clock>,
    /// What the stream of committed events counts (commits, events, by kind).
    pub stream_stats: Arc<StreamStats>,
    /// Waiting reads, woken by the stream of committed events.
    pub watch: Arc<WatchHub>,
    /// The web console's signed-in sessions (their cookie also authenticates safe API reads).
    pub sessions: Arc<crate::console::Sessions>,
    /// Event streams (SSE): their cap and counters.
    pub streams: Arc<StreamHub>,
    /// What `/metrics` exports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The workers' admin APIs the console reads beside a run (none configured: it says so).
    pub worker_admins: Arc<crate::console::WorkerAdmins>,
    /// Redrive jobs over parked runs.
    pub redrives: Arc<crate::redrive::Redrives>,
    /// Spans of requests that start runs (off: records nothing).
    pub tracer: shop_telemetry::Tracer,
    /// The workers' task streams (`task_stream`): their cap and their shutdown.
    pub task_streams: Arc<task_stream::TaskStreams>,
}

/// How old the core's last tick may be before `/healthz` calls the core dead: many times its
/// longest sleep (`IDLE_WAKE`, 500 ms), so a slow turn under load is not mistaken for a hang.
pub const CORE_STALE_AFTER_MS: u64 = 5_000;

/// What liveness and readiness know beyond the core's counters.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Set when shutdown begins: not ready for new work from then on.
    pub shutting_down: AtomicBool,
    /// Set when the core thread has returned or panicked.
    pub core_stopped: AtomicBool,
}

/// Why the core is not alive, if it is not: it stopped, never ticked, or its last tick is
/// older than [`CORE_STALE_AFTER_MS`].
pub fn core_liveness(lifecycle: &Lifecycle, last_tick_ms: u64, now_ms: u64) -> Result<(), String> {
    if lifecycle.core_stopped.load(Relaxed) {
        return Err("the core thread has stopped".into());
    }
    if last_tick_ms == 0 {
        return Err("the core has not started".into());
    }
    let age = now_ms.saturating_sub(last_tick_ms);
    if age > CORE_STALE_AFTER_MS {
        return Err(format!("the core has not ticked for {age} ms"));
    }
    Ok(())
}

/// The whole API as one router, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let admin = Router::new()
        .route("/v1/stats", get(stats::stats))
        .route("/v1/cluster", get(cluster))
        .route("/metrics", get(crate::metrics::serve))
        .route("/v1/workflows", post(workflows::start))
        .route("/v1/workflows/:id/cancel", post(workflows::cancel))
        .route("/v1/workflows/:id/terminate", post(workflows::terminate))
        .route("/v1/workflows/:id/resume", post(workflows::resume))
        .route("/v1/definitions", post(definitions::register))
        .route("/v1/redrives", post(redrive::start))
        .route("/v1/redrives/:id", delete(redrive::stop))
        .route("/api/orders/:id/cancel", post(orders::cancel))
        .route("/v1/tokens", post(auth::create_token).get(auth::list_tokens))
        .route("/v1/tokens/:id/revoke", post(auth::revoke_token))
        .route_layer(from_fn_with_state(Access::Admin, auth::require));
    let client = Router::new()
        .route("/v1/workflows", get(workflows::list))
        .route("/v1/workflows/:id", get(workflows::get_one))
        .route("/v1/workflows/:id/history", get(workflows::history))
        .route("/v1/workflows/:id/events", get(streams::run_events))
        .route("/v1/events", get(streams::events))
        .route("/v1/overview/events", get(live_stats::events))
        .route("/v1/definitions", get(definitions::list))
        .route("/v1/definitions/check", post(definitions::check))
        .route("/v1/parked", get(redrive::parked))
        .route("/v1/redrives/:id", get(redrive::get_one))
        .route_layer(from_fn_with_state(Access::Client, auth::require));
    let shop = Router::new()
        .route("/api/orders", post(orders::place).get(orders::list))
        .route("/api/orders/:id", get(orders::get_one))
        .route("/api/notifications/tickets", post(notifications::mint))
        .route_layer(from_fn_with_state(Access::Shop, auth::require));
    let worker = Router::new()
        .route("/v1/tasks/poll", post(tasks::poll))
        .route("/v1/tasks/complete", post(tasks::complete))
        .route("/v1/tasks/fail", post(tasks::fail))
        .route("/v1/tasks/heartbeat", post(tasks::heartbeat))
        .route("/v1/tasks/report", post(tasks::report))
        .route("/v1/tasks/nodes", get(tasks::nodes))
        .route("/v1/tasks/stream", get(task_stream::open))
        .route("/v1/notifications/verify", post(notifications::verify))
        .route_layer(from_fn_with_state(Access::Worker, auth::require));
    // A signaler reaches this route only, and only for its signals and workflow types.
    let signal = Router::new()
        .route("/v1/workflows/:id/signals/:name", post(workflows::signal))
        .route_layer(from_fn_with_state(Access::Signal, auth::require));
    Router::new()
        .merge(admin)
        .merge(client)
        .merge(shop)
        .merge(worker)
        .merge(signal)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // Inside authentication: only an authenticated request about another node's run is
        // passed on (the owner authenticates it again from the same headers).
        .layer(forward::ForwardLayer::new(state.clone()))
        // Everything above, the fallback included, needs a credential; `/healthz` and
        // `/readyz`, added after this layer, do not (load balancers and `shopctl dev` probe
        // them).
        .layer(from_fn_with_state(state.clone(), auth::authenticate))
        // The console has its own session layer: its login page and files need none, and a
        // page without a session redirects to the login page instead of answering 401.
        .merge(crate::console::routes(state.clone()))
        .route("/healthz", get(health))
        // The token in the path is the credential (see `callbacks`).
        .route("/v1/callbacks/:token", post(callbacks::callback).layer(forward::ForwardLayer::new(state.clone())))
        .route("/readyz", get(ready))
        // Public: it describes shapes, never data, and a client reads it before it has a
        // credential (see `openapi`).
        .route(openapi::OPENAPI_PATH, get(openapi::serve))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(edge::edge))
        // Outermost: it sees every answer, the edge's refusals included.
        .layer(from_fn_with_state(state.metrics.clone(), crate::metrics::track_http))
        .with_state(state)
}

/// Liveness: 200 while the core runs and ticks; 503 `CORE_UNAVAILABLE` otherwise (the
/// process is then of no use, and a supervisor should restart it).
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let last_tick = state.core.stats.last_tick_ms.load(Relaxed);
    core_liveness(&state.lifecycle, last_tick, state.clock.now_ms())
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "CORE_UNAVAILABLE", why))?;
    Ok(Json(health_body(&state, "ok")))
}

/// Readiness: 200 when the engine takes new work; 503 while it shuts down, while the disk
/// guard refuses writes, or while the core is not alive.
async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let last_tick = state.core.stats.last_tick_ms.load(Relaxed);
    core_liveness(&state.lifecycle, last_tick, state.clock.now_ms())
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "CORE_UNAVAILABLE", why))?;
    if state.lifecycle.shutting_down.load(Relaxed) {
        return Err(ApiError::from(crate::core::CoreError::ShuttingDown));
    }
    if state.core.stats.disk_full.load(Relaxed) {
        return Err(ApiError::from(crate::core::CoreError::DiskFull));
    }
    Ok(Json(health_body(&state, "ready")))
}

fn health_body(state: &AppState, status: &str) -> Health {
    Health {
        status: status.into(),
        active_workflows: state.core.stats.active.load(Relaxed),
        pid: Some(std::process::id()),
    }
}

/// `GET /v1/cluster`: the nodes, the shards and their leases as this node sees them, with
/// the writes it had refused because it no longer held a shard's epoch.
async fn cluster(State(state): State<AppState>) -> Json<shop_types::cluster::ClusterStatus> {
    let mut status = state.cluster.status();
    status.fence_rejections = state.core.stats.fence_rejections.load(Relaxed);
    Json(status)
}

/// Parses a query string, turning a malformed one into a 400 with our error shape.
pub(crate) fn query<T: DeserializeOwned>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|e| ApiError::bad_request("BAD_QUERY", e.body_text()))
}

/// `wait=30s`: how long a read may block for the run to finish, capped by `MAX_WAIT_MS`.
pub(crate) fn parse_wait(wait: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(text) = wait else {
        return Ok(None);
    };
    let wait = humantime::parse_duration(text)
        .map_err(|e| ApiError::bad_request("BAD_QUERY", format!("wait={text:?}: {e}")))?;
    if wait > Duration::from_millis(MAX_WAIT_MS) {
        return Err(ApiError::invalid(format!("wait may be at most {}s", MAX_WAIT_MS / 1000)));
    }
    Ok(Some(wait))
}

/// A run as the API shows it, or `None` if there is no such run.
pub(crate) fn workflow_view(state: &AppState, id: &WorkflowId) -> Result<Option<WorkflowView>, ApiError> {
    workflow_view_with_input(state, id, None)
}

/// [`workflow_view`] for a caller that already holds the run's input (a run's input never
/// changes): the store is read for the summary only, never for the run's first record,
/// which for a finished run means decoding its packed history.
pub(crate) fn workflow_view_with_input(
    state: &AppState,
    id: &WorkflowId,
    known_input: Option<JsonText>,
) -> Result<Option<WorkflowView>, ApiError> {
    let quarantined = state.core.stats.quarantined.lock().ok().and_then(|runs| runs.get(id).cloned());
    if let Some(reason) = quarantined {
        // Its summary may read fine, but its state is unknown: show it nowhere as if it ran.
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "CORRUPT_RECORD",
            format!("workflow {id} is quarantined: {reason}"),
        ));
    }
    let Some(summary) = state.store.run(id)? else {
        return Ok(None);
    };
    let input = match known_input {
        Some(input) => input,
        None => match state.store.first_event(id)?.map(|e| e.kind) {
            Some(EventKind::WorkflowStarted { input, .. }) => input,
            _ => JsonText::null(),
        },
    };
    let domain_status = state
        .registry
        .read()
        .ok()
        .and_then(|r| r.get(summary.workflow_type.as_str(), summary.definition_version))
        .and_then(|d| d.statuses.label(summary.status).map(str::to_owned));
    Ok(Some(WorkflowView {
        id: id.clone(),
        workflow_type: summary.workflow_type,
        definition_version: summary.definition_version,
        status: summary.status,
        domain_status,
        created_at_ms: summary.created_at_ms,
        closed_at_ms: summary.closed_at_ms,
        reason: summary.reason,
        input,
        output: summary.output,
        // Replaying a history costs a read of all of it: only the one-run read pays it
        // (`with_waiting_for`), never a list of a thousand runs.
        waiting_for: Vec::new(),
        definition_hash: None,
        why: None,
    }))
}

/// `view` with the hash of the definition it was started on and what it waits for, when it is
/// in flight (`GET /v1/workflows/{id}` only). The hash is in the run's first record: one read.
pub(crate) fn with_waiting_for(state: &AppState, view: WorkflowView) -> WorkflowView {
    let replay = (view.status == WorkflowStatus::Running).then(|| replayed(state, &view.id)).flatten();
    with_waiting_for_replayed(state, view, replay.as_ref())
}

/// [`with_waiting_for`] from a replay the caller already made (`GET /v1/workflows/{id}` replays
/// once for this and for `why`).
pub(crate) fn with_waiting_for_replayed(
    state: &AppState,
    mut view: WorkflowView,
    replay: Option<&Replay>,
) -> WorkflowView {
    view.definition_hash = state.store.start_events(&view.id).ok().and_then(|events| {
        events.into_iter().find_map(|e| match e.kind {
            EventKind::DefinitionPinned { content_hash } => Some(content_hash),
            _ => None,
        })
    });
    if let Some(replay) = replay.filter(|_| view.status == WorkflowStatus::Running) {
        view.waiting_for = waiting_for(state, &view.id, replay);
    }
    view
}

/// A run's definition, history and the state replayed from it.
pub(crate) type Replay =
    (Arc<crate::definition::Definition>, Vec<shop_types::history::Event>, crate::state::WorkflowState);

/// A run's definition, history and state replayed from it (a pure fold; the core's copy is
/// not shared with handlers); `None` when the history or its definition cannot be read.
pub(crate) fn replayed(state: &AppState, id: &WorkflowId) -> Option<Replay> {
    let events = state.store.history(id).ok()?;
    let definition = workflows::definition_of(state, &events.first()?.kind)?;
    let run = crate::state::WorkflowState::replay(id.clone(), &definition, &events).ok()?;
    Some((definition, events, run))
}

/// What a run in flight waits for, from its replay.
fn waiting_for(state: &AppState, id: &WorkflowId, replay: &Replay) -> Vec<shop_types::api::InFlightView> {
    use shop_types::api::InFlightView;
    let (definition, events, run) = replay;
    let name = |step| definition.step(step).map(|s| s.name.to_string()).unwrap_or_default();
    let attempts = run.attempts.values().map(|a| InFlightView::Activity { step: name(a.step), attempt: a.attempt });
    let sleeps = run.sleeps.values().map(|s| InFlightView::Sleep { step: name(s.step), until_ms: s.until_ms });
    let waits = run.waits.values().map(|w| InFlightView::Wait {
        step: name(w.step),
        signals: w.signals.clone(),
        deadline_ms: w.deadline_ms,
        callback: callbacks::callback_path(&state.core.signer, id, events, w.step),
    });
    let children =
        run.children.values().map(|c| InFlightView::Child { step: name(c.step), child: c.child.to_string() });
    let parent = run
        .parent
        .as_ref()
        .filter(|_| run.held())
        .map(|link| InFlightView::HeldByParent { parent: link.parent.to_string() });
    attempts.chain(sleeps).chain(waits).chain(children).chain(parent).collect()
}

/// The run's view, after waiting up to `wait` for it to finish.
///
/// A wait holds one of its caller's slots (`--max-waits-per-caller`; the caller is the
/// credential, or the client IP when open) and one of the engine's (`--max-watchers`) for
/// exactly as long as this request lives: the guard is dropped when the wait ends, times out,
/// or the client hangs up (axum drops the request's future). Over the caller's cap: 429
/// `TOO_MANY_WAITS` with `Retry-After`; over the engine's: 503 `OVERLOADED`.
pub(crate) async fn view_after_wait(
    state: &AppState,
    principal: &Principal,
    id: &WorkflowId,
    wait: Option<Duration>,
) -> Result<WorkflowView, ApiError> {
    match wait {
        Some(wait) => {
            let slot = wait_slot(state, principal)?;
            wait_until_settled(state, id, tokio::time::Instant::now() + wait, &slot).await
        }
        None => read_view(state, id, None),
    }
}

/// Run `id` once it settles (terminal, or parked as FAILED for an operator) or at
/// `deadline`, whichever comes first; the caller holds `_slot` for the whole wait.
pub(crate) async fn wait_until_settled(
    state: &AppState,
    id: &WorkflowId,
    deadline: tokio::time::Instant,
    _slot: &crate::watch::WaitSlot,
) -> Result<WorkflowView, ApiError> {
    // The input read first serves every later read of the same run.
    let mut input = None;
    loop {
        // Registered before the read: a settling event committed after the read wakes us.
        let woken = state.watch.register(id);
        let view = read_view(state, id, input.take())?;
        input = Some(view.input.clone());
        // Settled, or no room to wait.
        let Some(woken) = woken.filter(|_| view.status == WorkflowStatus::Running) else {
            return Ok(view);
        };
        // Running out of time is not an error: the caller gets the current state. Dropping
        // the receiver frees the hub's entry at its next prune.
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, woken) => if woken.is_err() {
                return read_view(state, id, input);
            },
            // The shard moved mid-wait: events for this run will commit elsewhere now, so
            // say "moved" and let the waiting node ask the new owner (`forward`).
            () = forward::moved_away(&state.cluster, id) => return Err(forward::shard_moved(None)),
        }
        // Woken: the run settled, or the hub lagged; read again and wait on if it did not.
    }
}

/// A slot for one waiting read of `principal`: 429 `TOO_MANY_WAITS` over its caller's cap,
/// 503 `OVERLOADED` over the engine's. Hold it for exactly as long as the wait.
pub(crate) fn wait_slot(state: &AppState, principal: &Principal) -> Result<crate::watch::WaitSlot, ApiError> {
    // Only callers that may not be rate limited (workers) have no key; they share one.
    let caller = principal.rate_key.as_deref().unwrap_or("unidentified");
    state.watch.slots().acquire(caller).map_err(|refused| match refused {
        WaitRefused::CallerFull => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_WAITS",
            format!(
                "this caller already waits on {} reads, its limit; retry once one ends",
                state.watch.slots().max_per_caller()
            ),
        ),
        WaitRefused::Full => ApiError::from(CoreError::Overloaded("too many waiting reads")),
    })
}

fn read_view(state: &AppState, id: &WorkflowId, known_input: Option<JsonText>) -> Result<WorkflowView, ApiError> {
    workflow_view_with_input(state, id, known_input)?
        .ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_is_alive_only_while_it_ticks() {
        let lifecycle = Lifecycle::default();
        assert!(core_liveness(&lifecycle, 0, 10_000).is_err(), "never ticked");
        assert!(core_liveness(&lifecycle, 10_000, 10_000 + CORE_STALE_AFTER_MS).is_ok());
        assert!(core_liveness(&lifecycle, 10_000, 10_000 + CORE_STALE_AFTER_MS + 1).is_err());
        lifecycle.core_stopped.store(true, Relaxed);
        assert!(core_liveness(&lifecycle, 10_000, 10_000).is_err(), "stopped");
    }
}
