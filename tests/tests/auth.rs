//! Authentication and roles on real engines started without `--open`: nothing but
//! `/healthz` answers without a credential; client, worker and admin tokens reach only their
//! routes (and a worker only its queues, also when it reports a task of another queue);
//! revocation and expiry apply at once; JWTs signed with the engine's key work and forged or
//! expired ones do not; the rate limit answers 429 with `Retry-After`; `--open` is refused
//! off loopback; and the whole order saga runs with auth on.

use serde_json::{json, Value};
use shop_tests::process::{binary, run_to_end};
use shop_tests::{order_body, Api, Engine, EngineOptions, Reply, Worker, WorkerOptions, CONFIRMED};
use shop_types::api::{ActivityTask, PollResponse};
use shop_types::auth::{CreatedToken, TokenList};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The HS256 key the secured engines accept JWTs signed with.
const JWT_KEY: &str = "auth-test-key-0123456789abcdef0123456789";
/// How long a test waits for an expired token to be refused.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(10);
/// How long the engine's exit is waited for when it must refuse to start.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// An engine without `--open`, with an admin token file, a JWT key and the given extra flags
/// (rate limits off unless they say otherwise); returns it and its admin API client.
async fn secured_engine(dir: &Path, extra: &[&str]) -> (Engine, Api) {
    let (engine, admin_token) = shop_tests::process::secured_engine(dir, JWT_KEY, extra).await;
    let admin = Api::with_token(&engine.url(), &admin_token);
    (engine, admin)
}

/// Creates a token through `admin`; returns its id and secret.
async fn create_token(admin: &Api, body: Value) -> (String, String) {
    let reply = admin.post_json("/v1/tokens", &body).await.expect("POST /v1/tokens");
    assert_eq!(reply.status, 201, "token created: {}", reply.text);
    let created: CreatedToken = reply.parse();
    (created.view.id, created.token)
}

fn poll_body(queue: &str) -> Value {
    json!({"queue": queue, "worker_id": "auth-test", "max_tasks": 1, "wait_ms": 0})
}

fn jwt(claims: Value, key: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("encode a JWT")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A raw request, to see headers the [`Api`] client does not keep.
async fn raw(method: reqwest::Method, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.body("{}").send().await.expect("the engine answers")
}

#[tokio::test]
async fn without_a_credential_only_healthz_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every route is tried with three bad credentials from one address: far more failures
    // than the throttle allows (hostile_clients.rs tests it), so it is off here.
    let (engine, _) = secured_engine(dir.path(), &["--max-auth-failures", "0"]).await;
    let base = engine.url();
    let health = raw(reqwest::Method::GET, &format!("{base}/healthz"), None).await;
    assert_eq!(health.status(), 200);

    use reqwest::Method;
    let routes = [
        (Method::GET, "/v1/stats"),
        (Method::GET, "/v1/workflows"),
        (Method::POST, "/v1/workflows"),
        (Method::GET, "/v1/workflows/w1"),
        (Method::GET, "/v1/workflows/w1/history"),
        (Method::POST, "/v1/workflows/w1/cancel"),
        (Method::POST, "/v1/workflows/w1/terminate"),
        (Method::GET, "/v1/definitions"),
        (Method::POST, "/v1/definitions"),
        (Method::POST, "/v1/tasks/poll"),
        (Method::POST, "/v1/tasks/complete"),
        (Method::POST, "/v1/tasks/fail"),
        (Method::POST, "/v1/tasks/heartbeat"),
        (Method::POST, "/v1/tasks/report"),
        (Method::GET, "/v1/tokens"),
        (Method::POST, "/v1/tokens"),
        (Method::POST, "/v1/tokens/tok_x/revoke"),
        (Method::GET, "/api/orders"),
        (Method::POST, "/api/orders"),
        (Method::GET, "/api/orders/o1"),
        (Method::POST, "/api/orders/o1/cancel"),
        (Method::GET, "/no/such/route"),
    ];
    for token in [None, Some("shop_not-a-real-token"), Some("a.b.c")] {
        for (method, path) in &routes {
            let response = raw(method.clone(), &format!("{base}{path}"), token).await;
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok());
            assert_eq!(challenge, Some("Bearer"), "{method} {path}");
            let body: Value = response.json().await.expect("a JSON error");
            assert_eq!(body.pointer("/error/code").and_then(Value::as_str), Some("UNAUTHENTICATED"));
        }
    }
}

#[tokio::test]
async fn a_client_token_places_and_reads_orders_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin) = secured_engine(dir.path(), &[]).await;
    let (_, secret) = create_token(&admin, json!({"name": "shop-frontend", "role": "client"})).await;
    let client = Api::with_token(&engine.url(), &secret);

    let id = client.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    assert_eq!(client.order(&id).await.order_id, id);
    for path in [
        "/api/orders".to_owned(),
        "/v1/workflows".into(),
        format!("/v1/workflows/{id}/history"),
        "/v1/definitions".into(),
    ] {
        let reply = client.get(&path).await.expect("GET");
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }
    let forbidden = [
        ("/v1/tasks/poll".to_owned(), poll_body("inventory")),
        ("/v1/tokens".to_owned(), json!({"name": "x", "role": "admin"})),
        (format!("/v1/workflows/{id}/terminate"), json!({})),
        ("/v1/workflows".to_owned(), json!({"workflow_type": "order", "input": {}})),
        (format!("/api/orders/{id}/cancel"), json!({})),
    ];
    for (path, body) in &forbidden {
        client.post_json(path, body).await.expect("POST").assert_error(403, "FORBIDDEN");
    }
    client.get("/v1/tokens").await.expect("GET").assert_error(403, "FORBIDDEN");
    client.get("/v1/stats").await.expect("GET").assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn a_worker_token_serves_only_its_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin) = secured_engine(dir.path(), &[]).await;
    let (_, secret) = create_token(&admin, json!({"name": "payments", "role": "worker", "queues": ["payment"]})).await;
    let worker = Api::with_token(&engine.url(), &secret);

    let reply = worker.post_json("/v1/tasks/poll", &poll_body("payment")).await.expect("poll");
    assert_eq!(reply.status, 200, "{}", reply.text);
    worker.post_json("/v1/tasks/poll", &poll_body("inventory")).await.expect("poll").assert_error(403, "FORBIDDEN");
    let order = order_body(None, &[(1, 1)], "CREDIT_CARD");
    worker.place_order(&order).await.expect("POST").assert_error(403, "FORBIDDEN");
    worker.get("/api/orders").await.expect("GET").assert_error(403, "FORBIDDEN");
    worker.get("/v1/tokens").await.expect("GET").assert_error(403, "FORBIDDEN");

    // A task dispatched on `inventory` (the saga's first step), taken by the admin: the
    // payment worker may not report it, neither alone nor in a batch, and nothing changes.
    let id = admin.place_order_ok(&order).await;
    let task = poll_one(&admin, "inventory").await;
    assert_eq!(task.workflow_id.as_str(), id);
    let token = json!(task.token);
    worker
        .post_json("/v1/tasks/complete", &json!({"token": token, "output": {}}))
        .await
        .expect("complete")
        .assert_error(403, "FORBIDDEN");
    worker.post_json("/v1/tasks/heartbeat", &json!({"token": token})).await.expect("hb").assert_error(403, "FORBIDDEN");
    let batch = json!({"reports": [{"token": token, "outcome": {"completed": {"output": {}}}}]});
    worker.post_json("/v1/tasks/report", &batch).await.expect("report").assert_error(403, "FORBIDDEN");
    let history = admin.history(&id).await;
    assert!(
        history.iter().all(|event| event.event.name() != "StepCompleted"),
        "a refused report changes nothing: {history:?}"
    );
}

/// Polls `queue` until one task is handed out.
async fn poll_one(api: &Api, queue: &str) -> ActivityTask {
    let body = json!({"queue": queue, "worker_id": "auth-test", "max_tasks": 1, "wait_ms": 5000});
    let deadline = Instant::now() + EXPIRY_DEADLINE;
    loop {
        let reply = api.post_json("/v1/tasks/poll", &body).await.expect("poll");
        assert_eq!(reply.status, 200, "{}", reply.text);
        if let Some(task) = reply.parse::<PollResponse>().tasks.pop() {
            return task;
        }
        assert!(Instant::now() < deadline, "no task on {queue}");
    }
}

#[tokio::test]
async fn admins_manage_tokens_and_revocation_and_expiry_apply_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin) = secured_engine(dir.path(), &[]).await;
    let (short_id, short) = create_token(&admin, json!({"name": "short", "role": "client", "ttl": "1s"})).await;
    let (revoked_id, revoked) = create_token(&admin, json!({"name": "doomed", "role": "client"})).await;
    let (_, admin2) = create_token(&admin, json!({"name": "second admin", "role": "admin"})).await;

    let list = admin.get("/v1/tokens").await.expect("list");
    assert_eq!(list.status, 200, "{}", list.text);
    let tokens: TokenList = list.parse();
    let ids: Vec<&str> = tokens.tokens.iter().map(|t| t.id.as_str()).collect();
    assert!(ids.contains(&short_id.as_str()) && ids.contains(&revoked_id.as_str()), "{ids:?}");
    for secret in [&short, &revoked, &admin2] {
        assert!(!list.text.contains(secret.as_str()), "a list never shows a secret");
    }
    assert!(!list.text.contains("\"token\""), "{}", list.text);

    // A created admin can act as one, and a request may not set up a bad token.
    let second = Api::with_token(&engine.url(), &admin2);
    assert_eq!(second.get("/v1/tokens").await.expect("list").status, 200);
    admin
        .post_json("/v1/tokens", &json!({"name": "w", "role": "worker"}))
        .await
        .expect("POST")
        .assert_error(422, "INVALID_VALUE");

    let doomed = Api::with_token(&engine.url(), &revoked);
    assert_eq!(doomed.get("/api/orders").await.expect("GET").status, 200);
    let reply = admin.post_json(&format!("/v1/tokens/{revoked_id}/revoke"), &json!({})).await.expect("revoke");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["revoked"], json!(true));
    doomed.get("/api/orders").await.expect("GET").assert_error(401, "UNAUTHENTICATED");
    admin.post_json("/v1/tokens/tok_nope/revoke", &json!({})).await.expect("revoke").assert_error(404, "NOT_FOUND");

    let expiring = Api::with_token(&engine.url(), &short);
    let deadline = Instant::now() + EXPIRY_DEADLINE;
    loop {
        let reply: Reply = expiring.get("/api/orders").await.expect("GET");
        if reply.status == 401 {
            reply.assert_error(401, "UNAUTHENTICATED");
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(Instant::now() < deadline, "a 1s token still works after {EXPIRY_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn tokens_and_revocations_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut engine, admin) = secured_engine(dir.path(), &[]).await;
    let (_, kept) = create_token(&admin, json!({"name": "kept", "role": "client"})).await;
    let (gone_id, gone) = create_token(&admin, json!({"name": "gone", "role": "client"})).await;
    let reply = admin.post_json(&format!("/v1/tokens/{gone_id}/revoke"), &json!({})).await.expect("revoke");
    assert_eq!(reply.status, 200, "{}", reply.text);
    engine.restart().await;
    assert_eq!(Api::with_token(&engine.url(), &kept).get("/api/orders").await.expect("GET").status, 200);
    Api::with_token(&engine.url(), &gone).get("/api/orders").await.expect("GET").assert_error(401, "UNAUTHENTICATED");
    // The admin token file is read again, not replaced.
    assert_eq!(admin.get("/v1/tokens").await.expect("GET").status, 200);
}

#[tokio::test]
async fn jwts_signed_with_the_engine_key_are_accepted_and_others_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, _) = secured_engine(dir.path(), &[]).await;
    let url = engine.url();

    let client = Api::with_token(&url, &jwt(json!({"role": "client", "exp": now_s() + 300}), JWT_KEY));
    assert_eq!(client.get("/api/orders").await.expect("GET").status, 200);
    client.get("/v1/tokens").await.expect("GET").assert_error(403, "FORBIDDEN");

    let worker = jwt(json!({"role": "worker", "queues": ["payment"], "exp": now_s() + 300}), JWT_KEY);
    let worker = Api::with_token(&url, &worker);
    assert_eq!(worker.post_json("/v1/tasks/poll", &poll_body("payment")).await.expect("poll").status, 200);
    worker.post_json("/v1/tasks/poll", &poll_body("inventory")).await.expect("poll").assert_error(403, "FORBIDDEN");

    let forged = jwt(json!({"role": "admin", "exp": now_s() + 300}), "some-other-key-0123456789abcdef0123");
    let expired = jwt(json!({"role": "client", "exp": now_s() - 300}), JWT_KEY);
    let no_expiry = jwt(json!({"role": "client"}), JWT_KEY);
    let not_yet = jwt(json!({"role": "client", "nbf": now_s() + 3600, "exp": now_s() + 7200}), JWT_KEY);
    let for_a_year = jwt(json!({"role": "client", "exp": now_s() + 365 * 86_400}), JWT_KEY);
    for token in [forged, expired, no_expiry, not_yet, for_a_year] {
        Api::with_token(&url, &token).get("/api/orders").await.expect("GET").assert_error(401, "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after_and_workers_are_exempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin) = secured_engine(dir.path(), &["--rate-limit", "5/m", "--rate-burst", "5"]).await;
    let url = engine.url();
    // The admin's own bucket: one request spent on each token made.
    let (_, client) = create_token(&admin, json!({"name": "c", "role": "client"})).await;
    let (_, worker) = create_token(&admin, json!({"name": "w", "role": "worker", "queues": ["payment"]})).await;

    for _ in 0..5 {
        let response = raw(reqwest::Method::GET, &format!("{url}/api/orders"), Some(&client)).await;
        assert_eq!(response.status(), 200);
    }
    let response = raw(reqwest::Method::GET, &format!("{url}/api/orders"), Some(&client)).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body.pointer("/error/code").and_then(Value::as_str), Some("RATE_LIMITED"));

    let worker = Api::with_token(&url, &worker);
    for _ in 0..20 {
        assert_eq!(worker.post_json("/v1/tasks/poll", &poll_body("payment")).await.expect("poll").status, 200);
    }
}

#[tokio::test]
async fn an_open_engine_limits_by_client_address_but_not_its_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = vec!["--rate-limit".to_owned(), "3/m".to_owned()];
    let engine = Engine::start(dir.path(), EngineOptions { args, ..EngineOptions::default() }).await;
    let api = Api::new(&engine.url());
    for _ in 0..3 {
        assert_eq!(api.get("/v1/workflows").await.expect("GET").status, 200);
    }
    api.get("/v1/workflows").await.expect("GET").assert_error(429, "RATE_LIMITED");
    for _ in 0..10 {
        assert_eq!(api.post_json("/v1/tasks/poll", &poll_body("payment")).await.expect("poll").status, 200);
    }
}

#[test]
fn open_is_refused_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(binary("shop-engine"));
    command.arg("--data-dir").arg(dir.path().join("engine")).args(["--listen", "0.0.0.0:0", "--open"]);
    let finished = run_to_end(command, EXIT_DEADLINE);
    assert!(!finished.status.success(), "the engine must not start open on 0.0.0.0");
    assert!(
        finished.stderr.contains("--open") && finished.stderr.contains("loopback"),
        "a clear reason: {}",
        finished.stderr
    );
    assert!(!dir.path().join("engine").exists(), "nothing is opened before the check");
}

#[tokio::test]
async fn the_order_saga_runs_with_auth_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin) = secured_engine(dir.path(), &[]).await;
    let (_, worker_token) = create_token(
        &admin,
        json!({"name": "shop-worker", "role": "worker", "queues": ["inventory", "payment", "notification"]}),
    )
    .await;
    let (_, client_token) = create_token(&admin, json!({"name": "frontend", "role": "client", "ttl": "1h"})).await;
    let options =
        WorkerOptions { env: vec![("SHOP_WORKER_TOKEN".to_owned(), worker_token)], ..WorkerOptions::default() };
    let _worker = Worker::start(dir.path(), "worker", &engine.url(), options).await;
    let client = Api::with_token(&engine.url(), &client_token);
    let id = client.place_order_ok(&order_body(None, &[(1, 2)], "CREDIT_CARD")).await;
    let order = client.wait_order(&id).await;
    assert_eq!(order.status, CONFIRMED, "{order:?}");
}
