//! The signaler role end to end, on a real engine started without `--open`: a signaler
//! token created with `shopctl token create --role signaler` sends the signals it names to
//! runs of the workflow types it names (200), and nothing else: another signal is 403 before
//! any lookup (an unknown run too), a run of another type 403, an unknown run of a signal it
//! may send 404, every other route 403, and once revoked 401. A signaler JWT carries the same
//! claims. Clients still may not signal; admins still may signal anything.
//!
//! The runs sleep for an hour before their wait opens, so no worker is needed and nothing
//! finishes while the test runs (a signal sent before its wait opens is recorded and
//! buffered).

use serde_json::{json, Value};
use shop_tests::process::{binary, run_to_end};
use shop_tests::{Api, Engine, Reply};
use shop_types::auth::CreatedToken;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The HS256 key the engine accepts JWTs signed with.
const JWT_KEY: &str = "signaler-test-key-0123456789abcdef012345";
/// How long a `shopctl` run may take before it is killed.
const SHOPCTL_DEADLINE: Duration = Duration::from_secs(30);

/// A checkout that waits for the payment provider's word; `TYPE` is replaced.
const DEFINITION: &str = r#"
name = "TYPE"
version = 1

[signals]
payment_confirmed = {}
payment_failed = {}
transfer_received = {}

[[steps]]
name = "nap"
sleep = "1h"

[[steps]]
name = "await_payment"
wait_for = ["payment_confirmed", "payment_failed"]
fail_on = ["payment_failed"]
timeout = "1h"
"#;

/// The workflow type the signaler may signal, and one it may not.
const ALLOWED_TYPE: &str = "psp_checkout";
const OTHER_TYPE: &str = "refund_checkout";

async fn secured_engine(dir: &Path) -> (Engine, Api, String) {
    let (engine, admin_token) = shop_tests::process::secured_engine(dir, JWT_KEY, &[]).await;
    let admin = Api::with_token(&engine.url(), &admin_token);
    (engine, admin, admin_token)
}

async fn signal(api: &Api, id: &str, name: &str, key: &str) -> Reply {
    api.post_raw(
        &format!("/v1/workflows/{id}/signals/{name}"),
        "application/json",
        b"{}".to_vec(),
        &[("Idempotency-Key", key)],
    )
    .await
    .expect("the engine answers a signal")
}

fn shopctl(engine: &Engine, token: &str, args: &[&str]) -> shop_tests::process::Finished {
    let mut command = Command::new(binary("shopctl"));
    command.arg("--engine").arg(engine.url()).arg("--token").arg(token).args(args);
    run_to_end(command, SHOPCTL_DEADLINE)
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_KEY.as_bytes()),
    )
    .expect("encode a JWT")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Asserts `signaler` may send `payment_confirmed` to `allowed` and nothing else.
async fn assert_confined(signaler: &Api, allowed: &str, other: &str, key: &str) {
    let reply = signal(signaler, allowed, "payment_confirmed", key).await;
    assert_eq!(reply.status, 200, "allowed signal: {}", reply.text);
    assert_eq!(reply.body["outcome"], json!("recorded"));
    // A signal the credential does not name: 403, also where the run is of its type, and
    // before any lookup (an unknown run is not revealed as unknown).
    signal(signaler, allowed, "transfer_received", key).await.assert_error(403, "FORBIDDEN");
    signal(signaler, "no-such-run", "transfer_received", key).await.assert_error(403, "FORBIDDEN");
    // A run of a type the credential does not name.
    signal(signaler, other, "payment_confirmed", key).await.assert_error(403, "FORBIDDEN");
    // An unknown run, for a signal it may send: 404, as for anyone who may send it.
    signal(signaler, "no-such-run", "payment_confirmed", key).await.assert_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signaler_sends_only_its_signals_to_its_workflow_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin, admin_token) = secured_engine(dir.path()).await;
    for workflow_type in [ALLOWED_TYPE, OTHER_TYPE] {
        let reply = admin.register_definition(&DEFINITION.replace("TYPE", workflow_type)).await;
        assert!(reply.is_success(), "registers {workflow_type}: {} {}", reply.status, reply.text);
    }
    for (workflow_type, id) in [(ALLOWED_TYPE, "checkout-1"), (OTHER_TYPE, "refund-1")] {
        let reply = admin.start_workflow(workflow_type, Some(id), json!({})).await;
        assert_eq!(reply.status, 202, "{id}: {}", reply.text);
    }

    // The token, made with shopctl as an operator would; the lists are required.
    let made = shopctl(
        &engine,
        &admin_token,
        &[
            "token",
            "create",
            "--role",
            "signaler",
            "--signal",
            "payment_confirmed",
            "--signal",
            "payment_failed",
            "--workflow-type",
            ALLOWED_TYPE,
            "--name",
            "psp",
            "--json",
        ],
    );
    assert!(made.status.success(), "shopctl token create: {}", made.stderr);
    let created: CreatedToken = serde_json::from_str(&made.stdout).expect("the created token as JSON");
    assert_eq!(created.view.signals, vec!["payment_confirmed", "payment_failed"]);
    let listed = shopctl(&engine, &admin_token, &["token", "list"]);
    assert!(listed.stdout.contains("payment_confirmed,payment_failed -> psp_checkout"), "{}", listed.stdout);
    let refused = shopctl(&engine, &admin_token, &["token", "create", "--role", "signaler", "--signal", "x"]);
    assert!(!refused.status.success(), "a signaler without workflow types is refused");

    let signaler = Api::with_token(&engine.url(), &created.token);
    assert_confined(&signaler, "checkout-1", "refund-1", "psp-1").await;

    // Every other route: 403.
    for path in ["/v1/workflows", "/v1/workflows/checkout-1", "/v1/workflows/checkout-1/history", "/v1/tokens"] {
        signaler.get(path).await.expect("GET").assert_error(403, "FORBIDDEN");
    }
    for path in ["/v1/definitions", "/api/orders", "/api/orders/checkout-1", "/v1/stats"] {
        signaler.get(path).await.expect("GET").assert_error(403, "FORBIDDEN");
    }
    for path in [
        "/v1/workflows",
        "/v1/workflows/checkout-1/cancel",
        "/v1/workflows/checkout-1/terminate",
        "/v1/workflows/checkout-1/resume",
        "/v1/tasks/poll",
        "/v1/tasks/report",
        "/v1/tokens",
        "/v1/definitions",
        "/api/orders",
    ] {
        signaler.post_json(path, &json!({})).await.expect("POST").assert_error(403, "FORBIDDEN");
    }

    // A signaler JWT with the same claims is confined the same way.
    let claims = json!({
        "role": "signaler",
        "signals": ["payment_confirmed"],
        "workflow_types": [ALLOWED_TYPE],
        "exp": now_s() + 600,
    });
    let by_jwt = Api::with_token(&engine.url(), &jwt(claims));
    assert_confined(&by_jwt, "checkout-1", "refund-1", "psp-jwt").await;
    by_jwt.get("/v1/workflows").await.expect("GET").assert_error(403, "FORBIDDEN");

    // A client may not signal; an admin may signal any run.
    let reply = admin.post_json("/v1/tokens", &json!({"name": "shop", "role": "client"})).await.expect("POST");
    let client: CreatedToken = reply.parse();
    let client = Api::with_token(&engine.url(), &client.token);
    signal(&client, "checkout-1", "payment_confirmed", "client-1").await.assert_error(403, "FORBIDDEN");
    assert_eq!(signal(&admin, "refund-1", "payment_confirmed", "admin-1").await.status, 200);

    // Revoked: 401 on the one route it had.
    let revoked = shopctl(&engine, &admin_token, &["token", "revoke", &created.view.id]);
    assert!(revoked.status.success(), "shopctl token revoke: {}", revoked.stderr);
    signal(&signaler, "checkout-1", "payment_confirmed", "psp-2").await.assert_error(401, "UNAUTHENTICATED");

    // What the allowed signals did: recorded in the run's history, once per key.
    let history = admin.history("checkout-1").await;
    let signals = history.iter().filter(|e| e.event.name() == "SignalReceived").count();
    assert_eq!(signals, 2, "the token's and the JWT's signal: {history:?}");
}
