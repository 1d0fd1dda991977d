//! The web console at `/console`: server-rendered HTML (maud templates, checked at compile
//! time) and one small script of our own, all built into the engine binary by `cargo build`.
//!
//! It owns the console's routes, its session layer ([`require_session`]: every page but the
//! login page and the static assets needs a session; a state-changing request also needs the
//! session's CSRF token), the page layout with its navigation (one module per page: `login`,
//! `runs`, `run`; more pages slot into [`NAV`]) and the security headers of every answer.
//!
//! It must never decide what a role may do (that is `api::auth::check_access`, the API's
//! own check), never write workflow state except through the same calls the API makes
//! (`api::workflows::act`), and never poll the store on a timer: live pages follow the
//! API's SSE streams and fetch one fragment per change they are told of.

mod assets;
mod definitions;
mod failures;
mod login;
mod overview;
mod page;
mod queues;
mod redrives;
mod run;
mod runs;
pub mod session;
mod shop;

pub use session::Sessions;
pub use shop::{WorkerAdminError, WorkerAdmins, MAX_WORKER_ADMINS, WORKER_ADMIN_TIMEOUT_MS};

use crate::api::AppState;
use crate::auth::Principal;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use session::{session_id, Session, CSRF_FIELD, CSRF_HEADER};
use std::collections::HashMap;

/// Where the console lives; every page is under it.
pub const CONSOLE_PATH: &str = "/console";
/// Most bytes a console form may have (a reason and a CSRF token; a pasted JWT at login).
pub const MAX_CONSOLE_FORM_BYTES: usize = 16 * 1024;

/// The pages of the navigation bar, in order: (path, label); each has a module and its
/// routes in [`routes`].
pub(crate) const NAV: &[(&str, &str)] = &[
    ("/console/overview", "Overview"),
    ("/console/runs", "Runs"),
    ("/console/failures", "Failures"),
    ("/console/queues", "Queues"),
    ("/console/definitions", "Definitions"),
];

/// The console's routes, with their own session layer; mounted by `api::app` outside the
/// API's bearer-token layer (an unauthenticated page redirects to the login page instead of
/// answering 401 JSON).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/runs") }))
        .route("/console/", get(|| async { Redirect::to("/console/runs") }))
        .route("/console/logout", post(login::logout))
        .route("/console/runs", get(runs::page))
        .route("/console/runs/:id", get(run::page))
        .route("/console/runs/:id/row", get(runs::row))
        .route("/console/runs/:id/live", get(run::live))
        .route("/console/runs/:id/confirm/:action", get(run::confirm))
        .route("/console/runs/:id/actions/:action", post(run::act))
        .route("/console/runs/:id/shop", get(shop::panel))
        .route("/console/overview", get(overview::page))
        .route("/console/failures", get(failures::page))
        .route("/console/failures/retry", get(failures::confirm).post(failures::retry))
        .route("/console/redrives/:id", get(redrives::page))
        .route("/console/queues", get(queues::page))
        .route("/console/queues/live", get(queues::live))
        .route("/console/definitions", get(definitions::page))
        .route("/console/definitions/:name/:version", get(definitions::version))
        .route_layer(from_fn_with_state(state, require_session));
    Router::new()
        .route("/console/login", get(login::page).post(login::submit))
        .route("/console/static/:file", get(assets::serve))
        .merge(pages)
        .layer(from_fn(security_headers))
}

/// The session of the request's cookie, if it is live and the credential it was made with
/// still is (a revoked token ends its sessions at their next request).
pub(crate) fn current_session(state: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = session_id(headers)?;
    let session = state.sessions.get(id, state.clock.now_ms())?;
    if session.token_digest.is_some_and(|digest| !state.auth.still_valid(&digest)) {
        state.sessions.remove(id);
        return None;
    }
    Some((id.to_owned(), session))
}

/// The principal a console session gives a safe API request (`api::auth::authenticate`).
pub(crate) fn session_principal(state: &AppState, headers: &HeaderMap) -> Option<Principal> {
    current_session(state, headers).map(|(_, session)| session.principal)
}

/// Whether a request only reads: the methods a session cookie may authenticate without a
/// CSRF token.
pub(crate) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Lets a request through only with a live session (a page without one redirects to the
/// login page), within its credential's rate limit, and, unless it only reads, with the
/// session's CSRF token in [`CSRF_HEADER`] or the form field [`CSRF_FIELD`] (403 otherwise).
/// The handler finds the [`Session`] in the request's extensions.
async fn require_session(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some((_, session)) = current_session(&state, request.headers()) else {
        if is_read(request.method()) {
            return Redirect::to("/console/login").into_response();
        }
        return page::error_page(None, StatusCode::FORBIDDEN, "Your session has ended: sign in again.");
    };
    if let Err(refusal) = crate::api::auth::check_rate(&state, &session.principal) {
        return refusal.into_response();
    }
    let mut request = if is_read(request.method()) {
        request
    } else {
        match with_csrf_checked(request, &session).await {
            Ok(request) => request,
            Err(refusal) => return refusal,
        }
    };
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The request, its body read (at most [`MAX_CONSOLE_FORM_BYTES`]) and put back, once its
/// CSRF token matched the session's; a 403 page otherwise.
async fn with_csrf_checked(request: Request, session: &Session) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_CONSOLE_FORM_BYTES).await.map_err(|_| {
        page::error_page(
            Some(session),
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("A console form may have at most {MAX_CONSOLE_FORM_BYTES} bytes."),
        )
    })?;
    let from_header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let token = from_header
        .or_else(|| serde_urlencoded::from_bytes::<HashMap<String, String>>(&bytes).ok()?.remove(CSRF_FIELD));
    if !token.is_some_and(|token| session.csrf_matches(&token)) {
        return Err(page::error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            "This action did not carry the console's CSRF token: reload the page and try again.",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Headers every console answer carries: only our own scripts, styles and connections; never
/// framed (an action button in a hidden frame is a click away from a forged action); no
/// sniffing; no referrer beyond this origin; pages not cached (they show live state).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name, value| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}
