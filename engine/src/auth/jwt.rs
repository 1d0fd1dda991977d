//! HS256 JWTs: loading the key of `--jwt-secret-file` and verifying a JWT's signature,
//! expiry, not-before, longest lifetime and claims into a [`Principal`].
//!
//! This module must never log a JWT or its key.

use super::{
    check_scope, digest, hex, rate_key, Denied, Error, Principal, SignalScope, Subject, ID_BYTES, JWT_LEEWAY_MS,
    MAX_JWT_LIFETIME, MIN_ADMIN_TOKEN_LEN,
};
use serde::Deserialize;
use shop_types::auth::{Role, MAX_TOKEN_QUEUES};
use shop_types::{CustomerId, QueueName, WorkflowType};
use std::path::Path;

/// The claims a JWT must carry.
#[derive(Debug, Deserialize)]
struct Claims {
    role: Role,
    #[serde(default)]
    queues: Vec<QueueName>,
    /// The signal names a signaler may send (required for `signaler`).
    #[serde(default)]
    signals: Vec<String>,
    /// The workflow types a signaler may signal runs of (required for `signaler`).
    #[serde(default)]
    workflow_types: Vec<WorkflowType>,
    /// Who the JWT speaks for: the customer, for a client JWT (an ID, as order ids are).
    #[serde(default)]
    sub: Option<CustomerId>,
    /// Seconds since the Unix epoch.
    exp: u64,
    /// Not valid before this (seconds since the Unix epoch), when present.
    #[serde(default)]
    nbf: Option<u64>,
}

pub(super) struct Jwt {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl Jwt {
    pub(super) fn verify(&self, jwt: &str, now_ms: u64) -> Result<Principal, Denied> {
        let verifier = self;
        let claims = jsonwebtoken::decode::<Claims>(jwt, &verifier.key, &verifier.validation)
            .map_err(|e| Denied::BadJwt(e.to_string()))?
            .claims;
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
        let scope = SignalScope { signals: claims.signals, workflow_types: claims.workflow_types };
        // A signaler's claims are held to the rules of a signaler token. (Queues on a JWT of
        // another role stay ignored, as they always were: that is not tightened here.)
        if claims.role == Role::Signaler || !scope.signals.is_empty() || !scope.workflow_types.is_empty() {
            check_scope(claims.role, &claims.queues, &scope).map_err(Denied::BadJwt)?;
        }
        // A JWT has no id of its own; its digest names its bucket, so each JWT is limited
        // on its own, as an opaque token is.
        let key = format!("jwt:{}", hex(&digest(jwt)[..ID_BYTES]));
        Ok(Principal {
            role: claims.role,
            queues: claims.queues,
            scope,
            rate_key: rate_key(claims.role, key),
            subject: Subject::Jwt { sub: claims.sub },
        })
    }
}

/// The HS256 key in `path`. Trailing whitespace (a final newline) is not part of the key.
pub(super) fn load_jwt_key(path: &Path) -> Result<Jwt, Error> {
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
