//! Who may use the worker's admin API: deny by default, like the engine.
//!
//! Every admin route but `/healthz` needs `Authorization: Bearer <token>` carrying an
//! **admin credential of the engine** (its admin token file's token, an admin API token or an
//! admin JWT), unless the worker runs `--open`, which `run` refuses off loopback. One admin
//! credential thus works for the whole system, and the worker keeps no secrets of its own.
//!
//! The worker asks the engine: `GET /v1/stats` needs the admin role there, so 200 means
//! admin, 401 an unknown credential and 403 a client or worker one. An engine running
//! `--open` answers 200 to anybody and so cannot vouch for anyone: a 200 is only believed
//! when the same request without a credential is refused. Answers are cached by the SHA-256
//! digest of the token (never the token itself) in the bounded map of `credential_cache`
//! (which also limits the checks in flight): an admin for
//! [`ADMIN_CACHE_TTL`] (so a revoked admin token still opens this API for up to that long),
//! a refusal for [`REFUSAL_CACHE_TTL`]; an engine that cannot be asked (down, overloaded,
//! rate limiting) caches nothing and gets 503/429 with `Retry-After`.
//!
//! This module must never log, store or echo a token, and never let a request through that
//! the engine did not vouch for.

use crate::admin::ApiError;
use crate::credential_cache::{unavailable, Checked, CHECK_TIMEOUT, RETRY_AFTER_S};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use shop_types::auth::BearerToken;
use std::sync::Arc;
use std::time::Duration;

/// How long the engine's "this is an admin" is believed without asking again. It is also how
/// long a revoked or expired admin credential may still use this API.
pub const ADMIN_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long an engine's refusal (401, 403, or an open engine) is remembered: long enough
/// that a client retrying a bad token does not become a flood of checks, short enough that
/// fixing the engine's configuration shows at once.
pub const REFUSAL_CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client that checks admin credentials")]
    Client(#[source] shop_client::Error),
}

/// How the admin API decides who may call it.
#[derive(Clone)]
pub enum AdminAuth {
    /// `--open`: everyone (loopback only).
    Open,
    /// Admin credentials of the engine, checked by asking it.
    Engine(Arc<EngineCheck>),
}

impl AdminAuth {
    pub fn engine(engine: &Url) -> Result<Self, Error> {
        Ok(AdminAuth::Engine(Arc::new(EngineCheck::new(engine)?)))
    }
}

/// What the engine said about one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Admin,
    /// 403 at the engine: a valid credential of another role.
    NotAdmin,
    /// 401 at the engine: not a credential it knows.
    Unknown,
    /// The engine runs `--open`, so its 200 proves nothing.
    EngineOpen,
}

impl Verdict {
    fn ttl(self) -> Duration {
        match self {
            Verdict::Admin => ADMIN_CACHE_TTL,
            Verdict::NotAdmin | Verdict::Unknown | Verdict::EngineOpen => REFUSAL_CACHE_TTL,
        }
    }
}

/// Asks the engine whether a credential is an admin's, and remembers its answers.
pub struct EngineCheck {
    /// The engine, without a credential of its own: each check sends the caller's.
    engine: shop_client::Client,
    checked: Checked<Verdict>,
}

impl EngineCheck {
    fn new(engine: &Url) -> Result<Self, Error> {
        // No retry in the client: a throttled check is answered 429 to the caller at once.
        let options = shop_client::Options { request_timeout: CHECK_TIMEOUT, ..shop_client::Options::default() };
        let engine =
            shop_client::Client::new(shop_client::Service::Engine, engine.as_str(), options).map_err(Error::Client)?;
        Ok(EngineCheck { engine, checked: Checked::new() })
    }

    async fn verdict(&self, token: &BearerToken) -> Result<Verdict, ApiError> {
        self.checked
            .get_or_check(token.expose(), || async {
                let verdict = match self.ask(Some(token)).await? {
                    StatusCode::OK => match self.ask(None).await? {
                        StatusCode::OK => Verdict::EngineOpen,
                        _ => Verdict::Admin,
                    },
                    StatusCode::FORBIDDEN => Verdict::NotAdmin,
                    _ => Verdict::Unknown,
                };
                Ok((verdict, verdict.ttl()))
            })
            .await
    }

    /// `GET /v1/stats` with `token`; answers 200, 401 or 403, and turns anything else into
    /// the refusal this API gives instead (not cached by the caller).
    async fn ask(&self, token: Option<&BearerToken>) -> Result<StatusCode, ApiError> {
        // A token that cannot be a header value is not a credential the engine knows.
        let engine =
            self.engine.clone().with_token(token).map_err(|_| unauthenticated("the bearer token cannot be sent on"))?;
        // Only the status matters, so the raw call: its body is never decoded.
        let response = engine.send(shop_client::Method::GET, "/v1/stats", None, Vec::new(), &[]).await.map_err(|err| {
            tracing::warn!(engine = %self.engine.base(), error = %crate::ErrorChain(&err), "cannot check an admin credential");
            unavailable("cannot reach the engine to check the credential; try again")
        })?;
        match response.status {
            status @ (StatusCode::OK | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Ok(status),
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = response
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .unwrap_or(RETRY_AFTER_S);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    format!("the engine rate-limits this credential; retry in {retry_after}s"),
                )
                .retry_after(retry_after))
            }
            other => {
                tracing::warn!(engine = %self.engine.base(), status = %other, "the engine could not check an admin credential");
                Err(unavailable(format!("the engine answered {other} to the credential check; try again")))
            }
        }
    }
}

/// The middleware in front of every admin route but `/healthz`.
pub async fn require_admin(State(auth): State<AdminAuth>, request: Request, next: Next) -> Response {
    let AdminAuth::Engine(check) = &auth else {
        return next.run(request).await;
    };
    let token = match bearer(request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        Ok(token) => token,
        Err(refusal) => return refusal.into_response(),
    };
    match check.verdict(&token).await {
        Ok(Verdict::Admin) => next.run(request).await,
        Ok(Verdict::NotAdmin) => ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "the worker admin API needs an admin credential of the engine; this one has another role",
        )
        .into_response(),
        Ok(Verdict::Unknown) => {
            unauthenticated("the engine does not accept this credential; use an admin token of the engine")
                .into_response()
        }
        Ok(Verdict::EngineOpen) => unauthenticated(
            "the engine runs --open and so cannot vouch for any credential: run this worker --open too \
             (loopback only), or run the engine with tokens",
        )
        .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(header: Option<&[u8]>) -> Result<BearerToken, ApiError> {
    let Some(header) = header else {
        return Err(unauthenticated(
            "the worker admin API needs Authorization: Bearer <an admin token of the engine> \
             (or a worker started with --open)",
        ));
    };
    let text = std::str::from_utf8(header).map_err(|_| unauthenticated("the Authorization header is not text"))?.trim();
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated("expected Authorization: Bearer <token>"));
    }
    token.parse().map_err(|_| unauthenticated("the bearer token is empty or not one word of visible ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the engine's `GET /v1/stats`: `admin` is an admin, `client` another
    /// role, `limited` is rate limited, anything else unknown; `open` answers 200 to all.
    async fn fake_engine(open: bool) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::HeaderMap;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let stats = move |headers: HeaderMap| async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            match auth {
                _ if open => StatusCode::OK.into_response(),
                "Bearer admin" => StatusCode::OK.into_response(),
                "Bearer client" => StatusCode::FORBIDDEN.into_response(),
                "Bearer limited" => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")]).into_response(),
                _ => StatusCode::UNAUTHORIZED.into_response(),
            }
        };
        let app = axum::Router::new().route("/v1/stats", axum::routing::get(stats));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}").parse().expect("a URL"), calls)
    }

    async fn call(auth: &AdminAuth, token: Option<&str>) -> (StatusCode, Option<String>, serde_json::Value) {
        use tower::ServiceExt as _;
        let app = axum::Router::new()
            .route("/x", axum::routing::get(|| async { axum::Json(serde_json::json!({"ok": true})) }))
            .layer(axum::middleware::from_fn_with_state(auth.clone(), require_admin));
        let mut request = axum::http::Request::builder().uri("/x");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(axum::body::Body::empty()).expect("a request");
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("a body");
        (status, retry_after, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn only_admins_of_the_engine_pass_and_its_answers_are_cached() {
        let (engine, calls) = fake_engine(false).await;
        let auth = AdminAuth::engine(&engine).expect("valid");
        let (status, _, body) = call(&auth, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0, "no credential, no question");
        let (status, _, body) = call(&auth, Some("client")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("FORBIDDEN")));
        let (status, _, body) = call(&auth, Some("nobody")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")));
        let before = calls.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(call(&auth, Some("admin")).await.0, StatusCode::OK);
        }
        // One check with the token and one without (to rule out an open engine), then cached.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before + 2);
        let (status, retry_after, body) = call(&auth, Some("limited")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("RATE_LIMITED")));
        assert_eq!(retry_after.as_deref(), Some("7"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_concurrent_checks_reach_the_engine_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        /// How long the slow engine holds each check, so that checks overlap.
        const HOLD: Duration = Duration::from_millis(200);
        let (in_flight, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (now, peak) = (Arc::clone(&in_flight), Arc::clone(&most));
        let stats = move || async move {
            peak.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
            tokio::time::sleep(HOLD).await;
            now.fetch_sub(1, SeqCst);
            StatusCode::UNAUTHORIZED
        };
        let app = axum::Router::new().route("/v1/stats", axum::routing::get(stats));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let auth = AdminAuth::engine(&format!("http://{addr}").parse().expect("a URL")).expect("valid");
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..crate::credential_cache::MAX_CONCURRENT_CHECKS * 2 {
            let auth = auth.clone();
            calls.spawn(async move { call(&auth, Some(&format!("token-{n}"))).await.0 });
        }
        while let Some(status) = calls.join_next().await {
            assert_eq!(status.expect("no panic"), StatusCode::UNAUTHORIZED);
        }
        let most = most.load(SeqCst);
        assert!((2..=crate::credential_cache::MAX_CONCURRENT_CHECKS).contains(&most), "{most} checks at once");
    }

    #[tokio::test]
    async fn an_open_engine_vouches_for_nobody() {
        let (engine, _) = fake_engine(true).await;
        let auth = AdminAuth::engine(&engine).expect("valid");
        let (status, _, body) = call(&auth, Some("anything")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("--open")), "{body}");
    }

    #[tokio::test]
    async fn an_unreachable_engine_is_a_503_with_retry_after_and_not_cached() {
        // Port 1 on loopback is not served here: the connect is refused.
        let auth = AdminAuth::engine(&"http://127.0.0.1:1".parse().expect("a URL")).expect("valid");
        let (status, retry_after, body) = call(&auth, Some("admin")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("AUTH_UNAVAILABLE"))
        );
        assert_eq!(retry_after.as_deref(), Some("1"));
        let AdminAuth::Engine(check) = &auth else { panic!("an engine check") };
        assert_eq!(check.checked.cached_count(), 0);
        assert_eq!(call(&AdminAuth::Open, None).await.0, StatusCode::OK);
    }

    #[test]
    fn only_bearer_credentials_are_taken() {
        assert_eq!(bearer(Some(b"Bearer shop_abc")).map(|t| t.expose().to_owned()).ok(), Some("shop_abc".into()));
        assert!(bearer(Some(b"bearer shop_abc")).is_ok());
        for bad in [&b"Basic abc"[..], b"Bearer", b"Bearer ", b"shop_abc", b"Bearer a b", b"\xff"] {
            assert!(bearer(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(bearer(None).is_err());
    }
}
