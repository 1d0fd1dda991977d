//! The HTTP client one node uses to pass a request on to the node that owns its run's shard:
//! one `reqwest` pool for the process, a named timeout per exchange, and a semaphore that
//! bounds how many forwarded exchanges (and so outgoing connections) are open at once.
//!
//! It copies a request's method, path, query, body and end-to-end headers (the credential and
//! `traceparent` included), adds the hop header, and gives the owner's answer back as it is,
//! its body streamed. It must never change a body, retry on its own, or log a credential.

use super::FORWARDED_HEADER;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long one forwarded exchange that does not wait may take, connect to last byte: longer
/// than any answer the owner gives without waiting, short enough that a hung owner frees the
/// caller well within the clients' own timeouts (shop-client's default is 30 s).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting to another node may take. Nodes talk over a LAN or loopback: a node
/// that does not accept within this is treated as down (503, retried by the caller).
pub const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to a forwarded waiting read's remaining wait, so the owner's answer at the end of the
/// wait arrives before our timeout fires.
pub const FORWARD_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// Most forwarded exchanges open at once from this node (each holds one connection to the
/// owner). Beyond it a request that must be forwarded is answered 503 `OVERLOADED`: it bounds
/// the connections one node opens to the others (temporal#6459: connection exhaustion).
pub const MAX_FORWARDS_IN_FLIGHT: usize = 512;
/// Idle connections kept per other node, so a burst of forwards reuses connections instead
/// of opening (and leaving in TIME_WAIT) one per request.
pub const FORWARD_POOL_IDLE_PER_HOST: usize = 64;
/// How long an idle pooled connection to another node is kept; shorter than the server's
/// keep-alive (`server::IDLE_TIMEOUT`-style limits), so we never reuse one it is closing.
pub const FORWARD_POOL_IDLE: Duration = Duration::from_secs(20);

/// Headers that describe one connection, not the request: never copied across a hop
/// (RFC 9110 section 7.6.1), nor `host` (the owner's is its own) or `content-length` (the
/// client sets it from the body it sends).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Why a forwarded exchange gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Every forwarding slot is taken: nothing was sent.
    #[error("this node forwards {MAX_FORWARDS_IN_FLIGHT} requests already; retry shortly")]
    Busy,
    /// The owner could not be reached: nothing was sent, so the caller may retry as is.
    #[error("node {node} ({url}) cannot be reached: {reason}")]
    Unreachable { node: String, url: String, reason: String },
    /// No answer in time; the owner may or may not have acted.
    #[error("node {node} did not answer within {timeout:?}")]
    Timeout { node: String, timeout: Duration },
    /// The exchange broke after the request was sent; the owner may or may not have acted.
    #[error("the exchange with node {node} failed: {reason}")]
    Broken { node: String, reason: String },
}

impl ForwardError {
    /// Whether the owner certainly did nothing, so the request may be sent again.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, ForwardError::Busy | ForwardError::Unreachable { .. })
    }
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        self.api_error().into_response()
    }
}

impl ForwardError {
    /// The answer the caller gets.
    pub(crate) fn api_error(self) -> super::super::ApiError {
        let message = self.to_string();
        match self {
            // Nothing was done: 503, which every client may retry after `Retry-After`.
            ForwardError::Busy => super::super::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED", message),
            ForwardError::Unreachable { .. } => {
                super::super::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, super::SHARD_UNAVAILABLE, message)
            }
            // The owner may have acted: not a 503 (which promises it did not), so a client
            // retries only what is idempotent (starts by id, signals by key, reads).
            ForwardError::Timeout { .. } => {
                super::super::ApiError::new(StatusCode::GATEWAY_TIMEOUT, "FORWARD_TIMEOUT", message)
            }
            ForwardError::Broken { .. } => {
                super::super::ApiError::new(StatusCode::BAD_GATEWAY, "FORWARD_FAILED", message)
            }
        }
    }
}

/// One request as it will be sent on: cheap to clone (the body is shared).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    /// Path and query, as the caller sent them (or with the wait rewritten).
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The forwarding client of one node.
pub struct Forwarder {
    /// This node's id, sent in the hop header.
    node: String,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("node", &self.node).finish_non_exhaustive()
    }
}

impl Forwarder {
    pub fn new(node: &str) -> Result<Forwarder, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(FORWARD_CONNECT_TIMEOUT)
            .pool_idle_timeout(FORWARD_POOL_IDLE)
            .pool_max_idle_per_host(FORWARD_POOL_IDLE_PER_HOST)
            // A redirect from another node is an answer to pass back, never to follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Forwarder { node: node.to_owned(), http, slots: Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT)) })
    }

    /// Sends `outgoing` to the node `node` at `url` and answers what it answered, its body
    /// streamed. `timeout` bounds the whole exchange; `None` (event streams) bounds only the
    /// connect. A slot is held until the answer's body is done.
    pub async fn send(
        &self,
        node: &str,
        url: &str,
        outgoing: Outgoing,
        timeout: Option<Duration>,
    ) -> Result<Response, ForwardError> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| ForwardError::Busy)?;
        let target =
            format!("{}{}", url.trim_end_matches('/'), outgoing.uri.path_and_query().map_or("/", |p| p.as_str()));
        let mut request = self.http.request(outgoing.method, &target).body(outgoing.body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let mut headers = outgoing.headers;
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
        headers.insert(
            HeaderName::from_static(FORWARDED_HEADER),
            header::HeaderValue::from_str(&self.node).unwrap_or(header::HeaderValue::from_static("node")),
        );
        let response = request.headers(headers).send().await.map_err(|err| self.failed(node, url, timeout, &err))?;
        Ok(streamed(response, permit))
    }

    fn failed(&self, node: &str, url: &str, timeout: Option<Duration>, err: &reqwest::Error) -> ForwardError {
        if err.is_connect() {
            return ForwardError::Unreachable {
                node: node.to_owned(),
                url: url.to_owned(),
                reason: shop_client::error_chain(err),
            };
        }
        if err.is_timeout() {
            return ForwardError::Timeout { node: node.to_owned(), timeout: timeout.unwrap_or(FORWARD_TIMEOUT) };
        }
        ForwardError::Broken { node: node.to_owned(), reason: shop_client::error_chain(err) }
    }

    /// The forwarding slots in use now (for tests and stats).
    pub fn in_flight(&self) -> usize {
        MAX_FORWARDS_IN_FLIGHT - self.slots.available_permits()
    }
}

/// The owner's answer as ours: its status and end-to-end headers, its body streamed through
/// as it arrives (an event stream included), holding `permit` until the body ends.
fn streamed(response: reqwest::Response, permit: OwnedSemaphorePermit) -> Response {
    let status = response.status();
    let mut headers = response.headers().clone();
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    // State: the response while its body lasts; `None` once it ended or failed.
    let chunks = futures_util::stream::unfold(Some((response, permit)), |state| async move {
        let (mut response, permit) = state?;
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<Bytes, reqwest::Error>(chunk), Some((response, permit)))),
            Ok(None) => None,
            // The body broke after the head was sent: end it with the error (the client sees
            // a truncated answer, never a made-up one).
            Err(err) => Some((Err(err), None)),
        }
    });
    let mut answer = Response::new(Body::from_stream(chunks));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}
