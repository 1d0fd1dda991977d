//! The worker's HTTP client for the engine's task API: poll, report, heartbeat.
//!
//! It sends one request per call and classifies what came back; it never retries or sleeps
//! (the poller owns backoff) and never interprets a task. Cheap to clone: clones share one
//! connection pool. With a token, every request carries `Authorization: Bearer <token>`,
//! marked sensitive so it never shows in a log.

use reqwest::{StatusCode, Url};
use shop_types::api::{
    ActivityTask, ErrorBody, HeartbeatRequest, PollRequest, PollResponse, ReportBatchRequest, ReportBatchResponse,
};
use shop_types::auth::BearerToken;
use shop_types::{QueueName, TaskToken};
use std::time::Duration;

/// How long a poll may outlast its own `wait_ms` before the client gives up on it: the
/// engine answers at `wait_ms` at the latest, so only a lost connection takes longer.
const POLL_TIMEOUT_SLACK: Duration = Duration::from_secs(10);
/// Timeout of reports and heartbeats, which the engine answers without waiting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to a live engine on a LAN takes milliseconds; this bounds a dead one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How much of an unexpected error body is kept for the log.
const MAX_ERROR_TEXT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("the worker token cannot be sent in an HTTP header")]
    BadToken,
    #[error("cannot reach the engine")]
    Transport(#[source] reqwest::Error),
    #[error("the engine answered {status} {code}: {message}")]
    Status { status: StatusCode, code: String, message: String },
    #[error("the engine's answer does not parse")]
    BadResponse(#[source] reqwest::Error),
    #[error("the engine answered {expected} results for {sent} reports")]
    ResultCount { sent: usize, expected: usize },
}

impl Error {
    /// True when the same request may succeed later: the engine is down, restarting or
    /// overloaded. Anything else is a bug on one side and is not retried in a loop.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) | Error::BadResponse(_) => true,
            Error::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            Error::Build(_) | Error::BadToken | Error::ResultCount { .. } => false,
        }
    }
}

/// What the engine said to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The attempt is current and its lease was extended.
    Alive,
    /// The attempt is no longer current (409): its result will be refused.
    Stale,
}

#[derive(Debug, Clone)]
pub struct EngineClient {
    http: reqwest::Client,
    poll_url: Url,
    report_url: Url,
    heartbeat_url: Url,
}

impl EngineClient {
    pub fn new(engine: &Url, token: Option<&BearerToken>) -> Result<Self, Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| Error::BadToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_millis(shop_types::limits::CLIENT_POOL_IDLE_MS))
            .default_headers(headers)
            .build()
            .map_err(Error::Build)?;
        Ok(EngineClient {
            http,
            poll_url: endpoint(engine, "v1/tasks/poll"),
            report_url: endpoint(engine, "v1/tasks/report"),
            heartbeat_url: endpoint(engine, "v1/tasks/heartbeat"),
        })
    }

    /// Long-polls `queue` for up to `max_tasks` tasks, waiting up to `wait` for the first.
    pub async fn poll(
        &self,
        queue: &QueueName,
        worker_id: &str,
        max_tasks: u32,
        wait: Duration,
    ) -> Result<Vec<ActivityTask>, Error> {
        let request = PollRequest {
            queue: queue.clone(),
            worker_id: worker_id.to_owned(),
            max_tasks,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let response = self
            .http
            .post(self.poll_url.clone())
            .timeout(wait + POLL_TIMEOUT_SLACK)
            .json(&request)
            .send()
            .await
            .map_err(Error::Transport)?;
        let body: PollResponse = parse(response).await?;
        Ok(body.tasks)
    }

    /// Reports a batch; one result per report, in order (`None` = accepted).
    /// With `batch.then_poll`, the answer also carries the next tasks of that queue.
    pub async fn report(&self, batch: &ReportBatchRequest) -> Result<ReportBatchResponse, Error> {
        let poll_wait = batch.then_poll.as_ref().map_or(Duration::ZERO, |p| Duration::from_millis(p.wait_ms));
        let response = self
            .http
            .post(self.report_url.clone())
            .timeout(REQUEST_TIMEOUT + poll_wait)
            .json(batch)
            .send()
            .await
            .map_err(Error::Transport)?;
        let body: ReportBatchResponse = parse(response).await?;
        if body.results.len() != batch.reports.len() {
            return Err(Error::ResultCount { sent: batch.reports.len(), expected: body.results.len() });
        }
        Ok(body)
    }

    pub async fn heartbeat(&self, token: &TaskToken) -> Result<Heartbeat, Error> {
        let response = self
            .http
            .post(self.heartbeat_url.clone())
            .timeout(REQUEST_TIMEOUT)
            .json(&HeartbeatRequest { token: token.clone() })
            .send()
            .await
            .map_err(Error::Transport)?;
        if response.status() == StatusCode::CONFLICT {
            return Ok(Heartbeat::Stale);
        }
        error_for_status(response).await?;
        Ok(Heartbeat::Alive)
    }
}

/// `{engine}/{path}`, whether or not the engine URL ends in a slash.
fn endpoint(engine: &Url, path: &str) -> Url {
    let mut url = engine.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/{path}"));
    url
}

async fn parse<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    error_for_status(response).await?.json().await.map_err(Error::BadResponse)
}

/// Passes a success through; turns anything else into `Error::Status` with the engine's
/// stable error code when its body has one.
async fn error_for_status(response: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => ("UNEXPECTED".to_owned(), text.chars().take(MAX_ERROR_TEXT).collect()),
    };
    Err(Error::Status { status, code, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_with_or_without_a_trailing_slash() {
        for base in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let url = Url::parse(base).expect("valid");
            assert_eq!(endpoint(&url, "v1/tasks/poll").as_str(), "http://127.0.0.1:8080/v1/tasks/poll");
        }
        let prefixed = Url::parse("http://engine/shop/").expect("valid");
        assert_eq!(endpoint(&prefixed, "v1/tasks/report").as_str(), "http://engine/shop/v1/tasks/report");
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        let status = |status| Error::Status { status, code: String::new(), message: String::new() };
        assert!(status(StatusCode::SERVICE_UNAVAILABLE).is_retryable());
        assert!(status(StatusCode::INTERNAL_SERVER_ERROR).is_retryable());
        assert!(status(StatusCode::TOO_MANY_REQUESTS).is_retryable());
        assert!(!status(StatusCode::BAD_REQUEST).is_retryable());
        assert!(!status(StatusCode::NOT_FOUND).is_retryable());
    }
}
