//! The client against stand-in servers on loopback: URLs, transport errors, the bounded
//! retry of throttled requests and the raw escape hatch.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn bare_host_port_becomes_an_http_url() -> TestResult {
    assert_eq!(parse_base("127.0.0.1:8080")?.as_str(), "http://127.0.0.1:8080/");
    assert!(parse_base("https://example.com").is_err());
    assert!(parse_base("not a url").is_err());
    Ok(())
}

#[test]
fn segments_and_query_are_encoded() -> TestResult {
    let base = parse_base("http://localhost:1/prefix/")?;
    let url = build_url(&base, &["v1", "workflows", "a/b"], &[("cursor", "x+y=".to_owned())])?;
    assert_eq!(url.as_str(), "http://localhost:1/prefix/v1/workflows/a%2Fb?cursor=x%2By%3D");
    Ok(())
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_naming_the_service() -> TestResult {
    // Port 1 on loopback is privileged and not served here: the connect is refused.
    let client = Client::new(Service::Engine, "127.0.0.1:1", Options::default())?;
    let err = client.health().await.err().ok_or("no error")?;
    assert!(err.is_connect() && err.is_retryable(), "{err:?}");
    assert_eq!(err.to_string(), "cannot reach the engine at http://127.0.0.1:1: is it running?");
    assert_eq!(client.health_pid().await, None);
    Ok(())
}

/// A server answering `throttled` times 429 with `Retry-After: 0`, then 200 `{"ok":true}`.
async fn throttling_server(throttled: usize) -> Result<(String, Arc<AtomicUsize>), std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = counter.fetch_add(1, SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let (status, body) = if n < throttled {
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
async fn a_throttled_request_is_sent_again_at_most_max_retries_times_and_the_hook_hears_of_each() -> TestResult {
    let retries = usize::try_from(retry::MAX_RETRIES)?;
    let told = Arc::new(AtomicUsize::new(0));
    let hook = Arc::clone(&told);
    let options = Options {
        retry: Retry::throttled(move |retrying| {
            assert_eq!(retrying.answer, "429 RATE_LIMITED");
            hook.fetch_add(1, SeqCst);
        }),
        ..Options::default()
    };
    let (url, seen) = throttling_server(retries).await?;
    let client = Client::new(Service::Worker, &url, options.clone())?;
    let reply = client.get::<serde_json::Value>(&["stock"], &[]).await?;
    assert_eq!(reply.raw()?, serde_json::json!({"ok": true}));
    assert_eq!(seen.load(SeqCst), retries + 1);
    assert_eq!(told.load(SeqCst), retries);

    let (url, seen) = throttling_server(retries + 1).await?;
    let client = Client::new(Service::Engine, &url, options)?;
    let err = client.get::<serde_json::Value>(&["x"], &[]).await.err().ok_or("no error")?;
    assert_eq!(err.to_string(), "the engine refused GET /x: 429 RATE_LIMITED: slow down");
    assert_eq!(seen.load(SeqCst), retries + 1, "one try and MAX_RETRIES retries");
    Ok(())
}

#[tokio::test]
async fn without_the_retry_option_a_throttled_answer_is_final() -> TestResult {
    let (url, seen) = throttling_server(1).await?;
    let client = Client::new(Service::Engine, &url, Options::default())?;
    let err = client.get::<serde_json::Value>(&["x"], &[]).await.err().ok_or("no error")?;
    assert_eq!((err.status(), err.code()), (Some(StatusCode::TOO_MANY_REQUESTS), Some("RATE_LIMITED")));
    assert!(matches!(err, Error::Status { retry_after: Some(0), .. }), "{err:?}");
    assert_eq!(seen.load(SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn send_hands_back_any_answer_as_it_is() -> TestResult {
    let (url, _) = throttling_server(1).await?;
    let client = Client::new(Service::Engine, &url, Options::default())?;
    let reply = client.send(Method::POST, "/anything?x=1", Some("text/plain"), b"{not json".to_vec(), &[]).await?;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("0"));
    assert!(reply.body.starts_with(b"{\"error\""));
    Ok(())
}
