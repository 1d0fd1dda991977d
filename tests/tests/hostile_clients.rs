//! The engine's HTTP door against hostile clients, over raw sockets to the real binary: a
//! head sent slowly or not at all and an idle keep-alive connection are closed by the head
//! timeout; a declared huge body gets 413 at once and a body that does not arrive gets 408;
//! idle sockets over the connection cap do not keep `/healthz` from answering; SIGTERM with
//! a half-sent request exits within the shutdown grace; a pipelined request after a 429 is
//! answered; repeated bad credentials are throttled; every error body is JSON; `/healthz`
//! and `/readyz` answer JSON, with the engine's pid; and a long poll outlasts both timeouts.
//!
//! Limits are set small by flags, so nothing waits for a production-size timeout.

use serde_json::Value;
use shop_tests::{Api, Engine, EngineOptions};
use shop_types::api::Health;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for an answer or a close that must come.
const DEADLINE: Duration = Duration::from_secs(10);
/// The head timeout of engines whose test waits for it.
const SHORT_HEAD_TIMEOUT: &str = "1s";
/// A head timeout no test waits for: whatever closes a connection, it is not this.
const LONG_HEAD_TIMEOUT: &str = "120s";

async fn engine(dir: &Path, args: &[&str]) -> Engine {
    let args = args.iter().map(|a| (*a).to_owned()).collect();
    Engine::start(dir, EngineOptions { args, ..EngineOptions::default() }).await
}

fn addr(engine: &Engine) -> SocketAddr {
    engine.url().trim_start_matches("http://").parse().expect("the engine's address")
}

async fn connect(engine: &Engine) -> TcpStream {
    TcpStream::connect(addr(engine)).await.expect("connect to the engine")
}

/// An HTTP/1.1 response as read off the wire.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the documented error shape: JSON content type, `{"error":{"code","message"}}`.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(self.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{self:?}");
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }

    fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one response (head, then a `Content-Length` body) from `stream`, keeping whatever
/// follows in `buffer` for the next one; `None` if the connection closes first.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<RawResponse> {
    let until = Instant::now() + DEADLINE;
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if !read_more(stream, buffer, until).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse::<usize>().expect("a numeric content-length"));
    while buffer.len() < head_end + length {
        if !read_more(stream, buffer, until).await {
            return None;
        }
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    Some(RawResponse { status, headers, body })
}

/// Reads what is there; false when the peer closed (or reset) the connection.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>, until: Instant) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    let left = until.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, stream.read(&mut chunk)).await {
        Err(_) => panic!("no answer and no close within {DEADLINE:?}"),
        Ok(Ok(0) | Err(_)) => false,
        Ok(Ok(n)) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Sends `request` on a new connection and reads the one answer.
async fn exchange(engine: &Engine, request: &[u8]) -> RawResponse {
    let mut stream = connect(engine).await;
    stream.write_all(request).await.expect("send the request");
    read_response(&mut stream, &mut Vec::new()).await.expect("an answer before the close")
}

/// True once the engine closed `stream`, which must happen within [`DEADLINE`].
async fn closed_by_engine(stream: &mut TcpStream) -> bool {
    let mut buffer = Vec::new();
    while read_more(stream, &mut buffer, Instant::now() + DEADLINE).await {}
    true
}

fn engine_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_or_silent_head_and_an_idle_keep_alive_are_closed_by_the_head_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), &["--head-timeout", SHORT_HEAD_TIMEOUT]).await;

    let mut silent = connect(&engine).await;
    let mut slowloris = connect(&engine).await;
    slowloris.write_all(b"GET /heal").await.expect("send half a request line");
    assert!(closed_by_engine(&mut silent).await);
    assert!(closed_by_engine(&mut slowloris).await);

    // A connection that was answered and then says nothing more is closed too.
    let mut idle = connect(&engine).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n").await.expect("send a request");
    let mut buffer = Vec::new();
    let answer = read_response(&mut idle, &mut buffer).await.expect("an answer");
    assert_eq!(answer.status, 200);
    assert!(!answer.closes(), "keep-alive is offered");
    assert!(closed_by_engine(&mut idle).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_huge_body_gets_413_at_once_and_a_missing_body_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), &["--head-timeout", LONG_HEAD_TIMEOUT, "--body-timeout", "1s"]).await;

    let huge = b"POST /api/orders HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\n\
                 Content-Length: 10000000000\r\n\r\n{}";
    let answer = exchange(&engine, huge).await;
    answer.assert_error(413, "BODY_TOO_LARGE");
    assert!(answer.closes(), "the unread body leaves the connection out of step: {answer:?}");

    // 100 bytes declared, 10 sent: the body timeout answers, and closes.
    let short = b"POST /api/orders HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"items\":";
    let answer = exchange(&engine, short).await;
    answer.assert_error(408, "BODY_TIMEOUT");
    assert!(answer.closes(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_over_the_cap_do_not_keep_healthz_from_answering() {
    const CAP: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = CAP.to_string();
    let engine = engine(dir.path(), &["--max-connections", &cap, "--head-timeout", LONG_HEAD_TIMEOUT]).await;
    let mut idle = Vec::new();
    for _ in 0..CAP * 4 {
        idle.push(connect(&engine).await);
    }
    // A fresh client each time, so every probe is a new connection over the cap.
    for _ in 0..3 {
        let health: Health = Api::new(&engine.url()).get("/healthz").await.expect("GET /healthz").parse();
        assert_eq!(health.status, "ok");
    }
    assert!(engine_log(dir.path()).contains("connection cap reached"), "the cap is logged");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_half_sent_request_exits_within_the_shutdown_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = engine(dir.path(), &["--head-timeout", LONG_HEAD_TIMEOUT, "--shutdown-grace", "1s"]).await;
    let mut half = connect(&engine).await;
    half.write_all(b"POST /api/orders HTTP/1.1\r\nHost: e\r\n").await.expect("send half a head");
    let mut body_pending = connect(&engine).await;
    body_pending
        .write_all(
            b"POST /api/orders HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
        )
        .await
        .expect("send a head and a byte of the body");
    // The listener accepts in order: once a later connection is answered, both earlier ones
    // were accepted; a moment more lets the second one's head be read, so its request is in
    // flight (only then does shutdown have to wait for the grace).
    let mut probe = connect(&engine).await;
    let mut buffer = Vec::new();
    probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n").await.expect("send a probe");
    assert!(read_response(&mut probe, &mut buffer).await.is_some(), "the probe is answered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = engine.stop().await;
    assert!(status.success(), "a clean exit: {status}");
    // Only the grace (1 s) can end these connections this early: the head timeout is 120 s
    // and the body timeout 30 s.
    assert!(started.elapsed() < Duration::from_secs(20), "exited after {:?}", started.elapsed());
    assert!(engine_log(dir.path()).contains("shutdown deadline passed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_pipelined_behind_a_429_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), &["--rate-limit", "1/h", "--rate-burst", "1"]).await;
    let mut stream = connect(&engine).await;
    let mut buffer = Vec::new();
    stream.write_all(b"GET /v1/definitions HTTP/1.1\r\nHost: e\r\n\r\n").await.expect("send");
    assert_eq!(read_response(&mut stream, &mut buffer).await.expect("an answer").status, 200);

    // A POST with a body, and right behind it on the same connection, a GET.
    let body = br#"{"items":[{"product_id":1,"quantity":1}],"payment_method":"card"}"#;
    let mut pipelined = format!(
        "POST /api/orders HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    pipelined.extend_from_slice(body);
    pipelined.extend_from_slice(b"GET /v1/definitions HTTP/1.1\r\nHost: e\r\n\r\n");
    stream.write_all(&pipelined).await.expect("send both");
    let first = read_response(&mut stream, &mut buffer).await.expect("the POST is answered");
    first.assert_error(429, "RATE_LIMITED");
    assert!(first.header("retry-after").is_some());
    // The body was read and discarded before the 429, so the connection stays in step and
    // the pipelined GET is answered (not dropped, and not left for the client to guess).
    assert!(!first.closes(), "a 429 after a short body keeps the connection: {first:?}");
    let second = read_response(&mut stream, &mut buffer).await.expect("the pipelined GET is answered");
    second.assert_error(429, "RATE_LIMITED");
    assert!(engine_log(dir.path()).contains("request refused"), "the refusal is logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_bad_credentials_are_throttled_per_address() {
    const SECRET: &str = "shp_not-a-real-token-but-a-secret-all-the-same";
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_file = dir.path().join("admin-token");
    let args = vec!["--admin-token-file".into(), admin_file.display().to_string()];
    let engine = Engine::start(dir.path(), EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let admin_token = std::fs::read_to_string(&admin_file).expect("the admin token file");

    let bad = Api::with_token(&engine.url(), SECRET);
    let mut unauthenticated = 0;
    let throttled = loop {
        let reply = bad.get("/v1/workflows").await.expect("GET /v1/workflows");
        if reply.status != 401 {
            break reply;
        }
        unauthenticated += 1;
        assert!(unauthenticated <= 100, "never throttled");
    };
    assert!(unauthenticated >= 3, "a few mistakes are not throttled ({unauthenticated})");
    throttled.assert_error(429, "TOO_MANY_AUTH_FAILURES");
    // Another bad credential, or none, from that address is still refused 429 / 401 ...
    bad.get("/v1/workflows").await.expect("GET").assert_error(429, "TOO_MANY_AUTH_FAILURES");
    Api::new(&engine.url()).get("/v1/workflows").await.expect("GET").assert_error(429, "TOO_MANY_AUTH_FAILURES");
    // ... but a valid credential from the same address (a NAT, a proxy, a worker relaying its
    // admin API's bad tokens) is never locked out by others' failures.
    let good = Api::with_token(&engine.url(), admin_token.trim());
    assert!(good.get("/v1/workflows").await.expect("GET /v1/workflows").is_success());
    // Probes are not behind authentication, so not throttled.
    assert!(good.get("/healthz").await.expect("GET /healthz").is_success());

    let log = engine_log(dir.path());
    assert!(log.contains("request refused"), "refusals are logged");
    assert!(!log.contains(SECRET) && !log.contains(admin_token.trim()), "no secret in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_body_is_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), &[]).await;

    let answer = exchange(&engine, b"DELETE /api/orders HTTP/1.1\r\nHost: e\r\n\r\n").await;
    answer.assert_error(405, "METHOD_NOT_ALLOWED");
    assert!(answer.header("allow").is_some(), "405 keeps its Allow header");
    exchange(&engine, b"POST /healthz HTTP/1.1\r\nHost: e\r\nContent-Length: 0\r\n\r\n")
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");

    let long_uri = format!("GET /v1/workflows/{} HTTP/1.1\r\nHost: e\r\n\r\n", "a".repeat(9 * 1024));
    exchange(&engine, long_uri.as_bytes()).await.assert_error(414, "URI_TOO_LONG");

    let big_header = format!("GET /healthz HTTP/1.1\r\nHost: e\r\nX-Big: {}\r\n\r\n", "b".repeat(40 * 1024));
    exchange(&engine, big_header.as_bytes()).await.assert_error(431, "HEADERS_TOO_LARGE");

    // A chunked body (no Content-Length to refuse early) over MAX_BODY_BYTES.
    let mut chunked = b"POST /api/orders HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    exchange(&engine, &chunked).await.assert_error(413, "BODY_TOO_LARGE");

    // A path segment that is not UTF-8: axum's Path rejection, plain text before.
    exchange(&engine, b"GET /v1/workflows/%FF%FE HTTP/1.1\r\nHost: e\r\n\r\n").await.assert_error(400, "BAD_REQUEST");
    exchange(&engine, b"GET /nowhere HTTP/1.1\r\nHost: e\r\n\r\n").await.assert_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_readyz_answer_json_with_the_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), &[]).await;
    let pid = engine.proc().and_then(|p| p.pid()).expect("running");
    let api = Api::new(&engine.url());
    let health: Health = api.get("/healthz").await.expect("GET /healthz").parse();
    assert_eq!((health.status.as_str(), health.pid), ("ok", Some(pid)));
    let ready: Health = api.get("/readyz").await.expect("GET /readyz").parse();
    assert_eq!((ready.status.as_str(), ready.pid), ("ready", Some(pid)));

    // A disk guard that refuses every write: alive, not ready.
    let dir = tempfile::tempdir().expect("tempdir");
    let full = engine_with_full_disk(dir.path()).await;
    let api = Api::new(&full.url());
    assert!(api.get("/healthz").await.expect("GET /healthz").is_success());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reply = api.get("/readyz").await.expect("GET /readyz");
        if reply.status == 503 {
            reply.assert_error(503, "DISK_FULL");
            break;
        }
        assert!(Instant::now() < deadline, "still ready with a full disk: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An engine that wants more free space than any disk has.
async fn engine_with_full_disk(dir: &Path) -> Engine {
    engine(dir, &["--min-free-disk-mb", "1000000000"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_outlasts_the_head_and_body_timeouts_and_keeps_its_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        engine(dir.path(), &["--head-timeout", SHORT_HEAD_TIMEOUT, "--body-timeout", SHORT_HEAD_TIMEOUT]).await;
    let mut stream = connect(&engine).await;
    let mut buffer = Vec::new();
    // Three times the timeouts: a request in flight is not idle.
    let body = br#"{"queue":"nobody-serves-this","worker_id":"w","max_tasks":1,"wait_ms":3000}"#;
    for _ in 0..2 {
        let mut request = format!(
            "POST /v1/tasks/poll HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("send the poll");
        let answer = read_response(&mut stream, &mut buffer).await.expect("the poll is answered, not cut");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(!answer.closes(), "{answer:?}");
    }
}
