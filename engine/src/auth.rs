//! Credentials: who a request comes from and what it may do.
//!
//! Two kinds of bearer credential are accepted. Opaque tokens (`shop_` + 32 random bytes,
//! base64url) are created by an admin through the API and stored only as the SHA-256 digest
//! of their secret; every stored token is mirrored in memory, so checking one costs one hash
//! and one map lookup. HS256 JWTs signed with the key of `--jwt-secret-file` carry their
//! role, queues and expiry in their claims. An admin token read from (or created in)
//! `--admin-token-file` lets the first admin act.
//!
//! This module must never store, log or return a token's secret after creating it, and never
//! compare a secret or its digest in a way whose time depends on how much of it matched.
//! It decides who a caller is and which role and queues they hold; which routes a role may
//! use is the API's business (`api::auth`).

use crate::clock::Clock;
use crate::store::{self, Store, TokenRecord, WriteBatch, TOKEN_DIGEST_LEN};
use base64::Engine as _;
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use shop_types::auth::{CreateTokenRequest, Role, TokenView, MAX_TOKEN_NAME_LEN, MAX_TOKEN_QUEUES};
use shop_types::QueueName;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// What every opaque token starts with, so a leaked one is recognisable (secret scanners,
/// logs) and cannot be mistaken for a JWT.
pub const TOKEN_PREFIX: &str = "shop_";
/// Random bytes in a token's secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;
/// Random bytes in a token's public id.
const ID_BYTES: usize = 8;
/// Tokens the engine keeps, revoked and expired ones included (they stay listed for audit);
/// this bounds the in-memory mirror.
pub const MAX_TOKENS: usize = 10_000;
/// Longest lifetime a token may be given.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Shortest secret accepted from `--admin-token-file`: an admin credential a person typed
/// must still be beyond guessing.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// Longest credential looked at; anything longer is refused before it is hashed or parsed.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;
/// Clock skew forgiven when checking a JWT's `exp` and `nbf`.
const JWT_LEEWAY_MS: u64 = 5_000;
/// Longest a JWT may still be valid for: one whose `exp` lies further ahead is refused. A JWT
/// cannot be revoked (only its key can be changed), so a leaked one must expire soon; long-lived
/// credentials are opaque tokens, which can be revoked.
pub const MAX_JWT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The digest-prefix length the in-memory index is keyed by (see [`Authenticator::lookup`]).
const INDEX_KEY_LEN: usize = 16;

/// The SHA-256 digest of a token's secret: what is stored and what a request is matched by.
pub type Digest = [u8; TOKEN_DIGEST_LEN];

pub fn digest(secret: &str) -> Digest {
    Sha256::digest(secret.as_bytes()).into()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("token {0} not found")]
    NotFound(String),
    #[error("the engine already keeps {MAX_TOKENS} tokens, the most it may")]
    TooMany,
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    WriteFile { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("the store task stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Why a request's credential was not accepted. Every variant is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this endpoint needs a credential: send Authorization: Bearer <token>")]
    Missing,
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (its nbf lies ahead)")]
    NotYetValid,
    #[error("the token has been revoked")]
    Revoked,
    #[error("this engine accepts no JWTs (it was started without --jwt-secret-file)")]
    JwtDisabled,
    #[error("invalid JWT: {0}")]
    BadJwt(String),
}

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// Queues a worker credential may serve; ignored for other roles.
    queues: Vec<QueueName>,
    /// The key of the caller's rate-limit bucket, or `None` when it is not limited.
    pub rate_key: Option<String>,
}

impl Principal {
    /// Everything allowed: what an engine running `--open` grants every request.
    pub fn open(rate_key: Option<String>) -> Principal {
        Principal { role: Role::Admin, queues: Vec::new(), rate_key }
    }

    /// Whether this caller may poll and report tasks of `queue`.
    pub fn may_serve(&self, queue: &QueueName) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Worker => self.queues.contains(queue),
            Role::Client => false,
        }
    }

    /// Whether [`Principal::may_serve`] holds for every queue, so no lookup is needed.
    pub fn serves_every_queue(&self) -> bool {
        self.role == Role::Admin
    }
}

/// How a caller's rate is limited, by role. Workers are exempt: their request rate follows
/// the engine's own task flow (long polls, reports of tasks it handed out), so throttling
/// one only delays completions, stretches leases into timeouts and turns a load spike into
/// retries; its credential is already confined to its queues.
fn rate_key(role: Role, key: String) -> Option<String> {
    (role != Role::Worker).then_some(key)
}

/// The claims a JWT must carry.
#[derive(Debug, Deserialize)]
struct Claims {
    role: Role,
    #[serde(default)]
    queues: Vec<QueueName>,
    /// Seconds since the Unix epoch.
    exp: u64,
    /// Not valid before this (seconds since the Unix epoch), when present.
    #[serde(default)]
    nbf: Option<u64>,
}

struct Jwt {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

/// A stored token as the in-memory index keeps it.
struct Entry {
    digest: Digest,
    record: TokenRecord,
}

/// How the engine was told to authenticate.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// Accept every request without a credential (loopback only; checked at start).
    pub open: bool,
    /// An admin token is read from this file, or created in it if it does not exist.
    pub admin_token_file: Option<PathBuf>,
    /// The HS256 key JWTs must be signed with.
    pub jwt_secret_file: Option<PathBuf>,
}

/// Checks credentials and manages tokens. One per engine, shared by every request.
pub struct Authenticator {
    open: bool,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// The digest of the `--admin-token-file` token; not stored, not listed, not revocable
    /// through the API (remove the file and restart to retire it).
    admin_file_digest: Option<Digest>,
    jwt: Option<Jwt>,
    /// Every stored token, keyed by the first [`INDEX_KEY_LEN`] bytes of its digest.
    index: RwLock<HashMap<[u8; INDEX_KEY_LEN], Entry>>,
    /// Serializes creation and revocation, so the count bound and the store stay in step
    /// with the index; requests never wait on it.
    manage: tokio::sync::Mutex<()>,
}

impl Authenticator {
    /// Loads the stored tokens and the configured credentials. Creates the admin token file
    /// when it is named but missing.
    pub fn new(options: &AuthOptions, store: Arc<Store>, clock: Arc<dyn Clock>) -> Result<Authenticator, Error> {
        let mut index = HashMap::new();
        for (digest, record) in store.tokens()? {
            index.insert(index_key(&digest), Entry { digest, record });
        }
        let admin_file_digest = match &options.admin_token_file {
            Some(path) => Some(digest(&load_or_create_admin_token(path)?)),
            None => None,
        };
        let jwt = match &options.jwt_secret_file {
            Some(path) => Some(load_jwt_key(path)?),
            None => None,
        };
        Ok(Authenticator {
            open: options.open,
            store,
            clock,
            admin_file_digest,
            jwt,
            index: RwLock::new(index),
            manage: tokio::sync::Mutex::new(()),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Who sent `authorization` (the header's value, if any).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, Denied> {
        let header = authorization.ok_or(Denied::Missing)?;
        if header.len() > MAX_CREDENTIAL_LEN {
            return Err(Denied::Malformed);
        }
        let header = std::str::from_utf8(header).map_err(|_| Denied::Malformed)?;
        let (scheme, credential) = header.split_once(' ').ok_or(Denied::Malformed)?;
        let credential = credential.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
            return Err(Denied::Malformed);
        }
        if credential.split('.').count() == 3 {
            self.verify_jwt(credential)
        } else {
            self.verify_token(credential)
        }
    }

    fn verify_token(&self, secret: &str) -> Result<Principal, Denied> {
        let digest = digest(secret);
        if let Some(admin) = &self.admin_file_digest {
            if bool::from(admin.ct_eq(&digest)) {
                return Ok(Principal { role: Role::Admin, queues: Vec::new(), rate_key: Some("admin-file".into()) });
            }
        }
        let index = self.index.read().map_err(|_| Denied::Unknown)?;
        let record = lookup(&index, &digest).ok_or(Denied::Unknown)?;
        check_record(record, self.clock.now_ms())?;
        Ok(Principal {
            role: record.role,
            queues: record.queues.clone(),
            rate_key: rate_key(record.role, format!("token:{}", record.id)),
        })
    }

    fn verify_jwt(&self, jwt: &str) -> Result<Principal, Denied> {
        let verifier = self.jwt.as_ref().ok_or(Denied::JwtDisabled)?;
        let claims = jsonwebtoken::decode::<Claims>(jwt, &verifier.key, &verifier.validation)
            .map_err(|e| Denied::BadJwt(e.to_string()))?
            .claims;
        let now_ms = self.clock.now_ms();
        if claims.exp.saturating_mul(1000).saturating_add(JWT_LEEWAY_MS) <= now_ms {
            return Err(Denied::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf.saturating_mul(1000) > now_ms.saturating_add(JWT_LEEWAY_MS)) {
            return Err(Denied::NotYetValid);
        }
        let longest_ms = u64::try_from(MAX_JWT_LIFETIME.as_millis()).unwrap_or(u64::MAX);
        if claims.exp.saturating_mul(1000) > now_ms.saturating_add(longest_ms).saturating_add(JWT_LEEWAY_MS) {
            return Err(Denied::BadJwt(format!(
                "exp lies more than {} days ahead; a JWT may be valid for at most that long",
                MAX_JWT_LIFETIME.as_secs() / 86_400
            )));
        }
        if claims.queues.len() > MAX_TOKEN_QUEUES {
            return Err(Denied::BadJwt(format!("more than {MAX_TOKEN_QUEUES} queues")));
        }
        // A JWT has no id of its own; its digest names its bucket, so each JWT is limited
        // on its own, as an opaque token is.
        let key = format!("jwt:{}", hex(&digest(jwt)[..ID_BYTES]));
        Ok(Principal { role: claims.role, queues: claims.queues, rate_key: rate_key(claims.role, key) })
    }

    /// Creates a token; the answer carries its secret, which is never available again.
    pub async fn create(&self, request: CreateTokenRequest) -> Result<(TokenView, String), Error> {
        let now_ms = self.clock.now_ms();
        let expires_at_ms = validate_request(&request, now_ms)?;
        let _guard = self.manage.lock().await;
        if self.index_len() >= MAX_TOKENS {
            return Err(Error::TooMany);
        }
        let (secret, digest) = loop {
            let secret = format!("{TOKEN_PREFIX}{}", base64_url(&random_bytes::<SECRET_BYTES>()));
            let digest = digest(&secret);
            // Two 256-bit secrets sharing a 128-bit digest prefix does not happen; drawing
            // again keeps the index correct even so.
            if !self.index_contains(&digest) {
                break (secret, digest);
            }
        };
        let record = TokenRecord {
            id: format!("tok_{}", hex(&random_bytes::<ID_BYTES>())),
            name: request.name,
            role: request.role,
            queues: request.queues,
            created_at_ms: now_ms,
            expires_at_ms,
            revoked: false,
        };
        // Durable before it is usable or shown: a token the caller holds survives a restart.
        self.persist(digest, record.clone()).await?;
        let view = view(&record);
        self.index
            .write()
            .map_err(|_| Error::Invalid("the token index is unusable".into()))?
            .insert(index_key(&digest), Entry { digest, record });
        tracing::info!(id = %view.id, name = %view.name, role = %view.role, "token created");
        Ok((view, secret))
    }

    /// Every stored token, oldest first, without secrets or digests.
    pub fn list(&self) -> Result<Vec<TokenView>, Error> {
        let index = self.index.read().map_err(|_| Error::Invalid("the token index is unusable".into()))?;
        let mut views: Vec<TokenView> = index.values().map(|entry| view(&entry.record)).collect();
        views.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(views)
    }

    /// Revokes a token. It is refused from this call on, even if the write then fails (the
    /// caller hears of that failure and can repeat); revoking twice is not an error.
    pub async fn revoke(&self, id: &str) -> Result<TokenView, Error> {
        let _guard = self.manage.lock().await;
        let (digest, record) = {
            let mut index = self.index.write().map_err(|_| Error::Invalid("the token index is unusable".into()))?;
            let entry =
                index.values_mut().find(|entry| entry.record.id == id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
            entry.record.revoked = true;
            (entry.digest, entry.record.clone())
        };
        self.persist(digest, record.clone()).await?;
        tracing::info!(id = %record.id, name = %record.name, "token revoked");
        Ok(view(&record))
    }

    async fn persist(&self, digest: Digest, record: TokenRecord) -> Result<(), Error> {
        let store = Arc::clone(&self.store);
        // A commit waits for the disk (`fdatasync`): keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let mut batch = WriteBatch::default();
            batch.put_token(&digest, &record)?;
            store.commit(batch)
        })
        .await??;
        Ok(())
    }

    fn index_len(&self) -> usize {
        self.index.read().map_or(MAX_TOKENS, |index| index.len())
    }

    fn index_contains(&self, digest: &Digest) -> bool {
        self.index.read().map_or(true, |index| index.contains_key(&index_key(digest)))
    }
}

/// The record whose digest is `digest`. The map finds a candidate by the first half of the
/// digest; the whole digest is then compared in constant time, so how long a refusal takes
/// tells nothing about how close a guess came.
fn lookup<'a>(index: &'a HashMap<[u8; INDEX_KEY_LEN], Entry>, digest: &Digest) -> Option<&'a TokenRecord> {
    let entry = index.get(&index_key(digest))?;
    bool::from(entry.digest.ct_eq(digest)).then_some(&entry.record)
}

fn index_key(digest: &Digest) -> [u8; INDEX_KEY_LEN] {
    let mut key = [0; INDEX_KEY_LEN];
    key.copy_from_slice(&digest[..INDEX_KEY_LEN]);
    key
}

/// Whether a stored token may be used at `now_ms`.
fn check_record(record: &TokenRecord, now_ms: u64) -> Result<(), Denied> {
    if record.revoked {
        return Err(Denied::Revoked);
    }
    if record.expires_at_ms.is_some_and(|expires| expires <= now_ms) {
        return Err(Denied::Expired);
    }
    Ok(())
}

/// Checks a creation request; returns the token's expiry.
fn validate_request(request: &CreateTokenRequest, now_ms: u64) -> Result<Option<u64>, Error> {
    let name = &request.name;
    if name.trim().is_empty() || name.len() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("name must be 1 to {MAX_TOKEN_NAME_LEN} bytes without control characters")));
    }
    match request.role {
        Role::Worker if request.queues.is_empty() => {
            return Err(Error::Invalid("a worker token must name the queues it serves".into()))
        }
        Role::Worker if request.queues.len() > MAX_TOKEN_QUEUES => {
            return Err(Error::Invalid(format!("a worker token may name at most {MAX_TOKEN_QUEUES} queues")))
        }
        Role::Admin | Role::Client if !request.queues.is_empty() => {
            return Err(Error::Invalid(format!("queues apply to worker tokens only, not to {}", request.role)))
        }
        _ => {}
    }
    let Some(ttl) = &request.ttl else {
        return Ok(None);
    };
    let ttl = humantime::parse_duration(ttl).map_err(|e| Error::Invalid(format!("ttl {ttl:?}: {e}")))?;
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(Error::Invalid(format!(
            "ttl must be more than 0 and at most {}",
            humantime::format_duration(MAX_TOKEN_TTL)
        )));
    }
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Ok(Some(now_ms.saturating_add(ttl_ms)))
}

fn view(record: &TokenRecord) -> TokenView {
    TokenView {
        id: record.id.clone(),
        name: record.name.clone(),
        role: record.role,
        queues: record.queues.clone(),
        created_at_ms: record.created_at_ms,
        expires_at_ms: record.expires_at_ms,
        revoked: record.revoked,
    }
}

/// The admin token in `path`, or a new one written there (mode 0600) when the file does not
/// exist, so the first admin can act.
fn load_or_create_admin_token(path: &Path) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.len() < MIN_ADMIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::BadFile {
                    path: path.to_owned(),
                    reason: format!(
                        "an admin token must be one word of at least {MIN_ADMIN_TOKEN_LEN} characters \
                         (delete the file to have the engine create one)"
                    ),
                });
            }
            warn_if_readable_by_others(path);
            tracing::info!(path = %path.display(), "admin token loaded from the admin token file");
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = format!("{TOKEN_PREFIX}{}", base64_url(&random_bytes::<SECRET_BYTES>()));
            write_private(path, &format!("{token}\n"))
                .map_err(|source| Error::WriteFile { path: path.to_owned(), source })?;
            tracing::warn!(path = %path.display(), "created a new admin token; read it from this file (mode 0600)");
            Ok(token)
        }
        Err(source) => Err(Error::ReadFile { path: path.to_owned(), source }),
    }
}

/// Creates `path` readable by its owner only, refusing to overwrite anything.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path) {
            if metadata.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the admin token file is readable by other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The HS256 key in `path`. Trailing whitespace (a final newline) is not part of the key.
fn load_jwt_key(path: &Path) -> Result<Jwt, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadFile { path: path.to_owned(), source })?;
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let key = &bytes[..end];
    if key.len() < MIN_ADMIN_TOKEN_LEN {
        return Err(Error::BadFile {
            path: path.to_owned(),
            reason: format!("a JWT key must be at least {MIN_ADMIN_TOKEN_LEN} bytes"),
        });
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    // Expiry is checked against the engine's clock (passed in), not read here; `exp` must
    // still be present.
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp"]);
    // The engine is its own audience; tokens need not name one.
    validation.validate_aud = false;
    Ok(Jwt { key: jsonwebtoken::DecodingKey::from_secret(key), validation })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn base64_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;
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
        clock: Arc<TestClock>,
        dir: tempfile::TempDir,
    }

    fn fixture(options: impl FnOnce(&Path) -> AuthOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<Store> = Arc::new(
            crate::store::SledStore::open(&dir.path().join("store"), Durability::ProcessCrash, None).expect("opens"),
        );
        let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
        let auth = Authenticator::new(&options(dir.path()), store, clock.clone()).expect("starts");
        Fixture { auth, clock, dir }
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    fn request(role: Role, queues: &[&str], ttl: Option<&str>) -> CreateTokenRequest {
        CreateTokenRequest {
            name: format!("{role}-test"),
            role,
            queues: queues.iter().map(|q| QueueName::parse(*q).expect("valid")).collect(),
            ttl: ttl.map(str::to_owned),
        }
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
        let stored = f.auth.store.tokens().expect("reads");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, digest(&secret));
        let restarted =
            Authenticator::new(&AuthOptions::default(), f.auth.store.clone(), f.clock.clone()).expect("restarts");
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

        let forged =
            jwt(serde_json::json!({"role": "admin", "exp": now_s + 60}), b"not-the-key-not-the-key-not-the-key");
        assert!(matches!(f.auth.authenticate(Some(&bearer(&forged))), Err(Denied::BadJwt(_))));
        let expired = jwt(serde_json::json!({"role": "client", "exp": now_s - 60}), JWT_KEY);
        assert_eq!(f.auth.authenticate(Some(&bearer(&expired))), Err(Denied::Expired));
        let no_exp = jwt(serde_json::json!({"role": "client"}), JWT_KEY);
        assert!(matches!(f.auth.authenticate(Some(&bearer(&no_exp))), Err(Denied::BadJwt(_))));
        let bad_role = jwt(serde_json::json!({"role": "root", "exp": now_s + 60}), JWT_KEY);
        assert!(matches!(f.auth.authenticate(Some(&bearer(&bad_role))), Err(Denied::BadJwt(_))));
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
}
