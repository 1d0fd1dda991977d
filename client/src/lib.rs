//! `shop-client`: the one HTTP client of the engine's API and of the worker admin API, used
//! by `shopctl`, the workers and the end-to-end tests.
//!
//! A [`Client`] talks to one service at one base URL ([`Service`] names it in every error).
//! It owns URL building (path segments are percent-encoded, so an ID or a cursor can never
//! change the path), the bearer credential (a sensitive header, never logged), timeouts, the
//! connection pool's idle time ([`shop_types::limits::CLIENT_POOL_IDLE_MS`], shorter than the
//! servers' idle timeout so a pooled connection is never one the server is closing), the
//! opt-in bounded retry of 429/503 ([`retry`]), and the one mapping of a failed exchange to
//! an [`Error`]. Typed methods per endpoint live in [`engine`], [`tasks`] and [`admin`];
//! [`Client::send`] is the raw escape hatch (any method, path, content type and body; the
//! status, headers and body come back whatever they are) for tests of bad input.
//!
//! It must never print, decide how an answer is shown, or depend on sled or axum. Cheap to
//! clone: clones share one connection pool.

pub mod admin;
pub mod engine;
mod error;
pub mod events;
pub mod retry;
pub mod tasks;

pub use error::{error_chain, Error, Transport, MAX_ERROR_TEXT};
pub use reqwest::{header, Method, StatusCode, Url};
pub use retry::{Retry, Retrying};

use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_types::auth::BearerToken;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for a TCP connection: on loopback or a LAN a live service accepts in
/// milliseconds, so a short bound turns "nothing is listening" into a quick, clear error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an ordinary request may take end to end, unless the options say otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a long-poll's own wait so the server's answer at the end of the wait arrives
/// before our timeout fires: only a lost connection takes longer.
pub const WAIT_MARGIN: Duration = Duration::from_secs(10);
/// How long one `/healthz` probe may take: a start-up loop probes often and must notice
/// quickly when something else holds the port and never answers.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The two services of the system; named in every error so the user knows which is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Engine,
    Worker,
}

impl Service {
    pub fn describe(self) -> &'static str {
        match self {
            Service::Engine => "the engine",
            Service::Worker => "the worker admin API",
        }
    }
}

/// How a client is built.
#[derive(Debug, Clone)]
pub struct Options {
    pub connect_timeout: Duration,
    /// The timeout of a request that does not wait on the server (long-polls add their wait).
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle: Duration,
    /// Most idle connections kept per host (`None`: reqwest's default, unbounded).
    pub pool_max_idle_per_host: Option<usize>,
    pub retry: Retry,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            pool_idle: Duration::from_millis(shop_types::limits::CLIENT_POOL_IDLE_MS),
            pool_max_idle_per_host: None,
            retry: Retry::Never,
        }
    }
}

/// A successful answer: its status, its body as sent (what `--json` prints) and decoded.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub status: StatusCode,
    pub body: T,
    bytes: Vec<u8>,
}

impl<T> Reply<T> {
    /// The body as JSON, unchanged (field order kept as far as `serde_json` keeps it).
    pub fn raw(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Whatever came back from [`Client::send`].
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: Vec<u8>,
}

/// What a request carries.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Empty,
    /// Already-encoded JSON.
    Json(&'a [u8]),
    Toml(&'a str),
    /// Already-encoded JSON sent with an `Idempotency-Key` header (signals).
    KeyedJson {
        json: &'a [u8],
        idempotency_key: &'a str,
    },
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    service: Service,
    /// `Authorization` for every request, when a token was given.
    authorization: Option<header::HeaderValue>,
    options: Arc<Options>,
}

impl Client {
    /// A client of `service` at `base`; a bare `host:port` is taken as `http://host:port`.
    pub fn new(service: Service, base: &str, options: Options) -> Result<Self, Error> {
        let mut builder =
            reqwest::Client::builder().connect_timeout(options.connect_timeout).pool_idle_timeout(options.pool_idle);
        if let Some(most) = options.pool_max_idle_per_host {
            builder = builder.pool_max_idle_per_host(most);
        }
        let http = builder.build().map_err(|err| Error::Build(error::error_chain(&err)))?;
        Ok(Client { http, base: parse_base(base)?, service, authorization: None, options: Arc::new(options) })
    }

    /// The same client (sharing its pool and credential) at another base URL, e.g. another
    /// domain's worker admin API.
    pub fn at(&self, service: Service, base: &str) -> Result<Self, Error> {
        Ok(Client { base: parse_base(base)?, service, ..self.clone() })
    }

    /// The same client (sharing its pool) sending `token` with every request, or none.
    pub fn with_token(mut self, token: Option<&BearerToken>) -> Result<Self, Error> {
        self.authorization = match token {
            Some(token) => {
                let mut value = header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| Error::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(self)
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base URL without its trailing slash, e.g. `http://127.0.0.1:8080`.
    pub fn base_str(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// `GET` of `segments` with `query`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Reply<T>, Error> {
        self.call(Method::GET, segments, query, Body::Empty, self.options.request_timeout).await
    }

    /// A GET that may block on the server for up to `wait` (`?wait=`): the timeout grows to
    /// match, so the client never gives up before the server answers.
    pub async fn get_waiting<T: DeserializeOwned>(&self, segments: &[&str], wait: Duration) -> Result<Reply<T>, Error> {
        let query = [("wait", format!("{}ms", wait.as_millis()))];
        self.call(Method::GET, segments, &query, Body::Empty, wait + WAIT_MARGIN).await
    }

    pub async fn post<T: DeserializeOwned>(&self, segments: &[&str], body: Body<'_>) -> Result<Reply<T>, Error> {
        self.call(Method::POST, segments, &[], body, self.options.request_timeout).await
    }

    /// `POST` of `body` encoded as JSON.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply<T>, Error> {
        let bytes = encode(segments, body)?;
        self.call(Method::POST, segments, &[], Body::Json(&bytes), self.options.request_timeout).await
    }

    /// `PUT` of `body` encoded as JSON.
    pub async fn put_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply<T>, Error> {
        let bytes = encode(segments, body)?;
        self.call(Method::PUT, segments, &[], Body::Json(&bytes), self.options.request_timeout).await
    }

    /// The raw escape hatch: `method` on `path_and_query` (appended to the base as given,
    /// e.g. `/api/orders?limit=2`), with `content_type` and `body` when given and extra
    /// `headers`. Any answer comes back as it is; only a transport failure is an error. No
    /// retry, whatever the options say.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<RawReply, Error> {
        let url = format!("{}{path_and_query}", self.base_str());
        let url = Url::parse(&url).map_err(|err| Error::BadUrl(format!("{url:?}: {err}")))?;
        let mut request = self.request(method.clone(), url.clone(), self.options.request_timeout);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let outcome = async {
            let response = request.body(body).send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(RawReply { status, headers, body })
        }
        .await;
        outcome.map_err(|err| self.transport(&method, &url, &err))
    }

    /// A GET without a timeout, for a stream that lives as long as its reader wants it
    /// (`events` watches its silence instead).
    fn stream_request(&self, url: Url) -> reqwest::RequestBuilder {
        self.authorized(self.http.get(url))
    }

    fn request(&self, method: Method, url: Url, timeout: Duration) -> reqwest::RequestBuilder {
        self.authorized(self.http.request(method, url).timeout(timeout))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.authorization {
            Some(authorization) => request.header(header::AUTHORIZATION, authorization.clone()),
            None => request,
        }
    }

    /// Sends one request (again after a 429 or 503 when the options retry; see [`retry`])
    /// and decodes a 2xx answer as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Body<'_>,
        timeout: Duration,
    ) -> Result<Reply<T>, Error> {
        let max_retries = self.options.retry.max_retries();
        let (status, bytes, path) = self.exchange(&method, segments, query, body, timeout, max_retries).await?;
        let body = serde_json::from_slice(&bytes).map_err(|err| Error::BadResponse {
            service: self.service,
            method: method.clone(),
            path,
            reason: if err.is_syntax() || err.is_eof() {
                "with something that is not JSON".to_owned()
            } else {
                format!("in an unexpected shape ({err})")
            },
        })?;
        Ok(Reply { status, body, bytes })
    }

    /// One exchange to a 2xx status and its body, or the error; retries throttled answers.
    async fn exchange(
        &self,
        method: &Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Body<'_>,
        timeout: Duration,
        max_retries: u32,
    ) -> Result<(StatusCode, Vec<u8>, String), Error> {
        let url = build_url(&self.base, segments, query)?;
        let path = url.path().to_owned();
        let mut retries = 0;
        loop {
            tracing::debug!(%method, %url, "request");
            let request = self.request(method.clone(), url.clone(), timeout);
            let request = match body {
                Body::Empty => request,
                Body::Json(bytes) => request.header(header::CONTENT_TYPE, "application/json").body(bytes.to_vec()),
                Body::Toml(text) => request.header(header::CONTENT_TYPE, "application/toml").body(text.to_owned()),
                Body::KeyedJson { json, idempotency_key } => request
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("Idempotency-Key", idempotency_key)
                    .body(json.to_vec()),
            };
            let outcome = async {
                let response = request.send().await?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let bytes = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>((status, retry_after, bytes))
            }
            .await;
            let (status, retry_after, bytes) = outcome.map_err(|err| self.transport(method, &url, &err))?;
            if status.is_success() {
                return Ok((status, bytes, path));
            }
            if let Some(wait) = retry::retry_wait(status, retry_after.as_deref()).filter(|_| retries < max_retries) {
                retries += 1;
                self.options.retry.tell(&Retrying {
                    service: self.service,
                    method,
                    path: &path,
                    answer: error::status_and_code(status, &bytes),
                    wait,
                    retry: retries,
                    max_retries,
                });
                tokio::time::sleep(wait).await;
                continue;
            }
            let retry_after = retry_after.and_then(|text| text.trim().parse::<u64>().ok());
            return Err(error::from_status(self.service, method, &path, status, &bytes, retry_after));
        }
    }

    /// A GET of `segments` within `timeout`, never retried: for probes.
    pub(crate) async fn exchange_once(
        &self,
        method: &Method,
        segments: &[&str],
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>, String), Error> {
        self.exchange(method, segments, &[], Body::Empty, timeout, 0).await
    }

    /// `call` with the caller's timeout (the task protocol's waits).
    pub(crate) async fn call_within<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Body<'_>,
        timeout: Duration,
    ) -> Result<Reply<T>, Error> {
        self.call(method, segments, &[], body, timeout).await
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.options.request_timeout
    }

    fn transport(&self, method: &Method, url: &Url, err: &reqwest::Error) -> Error {
        let kind = if err.is_connect() {
            Transport::Connect
        } else if err.is_timeout() {
            Transport::Timeout
        } else {
            Transport::Other(error::error_chain(err))
        };
        Error::Transport {
            service: self.service,
            origin: url.origin().ascii_serialization(),
            method: method.clone(),
            path: url.path().to_owned(),
            kind,
        }
    }
}

fn encode(segments: &[&str], body: &impl Serialize) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body).map_err(|err| Error::Encode { path: segments.join("/"), reason: err.to_string() })
}

/// A base URL from `text`; a bare `host:port` is taken as `http://host:port`.
pub fn parse_base(text: &str) -> Result<Url, Error> {
    let text = text.trim();
    let with_scheme = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
    let url = Url::parse(&with_scheme).map_err(|_| Error::BadUrl(format!("{text:?} is not a URL")))?;
    if url.scheme() != "http" {
        return Err(Error::BadUrl(format!("{text:?}: only http:// is supported (this build has no TLS)")));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(Error::BadUrl(format!("{text:?} has no host")));
    }
    Ok(url)
}

/// Appends `segments` to the base's path, each percent-encoded as one segment.
fn build_url(base: &Url, segments: &[&str], query: &[(&str, String)]) -> Result<Url, Error> {
    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().map_err(|()| Error::BadUrl(format!("{base} cannot be a base URL")))?;
        path.pop_if_empty();
        path.extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

#[cfg(test)]
mod tests;
