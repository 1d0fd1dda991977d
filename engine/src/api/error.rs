//! `ApiError`: the one way the HTTP API reports a failure, as
//! `{"error":{"code":"...","message":"..."}}` with a precise status. (`body::ApiJson` turns
//! every way a JSON body can be wrong into one.)
//!
//! Internals (store errors, paths) are logged, never sent to the client.

use crate::core::CoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shop_types::api::{ErrorBody, ErrorDetail};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_VALUE", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 401: no credential, or one that is not accepted. The answer names the scheme to use.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 403: a valid credential whose role or queues do not cover the request.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            // Every 500 is logged with its cause: it is the engine's failure, not the client's.
            tracing::error!(code = self.code, message = %self.message, "500 answered");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        if super::forward::REROUTED_CODES.contains(&self.code) {
            // Says "nothing was done, the shard is elsewhere": the forwarding node routes again.
            response.headers_mut().insert(
                axum::http::HeaderName::from_static(super::forward::REROUTE_HEADER),
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        let message = error.to_string();
        match error {
            CoreError::UnknownWorkflowType(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_WORKFLOW_TYPE", message)
            }
            CoreError::NotFound(_) => ApiError::not_found(message),
            CoreError::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "ALREADY_EXISTS", message),
            CoreError::Stale(_) => ApiError::new(StatusCode::CONFLICT, "STALE_TASK", message),
            CoreError::Finished => ApiError::new(StatusCode::CONFLICT, "ALREADY_FINISHED", message),
            CoreError::PastPivot => ApiError::new(StatusCode::CONFLICT, "PAST_PIVOT", message),
            CoreError::NotParked => ApiError::new(StatusCode::CONFLICT, "NOT_PARKED", message),
            CoreError::HeldByParent(_) => ApiError::new(StatusCode::CONFLICT, "HELD_BY_PARENT", message),
            CoreError::UnknownSignal(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_SIGNAL", message),
            CoreError::KeyReused => ApiError::new(StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED", message),
            CoreError::TooManySignals => ApiError::new(StatusCode::CONFLICT, "TOO_MANY_SIGNALS", message),
            // 413 for both byte limits: see `shop_types::limits::MAX_SIGNAL_PAYLOAD_BYTES`.
            CoreError::SignalTooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "SIGNAL_TOO_LARGE", message),
            CoreError::SignalBufferFull => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "SIGNAL_BUFFER_FULL", message),
            CoreError::SignalsClosed(_) => ApiError::new(StatusCode::CONFLICT, "SIGNALS_CLOSED", message),
            CoreError::SignalNotAwaited(_) => ApiError::new(StatusCode::CONFLICT, "SIGNAL_NOT_AWAITED", message),
            CoreError::DiskFull => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "DISK_FULL", message),
            CoreError::Overloaded(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED", message),
            CoreError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN", message),
            // Forwarding (the API's routing) answers most of these first; what reaches here
            // is a shard moving under the request: retry, it settles within a lease.
            CoreError::NotOwner(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_OWNER", message),
            CoreError::ShardMoved => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SHARD_MOVED", message),
            CoreError::DefinitionConflict(_) => ApiError::new(StatusCode::CONFLICT, "VERSION_CONFLICT", message),
            CoreError::Storage(_) => {
                tracing::error!(%message, "storage error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORAGE_UNAVAILABLE",
                    "the store could not be read; try again",
                )
            }
        }
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(error: crate::store::Error) -> Self {
        match error {
            // Not a passing outage: retrying will not help, so say what is wrong.
            crate::store::Error::Corrupt { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "CORRUPT_RECORD",
                format!("{error}; the run it belongs to is quarantined and needs an operator"),
            ),
            other => CoreError::Storage(other.to_string()).into(),
        }
    }
}

impl From<crate::auth::Error> for ApiError {
    fn from(error: crate::auth::Error) -> Self {
        use crate::auth::Error;
        match error {
            Error::Invalid(message) => ApiError::invalid(message),
            Error::NotFound(_) => ApiError::not_found(error.to_string()),
            Error::TooMany => ApiError::new(StatusCode::CONFLICT, "TOO_MANY_TOKENS", error.to_string()),
            Error::Store(error) => error.into(),
            Error::Write(error) => error.into(),
            Error::ReadFile { .. } | Error::WriteFile { .. } | Error::BadFile { .. } => {
                CoreError::Storage(error.to_string()).into()
            }
        }
    }
}

impl From<shop_types::IdError> for ApiError {
    fn from(error: shop_types::IdError) -> Self {
        ApiError::bad_request("INVALID_ID", error.to_string())
    }
}
