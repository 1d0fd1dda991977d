//! The one HTTP client `shopctl` uses, for the engine's API and a worker's admin API alike.
//!
//! It owns URL building (path segments are percent-encoded, so an ID or a cursor can never
//! change the path), timeouts, and the single function that turns a failed exchange into a
//! one-line reason a user can act on. It must never print anything or decide how an answer
//! is shown: it hands back both the typed answer and the raw JSON, and the commands choose.
//! The one exception is a note on stderr while it waits to retry (see below).
//!
//! A token given with [`Client::with_token`] goes to the engine and to the worker admin API
//! alike (as a sensitive `Authorization: Bearer` header): the worker admin API accepts the
//! engine's admin credentials, so one admin token serves the whole system.
//!
//! A 429 or 503 answer means the server did not do the request (rate limited, overloaded,
//! shutting down, or it could not check the credential), so every request is sent again after
//! the server's `Retry-After` (or [`DEFAULT_RETRY_WAIT`] without one), at most
//! [`MAX_RETRIES`] times, and only while the wait asked for is at most [`MAX_RETRY_WAIT`]: a
//! server asking for longer gets no retry, and its answer is the error.

use crate::output;
use anyhow::{anyhow, Context as _, Result};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_types::api::ErrorBody;
use shop_types::auth::BearerToken;
use std::time::Duration;

/// How long to wait for a TCP connection: on loopback a refused or silent port shows at once,
/// so a short bound turns "nothing is listening" into a quick, clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an ordinary request may take end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a long-poll's `wait` so the server's own answer at the end of the wait arrives
/// before our timeout fires.
const WAIT_MARGIN: Duration = Duration::from_secs(10);
/// How long one `/healthz` probe may take: a start-up loop probes often and must notice
/// quickly when something else holds the port and never answers.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most times one request is sent again after a 429 or 503: with waits of a second, enough
/// to ride out a burst's rate limit or a restart, without hanging a script for long.
pub const MAX_RETRIES: u32 = 5;
/// Longest `Retry-After` honoured before one retry; a longer one ends the command with the
/// server's answer rather than leave it silent for minutes.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// The wait before a retry when a 429 or 503 carries no `Retry-After` in seconds (none, or
/// an HTTP date, which our servers never send).
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);

/// The two services `shopctl` talks to; named in every error so the user knows which is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Engine,
    Worker,
}

impl Service {
    fn describe(self) -> &'static str {
        match self {
            Service::Engine => "the engine",
            Service::Worker => "the worker admin API",
        }
    }
}

/// A successful answer: its HTTP status, the raw JSON (what `--json` prints, unchanged) and
/// the same document decoded.
#[derive(Debug)]
pub struct Reply<T> {
    pub status: StatusCode,
    pub raw: serde_json::Value,
    pub body: T,
}

/// What a request carries.
pub enum Body<'a> {
    Empty,
    Json(serde_json::Value),
    Toml(&'a str),
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    engine: Url,
    worker: Url,
    /// `Authorization` for every request, when a token was given.
    authorization: Option<reqwest::header::HeaderValue>,
}

impl Client {
    /// `engine` and `worker` are base URLs; a bare `host:port` is taken as `http://host:port`.
    pub fn new(engine: &str, worker: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_millis(shop_types::limits::CLIENT_POOL_IDLE_MS))
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Client {
            http,
            engine: parse_base(engine).context("bad --engine address")?,
            worker: parse_base(worker).context("bad --worker address")?,
            authorization: None,
        })
    }

    /// The same client (and credential) with another worker admin API, e.g. one domain's.
    pub fn with_worker(&self, worker: &str) -> Result<Self> {
        Ok(Client { worker: parse_base(worker).context("bad worker address")?, ..self.clone() })
    }

    /// Sends `token` with every request, to the engine and to the worker admin API.
    pub fn with_token(mut self, token: Option<&BearerToken>) -> Result<Self> {
        self.authorization = match token {
            Some(token) => {
                let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| anyhow!("the token cannot be sent in an HTTP header"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(self)
    }

    pub fn base(&self, service: Service) -> &Url {
        match service {
            Service::Engine => &self.engine,
            Service::Worker => &self.worker,
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        service: Service,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Reply<T>> {
        self.send(service, Method::GET, segments, query, Body::Empty, REQUEST_TIMEOUT, MAX_RETRIES).await
    }

    /// The process ID in the service's `GET /healthz` answer, within a short bound and
    /// without retries: `None` when it does not answer with a success, `Some(None)` when it
    /// answers without naming its process.
    pub async fn health_pid(&self, service: Service) -> Option<Option<u32>> {
        let reply = self
            .send::<serde_json::Value>(service, Method::GET, &["healthz"], &[], Body::Empty, HEALTH_PROBE_TIMEOUT, 0)
            .await
            .ok()?;
        Some(reply.body.get("pid").and_then(serde_json::Value::as_u64).and_then(|pid| u32::try_from(pid).ok()))
    }

    /// A GET that may block on the server for up to `wait` (a long-poll): the client's own
    /// timeout grows to match, so it never gives up before the server answers.
    pub async fn get_waiting<T: DeserializeOwned>(
        &self,
        service: Service,
        segments: &[&str],
        wait: Duration,
    ) -> Result<Reply<T>> {
        let query = [("wait", format!("{}ms", wait.as_millis()))];
        self.send(service, Method::GET, segments, &query, Body::Empty, wait + WAIT_MARGIN, MAX_RETRIES).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        service: Service,
        segments: &[&str],
        body: Body<'_>,
    ) -> Result<Reply<T>> {
        self.send(service, Method::POST, segments, &[], body, REQUEST_TIMEOUT, MAX_RETRIES).await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        service: Service,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply<T>> {
        let body = serde_json::to_value(body).context("cannot encode the request")?;
        self.send(service, Method::PUT, segments, &[], Body::Json(body), REQUEST_TIMEOUT, MAX_RETRIES).await
    }

    /// Sends one request, again after a 429 or 503 up to `max_retries` times (see the module
    /// doc), and decodes the answer.
    #[allow(clippy::too_many_arguments)] // private; every caller names what it varies
    async fn send<T: DeserializeOwned>(
        &self,
        service: Service,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Body<'_>,
        timeout: Duration,
        max_retries: u32,
    ) -> Result<Reply<T>> {
        let url = build_url(self.base(service), segments, query)?;
        let mut retries = 0;
        let (status, bytes) = loop {
            tracing::debug!(%method, %url, "request");
            let mut request = self.http.request(method.clone(), url.clone()).timeout(timeout);
            if let Some(authorization) = &self.authorization {
                request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
            }
            let request = match &body {
                Body::Empty => request,
                Body::Json(value) => request.json(value),
                Body::Toml(text) => {
                    request.header(reqwest::header::CONTENT_TYPE, "application/toml").body((*text).to_owned())
                }
            };
            let outcome = async {
                let response = request.send().await?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let bytes = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>((status, retry_after, bytes))
            }
            .await;
            if let Ok((status, retry_after, bytes)) = &outcome {
                if let Some(wait) = retry_wait(*status, retry_after.as_deref()).filter(|_| retries < max_retries) {
                    retries += 1;
                    output::note(&format!(
                        "{} answered {method} {} with {}; waiting {} before retry {retries} of {max_retries}",
                        service.describe(),
                        url.path(),
                        status_and_code(*status, bytes),
                        output::duration(wait),
                    ));
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            break explain(service, &method, &url, outcome.map(|(status, _, bytes)| (status, bytes)))?;
        };
        let raw: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
            format!("{} answered {method} {} with something that is not JSON", service.describe(), url.path())
        })?;
        let body = serde_json::from_value(raw.clone()).with_context(|| {
            format!("{} answered {method} {} in an unexpected shape", service.describe(), url.path())
        })?;
        Ok(Reply { status, raw, body })
    }
}

/// How long to wait before sending a request again that was answered `status` with
/// `retry_after`: `None` unless it is a 429 or 503 whose wait is at most [`MAX_RETRY_WAIT`].
/// A `Retry-After` in seconds is honoured; none, or one that is not a number of seconds,
/// waits [`DEFAULT_RETRY_WAIT`].
fn retry_wait(status: StatusCode, retry_after: Option<&str>) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let wait =
        retry_after.and_then(|text| text.trim().parse::<u64>().ok()).map_or(DEFAULT_RETRY_WAIT, Duration::from_secs);
    (wait <= MAX_RETRY_WAIT).then_some(wait)
}

/// "429 RATE_LIMITED", or just the status when the body is not our error shape.
fn status_and_code(status: StatusCode, bytes: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(ErrorBody { error }) => format!("{} {}", status.as_u16(), error.code),
        Err(_) => status.to_string(),
    }
}

/// The one place a failed exchange becomes a reason: transport failures say which service
/// could not be reached and how to start it; an error answer quotes the server's stable
/// `code` and its message, so scripts and people see what the server said.
fn explain(
    service: Service,
    method: &Method,
    url: &Url,
    outcome: Result<(StatusCode, Vec<u8>), reqwest::Error>,
) -> Result<(StatusCode, Vec<u8>)> {
    let base = origin(url);
    let what = service.describe();
    let (status, bytes) = match outcome {
        Ok(answer) => answer,
        Err(err) if err.is_connect() => {
            return Err(anyhow!("cannot reach {what} at {base}: is it running? (shopctl dev starts one)"))
        }
        Err(err) if err.is_timeout() => {
            return Err(anyhow!("{what} at {base} did not answer {method} {} in time", url.path()))
        }
        Err(err) => return Err(anyhow!("{method} {} to {what} at {base} failed: {}", url.path(), error_chain(&err))),
    };
    if status.is_success() {
        return Ok((status, bytes));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        // The one refusal whose fix is not in the message: say where a credential comes from.
        Ok(ErrorBody { error }) if status == StatusCode::UNAUTHORIZED => Err(anyhow!(
            "{what} refused {method} {}: {} {}: {} (pass {} with --token or set SHOP_TOKEN)",
            url.path(),
            status.as_u16(),
            error.code,
            error.message,
            match service {
                Service::Engine => "a token",
                Service::Worker => "an admin token of the engine",
            }
        )),
        Ok(ErrorBody { error }) => Err(anyhow!(
            "{what} refused {method} {}: {} {}: {}",
            url.path(),
            status.as_u16(),
            error.code,
            error.message
        )),
        Err(_) => Err(anyhow!("{what} answered {method} {} with {status}", url.path())),
    }
}

/// reqwest's top-level message is often just "error sending request"; the cause is below.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn parse_base(text: &str) -> Result<Url> {
    let text = text.trim();
    let with_scheme = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
    let url = Url::parse(&with_scheme).with_context(|| format!("{text:?} is not a URL"))?;
    if url.scheme() != "http" {
        return Err(anyhow!("{text:?}: only http:// is supported (this build has no TLS)"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(anyhow!("{text:?} has no host"));
    }
    Ok(url)
}

/// Appends `segments` to the base's path, each percent-encoded as one segment.
fn build_url(base: &Url, segments: &[&str], query: &[(&str, String)]) -> Result<Url> {
    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().map_err(|()| anyhow!("{base} cannot be a base URL"))?;
        path.pop_if_empty();
        path.extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_becomes_an_http_url() -> Result<()> {
        assert_eq!(parse_base("127.0.0.1:8080")?.as_str(), "http://127.0.0.1:8080/");
        assert!(parse_base("https://example.com").is_err());
        Ok(())
    }

    #[test]
    fn error_answers_quote_the_servers_code_and_message() -> Result<()> {
        let url = parse_base("127.0.0.1:8080")?.join("v1/workflows/x")?;
        let body = br#"{"error":{"code":"NOT_FOUND","message":"no workflow x"}}"#.to_vec();
        let err = explain(Service::Engine, &Method::GET, &url, Ok((StatusCode::NOT_FOUND, body)))
            .err()
            .map(|err| err.to_string());
        assert_eq!(err.as_deref(), Some("the engine refused GET /v1/workflows/x: 404 NOT_FOUND: no workflow x"));
        let err = explain(Service::Worker, &Method::GET, &url, Ok((StatusCode::BAD_GATEWAY, b"<html>".to_vec())))
            .err()
            .map(|err| err.to_string());
        assert_eq!(err.as_deref(), Some("the worker admin API answered GET /v1/workflows/x with 502 Bad Gateway"));
        Ok(())
    }

    #[tokio::test]
    async fn a_closed_port_says_how_to_start_the_engine() -> Result<()> {
        // Port 1 on loopback is privileged and not served here: the connect is refused.
        let client = Client::new("127.0.0.1:1", "127.0.0.1:1")?;
        let err =
            client.get::<serde_json::Value>(Service::Engine, &["healthz"], &[]).await.err().map(|err| err.to_string());
        assert_eq!(
            err.as_deref(),
            Some("cannot reach the engine at http://127.0.0.1:1: is it running? (shopctl dev starts one)")
        );
        Ok(())
    }

    #[test]
    fn only_429_and_503_are_retried_after_their_retry_after_within_the_bound() {
        for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE] {
            assert_eq!(retry_wait(status, Some("3")), Some(Duration::from_secs(3)));
            assert_eq!(retry_wait(status, Some(" 0 ")), Some(Duration::ZERO));
            let max = MAX_RETRY_WAIT.as_secs();
            assert_eq!(retry_wait(status, Some(&max.to_string())), Some(MAX_RETRY_WAIT), "the bound is allowed");
            assert_eq!(retry_wait(status, Some(&(max + 1).to_string())), None, "past the bound: no retry");
            assert_eq!(retry_wait(status, Some("18446744073709551616")), Some(DEFAULT_RETRY_WAIT), "not a u64");
            assert_eq!(retry_wait(status, None), Some(DEFAULT_RETRY_WAIT));
            assert_eq!(retry_wait(status, Some("Wed, 21 Oct 2015 07:28:00 GMT")), Some(DEFAULT_RETRY_WAIT));
            assert_eq!(retry_wait(status, Some("-1")), Some(DEFAULT_RETRY_WAIT));
        }
        for status in
            [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY]
        {
            assert_eq!(retry_wait(status, Some("1")), None, "{status}");
        }
    }

    /// A server answering 429 `answers` times with `Retry-After: 0`, then 200.
    async fn throttling_server(answers: usize) -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicUsize>)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let (status, body) = if n < answers {
                    ("429 Too Many Requests", r#"{"error":{"code":"RATE_LIMITED","message":"slow down"}}"#)
                } else {
                    ("200 OK", r#"{"ok":true}"#)
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 0\r\n\
                     Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        Ok((format!("http://{addr}"), seen))
    }

    #[tokio::test]
    async fn a_throttled_request_is_sent_again_at_most_max_retries_times() -> Result<()> {
        let retries = usize::try_from(MAX_RETRIES)?;
        let (url, seen) = throttling_server(retries).await?;
        let client = Client::new(&url, &url)?;
        let reply = client.get::<serde_json::Value>(Service::Worker, &["stock"], &[]).await?;
        assert_eq!(reply.raw, serde_json::json!({"ok": true}));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), retries + 1);

        let (url, seen) = throttling_server(retries + 1).await?;
        let client = Client::new(&url, &url)?;
        let err = client.get::<serde_json::Value>(Service::Engine, &["x"], &[]).await.err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("the engine refused GET /x: 429 RATE_LIMITED: slow down"));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), retries + 1, "one try and MAX_RETRIES retries");
        Ok(())
    }

    #[test]
    fn segments_and_query_are_encoded() -> Result<()> {
        let base = parse_base("http://localhost:1/prefix/")?;
        let url = build_url(&base, &["v1", "workflows", "a/b"], &[("cursor", "x+y=".to_owned())])?;
        assert_eq!(url.as_str(), "http://localhost:1/prefix/v1/workflows/a%2Fb?cursor=x%2By%3D");
        Ok(())
    }
}
