//! Unit tests of credentials: tokens, the admin file, JWTs.

use super::*;
use crate::store::Durability;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

const JWT_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

struct Fixture {
    auth: Authenticator,
    store: Arc<Store>,
    clock: Arc<TestClock>,
    dir: tempfile::TempDir,
}

fn fixture(options: impl FnOnce(&Path) -> AuthOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<Store> = Arc::new(
        crate::store::SledStore::open(&dir.path().join("store"), Durability::ProcessCrash, None).expect("opens"),
    );
    let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
    let core = running_core(store.clone(), clock.clone());
    let auth = Authenticator::new(&options(dir.path()), store.as_ref(), core, clock.clone()).expect("starts");
    Fixture { auth, store, clock, dir }
}

/// A core on its own thread, as the engine runs it: token writes go through it. It stops
/// when the last handle (the authenticator's) is dropped.
fn running_core(store: Arc<Store>, clock: Arc<TestClock>) -> Handle {
    let registry = Arc::new(RwLock::new(crate::registry::Registry::default()));
    let (core, handle) =
        crate::core::Core::recover(store, registry, clock, crate::core::Limits::default()).expect("recovers");
    std::thread::spawn(move || core.run());
    handle
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn request(role: Role, queues: &[&str], ttl: Option<&str>) -> CreateTokenRequest {
    CreateTokenRequest {
        name: format!("{role}-test"),
        role,
        queues: queues.iter().map(|q| QueueName::parse(*q).expect("valid")).collect(),
        signals: Vec::new(),
        workflow_types: Vec::new(),
        ttl: ttl.map(str::to_owned),
    }
}

fn signaler(signals: &[&str], types: &[&str]) -> CreateTokenRequest {
    CreateTokenRequest {
        signals: signals.iter().map(|s| (*s).to_owned()).collect(),
        workflow_types: types.iter().map(|t| WorkflowType::parse(*t).expect("valid")).collect(),
        ..request(Role::Signaler, &[], None)
    }
}

fn order() -> WorkflowType {
    WorkflowType::parse("order").expect("valid")
}

fn jwt(claims: serde_json::Value, key: &[u8]) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(key))
        .expect("encodes")
}

#[tokio::test]
async fn a_created_token_authenticates_with_its_role_and_queues_only() {
    let f = fixture(|_| AuthOptions::default());
    let (view, secret) = f.auth.create(request(Role::Worker, &["payment"], None)).await.expect("creates");
    assert!(secret.starts_with(TOKEN_PREFIX));
    let principal = f.auth.authenticate(Some(&bearer(&secret))).expect("accepted");
    assert_eq!(principal.role, Role::Worker);
    assert!(principal.may_serve(&QueueName::parse("payment").expect("valid")));
    assert!(!principal.may_serve(&QueueName::parse("inventory").expect("valid")));
    // Workers are never rate limited.
    assert_eq!(principal.rate_key, None);
    assert_eq!(f.auth.list().expect("lists"), vec![view]);
    assert_eq!(f.auth.authenticate(Some(&bearer("shop_nope"))), Err(Denied::Unknown));
    assert_eq!(f.auth.authenticate(None), Err(Denied::Missing));
    assert_eq!(f.auth.authenticate(Some(b"Basic abc")), Err(Denied::Malformed));
}

#[tokio::test]
async fn only_the_digest_is_stored_and_tokens_survive_a_restart() {
    let f = fixture(|_| AuthOptions::default());
    let (_, secret) = f.auth.create(request(Role::Client, &[], None)).await.expect("creates");
    let stored = f.store.tokens().expect("reads");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, digest(&secret));
    let restarted = Authenticator::new(&AuthOptions::default(), f.store.as_ref(), f.auth.core.clone(), f.clock.clone())
        .expect("restarts");
    assert_eq!(restarted.authenticate(Some(&bearer(&secret))).map(|p| p.role), Ok(Role::Client));
}

#[tokio::test]
async fn expiry_and_revocation_take_effect_at_once() {
    let f = fixture(|_| AuthOptions::default());
    let (_, expiring) = f.auth.create(request(Role::Client, &[], Some("1s"))).await.expect("creates");
    let (view, revoked) = f.auth.create(request(Role::Admin, &[], None)).await.expect("creates");
    assert!(f.auth.authenticate(Some(&bearer(&expiring))).is_ok());
    f.clock.0.fetch_add(1_000, Ordering::SeqCst);
    assert_eq!(f.auth.authenticate(Some(&bearer(&expiring))), Err(Denied::Expired));

    assert!(f.auth.authenticate(Some(&bearer(&revoked))).is_ok());
    assert!(f.auth.revoke(&view.id).await.expect("revokes").revoked);
    assert_eq!(f.auth.authenticate(Some(&bearer(&revoked))), Err(Denied::Revoked));
    assert!(f.auth.revoke(&view.id).await.is_ok(), "revoking twice is not an error");
    assert!(matches!(f.auth.revoke("tok_missing").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn creation_requests_are_checked() {
    let f = fixture(|_| AuthOptions::default());
    for bad in [
        request(Role::Worker, &[], None),
        request(Role::Client, &["payment"], None),
        request(Role::Client, &[], Some("0s")),
        request(Role::Client, &[], Some("soon")),
        request(Role::Client, &[], Some("11000days")),
        CreateTokenRequest { name: " ".into(), ..request(Role::Client, &[], None) },
    ] {
        assert!(matches!(f.auth.create(bad.clone()).await, Err(Error::Invalid(_))), "{bad:?} accepted");
    }
}

#[test]
fn the_admin_token_file_is_created_private_then_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin-token");
    let created = load_or_create_admin_token(&path).expect("creates");
    assert_eq!(load_or_create_admin_token(&path).expect("reads"), created);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(&path, "short\n").expect("writes");
    assert!(matches!(load_or_create_admin_token(&path), Err(Error::BadFile { .. })));
}

#[test]
fn the_admin_file_token_is_an_admin() {
    let f = fixture(|dir| AuthOptions { admin_token_file: Some(dir.join("admin")), ..AuthOptions::default() });
    let token = std::fs::read_to_string(f.dir.path().join("admin")).expect("created");
    let principal = f.auth.authenticate(Some(&bearer(token.trim()))).expect("accepted");
    assert_eq!(principal.role, Role::Admin);
    assert!(principal.serves_every_queue());
}

#[test]
fn jwts_are_checked_for_signature_expiry_and_role() {
    let f = fixture(|dir| {
        let key = dir.join("jwt.key");
        std::fs::write(&key, [JWT_KEY, b"\n"].concat()).expect("writes");
        AuthOptions { jwt_secret_file: Some(key), ..AuthOptions::default() }
    });
    let now_s = f.clock.now_ms() / 1000;
    let good = jwt(serde_json::json!({"role": "client", "exp": now_s + 60}), JWT_KEY);
    let principal = f.auth.authenticate(Some(&bearer(&good))).expect("accepted");
    assert_eq!(principal.role, Role::Client);
    assert!(principal.rate_key.is_some());

    let worker = jwt(serde_json::json!({"role": "worker", "queues": ["payment"], "exp": now_s + 60}), JWT_KEY);
    let principal = f.auth.authenticate(Some(&bearer(&worker))).expect("accepted");
    assert!(principal.may_serve(&QueueName::parse("payment").expect("valid")));

    let forged = jwt(serde_json::json!({"role": "admin", "exp": now_s + 60}), b"not-the-key-not-the-key-not-the-key");
    assert!(matches!(f.auth.authenticate(Some(&bearer(&forged))), Err(Denied::BadJwt(_))));
    let expired = jwt(serde_json::json!({"role": "client", "exp": now_s - 60}), JWT_KEY);
    assert_eq!(f.auth.authenticate(Some(&bearer(&expired))), Err(Denied::Expired));
    let no_exp = jwt(serde_json::json!({"role": "client"}), JWT_KEY);
    assert!(matches!(f.auth.authenticate(Some(&bearer(&no_exp))), Err(Denied::BadJwt(_))));
    let bad_role = jwt(serde_json::json!({"role": "root", "exp": now_s + 60}), JWT_KEY);
    assert!(matches!(f.auth.authenticate(Some(&bearer(&bad_role))), Err(Denied::BadJwt(_))));
}

#[test]
fn a_jwt_names_its_customer_and_every_credential_its_subject() {
    let f = fixture(|dir| {
        let key = dir.join("jwt.key");
        std::fs::write(&key, [JWT_KEY, b"\n"].concat()).expect("writes");
        AuthOptions { jwt_secret_file: Some(key), ..AuthOptions::default() }
    });
    let now_s = f.clock.now_ms() / 1000;
    let alice = jwt(serde_json::json!({"role": "client", "sub": "alice", "exp": now_s + 60}), JWT_KEY);
    let principal = f.auth.authenticate(Some(&bearer(&alice))).expect("accepted");
    assert_eq!(principal.subject.customer().map(|c| c.as_str()), Some("alice"));
    assert_eq!(principal.subject.to_string(), "jwt:alice");
    let anonymous = jwt(serde_json::json!({"role": "client", "exp": now_s + 60}), JWT_KEY);
    let principal = f.auth.authenticate(Some(&bearer(&anonymous))).expect("accepted");
    assert_eq!(principal.subject, Subject::Jwt { sub: None });
    assert_eq!(principal.subject.customer(), None);
    for bad in ["", "a b", "../x", &"x".repeat(129)] {
        let token = jwt(serde_json::json!({"role": "client", "sub": bad, "exp": now_s + 60}), JWT_KEY);
        assert!(matches!(f.auth.authenticate(Some(&bearer(&token))), Err(Denied::BadJwt(_))), "sub {bad:?}");
    }
    assert_eq!(Principal::open(None).subject.to_string(), "open");
}

#[test]
fn jwts_honour_nbf_and_a_longest_lifetime() {
    let f = fixture(|dir| {
        let key = dir.join("jwt.key");
        std::fs::write(&key, [JWT_KEY, b"\n"].concat()).expect("writes");
        AuthOptions { jwt_secret_file: Some(key), ..AuthOptions::default() }
    });
    let now_s = f.clock.now_ms() / 1000;
    let later = jwt(serde_json::json!({"role": "client", "exp": now_s + 7200, "nbf": now_s + 3600}), JWT_KEY);
    assert_eq!(f.auth.authenticate(Some(&bearer(&later))), Err(Denied::NotYetValid));
    // Within the leeway, and in the past, `nbf` lets the token through.
    for nbf in [now_s + 1, now_s - 500] {
        let token = jwt(serde_json::json!({"role": "client", "exp": now_s + 60, "nbf": nbf}), JWT_KEY);
        assert!(f.auth.authenticate(Some(&bearer(&token))).is_ok(), "nbf {nbf}");
    }
    let longest = MAX_JWT_LIFETIME.as_secs();
    let at_limit = jwt(serde_json::json!({"role": "client", "exp": now_s + longest}), JWT_KEY);
    assert!(f.auth.authenticate(Some(&bearer(&at_limit))).is_ok());
    let beyond = jwt(serde_json::json!({"role": "client", "exp": now_s + longest + 60}), JWT_KEY);
    assert!(matches!(f.auth.authenticate(Some(&bearer(&beyond))), Err(Denied::BadJwt(_))));
}

#[test]
fn jwts_are_refused_without_a_key() {
    let f = fixture(|_| AuthOptions::default());
    let token = jwt(serde_json::json!({"role": "client", "exp": u32::MAX}), JWT_KEY);
    assert_eq!(f.auth.authenticate(Some(&bearer(&token))), Err(Denied::JwtDisabled));
}

#[tokio::test]
async fn a_signaler_may_send_only_its_signals_to_its_workflow_types() {
    let f = fixture(|_| AuthOptions::default());
    let (view, secret) =
        f.auth.create(signaler(&["payment_confirmed", "payment_failed"], &["order"])).await.expect("creates");
    assert_eq!(view.signals, vec!["payment_confirmed", "payment_failed"]);
    let principal = f.auth.authenticate(Some(&bearer(&secret))).expect("accepted");
    assert_eq!(principal.role, Role::Signaler);
    assert!(principal.may_send_signal("payment_confirmed") && principal.may_send_signal("payment_failed"));
    assert!(!principal.may_send_signal("transfer_received"));
    assert!(principal.may_signal_type(&order()));
    assert!(!principal.may_signal_type(&WorkflowType::parse("refund").expect("valid")));
    assert!(!principal.may_serve(&QueueName::parse("payment").expect("valid")));
    assert!(principal.rate_key.is_some(), "signalers are rate limited like clients");
    // Clients and workers send no signal; admins send every one.
    let (_, client) = f.auth.create(request(Role::Client, &[], None)).await.expect("creates");
    let client = f.auth.authenticate(Some(&bearer(&client))).expect("accepted");
    assert!(!client.may_send_signal("payment_confirmed") && !client.may_signal_type(&order()));
    let admin = Principal::open(None);
    assert!(admin.may_send_signal("anything") && admin.may_signal_type(&order()));
    // It survives a restart with its lists.
    let restarted = Authenticator::new(&AuthOptions::default(), f.store.as_ref(), f.auth.core.clone(), f.clock.clone())
        .expect("restarts");
    let principal = restarted.authenticate(Some(&bearer(&secret))).expect("accepted");
    assert!(principal.may_send_signal("payment_failed") && principal.may_signal_type(&order()));
}

#[tokio::test]
async fn signaler_requests_are_checked_at_their_limits() {
    let f = fixture(|_| AuthOptions::default());
    let names = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    let types = |n: usize| (0..n).map(|i| WorkflowType::parse(format!("t{i}")).expect("valid")).collect::<Vec<_>>();
    let at_limit = CreateTokenRequest {
        signals: names(MAX_TOKEN_SIGNALS),
        workflow_types: types(MAX_TOKEN_WORKFLOW_TYPES),
        ..signaler(&[], &[])
    };
    assert!(f.auth.create(at_limit.clone()).await.is_ok(), "both lists at their limits");
    for bad in [
        signaler(&[], &["order"]),
        signaler(&["payment_confirmed"], &[]),
        signaler(&["not a name"], &["order"]),
        CreateTokenRequest { signals: names(MAX_TOKEN_SIGNALS + 1), ..at_limit.clone() },
        CreateTokenRequest { workflow_types: types(MAX_TOKEN_WORKFLOW_TYPES + 1), ..at_limit.clone() },
        CreateTokenRequest {
            queues: vec![QueueName::parse("payment").expect("valid")],
            ..signaler(&["a"], &["order"])
        },
        CreateTokenRequest { role: Role::Client, ..signaler(&["a"], &["order"]) },
        CreateTokenRequest { role: Role::Admin, ..signaler(&["a"], &[]) },
    ] {
        assert!(matches!(f.auth.create(bad.clone()).await, Err(Error::Invalid(_))), "{bad:?} accepted");
    }
}

#[test]
fn signaler_jwts_carry_signals_and_workflow_types() {
    let f = fixture(|dir| {
        let key = dir.join("jwt.key");
        std::fs::write(&key, JWT_KEY).expect("writes");
        AuthOptions { jwt_secret_file: Some(key), ..AuthOptions::default() }
    });
    let exp = f.clock.now_ms() / 1000 + 60;
    let good = jwt(
        serde_json::json!({"role": "signaler", "signals": ["payment_confirmed"], "workflow_types": ["order"], "exp": exp}),
        JWT_KEY,
    );
    let principal = f.auth.authenticate(Some(&bearer(&good))).expect("accepted");
    assert!(principal.may_send_signal("payment_confirmed") && !principal.may_send_signal("payment_failed"));
    assert!(principal.may_signal_type(&order()));
    for claims in [
        serde_json::json!({"role": "signaler", "signals": ["payment_confirmed"], "exp": exp}),
        serde_json::json!({"role": "signaler", "workflow_types": ["order"], "exp": exp}),
        serde_json::json!({"role": "client", "signals": ["payment_confirmed"], "workflow_types": ["order"], "exp": exp}),
        serde_json::json!({"role": "signaler", "signals": ["bad name"], "workflow_types": ["order"], "exp": exp}),
    ] {
        let token = jwt(claims.clone(), JWT_KEY);
        assert!(matches!(f.auth.authenticate(Some(&bearer(&token))), Err(Denied::BadJwt(_))), "{claims}");
    }
}

/// The shape tokens were stored in before signaler tokens existed.
#[derive(serde::Serialize)]
struct FirstShapeTokenRecord {
    id: String,
    name: String,
    role: Role,
    queues: Vec<QueueName>,
    created_at_ms: u64,
    expires_at_ms: Option<u64>,
    revoked: bool,
}

#[tokio::test]
async fn tokens_stored_before_signalers_still_load_and_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = crate::store::SledStore::open(&dir.path().join("store"), Durability::ProcessCrash, None).expect("opens");
    let secret = "shop_stored-by-an-older-engine";
    let old = FirstShapeTokenRecord {
        id: "tok_0011223344556677".into(),
        name: "payments".into(),
        role: Role::Worker,
        queues: vec![QueueName::parse("payment").expect("valid")],
        created_at_ms: 5,
        expires_at_ms: None,
        revoked: false,
    };
    sled.put_raw_token(&digest(secret), &crate::codec::encode(&old).expect("encodes")).expect("writes");
    let store: Arc<Store> = Arc::new(sled);
    let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
    let core = running_core(store.clone(), clock.clone());
    let auth = Authenticator::new(&AuthOptions::default(), store.as_ref(), core, clock).expect("the old record loads");
    let principal = auth.authenticate(Some(&bearer(secret))).expect("accepted");
    assert_eq!(principal.role, Role::Worker);
    assert!(principal.may_serve(&QueueName::parse("payment").expect("valid")));
    assert!(!principal.may_send_signal("payment_confirmed"));
    let listed = auth.list().expect("lists");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].signals.is_empty() && listed[0].workflow_types.is_empty());
    // Revoking rewrites it in the current shape, which loads too.
    auth.revoke("tok_0011223344556677").await.expect("revokes");
    assert!(store.tokens().expect("reads")[0].1.revoked);
}
