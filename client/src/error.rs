//! The client's one error type: what went wrong in one exchange, worded so that it can be
//! shown to a person as one line (the CLI adds its own hints on top; see `shopctl`'s main).
//!
//! It owns classification (transport, an HTTP status with the engine's
//! `{"error":{"code","message"}}` decoded, a response that does not parse) and the question
//! "may the same request succeed later?"; it must never hold a credential.

use crate::Service;
use reqwest::{Method, StatusCode};
use shop_types::api::{ErrorBody, ErrorDetail};

/// How much of an error body that is not the engine's error shape is kept, for logs.
pub const MAX_ERROR_TEXT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the HTTP client: {0}")]
    Build(String),
    #[error("{0}")]
    BadUrl(String),
    #[error("the token cannot be sent in an HTTP header")]
    BadToken,
    #[error("cannot encode the request to {path}: {reason}")]
    Encode { path: String, reason: String },
    /// Nothing came back: the service could not be reached, did not answer in time, or the
    /// connection failed.
    #[error("{}", transport_text(*.service, .origin, .method, .path, .kind))]
    Transport { service: Service, origin: String, method: Method, path: String, kind: Transport },
    /// An answer other than 2xx. `error` is the decoded `{"error":{...}}` body, when it was one.
    #[error("{}", status_text(*.service, .method, .path, *.status, .error.as_deref()))]
    Status {
        service: Service,
        method: Method,
        path: String,
        status: StatusCode,
        error: Option<Box<ErrorDetail>>,
        /// The body's start, when it was not the error shape.
        text: String,
        /// `Retry-After` in seconds, when the answer carried one.
        retry_after: Option<u64>,
    },
    /// A 2xx whose body is not what the endpoint answers.
    #[error("{} answered {method} {path} {reason}", service.describe())]
    BadResponse { service: Service, method: Method, path: String, reason: String },
    #[error("the engine answered {answered} results for {sent} reports")]
    ResultCount { sent: usize, answered: usize },
}

/// Why nothing came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The connection was refused or could not be made.
    Connect,
    /// No (complete) answer within the request's timeout.
    Timeout,
    /// Anything else, with the cause chain.
    Other(String),
}

impl Error {
    /// True when the same request may succeed later: the service is down, restarting,
    /// overloaded or rate limiting. Anything else is a bug on one side and is not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::BadResponse { .. } => true,
            Error::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            Error::Build(_) | Error::BadUrl(_) | Error::BadToken | Error::Encode { .. } | Error::ResultCount { .. } => {
                false
            }
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The engine's stable error `code` of an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Status { error: Some(detail), .. } => Some(&detail.code),
            _ => None,
        }
    }

    /// True when the service could not be connected to at all.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Transport { kind: Transport::Connect, .. })
    }

    /// The service this error is about, when it is about one.
    pub fn service(&self) -> Option<Service> {
        match self {
            Error::Transport { service, .. } | Error::Status { service, .. } | Error::BadResponse { service, .. } => {
                Some(*service)
            }
            _ => None,
        }
    }
}

fn transport_text(service: Service, origin: &str, method: &Method, path: &str, kind: &Transport) -> String {
    let what = service.describe();
    match kind {
        Transport::Connect => format!("cannot reach {what} at {origin}: is it running?"),
        Transport::Timeout => format!("{what} at {origin} did not answer {method} {path} in time"),
        Transport::Other(chain) => format!("{method} {path} to {what} at {origin} failed: {chain}"),
    }
}

fn status_text(
    service: Service,
    method: &Method,
    path: &str,
    status: StatusCode,
    error: Option<&ErrorDetail>,
) -> String {
    let what = service.describe();
    match error {
        Some(detail) => {
            format!("{what} refused {method} {path}: {} {}: {}", status.as_u16(), detail.code, detail.message)
        }
        None => format!("{what} answered {method} {path} with {status}"),
    }
}

/// "429 RATE_LIMITED", or just the status when the body is not the error shape.
pub(crate) fn status_and_code(status: StatusCode, bytes: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(ErrorBody { error }) => format!("{} {}", status.as_u16(), error.code),
        Err(_) => status.to_string(),
    }
}

/// The error answer `status` with `bytes` to `method path`.
pub(crate) fn from_status(
    service: Service,
    method: &Method,
    path: &str,
    status: StatusCode,
    bytes: &[u8],
    retry_after: Option<u64>,
) -> Error {
    let error = serde_json::from_slice::<ErrorBody>(bytes).ok().map(|body| Box::new(body.error));
    let text = if error.is_some() {
        String::new()
    } else {
        String::from_utf8_lossy(bytes).chars().take(MAX_ERROR_TEXT).collect()
    };
    Error::Status { service, method: method.clone(), path: path.to_owned(), status, error, text, retry_after }
}

/// An error with its sources on one line: reqwest's top-level message is often just "error
/// sending request"; the cause is below.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_quote_the_servers_code_and_message() {
        let body = br#"{"error":{"code":"NOT_FOUND","message":"no workflow x"}}"#;
        let err = from_status(Service::Engine, &Method::GET, "/v1/workflows/x", StatusCode::NOT_FOUND, body, None);
        assert_eq!(err.to_string(), "the engine refused GET /v1/workflows/x: 404 NOT_FOUND: no workflow x");
        assert_eq!(err.code(), Some("NOT_FOUND"));
        let err =
            from_status(Service::Worker, &Method::GET, "/v1/workflows/x", StatusCode::BAD_GATEWAY, b"<html>", None);
        assert_eq!(err.to_string(), "the worker admin API answered GET /v1/workflows/x with 502 Bad Gateway");
        assert_eq!(err.code(), None);
    }

    #[test]
    fn only_transient_statuses_are_retryable() {
        let status = |status| from_status(Service::Engine, &Method::POST, "/", status, b"", None);
        assert!(status(StatusCode::SERVICE_UNAVAILABLE).is_retryable());
        assert!(status(StatusCode::INTERNAL_SERVER_ERROR).is_retryable());
        assert!(status(StatusCode::TOO_MANY_REQUESTS).is_retryable());
        assert!(status(StatusCode::REQUEST_TIMEOUT).is_retryable());
        assert!(!status(StatusCode::BAD_REQUEST).is_retryable());
        assert!(!status(StatusCode::NOT_FOUND).is_retryable());
    }

    #[test]
    fn an_unexpected_body_is_kept_up_to_its_bound() {
        let long = "x".repeat(MAX_ERROR_TEXT + 1);
        let Error::Status { text, .. } =
            from_status(Service::Engine, &Method::GET, "/", StatusCode::BAD_GATEWAY, long.as_bytes(), None)
        else {
            panic!("a status error")
        };
        assert_eq!(text.len(), MAX_ERROR_TEXT);
    }
}
