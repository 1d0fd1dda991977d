//! The customer's notifications over WebSocket: `GET /api/notifications/ws?after=<seq>` on
//! the worker's listener pushes one customer's outbox entries as they are flushed.
//!
//! Who: deny by default. Browsers cannot set headers on a WebSocket, so the credential comes
//! as `?ticket=` (minted by the engine's `POST /api/notifications/tickets`), or as
//! `Authorization: Bearer` (a JWT with a `sub`, for non-browser clients). The worker keeps no
//! secret: it asks the engine (`POST /v1/notifications/verify`, with its own worker
//! credential) whose stream the credential opens, and remembers the answer by the
//! credential's digest (`credential_cache`) until the ticket expires or
//! [`CUSTOMER_CACHE_TTL`], a refusal for [`REFUSAL_CACHE_TTL`]. Every refusal is an HTTP
//! answer before the upgrade (401, 403, 404 when this worker has no outbox, 503 over
//! [`MAX_NOTIFICATION_SOCKETS`]).
//!
//! What: JSON text messages `{"customerSeq","orderId","kind","message","atMs"}`, in
//! `customerSeq` order, first every flushed entry after `after` (0 or absent: from the
//! first; beyond the last: nothing until it comes), then each new one. The socket follows the
//! outbox's durable mark (a `watch`) and, on every move, reads what follows the last seq it
//! sent: subscribing before the first read means no flush slips between the read and the
//! wait, and reading by seq means nothing is sent twice or skipped, however far behind the
//! socket falls. Only flushed entries are sent, so a worker killed and restarted never
//! takes back one a client saw; a reconnect with `?after=<last seen>` loses none.
//!
//! Liveness: a ping every [`PING_INTERVAL`]; a client silent for [`IDLE_CLOSE`] (no pong, no
//! frame) or that does not take a message within [`SEND_TIMEOUT`] is closed. On shutdown
//! every socket is closed with 1001 (going away). This module never writes the outbox and
//! never logs a credential.

use crate::admin::ApiError;
use crate::credential_cache::{unavailable, Checked, CHECK_TIMEOUT};
use crate::notification::Notification;
use crate::shutdown::Shutdown;
use crate::ErrorChain;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use serde::Deserialize;
use shop_types::auth::BearerToken;
use shop_types::notify::{Verified, VerifyRequest, MAX_TICKET_LEN, NOTIFICATION_WS_PATH};
use shop_types::CustomerId;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most sockets open at once on one worker; one more is refused 503 before the upgrade.
pub const MAX_NOTIFICATION_SOCKETS: usize = 1024;
/// How often an idle socket is pinged, so proxies keep it open and dead peers are noticed.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A client that sends nothing (not even the pong a ping asks for) this long is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// Longest one message may take to be taken by the client; a slower one is closed (it can
/// reconnect with `?after=`, losing nothing).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the engine's "this credential is customer X" is believed (a ticket's own expiry
/// cuts it shorter): also how long a revoked credential may still open a socket.
pub const CUSTOMER_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long the engine's refusal of a credential is remembered.
pub const REFUSAL_CACHE_TTL: Duration = Duration::from_secs(2);
/// Close code for a server going away (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a peer that broke the rules (here: silent too long, or too slow).
const CLOSE_POLICY: u16 = 1008;

/// The engine's codes for a refusal of the verified credential (`engine/src/api/notifications.rs`),
/// as opposed to one of the worker's own credential.
const BAD_CREDENTIAL: &str = "BAD_CREDENTIAL";
const NO_CUSTOMER: &str = "NO_CUSTOMER";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client that verifies notification credentials")]
    Client(#[source] shop_client::Error),
}

/// What the engine said about one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Customer(CustomerId),
    /// 401: unknown, forged or expired.
    Refused(String),
    /// 403: valid, but speaks for no customer.
    NoCustomer(String),
}

/// Everything the WebSocket route needs; cheap to clone.
#[derive(Clone)]
pub struct Sockets {
    outbox: Option<Arc<Notification>>,
    check: Arc<CustomerCheck>,
    slots: Arc<Semaphore>,
    shutdown: Shutdown,
}

impl Sockets {
    /// `token` is the worker's own credential, which the engine's verify route needs.
    pub fn new(
        outbox: Option<Arc<Notification>>,
        engine: &Url,
        token: Option<&BearerToken>,
        shutdown: Shutdown,
    ) -> Result<Self, Error> {
        let options = shop_client::Options { request_timeout: CHECK_TIMEOUT, ..shop_client::Options::default() };
        let engine = shop_client::Client::new(shop_client::Service::Engine, engine.as_str(), options)
            .and_then(|client| client.with_token(token))
            .map_err(Error::Client)?;
        Ok(Sockets {
            outbox,
            check: Arc::new(CustomerCheck { engine, checked: Checked::new() }),
            slots: Arc::new(Semaphore::new(MAX_NOTIFICATION_SOCKETS)),
            shutdown,
        })
    }
}

/// Asks the engine whose stream a credential opens, and remembers its answers.
struct CustomerCheck {
    engine: shop_client::Client,
    checked: Checked<Verdict>,
}

impl CustomerCheck {
    async fn customer(&self, credential: &str) -> Result<CustomerId, ApiError> {
        let verdict = self.checked.get_or_check(credential, || self.ask(credential)).await?;
        match verdict {
            Verdict::Customer(customer) => Ok(customer),
            Verdict::Refused(message) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)),
            Verdict::NoCustomer(message) => Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)),
        }
    }

    async fn ask(&self, credential: &str) -> Result<(Verdict, Duration), ApiError> {
        let body = serde_json::to_vec(&VerifyRequest { credential: credential.to_owned() })
            .map_err(|_| unavailable("cannot encode the credential check"))?;
        let reply = self
            .engine
            .send(shop_client::Method::POST, "/v1/notifications/verify", Some("application/json"), body, &[])
            .await
            .map_err(|err| {
                tracing::warn!(error = %ErrorChain(&err), "cannot verify a notification credential");
                unavailable("cannot reach the engine to check the credential; try again")
            })?;
        let code = serde_json::from_slice::<shop_types::api::ErrorBody>(&reply.body).ok().map(|b| b.error.code);
        let message = || {
            serde_json::from_slice::<shop_types::api::ErrorBody>(&reply.body)
                .map(|b| b.error.message)
                .unwrap_or_default()
        };
        match (reply.status, code.as_deref()) {
            (StatusCode::OK, _) => {
                let verified: Verified = serde_json::from_slice(&reply.body)
                    .map_err(|_| unavailable("the engine's answer to the credential check is not understood"))?;
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                let left = Duration::from_millis(verified.valid_until_ms.saturating_sub(now_ms));
                Ok((Verdict::Customer(verified.customer_id), left.min(CUSTOMER_CACHE_TTL)))
            }
            (StatusCode::UNAUTHORIZED, Some(BAD_CREDENTIAL)) => Ok((Verdict::Refused(message()), REFUSAL_CACHE_TTL)),
            (StatusCode::FORBIDDEN, Some(NO_CUSTOMER)) => Ok((Verdict::NoCustomer(message()), REFUSAL_CACHE_TTL)),
            (StatusCode::TOO_MANY_REQUESTS, _) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "the engine rate-limits credential checks; retry shortly",
            )
            .retry_after(crate::credential_cache::RETRY_AFTER_S)),
            (status, code) => {
                // The worker's own credential was refused, or the engine is unwell: not the
                // caller's fault, and not theirs to fix.
                tracing::warn!(%status, ?code, "the engine could not verify a notification credential");
                Err(unavailable(format!("the engine answered {status} to the credential check; try again")))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WsQuery {
    after: Option<u64>,
    ticket: Option<String>,
}

/// `router` with the WebSocket route added. It has its own gate (above), so it is added
/// outside the admin API's.
pub fn with_route(router: axum::Router, sockets: Sockets) -> axum::Router {
    router.route_service(NOTIFICATION_WS_PATH, axum::routing::get(open).with_state(sockets))
}

/// `GET /api/notifications/ws`: every check, then the upgrade.
pub(crate) async fn open(
    State(sockets): State<Sockets>,
    query: Result<Query<WsQuery>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match admit(&sockets, query, &headers).await {
        Ok((outbox, customer, after, slot)) => match upgrade {
            Ok(upgrade) => {
                let shutdown = sockets.shutdown.clone();
                upgrade.on_upgrade(move |socket| serve(socket, outbox, customer, after, slot, shutdown)).into_response()
            }
            Err(rejection) => {
                let status = rejection.status();
                ApiError::new(status, "NOT_A_WEBSOCKET", rejection.body_text()).into_response()
            }
        },
        Err(refusal) => refusal.into_response(),
    }
}

async fn admit(
    sockets: &Sockets,
    query: Result<Query<WsQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<(Arc<Notification>, CustomerId, u64, OwnedSemaphorePermit), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BAD_QUERY", e.body_text()))?;
    let credential = credential(query.ticket, headers)?;
    let customer = sockets.check.customer(&credential).await?;
    let outbox = sockets.outbox.clone().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "DOMAIN_NOT_SERVED", "this worker does not serve notification")
    })?;
    let slot = Arc::clone(&sockets.slots).try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_SOCKETS",
            format!("this worker already serves {MAX_NOTIFICATION_SOCKETS} notification sockets; retry later"),
        )
        .retry_after(crate::credential_cache::RETRY_AFTER_S)
    })?;
    Ok((outbox, customer, query.after.unwrap_or(0), slot))
}

/// The ticket of `?ticket=`, else the token of `Authorization: Bearer`; 401 without either.
fn credential(ticket: Option<String>, headers: &HeaderMap) -> Result<String, ApiError> {
    let refuse = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message);
    if let Some(ticket) = ticket {
        if ticket.is_empty() || ticket.len() > MAX_TICKET_LEN {
            return Err(refuse("the ticket is empty or too long"));
        }
        return Ok(ticket);
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(refuse(
            "this socket needs ?ticket=<a ticket from POST /api/notifications/tickets on the engine> \
             or Authorization: Bearer <a JWT with a sub>",
        ));
    };
    let text = value.to_str().map_err(|_| refuse("the Authorization header is not text"))?.trim();
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(refuse("expected Authorization: Bearer <token>"));
    }
    let token: BearerToken =
        token.parse().map_err(|_| refuse("the bearer token is empty or not one word of visible ASCII"))?;
    Ok(token.expose().to_owned())
}

/// Why a socket ended, for the log and the close frame.
enum End {
    /// The client closed or vanished: nothing to send.
    Gone,
    Close(u16, &'static str),
}

/// Pushes `customer`'s messages after `after` until the client goes, stalls, or the worker
/// shuts down. `_slot` holds one of [`MAX_NOTIFICATION_SOCKETS`] for as long as this runs.
async fn serve(
    mut socket: WebSocket,
    outbox: Arc<Notification>,
    customer: CustomerId,
    mut after: u64,
    _slot: OwnedSemaphorePermit,
    mut shutdown: Shutdown,
) {
    // Subscribed before the first read: a flush after it marks the watch changed.
    let mut durable = outbox.subscribe();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut heard = Instant::now();
    let end = 'serve: loop {
        loop {
            let batch = outbox.customer_after(&customer, after);
            let Some(last) = batch.last().map(|m| m.customer_seq) else {
                break;
            };
            for message in batch {
                let Ok(text) = serde_json::to_string(&message) else {
                    break 'serve End::Close(CLOSE_GOING_AWAY, "cannot encode a message");
                };
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break 'serve End::Gone,
                    Err(_) => break 'serve End::Close(CLOSE_POLICY, "too slow to take messages"),
                }
            }
            after = last;
        }
        tokio::select! {
            changed = durable.changed() => {
                if changed.is_err() {
                    break End::Close(CLOSE_GOING_AWAY, "the outbox is closing");
                }
            }
            received = socket.recv() => match received {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break End::Gone,
                // Any frame, a pong above all, shows the client is there; its content is ignored.
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() >= IDLE_CLOSE {
                    break End::Close(CLOSE_POLICY, "silent too long");
                }
                if tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Vec::new()))).await.map_or(true, |sent| sent.is_err()) {
                    break End::Gone;
                }
            }
            () = shutdown.wait() => break End::Close(CLOSE_GOING_AWAY, "the worker is shutting down"),
        }
    };
    if let End::Close(code, reason) = end {
        tracing::debug!(%customer, code, reason, "closing a notification socket");
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    /// A stand-in for the engine's verify route: `ann`'s ticket is Ann's, `backend` speaks for
    /// no customer, `refused-worker` gets the answer a refused worker credential gets, anything
    /// else is unknown.
    async fn fake_engine() -> Url {
        use axum::Json;
        let verify = |Json(request): Json<VerifyRequest>| async move {
            let error = |status: StatusCode, code: &str| {
                (status, Json(serde_json::json!({"error": {"code": code, "message": "m"}}))).into_response()
            };
            match request.credential.as_str() {
                "nt1.ann" => Json(serde_json::json!({"customerId": "ann", "validUntilMs": u64::MAX})).into_response(),
                "backend" => error(StatusCode::FORBIDDEN, NO_CUSTOMER),
                "refused-worker" => error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
                _ => error(StatusCode::UNAUTHORIZED, BAD_CREDENTIAL),
            }
        };
        let app = axum::Router::new().route("/v1/notifications/verify", axum::routing::post(verify));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}").parse().expect("a URL")
    }

    async fn sockets() -> Sockets {
        let outbox = Arc::new(Notification::open(store::temporary()).expect("opens"));
        let (_trigger, shutdown) = crate::shutdown::channel();
        Sockets::new(Some(outbox), &fake_engine().await, None, shutdown).expect("valid")
    }

    async fn admit_with(sockets: &Sockets, ticket: &str) -> Result<OwnedSemaphorePermit, StatusCode> {
        let query = Ok(Query(WsQuery { after: None, ticket: Some(ticket.to_owned()) }));
        admit(sockets, query, &HeaderMap::new())
            .await
            .map(|(_, _, _, slot)| slot)
            .map_err(|e| e.into_response().status())
    }

    #[tokio::test]
    async fn the_engine_says_whose_stream_a_credential_opens() {
        let sockets = sockets().await;
        let query = Ok(Query(WsQuery { after: Some(3), ticket: Some("nt1.ann".to_owned()) }));
        let (_, customer, after, _) = admit(&sockets, query, &HeaderMap::new()).await.expect("admitted");
        assert_eq!((customer.as_str(), after), ("ann", 3));
        assert_eq!(admit_with(&sockets, "nt1.forged").await.err(), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(admit_with(&sockets, "backend").await.err(), Some(StatusCode::FORBIDDEN));
        // The worker's own credential refused is not the caller's fault: 503, not 401.
        assert_eq!(admit_with(&sockets, "refused-worker").await.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[tokio::test]
    async fn at_most_max_notification_sockets_are_admitted() {
        let sockets = sockets().await;
        let held = Arc::clone(&sockets.slots)
            .try_acquire_many_owned(MAX_NOTIFICATION_SOCKETS as u32 - 1)
            .expect("all but one slot");
        let last = admit_with(&sockets, "nt1.ann").await.expect("the last slot");
        assert_eq!(admit_with(&sockets, "nt1.ann").await.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
        drop(last);
        assert!(admit_with(&sockets, "nt1.ann").await.is_ok(), "a closed socket frees its slot");
        drop(held);
    }

    #[test]
    fn a_ticket_comes_before_a_header_and_one_is_needed() {
        let mut headers = HeaderMap::new();
        let refused = credential(None, &headers).expect_err("no credential");
        assert_eq!(refused.into_response().status(), StatusCode::UNAUTHORIZED);
        headers.insert(header::AUTHORIZATION, "Bearer a.b.c".parse().expect("a header"));
        assert_eq!(credential(None, &headers).ok().as_deref(), Some("a.b.c"));
        assert_eq!(credential(Some("nt1.x".into()), &headers).ok().as_deref(), Some("nt1.x"));
        assert!(credential(Some(String::new()), &headers).is_err());
        assert!(credential(Some("x".repeat(MAX_TICKET_LEN + 1)), &headers).is_err());
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("a header"));
        assert!(credential(None, &headers).is_err());
    }
}
