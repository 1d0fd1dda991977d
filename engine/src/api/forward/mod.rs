//! Forwarding between engine nodes (design.md section 10: any node accepts any request).
//!
//! A request that acts on one run goes to the node that owns the run's shard
//! ([`Cluster::route`]): starts (`POST /v1/workflows`, signal-with-start, `POST /api/orders`),
//! signals, cancel/terminate/resume, callbacks, waiting reads (`?wait=` on a run, its history
//! or an order), a run's event stream, and the task reports of the worker protocol
//! (complete, fail, heartbeat; a report batch is split by owner in `tasks.rs`). [`ForwardLayer`]
//! sits right after authentication, so only an authenticated request is ever passed on, and
//! the owner authenticates it again from the same headers.
//!
//! - One node only (sled, [`Cluster::is_single`]): every request is served here as it came,
//!   with nothing read or copied to route it.
//! - Local: served here, as on one node.
//! - Remote: the request is sent on ([`http::Forwarder`]) with the hop header
//!   [`FORWARDED_HEADER`]; a request that carries it is never forwarded again: if it is not
//!   this node's either (the shard moved while it travelled), it is answered 503
//!   [`SHARD_MOVED`] with `Retry-After`, and the node that forwarded it routes it again.
//! - Unowned (a takeover is under way): 503 [`SHARD_UNAVAILABLE`] with `Retry-After`.
//!
//! A 503 `SHARD_MOVED`/`SHARD_UNAVAILABLE` (from here, from the owner, or from the core
//! refusing a run whose shard it no longer holds) promises that nothing was done, so the
//! entry node routes the request again, at most [`MAX_REROUTES`] times, [`REROUTE_PAUSE`]
//! apart, before it answers the caller (whose client retries a 503 after `Retry-After`).
//! A waiting read instead re-routes until the caller's own deadline: the owner answers
//! "moved" as soon as it loses the shard during the wait ([`moved_away`]), and the waiting
//! node asks the new owner with the wait that is left. When the wait runs out while no
//! owner answers, the caller gets the run's state as it is, read from the shared store.
//!
//! Reads that do not wait (a run, its history, lists, definitions, stats) are served by any
//! node from the shared store, never forwarded: they read what is committed, and on
//! PostgreSQL every node reads the same database.
//!
//! This module decides only where a request is served. It must never parse a request beyond
//! the one id it routes by (the handler that serves it checks everything), never change a
//! body, and never forward a request twice.

pub mod http;

use super::{ApiError, AppState};
use crate::cluster::{Cluster, Route};
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http::{Outgoing, FORWARD_TIMEOUT, FORWARD_WAIT_MARGIN};
use serde::Deserialize;
use shop_types::limits::MAX_BODY_BYTES;
use shop_types::{TaskToken, WorkflowId};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// The hop header: set on a forwarded request, naming the node that forwarded it.
pub const FORWARDED_HEADER: &str = "x-shop-forwarded";
/// Set on a 503 that promises nothing was done because the run's shard is not here (moved or
/// unowned), so the node that forwarded it, or a client, may route it again.
pub const REROUTE_HEADER: &str = "x-shop-reroute";
/// 503: the run's shard is owned by another node than the one asked (it moved).
pub const SHARD_MOVED: &str = "SHARD_MOVED";
/// 503: no live node owns the run's shard right now (a takeover is under way).
pub const SHARD_UNAVAILABLE: &str = "SHARD_UNAVAILABLE";
/// 503 from the core: the command's run is in a shard this node does not hold (it was
/// dropped between routing and the command).
pub const NOT_OWNER: &str = "NOT_OWNER";
/// The 503s that promise nothing was done because the run's shard is elsewhere: answered with
/// [`REROUTE_HEADER`], routed again by the node that forwarded them.
pub const REROUTED_CODES: &[&str] = &[SHARD_MOVED, SHARD_UNAVAILABLE, NOT_OWNER];
/// Most times a request that does not wait is routed again after "moved" or an unreachable
/// owner, before its caller hears 503: a shard moves once per takeover, so one or two
/// re-routes find the new owner; more would only hold the caller during an outage.
pub const MAX_REROUTES: u32 = 3;
/// The pause before routing a request again: the lease manager updates the shard map about
/// once a second, so asking sooner would mostly find the same answer.
pub const REROUTE_PAUSE: Duration = Duration::from_millis(250);
/// How often a waiting read on the owner checks that the run's shard is still its own.
pub const OWNERSHIP_RECHECK: Duration = Duration::from_millis(250);
/// Most ids drawn for a start that names none, looking for one whose shard this node owns
/// (so it needs no forwarding). With `n` nodes sharing shards evenly a draw misses with
/// probability `(n-1)/n`; 64 draws all miss with about 1e-8 for 3 nodes. The last draw is
/// used even if it is not ours: it is then routed like any other.
pub const MAX_ID_DRAWS: usize = 64;

/// The layer that routes requests about one run to their owner.
#[derive(Clone)]
pub(crate) struct ForwardLayer {
    state: AppState,
}

impl ForwardLayer {
    pub(crate) fn new(state: AppState) -> ForwardLayer {
        ForwardLayer { state }
    }
}

impl<S> Layer<S> for ForwardLayer {
    type Service = Forward<S>;
    fn layer(&self, inner: S) -> Forward<S> {
        Forward { inner, state: self.state.clone() }
    }
}

/// [`ForwardLayer`]'s service: it may call the route's handler more than once (a request
/// refused as "moved" is routed again), so it keeps the inner service to clone.
#[derive(Clone)]
pub(crate) struct Forward<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Forward<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let state = self.state.clone();
        Box::pin(async move { Ok(serve(state, inner, request).await) })
    }
}

/// What a request is routed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// The run id is the path's segment at this index (`/v1/workflows/{id}/...`: 3).
    Path(usize),
    /// The path's segment 3 is a callback token, whose first `~` part is the run id.
    Callback,
    /// A waiting read of the run at this segment: re-routed until the caller's deadline.
    Waiting(usize),
    /// A run's event stream: forwarded without a total timeout.
    Stream(usize),
    /// `POST /v1/workflows`: the body's `id` (none: this node draws one of its own).
    StartBody,
    /// `POST /api/orders`: the body's `orderId`, else the `Idempotency-Key` header.
    OrderBody,
    /// Task complete/fail/heartbeat: the run named by the body's `token`.
    TokenBody,
}

/// Which requests are routed, by method and route template.
fn key_of(method: &Method, template: &str, has_wait: bool) -> Option<Key> {
    let key = match (method.as_str(), template) {
        ("POST", "/v1/workflows") => Key::StartBody,
        ("POST", "/api/orders") => Key::OrderBody,
        ("POST", "/v1/tasks/complete" | "/v1/tasks/fail" | "/v1/tasks/heartbeat") => Key::TokenBody,
        (
            "POST",
            "/v1/workflows/:id/signals/:name"
            | "/v1/workflows/:id/cancel"
            | "/v1/workflows/:id/terminate"
            | "/v1/workflows/:id/resume"
            | "/api/orders/:id/cancel",
        ) => Key::Path(3),
        ("POST", "/v1/callbacks/:token") => Key::Callback,
        ("GET", "/v1/workflows/:id" | "/v1/workflows/:id/history" | "/api/orders/:id") if has_wait => Key::Waiting(3),
        ("GET", "/v1/workflows/:id/events") => Key::Stream(3),
        _ => return None,
    };
    Some(key)
}

async fn serve<S>(state: AppState, inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // One node owns every run (sled): each request is this node's, as it came.
    if state.cluster.is_single() {
        return call(inner, request).await;
    }
    let template = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let query = query_pairs(request.uri());
    let has_wait = query.iter().any(|(name, _)| name == "wait");
    let Some(key) = template.and_then(|t| key_of(request.method(), &t, has_wait)) else {
        return call(inner, request).await;
    };
    let (parts, body) = request.into_parts();
    // Bounded like every body the API reads; the edge has refused a declared larger one.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return super::body::too_large().into_response();
    };
    let held = Held { parts, body };
    // No id to route by (a malformed request): the handler here answers it precisely.
    let Some(run) = run_of(key, &held) else {
        return call(inner, held.request()).await;
    };
    if held.parts.headers.contains_key(FORWARDED_HEADER) {
        return serve_forwarded(&state.cluster, inner, held, &run).await;
    }
    // A console session (a cookie, no `Authorization`) lives in this node's memory only, so
    // the owner could not authenticate its request: a session's read is served here, from
    // the shared store (a wait or a run's stream then sees only what this node commits).
    if !state.auth.is_open() && !held.parts.headers.contains_key(axum::http::header::AUTHORIZATION) {
        return call(inner, held.request()).await;
    }
    match key {
        Key::Waiting(_) => match wait_of(&query) {
            Some(wait) => wait_anywhere(&state, inner, held, &run, query, wait).await,
            // A malformed wait: the handler answers 400.
            None => call(inner, held.request()).await,
        },
        Key::Stream(_) => stream_anywhere(&state, inner, held, &run).await,
        _ => act_anywhere(&state, inner, held, &run).await,
    }
}

/// A request whose body was read, so it can be sent more than once.
struct Held {
    parts: Parts,
    body: Bytes,
}

impl Held {
    fn request(&self) -> Request {
        Request::from_parts(self.parts.clone(), Body::from(self.body.clone()))
    }

    fn with_uri(&self, uri: Uri) -> Held {
        let mut parts = self.parts.clone();
        parts.uri = uri;
        Held { parts, body: self.body.clone() }
    }

    fn outgoing(&self) -> Outgoing {
        Outgoing {
            method: self.parts.method.clone(),
            uri: self.parts.uri.clone(),
            headers: self.parts.headers.clone(),
            body: self.body.clone(),
        }
    }
}

#[derive(Deserialize)]
struct StartPeek {
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderPeek {
    order_id: Option<String>,
}

#[derive(Deserialize)]
struct TokenPeek {
    token: String,
}

/// The run a request acts on, when it names one that parses.
fn run_of(key: Key, held: &Held) -> Option<WorkflowId> {
    let segment = |index: usize| held.parts.uri.path().split('/').nth(index).map(percent_decode);
    let text = match key {
        Key::Path(index) | Key::Waiting(index) | Key::Stream(index) => segment(index)?,
        Key::Callback => segment(3)?.split('~').next()?.to_owned(),
        Key::StartBody => serde_json::from_slice::<StartPeek>(&held.body).ok()?.id?,
        Key::OrderBody => match serde_json::from_slice::<OrderPeek>(&held.body).ok()?.order_id {
            Some(id) => id,
            None => held.parts.headers.get("idempotency-key")?.to_str().ok()?.to_owned(),
        },
        Key::TokenBody => {
            let token: TaskToken = serde_json::from_slice::<TokenPeek>(&held.body).ok()?.token.parse().ok()?;
            return Some(token.workflow_id);
        }
    };
    WorkflowId::parse(text).ok()
}

/// `%XX` escapes decoded (an id's characters never need them, but a client may send them).
fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default()
}

/// The caller's wait, when it is one the handler would accept.
fn wait_of(query: &[(String, String)]) -> Option<Duration> {
    let text = query.iter().find(|(name, _)| name == "wait").map(|(_, value)| value.as_str());
    super::parse_wait(text).ok().flatten()
}

/// `uri` with its `wait` replaced by `wait` (none: dropped).
fn with_wait(uri: &Uri, query: &[(String, String)], wait: Option<Duration>) -> Uri {
    let mut pairs: Vec<(String, String)> = query.iter().filter(|(name, _)| name != "wait").cloned().collect();
    if let Some(wait) = wait {
        pairs.push(("wait".to_owned(), format!("{}ms", wait.as_millis())));
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    let text = if query.is_empty() { uri.path().to_owned() } else { format!("{}?{query}", uri.path()) };
    text.parse().unwrap_or_else(|_| uri.clone())
}

async fn call<S>(inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Whether an answer promises nothing was done because the shard is elsewhere.
fn reroutable(response: &Response) -> bool {
    response.status() == StatusCode::SERVICE_UNAVAILABLE && response.headers().contains_key(REROUTE_HEADER)
}

/// A request another node forwarded: served here if the run is ours, else refused as moved
/// (never forwarded a second time).
async fn serve_forwarded<S>(cluster: &Cluster, inner: S, held: Held, run: &WorkflowId) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    match cluster.route(run) {
        Route::Local => call(inner, held.request()).await,
        Route::Remote { node, .. } => shard_moved(Some(&node)).into_response(),
        Route::Unowned => shard_unavailable().into_response(),
    }
}

/// A request that does not wait: served where the run lives, routed again (boundedly) when
/// the answer says the shard moved or its owner cannot be reached.
async fn act_anywhere<S>(state: &AppState, inner: S, held: Held, run: &WorkflowId) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    let mut reroutes = 0;
    loop {
        let last = reroutes >= MAX_REROUTES;
        let answer = match state.cluster.route(run) {
            Route::Local => call(inner.clone(), held.request()).await,
            Route::Remote { node, url } => {
                match state.forwarder.send(&node, &url, held.outgoing(), Some(FORWARD_TIMEOUT)).await {
                    Ok(answer) => answer,
                    Err(error) if error.nothing_sent() && !last => {
                        tracing::debug!(%run, %error, "forward failed before sending; routing again");
                        shard_unavailable().into_response()
                    }
                    Err(error) => return error.into_response(),
                }
            }
            Route::Unowned => shard_unavailable().into_response(),
        };
        if last || !reroutable(&answer) {
            return answer;
        }
        reroutes += 1;
        tokio::time::sleep(REROUTE_PAUSE).await;
    }
}

/// A waiting read: asks the owner with the wait that is left, and when the owner answers
/// "moved" (or cannot be reached, or there is none yet) routes again, until the caller's
/// deadline. Then the caller gets the run's state as it is, read here from the shared store.
async fn wait_anywhere<S>(
    state: &AppState,
    inner: S,
    held: Held,
    run: &WorkflowId,
    query: Vec<(String, String)>,
    wait: Duration,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let attempt = held.with_uri(with_wait(&held.parts.uri, &query, Some(left)));
        let answer = match state.cluster.route(run) {
            Route::Local => Some(call(inner.clone(), attempt.request()).await),
            Route::Remote { node, url } => {
                match state.forwarder.send(&node, &url, attempt.outgoing(), Some(left + FORWARD_WAIT_MARGIN)).await {
                    Ok(answer) => Some(answer),
                    // The owner died or is unreachable mid-wait: its successor answers next.
                    Err(error) => {
                        tracing::debug!(%run, %error, "a forwarded wait failed; routing again");
                        None
                    }
                }
            }
            Route::Unowned => None,
        };
        match answer {
            Some(answer) if !reroutable(&answer) => return answer,
            _ => {
                let pause = REROUTE_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }
    call(inner, held.with_uri(with_wait(&held.parts.uri, &query, None)).request()).await
}

/// A run's event stream: from its owner, for as long as the stream lasts.
async fn stream_anywhere<S>(state: &AppState, inner: S, held: Held, run: &WorkflowId) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    match state.cluster.route(run) {
        Route::Local => call(inner, held.request()).await,
        Route::Remote { node, url } => match state.forwarder.send(&node, &url, held.outgoing(), None).await {
            Ok(answer) => answer,
            Err(error) => error.into_response(),
        },
        Route::Unowned => shard_unavailable().into_response(),
    }
}

/// 503 `SHARD_MOVED`: the run's shard belongs to another node now (`owner`, when known).
pub(crate) fn shard_moved(owner: Option<&str>) -> ApiError {
    let message = match owner {
        Some(owner) => format!("this run's shard is owned by node {owner} now; retry"),
        None => "this run's shard is no longer owned by this node; retry".to_owned(),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, SHARD_MOVED, message)
}

/// 503 `SHARD_UNAVAILABLE`: no live node owns the run's shard right now.
pub(crate) fn shard_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        SHARD_UNAVAILABLE,
        "no engine node owns this run's shard right now (a takeover is under way); retry",
    )
}

/// Completes once `run`'s shard is no longer this node's. A waiting read on the owner races
/// it against the wait and answers "moved" when it completes, so the waiting node (or the
/// caller) asks the new owner instead of waiting for events that will never come here.
pub(crate) async fn moved_away(cluster: &Cluster, run: &WorkflowId) {
    while cluster.route(run) == Route::Local {
        tokio::time::sleep(OWNERSHIP_RECHECK).await;
    }
}

/// A new run's id, drawn (at most [`MAX_ID_DRAWS`] times) so that this node owns its shard:
/// a start that names no id is then served here without a hop.
pub(crate) fn local_id(cluster: &Cluster) -> WorkflowId {
    let mut id = super::workflows::new_id();
    for _ in 1..MAX_ID_DRAWS {
        if cluster.route(&id) == Route::Local {
            break;
        }
        id = super::workflows::new_id();
    }
    id
}

#[cfg(test)]
mod tests;
