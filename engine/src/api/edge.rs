//! The API's outermost layer: the head and body limits a request meets before any route,
//! one error shape for every answer, and the log of refusals.
//!
//! It owns [`MAX_URI_BYTES`] and [`MAX_HEAD_BYTES`], the early 413 for a declared
//! `Content-Length` over `MAX_BODY_BYTES`, the rewriting of any error answer that is not
//! `{"error":{"code","message"}}` JSON (axum's own rejections, 405 from the router) into that
//! shape (but the console's HTML error pages), and the logging of 401/403/429 (at a bounded rate) and of 500s. It must never put
//! a header value (a credential) into a log line or an answer.

use super::ApiError;
use crate::log_rate::LogRate;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shop_types::limits::MAX_BODY_BYTES;
use std::net::SocketAddr;

/// Longest request target (path and query) accepted: IDs are at most 128 bytes and lists
/// take a few short parameters, so 8 KiB is generous. Longer gets JSON 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most bytes all header names and values together may take (plus 4 per line for `: ` and
/// the line end). A bearer JWT is well under 1 KiB. More gets JSON 431. hyper refuses a head
/// beyond `server::HYPER_MAX_HEAD_BYTES` (or with more than 100 header lines) itself, with a
/// bare 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Most bytes of a non-JSON error body kept as the message of the JSON one.
const MAX_REWRITTEN_MESSAGE_BYTES: usize = 1024;

/// Refusals are logged at a bounded rate: a client can cause them at will.
static REFUSALS: LogRate = LogRate::new();

/// The layer itself (`axum::middleware::from_fn`).
pub(crate) async fn edge(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // A clone of the URI shares its bytes: no copy unless a line is logged.
    let uri = request.uri().clone();
    let path = uri.path();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    let response = match check_head(&request) {
        Err(error) => error.into_response(),
        Ok(()) => next.run(request).await,
    };
    let status = response.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) {
        if let Some(suppressed) = REFUSALS.allow() {
            // The path, not the query: a query could carry anything.
            tracing::warn!(%status, %method, %path, peer = ?peer, suppressed, "request refused");
        }
    }
    if !status.is_client_error() && !status.is_server_error() || is_json(&response) || is_html(&response) {
        return response;
    }
    let rewritten = rewrite(response).await;
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        // ApiError logs its own 500s; this one came from elsewhere (a framework rejection).
        tracing::error!(%method, %path, "500 answered: {}", rewritten.1);
    }
    rewritten.0
}

/// The head limits and the declared body size, before anything reads the body.
fn check_head(request: &Request) -> Result<(), ApiError> {
    let uri_len = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the request target is {uri_len} bytes; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    let head: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if head > MAX_HEAD_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!("the headers take {head} bytes; at most {MAX_HEAD_BYTES} are accepted"),
        ));
    }
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        // Refused before a byte of it is read; the server adds `Connection: close`, as the
        // unread body leaves the connection out of step.
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// An HTML error is the console's error page, meant for a person: kept as it is.
fn is_html(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The error code of a status, for answers that did not come with one.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::REQUEST_TIMEOUT => "BODY_TIMEOUT",
        StatusCode::LENGTH_REQUIRED => "LENGTH_REQUIRED",
        StatusCode::PAYLOAD_TOO_LARGE => "BODY_TOO_LARGE",
        StatusCode::URI_TOO_LONG => "URI_TOO_LONG",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "INVALID_VALUE",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "HEADERS_TOO_LARGE",
        StatusCode::INTERNAL_SERVER_ERROR => "INTERNAL",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        s if s.is_server_error() => "INTERNAL",
        _ => "BAD_REQUEST",
    }
}

/// The same answer (status and headers, e.g. `Allow` and `Retry-After`) with a JSON error
/// body whose message is the original text, and that message.
async fn rewrite(response: Response) -> (Response, String) {
    let (mut parts, body) = response.into_parts();
    let status = parts.status;
    let text = axum::body::to_bytes(body, MAX_REWRITTEN_MESSAGE_BYTES)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let message = text.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let json = ApiError::new(status, code_of(status), message.clone()).into_response();
    let (json_parts, json_body) = json.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &json_parts.headers {
        if !parts.headers.contains_key(name) {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    (Response::from_parts(parts, Body::new(json_body)), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plain_error_becomes_json_and_keeps_its_headers() {
        let mut plain = (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
        plain.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        let (json, message) = rewrite(plain).await;
        assert_eq!(json.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(json.headers()[header::ALLOW], "GET,HEAD");
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(message, "Method Not Allowed");
        let body = axum::body::to_bytes(json.into_body(), 4096).await.expect("a small body");
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["error"]["code"], "METHOD_NOT_ALLOWED");
    }

    #[test]
    fn head_limits_hold_at_their_edges() {
        let at = |len: usize| Request::builder().uri(format!("/{}", "a".repeat(len - 1))).body(Body::empty());
        assert!(check_head(&at(MAX_URI_BYTES).expect("a request")).is_ok());
        let over = check_head(&at(MAX_URI_BYTES + 1).expect("a request")).expect_err("over the limit");
        assert_eq!(over.status, StatusCode::URI_TOO_LONG);
        // One header whose line takes exactly the limit, then one byte more.
        let with = |len: usize| Request::builder().uri("/").header("x-a", "v".repeat(len - 3 - 4)).body(Body::empty());
        assert!(check_head(&with(MAX_HEAD_BYTES).expect("a request")).is_ok());
        let over = check_head(&with(MAX_HEAD_BYTES + 1).expect("a request")).expect_err("over the limit");
        assert_eq!(over.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let body = |len: usize| Request::builder().uri("/").header("content-length", len).body(Body::empty());
        assert!(check_head(&body(MAX_BODY_BYTES).expect("a request")).is_ok());
        let over = check_head(&body(MAX_BODY_BYTES + 1).expect("a request")).expect_err("over the limit");
        assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
