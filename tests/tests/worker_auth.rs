//! The worker's admin API on real processes: a worker started without `--open` refuses its
//! routes without a credential (401 JSON) and with a client or worker credential of the
//! engine (403 JSON), and serves an admin credential of the engine; its `/healthz` stays
//! open; `shopctl` sends its token to the worker too; and `--open` off loopback refuses to
//! start with a one-line reason.

use reqwest::Method;
use serde_json::{json, Value};
use shop_tests::process::{binary, run_to_end, Finished};
use shop_tests::{Api, Engine, EngineOptions, Reply, Worker, WorkerOptions};
use shop_types::auth::CreatedToken;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a process that must refuse to start, or one `shopctl` command, may take.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// The routes that change or reveal the worker's data, with a body for the writes.
fn guarded_routes() -> [(Method, &'static str, Option<Value>); 4] {
    [
        (Method::PUT, "/stock/1", Some(json!({"units": 50}))),
        (Method::GET, "/payments", None),
        (Method::PUT, "/faults", Some(json!({"payment_fail_next": 1}))),
        (Method::GET, "/nowhere", None),
    ]
}

async fn call(base: &str, method: Method, path: &str, body: Option<&Value>, token: Option<&str>) -> Reply {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the worker answers");
    let status = response.status().as_u16();
    let www_authenticate = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("").to_owned());
    let text = response.text().await.expect("a body");
    if status == 401 {
        assert_eq!(www_authenticate.as_deref(), Some("Bearer"), "a 401 names the scheme");
    }
    Reply { status, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

async fn create_token(admin: &Api, body: Value) -> String {
    let reply = admin.post_json("/v1/tokens", &body).await.expect("POST /v1/tokens");
    assert_eq!(reply.status, 201, "token created: {}", reply.text);
    reply.parse::<CreatedToken>().token
}

/// An engine with an admin token file (no `--open`) and a worker without `--open` that polls
/// with a worker token; returns them and the three credentials.
async fn secured(dir: &Path) -> (Engine, Worker, Credentials) {
    let admin_file = dir.join("admin-token");
    let args = vec!["--admin-token-file".into(), admin_file.display().to_string(), "--rate-limit".into(), "off".into()];
    let engine = Engine::start(dir, EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let admin_token = std::fs::read_to_string(&admin_file).expect("the admin token file").trim().to_owned();
    let admin = Api::with_token(&engine.url(), &admin_token);
    let worker_token = create_token(
        &admin,
        json!({"name": "worker", "role": "worker", "queues": ["inventory", "payment", "notification"]}),
    )
    .await;
    let client_token = create_token(&admin, json!({"name": "frontend", "role": "client"})).await;
    let options = WorkerOptions {
        env: vec![("SHOP_WORKER_TOKEN".to_owned(), worker_token.clone())],
        open: false,
        ..WorkerOptions::default()
    };
    let worker = Worker::start(dir, "worker", &engine.url(), options).await;
    (engine, worker, Credentials { admin: admin_token, client: client_token, worker: worker_token })
}

struct Credentials {
    admin: String,
    client: String,
    worker: String,
}

#[tokio::test]
async fn only_an_admin_credential_of_the_engine_opens_the_worker_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, worker, tokens) = secured(dir.path()).await;
    let base = worker.url();

    let health = call(&base, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 200, "/healthz stays open: {}", health.text);
    for (method, path, body) in guarded_routes() {
        let what = format!("{method} {path}");
        call(&base, method.clone(), path, body.as_ref(), None).await.assert_error(401, "UNAUTHENTICATED");
        call(&base, method.clone(), path, body.as_ref(), Some("shop_made_up"))
            .await
            .assert_error(401, "UNAUTHENTICATED");
        for token in [&tokens.client, &tokens.worker] {
            let reply = call(&base, method.clone(), path, body.as_ref(), Some(token)).await;
            reply.assert_error(403, "FORBIDDEN");
        }
        let reply = call(&base, method, path, body.as_ref(), Some(&tokens.admin)).await;
        let expected = if path == "/nowhere" { 404 } else { 200 };
        assert_eq!(reply.status, expected, "{what} with the admin token: {}", reply.text);
    }
    // Nothing the refused calls asked for happened; the admin's did.
    let stock: Vec<Value> = call(&base, Method::GET, "/stock", None, Some(&tokens.admin)).await.parse();
    assert_eq!(stock.iter().find(|p| p["productId"] == 1).map(|p| p["stock"].clone()), Some(json!(50)));
}

fn shopctl(worker: &str, engine: &str, token: Option<&str>, args: &[&str]) -> Finished {
    let mut command = Command::new(binary("shopctl"));
    command.env_remove("SHOP_TOKEN").args(["--engine", engine, "--worker", worker]).args(args);
    if let Some(token) = token {
        command.env("SHOP_TOKEN", token);
    }
    run_to_end(command, EXIT_DEADLINE)
}

#[tokio::test(flavor = "multi_thread")]
async fn shopctl_sends_its_token_to_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, worker, tokens) = secured(dir.path()).await;
    let refused = shopctl(&worker.url(), &engine.url(), None, &["stock", "set", "2", "7"]);
    assert!(!refused.status.success(), "no token, no stock change: {}", refused.stdout);
    assert!(
        refused.stderr.contains("401 UNAUTHENTICATED") && refused.stderr.contains("admin token of the engine"),
        "says what is missing: {}",
        refused.stderr
    );
    let set = shopctl(&worker.url(), &engine.url(), Some(&tokens.admin), &["stock", "set", "2", "7"]);
    assert!(set.status.success(), "stock set with the admin token: {}", set.stderr);
    let listed = shopctl(&worker.url(), &engine.url(), Some(&tokens.admin), &["--json", "payments", "list"]);
    assert!(listed.status.success(), "payments list with the admin token: {}", listed.stderr);
}

#[test]
fn open_is_refused_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(binary("shop-worker"));
    command.args(["--engine", "http://127.0.0.1:1"]).arg("--data-dir").arg(dir.path().join("worker")).args([
        "--listen",
        "0.0.0.0:0",
        "--open",
    ]);
    let finished = run_to_end(command, EXIT_DEADLINE);
    assert!(!finished.status.success(), "the worker must not start open on 0.0.0.0");
    let lines: Vec<&str> = finished.stderr.lines().filter(|l| l.starts_with("shop-worker:")).collect();
    assert_eq!(lines.len(), 1, "one line of reason: {}", finished.stderr);
    assert!(lines[0].contains("--open") && lines[0].contains("loopback"), "a clear reason: {}", lines[0]);
    assert!(!dir.path().join("worker").exists(), "nothing is opened before the check");
}
