//! Credentials: who a request comes from and what it may do.
//!
//! Two kinds of bearer credential are accepted. Opaque tokens (`shop_` + 32 random bytes,
//! base64url) are created by an admin through the API and stored only as the SHA-256 digest
//! of their secret; every stored token is mirrored in memory, so checking one costs one hash
//! and one map lookup. HS256 JWTs signed with the key of `--jwt-secret-file` carry their
//! role, queues (workers), signals and workflow types (signalers) and expiry in their claims.
//! An admin token read from (or created in) `--admin-token-file` lets the first admin act.
//!
//! This module must never store, log or return a token's secret after creating it, and never
//! compare a secret or its digest in a way whose time depends on how much of it matched.
//! It decides who a caller is and which role, queues, signals and workflow types they hold; which routes a role may
//! use is the API's business (`api::auth`).
//!
//! Token writes go through the core (`Command::Write`), like every other write: they share
//! its group commit and its disk guard, and are answered only once durable.
//!
//! Submodules: `jwt` (HS256 verification), `index` (the in-memory token index),
//! `admin_file` (the `--admin-token-file` credential).

mod admin_file;
mod index;
mod jwt;

use crate::clock::Clock;
use crate::core::{CoreError, Handle};
use crate::store::{self, Store, TokenRecord, WriteBatch, TOKEN_DIGEST_LEN};
use admin_file::load_or_create_admin_token;
use base64::Engine as _;
use index::{check_record, index_key, lookup, Entry};
use jwt::{load_jwt_key, Jwt};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use shop_types::auth::{
    CreateTokenRequest, Role, TokenView, MAX_TOKEN_NAME_LEN, MAX_TOKEN_QUEUES, MAX_TOKEN_SIGNALS,
    MAX_TOKEN_WORKFLOW_TYPES,
};
use shop_types::{CustomerId, QueueName, WorkflowType};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq as _;

/// What every opaque token starts with, so a leaked one is recognisable (secret scanners,
/// logs) and cannot be mistaken for a JWT.
pub const TOKEN_PREFIX: &str = "shop_";

/// The admin token file's token (created if the file does not exist yet), for the engine's
/// own calls that need its admin credential (the console reading the workers' admin APIs).
pub fn admin_file_token(path: &std::path::Path) -> Result<shop_types::auth::BearerToken, Error> {
    let token = load_or_create_admin_token(path)?;
    token.parse().map_err(|_| Error::BadFile { path: path.to_owned(), reason: "not a token".into() })
}
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
/// How often a node sharing its database with others reads the stored tokens again
/// ([`Authenticator::reload`]): the longest a token revoked through another node is still
/// accepted here, and a new one refused.
pub const TOKEN_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// The core refused or could not take the write (disk full, overloaded, shutting down).
    #[error(transparent)]
    Write(#[from] CoreError),
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
    /// What a signaler credential may signal; ignored for other roles.
    scope: SignalScope,
    /// The key of the caller's rate-limit bucket, or `None` when it is not limited.
    pub rate_key: Option<String>,
    /// Who the caller is, for audit records and ownership: never a secret.
    pub subject: Subject,
}

/// Who a caller is, as far as their credential says: named in audit events (who cancelled a
/// run) and, for a JWT with a `sub` claim, the customer whose orders and notifications are theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Any caller of an engine running `--open`: nobody in particular.
    Open,
    /// The `--admin-token-file` credential.
    AdminFile,
    /// An opaque API token, by its id (never its secret).
    Token { id: String },
    /// A JWT, by its `sub` claim when it has one.
    Jwt { sub: Option<CustomerId> },
}

impl Subject {
    /// The customer a JWT speaks for (its `sub`), if any.
    pub fn customer(&self) -> Option<&CustomerId> {
        match self {
            Subject::Jwt { sub } => sub.as_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Open => f.write_str("open"),
            Subject::AdminFile => f.write_str("admin-file"),
            Subject::Token { id } => write!(f, "token:{id}"),
            Subject::Jwt { sub: Some(sub) } => write!(f, "jwt:{sub}"),
            Subject::Jwt { sub: None } => f.write_str("jwt"),
        }
    }
}

impl Principal {
    /// Everything allowed: what an engine running `--open` grants every request.
    pub fn open(rate_key: Option<String>) -> Principal {
        Principal {
            role: Role::Admin,
            queues: Vec::new(),
            scope: SignalScope::default(),
            rate_key,
            subject: Subject::Open,
        }
    }

    /// Whether this caller may poll and report tasks of `queue`.
    pub fn may_serve(&self, queue: &QueueName) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Worker => self.queues.contains(queue),
            Role::Client | Role::Signaler => false,
        }
    }

    /// Whether this caller may send signals named `name` to some run. Checked before the run
    /// is looked up, so a signaler learns nothing about runs it may never signal.
    pub fn may_send_signal(&self, name: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Signaler => self.scope.signals.iter().any(|allowed| allowed == name),
            Role::Client | Role::Worker => false,
        }
    }

    /// Whether this caller may signal runs of `workflow_type`.
    pub fn may_signal_type(&self, workflow_type: &WorkflowType) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Signaler => self.scope.workflow_types.contains(workflow_type),
            Role::Client | Role::Worker => false,
        }
    }

    /// Whether [`Principal::may_serve`] holds for every queue, so no lookup is needed.
    pub fn serves_every_queue(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The signals a signaler credential may send, and to runs of which workflow types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalScope {
    pub signals: Vec<String>,
    pub workflow_types: Vec<WorkflowType>,
}

/// Checks what a credential of `role` names besides its role, for tokens at creation and for
/// JWTs at every use: a worker names 1 to [`MAX_TOKEN_QUEUES`] queues, a signaler 1 to
/// [`MAX_TOKEN_SIGNALS`] valid signal names and 1 to [`MAX_TOKEN_WORKFLOW_TYPES`] workflow
/// types, and no role names what belongs to another.
fn check_scope(role: Role, queues: &[QueueName], scope: &SignalScope) -> Result<(), String> {
    let names_signals = !scope.signals.is_empty() || !scope.workflow_types.is_empty();
    match role {
        Role::Worker if queues.is_empty() => return Err("a worker token must name the queues it serves".into()),
        Role::Worker if queues.len() > MAX_TOKEN_QUEUES => {
            return Err(format!("a worker token may name at most {MAX_TOKEN_QUEUES} queues"))
        }
        Role::Admin | Role::Client | Role::Signaler if !queues.is_empty() => {
            return Err(format!("queues apply to worker tokens only, not to {role}"))
        }
        Role::Signaler if scope.signals.is_empty() || scope.workflow_types.is_empty() => {
            return Err(
                "a signaler token must name the signals it may send and the workflow types it may send them to".into()
            )
        }
        Role::Signaler if scope.signals.len() > MAX_TOKEN_SIGNALS => {
            return Err(format!("a signaler token may name at most {MAX_TOKEN_SIGNALS} signals"))
        }
        Role::Signaler if scope.workflow_types.len() > MAX_TOKEN_WORKFLOW_TYPES => {
            return Err(format!("a signaler token may name at most {MAX_TOKEN_WORKFLOW_TYPES} workflow types"))
        }
        Role::Admin | Role::Client | Role::Worker if names_signals => {
            return Err(format!("signals and workflow types apply to signaler tokens only, not to {role}"))
        }
        _ => {}
    }
    for name in &scope.signals {
        crate::definition::check_signal_name(name)?;
    }
    Ok(())
}

/// How a caller's rate is limited, by role. Workers are exempt: their request rate follows
/// the engine's own task flow (long polls, reports of tasks it handed out), so throttling
/// one only delays completions, stretches leases into timeouts and turns a load spike into
/// retries; its credential is already confined to its queues.
fn rate_key(role: Role, key: String) -> Option<String> {
    (role != Role::Worker).then_some(key)
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
    /// Where token writes go: the core, the one commit path.
    core: Handle,
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
    pub fn new(
        options: &AuthOptions,
        store: &Store,
        core: Handle,
        clock: Arc<dyn Clock>,
    ) -> Result<Authenticator, Error> {
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
            core,
            clock,
            admin_file_digest,
            jwt,
            index: RwLock::new(index),
            manage: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads every stored token again and replaces the index with them: with several nodes
    /// on one database, a token created or revoked through another node is seen here within
    /// one [`TOKEN_RELOAD_INTERVAL`]. Holds the management lock, so a token this node is
    /// creating is in the store before the read or in the index after it, never lost between.
    pub async fn reload(&self, store: &Store) -> Result<usize, Error> {
        let _manage = self.manage.lock().await;
        // Read as handlers read: the PostgreSQL store waits inside `block_in_place` itself.
        let tokens = store.tokens()?;
        let index: HashMap<[u8; INDEX_KEY_LEN], Entry> =
            tokens.into_iter().map(|(digest, record)| (index_key(&digest), Entry { digest, record })).collect();
        let count = index.len();
        *self.index.write().map_err(|_| Error::Invalid("the token index is unusable".into()))? = index;
        Ok(count)
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
                return Ok(Principal {
                    role: Role::Admin,
                    queues: Vec::new(),
                    scope: SignalScope::default(),
                    rate_key: Some("admin-file".into()),
                    subject: Subject::AdminFile,
                });
            }
        }
        let index = self.index.read().map_err(|_| Denied::Unknown)?;
        let record = lookup(&index, &digest).ok_or(Denied::Unknown)?;
        check_record(record, self.clock.now_ms())?;
        Ok(Principal {
            role: record.role,
            queues: record.queues.clone(),
            scope: SignalScope { signals: record.signals.clone(), workflow_types: record.workflow_types.clone() },
            rate_key: rate_key(record.role, format!("token:{}", record.id)),
            subject: Subject::Token { id: record.id.clone() },
        })
    }

    /// Whether the opaque token (or admin-file credential) whose secret hashes to `digest` may
    /// still be used: a console session made with it ends when it is revoked or expires.
    pub fn still_valid(&self, digest: &Digest) -> bool {
        if self.admin_file_digest.is_some_and(|admin| bool::from(admin.ct_eq(digest))) {
            return true;
        }
        let Ok(index) = self.index.read() else {
            return false;
        };
        lookup(&index, digest).is_some_and(|record| check_record(record, self.clock.now_ms()).is_ok())
    }

    fn verify_jwt(&self, jwt: &str) -> Result<Principal, Denied> {
        self.jwt.as_ref().ok_or(Denied::JwtDisabled)?.verify(jwt, self.clock.now_ms())
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
            signals: request.signals,
            workflow_types: request.workflow_types,
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

    /// Writes the token through the core; returns once the write is durable.
    async fn persist(&self, digest: Digest, record: TokenRecord) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        batch.put_token(&digest, &record)?;
        self.core.write(batch).await?;
        Ok(())
    }

    fn index_len(&self) -> usize {
        self.index.read().map_or(MAX_TOKENS, |index| index.len())
    }

    fn index_contains(&self, digest: &Digest) -> bool {
        self.index.read().map_or(true, |index| index.contains_key(&index_key(digest)))
    }
}

/// Checks a creation request; returns the token's expiry.
fn validate_request(request: &CreateTokenRequest, now_ms: u64) -> Result<Option<u64>, Error> {
    let name = &request.name;
    if name.trim().is_empty() || name.len() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("name must be 1 to {MAX_TOKEN_NAME_LEN} bytes without control characters")));
    }
    let scope = SignalScope { signals: request.signals.clone(), workflow_types: request.workflow_types.clone() };
    check_scope(request.role, &request.queues, &scope).map_err(Error::Invalid)?;
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
        signals: record.signals.clone(),
        workflow_types: record.workflow_types.clone(),
        created_at_ms: record.created_at_ms,
        expires_at_ms: record.expires_at_ms,
        revoked: record.revoked,
    }
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

pub(crate) fn base64_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
