//! Authentication and authorization at the HTTP door, and the token management routes.
//!
//! [`authenticate`] runs before every route but `/healthz` and `/readyz`: it refuses a client
//! address with too many recent failures (429 `TOO_MANY_AUTH_FAILURES`), turns the
//! `Authorization` header into a [`Principal`] — or, for a safe method (`GET`, `HEAD`) sent
//! without one, a console session's cookie, so the console's `EventSource` can follow the
//! SSE streams (a session never authorizes a state-changing API request: those need the
//! header, so a forged cross-site form cannot use it) — (401 `UNAUTHENTICATED` otherwise), takes one request from the
//! caller's rate-limit bucket (429 `RATE_LIMITED` with `Retry-After`), and hands the
//! principal to the route. [`require`] then checks the route's [`Access`] against the role
//! (403 `FORBIDDEN`); task routes also check the queue with [`check_queue`] and
//! [`check_task_queues`], and the signal route checks a signaler's signal names and workflow
//! types with [`check_signal_name`] and [`check_signal_type`].
//!
//! This layer must never let a request through without a principal, and never put a
//! secret into a log line or an answer other than the one that creates it.

use super::{ApiError, ApiJson, AppState};
use crate::auth::{Denied, Principal};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shop_types::auth::{CreateTokenRequest, CreatedToken, Role, TokenList, TokenView};
use shop_types::limits::MAX_BODY_BYTES;
use shop_types::{QueueName, TaskToken, WorkflowType};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Path prefix of the worker protocol; in open mode, requests there count as workers' and
/// are not rate limited (see `auth::rate_key` for why workers are exempt).
const TASKS_PREFIX: &str = "/v1/tasks/";

/// What a route needs of its caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Admins only: token management, starting, cancelling and terminating runs,
    /// registering definitions, engine stats.
    Admin,
    /// Clients and admins, but not a customer's own credential (a client JWT with a `sub`):
    /// reading any run, its history, the engine-wide streams, definitions.
    Client,
    /// Clients and admins, customers included: placing and reading orders (a customer sees
    /// only their own), minting their notification tickets.
    Shop,
    /// Workers and admins: the task protocol (queues are checked by the handlers), and
    /// verifying the credential a notification WebSocket was opened with.
    Worker,
    /// Signalers and admins: sending a signal to a run (a signaler's signal names and
    /// workflow types are checked by the handler). The only route a signaler reaches.
    Signal,
}

impl Access {
    pub(crate) fn allows(self, role: Role) -> bool {
        match self {
            Access::Admin => role == Role::Admin,
            Access::Client | Access::Shop => matches!(role, Role::Admin | Role::Client),
            Access::Worker => matches!(role, Role::Admin | Role::Worker),
            Access::Signal => matches!(role, Role::Admin | Role::Signaler),
        }
    }
}

/// Authenticates the request and applies the caller's rate limit. A client address that
/// presented too many bad credentials lately gets 429 for every further bad one.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    peer: Option<ConnectInfo<SocketAddr>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = client_ip(peer);
    let principal = if state.auth.is_open() {
        // Open: nobody is identified, so the client's IP names the bucket.
        let is_task = request.uri().path().starts_with(TASKS_PREFIX);
        Principal::open((!is_task).then(|| format!("ip:{client}")))
    } else {
        let header = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        let session = match header {
            None if request.method().is_safe() => crate::console::session_principal(&state, request.headers()),
            _ => None,
        };
        match session {
            Some(principal) => principal,
            None => match verify(&state, client, header) {
                Ok(principal) => principal,
                Err(refusal) => return refuse(request, refusal.into_response()).await,
            },
        }
    };
    if let Err(refusal) = check_rate(&state, &principal) {
        return refuse(request, refusal.into_response()).await;
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Who `authorization` (an `Authorization` header's value) names, or the refusal: 401, or 429
/// when `client` presented too many bad credentials lately. Shared by the API and the
/// console's login, so both count the same failures.
pub(crate) fn verify(state: &AppState, client: IpAddr, authorization: Option<&[u8]>) -> Result<Principal, Refusal> {
    let now = state.clock.now_ms();
    // The credential is checked first (a digest and a lookup, or an HMAC): a valid one is
    // never throttled, so failures from a shared address (a NAT, a proxy, a worker that
    // relays its admin API's bad tokens) cannot lock out the clients that hold one.
    state.auth.authenticate(authorization).map_err(|denied| {
        if let Err(retry_after_s) = state.auth_failures.check(client, now) {
            return Refusal::TooManyFailures { retry_after_s };
        }
        // No credential at all is not a guess: refused, not counted.
        if denied != Denied::Missing {
            state.auth_failures.record_failure(client, now);
        }
        Refusal::Unauthenticated(denied)
    })
}

/// Why a request was refused before any route saw it.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// 401: no credential, or one that is not accepted.
    Unauthenticated(Denied),
    /// 429 `TOO_MANY_AUTH_FAILURES`: this address presented too many bad credentials lately.
    TooManyFailures { retry_after_s: u64 },
    /// 429 `RATE_LIMITED`: the credential's bucket is empty.
    RateLimited { retry_after_s: u64 },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated(denied) => unauthenticated(&denied),
            Refusal::TooManyFailures { retry_after_s } => too_many_failures(retry_after_s),
            Refusal::RateLimited { retry_after_s } => rate_limited(retry_after_s),
        }
    }
}

/// Takes one request from `principal`'s rate-limit bucket: 429 `RATE_LIMITED` when empty.
pub(crate) fn check_rate(state: &AppState, principal: &Principal) -> Result<(), Refusal> {
    if let (Some(limiter), Some(key)) = (&state.rate_limiter, &principal.rate_key) {
        limiter.check(key, state.clock.now_ms()).map_err(|retry_after_s| Refusal::RateLimited { retry_after_s })?;
    }
    Ok(())
}

/// The client address of a request, as the server saw it.
pub(crate) fn client_ip(peer: Option<ConnectInfo<SocketAddr>>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

/// How long a refusal waits for the rest of the request's body before answering. A refused
/// client is not worth a connection slot for the whole body timeout.
const REFUSAL_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers `response` after reading and discarding the request's body (at most
/// `MAX_BODY_BYTES`, within [`REFUSAL_DRAIN_TIMEOUT`]), so a keep-alive connection stays in
/// step and the client's next request on it is answered. A body that cannot be read that
/// way leaves it out of step; the server then says `Connection: close`.
async fn refuse(request: Request, response: Response) -> Response {
    let drain = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES);
    let _ = tokio::time::timeout(REFUSAL_DRAIN_TIMEOUT, drain).await;
    response
}

/// Refuses the request unless its principal's role has `access`.
pub(crate) async fn require(State(access): State<Access>, request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<Principal>() else {
        // Only reachable if a route were mounted outside `authenticate`: deny, never allow.
        return unauthenticated(&Denied::Missing);
    };
    if let Err(refused) = check_access(principal, access) {
        return refused.into_response();
    }
    next.run(request).await
}

/// 403 unless `principal`'s role has `access`: the one role check of the API and the console.
pub(crate) fn check_access(principal: &Principal, access: Access) -> Result<(), ApiError> {
    if access == Access::Client && principal.role == Role::Client && principal.subject.customer().is_some() {
        return Err(ApiError::forbidden(
            "a customer's credential reaches only their orders (/api/orders) and notification tickets",
        ));
    }
    if access.allows(principal.role) {
        return Ok(());
    }
    let needed = match access {
        Access::Admin => "an admin",
        Access::Client | Access::Shop => "a client or admin",
        Access::Worker => "a worker or admin",
        Access::Signal => "a signaler or admin",
    };
    Err(ApiError::forbidden(format!("the role {} cannot do this; it needs {needed} credential", principal.role)))
}

fn unauthenticated(denied: &Denied) -> Response {
    ApiError::unauthenticated(denied.to_string()).into_response()
}

fn too_many_failures(retry_after_s: u64) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_AUTH_FAILURES",
        format!("too many failed authentications from this address; retry in {retry_after_s}s"),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

fn rate_limited(retry_after_s: u64) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("too many requests for this credential; retry in {retry_after_s}s"),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

/// 403 unless `principal` may serve `queue`.
pub(crate) fn check_queue(principal: &Principal, queue: &QueueName) -> Result<(), ApiError> {
    if principal.may_serve(queue) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!("this credential may not serve queue {queue}")))
}

/// 403 unless `principal` may serve the queue each task was dispatched on. The queue comes
/// from the run's pinned definition; a token whose run or step is unknown is let through,
/// because the core refuses it anyway (404 or 409) without any effect.
pub(crate) fn check_task_queues<'a>(
    state: &AppState,
    principal: &Principal,
    tokens: impl IntoIterator<Item = &'a TaskToken>,
) -> Result<(), ApiError> {
    if principal.serves_every_queue() {
        return Ok(());
    }
    for token in tokens {
        let Some(summary) = state.store.run(&token.workflow_id)? else {
            continue;
        };
        let definition = state
            .registry
            .read()
            .map_err(|_| ApiError::from(crate::core::CoreError::Storage("the registry is unusable".into())))?
            .get(summary.workflow_type.as_str(), summary.definition_version);
        if let Some(queue) = definition.as_ref().and_then(|d| d.step(token.step)?.queue().cloned()) {
            check_queue(principal, &queue)?;
        }
    }
    Ok(())
}

/// 403 unless `principal` may send signals named `name`. Runs before the run is looked up,
/// so a signaler never learns whether a run exists through a signal it may not send.
pub(crate) fn check_signal_name(principal: &Principal, name: &str) -> Result<(), ApiError> {
    if principal.may_send_signal(name) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!("this credential may not send the signal {name:?}")))
}

/// 403 unless `principal` may signal runs of `workflow_type` (read from the run's summary).
pub(crate) fn check_signal_type(principal: &Principal, workflow_type: &WorkflowType) -> Result<(), ApiError> {
    if principal.may_signal_type(workflow_type) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!("this credential may not signal runs of type {workflow_type}")))
}

/// `POST /v1/tokens`: creates a token and shows its secret, once.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let (view, token) = state.auth.create(request).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { view, token })))
}

/// `GET /v1/tokens`: every token, never a secret or a digest.
pub(crate) async fn list_tokens(State(state): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList { tokens: state.auth.list()? }))
}

/// `POST /v1/tokens/{id}/revoke`: refused from now on; revoking twice is fine.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    Ok(Json(state.auth.revoke(&id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_reach_only_their_routes() {
        use Role::*;
        let allowed = |access: Access| {
            [Admin, Client, Worker, Signaler].into_iter().filter(|r| access.allows(*r)).collect::<Vec<_>>()
        };
        assert_eq!(allowed(Access::Admin), vec![Admin]);
        assert_eq!(allowed(Access::Client), vec![Admin, Client]);
        assert_eq!(allowed(Access::Worker), vec![Admin, Worker]);
        assert_eq!(allowed(Access::Signal), vec![Admin, Signaler]);
    }
}
