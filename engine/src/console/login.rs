//! Signing in and out. The login page takes a pasted credential (an opaque token or a JWT),
//! which the engine's own `Authenticator` verifies exactly as it verifies an API request's
//! (failures counted per client address, the same 429 after too many); a valid one starts a
//! session and sets its cookie. On an engine running `--open` no credential is needed.
//!
//! This module must never echo, log or keep the pasted credential (only an opaque token's
//! digest, so its sessions end when it is revoked).

use super::page::{html_response, layout};
use super::session::Session;
use super::MAX_CONSOLE_FORM_BYTES;
use crate::api::auth::Refusal;
use crate::api::AppState;
use crate::auth::{digest, Principal, Subject};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;
use std::net::SocketAddr;

/// `GET /console/login`.
pub(crate) async fn page(State(state): State<AppState>) -> Response {
    login_page(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/login`: verifies the credential, starts a session, and goes to the runs.
pub(crate) async fn submit(
    State(state): State<AppState>,
    peer: Option<ConnectInfo<SocketAddr>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    if token.len() > MAX_CONSOLE_FORM_BYTES {
        return login_page(&state, StatusCode::PAYLOAD_TOO_LARGE, Some("That credential is far too long."));
    }
    let principal = if state.auth.is_open() {
        Principal::open(Some(format!("ip:{}", crate::api::auth::client_ip(peer))))
    } else {
        let header = format!("Bearer {token}");
        match crate::api::auth::verify(&state, crate::api::auth::client_ip(peer), Some(header.as_bytes())) {
            Ok(principal) => principal,
            Err(Refusal::TooManyFailures { retry_after_s }) => {
                let message = format!("Too many failed sign-ins from this address: try again in {retry_after_s}s.");
                return login_page(&state, StatusCode::TOO_MANY_REQUESTS, Some(&message));
            }
            Err(_) if token.is_empty() => {
                return login_page(&state, StatusCode::UNAUTHORIZED, Some("Paste a token to sign in."))
            }
            Err(refusal) => {
                let message = format!("That credential is not accepted: {}.", refusal_reason(&refusal));
                return login_page(&state, StatusCode::UNAUTHORIZED, Some(&message));
            }
        }
    };
    // An opaque token's (or the admin file's) sessions end when it is revoked; a JWT cannot
    // be revoked, and its session is bounded by the session's own max age.
    let token_digest = matches!(principal.subject, Subject::Token { .. } | Subject::AdminFile).then(|| digest(token));
    let (id, session) = state.sessions.create(principal, token_digest, state.clock.now_ms());
    tracing::info!(subject = %session.principal.subject, role = %session.principal.role, "console sign-in");
    let mut response = Redirect::to("/console/runs").into_response();
    response.headers_mut().insert(header::SET_COOKIE, state.sessions.cookie(&id));
    response
}

/// `POST /console/logout` (CSRF-checked like every console action): ends the session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = super::session::session_id(&headers) {
        state.sessions.remove(id);
    }
    tracing::info!(subject = %session.principal.subject, "console sign-out");
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, state.sessions.clearing_cookie());
    response
}

fn refusal_reason(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Unauthenticated(denied) => denied.to_string(),
        Refusal::TooManyFailures { .. } | Refusal::RateLimited { .. } => "too many requests".to_owned(),
    }
}

fn login_page(state: &AppState, status: StatusCode, problem: Option<&str>) -> Response {
    let open = state.auth.is_open();
    let body = html! {
        section.login {
            h1 { "Sign in" }
            @if let Some(problem) = problem {
                p.problem data-testid="login-error" { (problem) }
            }
            form method="post" action="/console/login" {
                @if open {
                    p { "This engine runs " code { "--open" } " (loopback only): no credential is needed." }
                } @else {
                    label for="token" { "API token or JWT" }
                    textarea #token name="token" rows="3" autocomplete="off" spellcheck="false" required {}
                    p.hint { "The same credential the API takes as " code { "Authorization: Bearer …" } ". \
                              What it may do here is exactly what it may do there." }
                }
                button type="submit" { "Sign in" }
            }
        }
    };
    html_response(status, layout("Sign in", None, "", body))
}
