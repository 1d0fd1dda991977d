//! Authentication on the wire: the roles a credential carries and the messages of the
//! engine's token management API (`/v1/tokens`).
//!
//! A token's secret crosses the wire exactly once, in [`CreatedToken`]; no other type here
//! carries it, and nothing here may ever carry a token's stored digest.

use crate::{QueueName, WorkflowType};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME_LEN: usize = 128;
/// Most queues one worker credential may name.
pub const MAX_TOKEN_QUEUES: usize = 64;
/// Most signal names one signaler credential may name: a payment provider sends a handful;
/// the bound keeps a credential's check and its stored record small.
pub const MAX_TOKEN_SIGNALS: usize = 32;
/// Most workflow types one signaler credential may name.
pub const MAX_TOKEN_WORKFLOW_TYPES: usize = 16;

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including token management.
    Admin,
    /// Place and read orders; read workflows, histories and definitions.
    Client,
    /// Poll, complete, fail, heartbeat and report tasks on the queues its credential names.
    Worker,
    /// Send the signals its credential names to runs of the workflow types it names, and
    /// nothing else (a payment provider's webhook relay). Appended last: stored records
    /// name roles by position.
    Signaler,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Signaler => "signaler",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected admin, client, worker or signaler")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(text: &str) -> Result<Self, UnknownRole> {
        match text {
            "admin" => Ok(Role::Admin),
            "client" => Ok(Role::Client),
            "worker" => Ok(Role::Worker),
            "signaler" => Ok(Role::Signaler),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// A credential's secret as a client holds it (an API token or a JWT). Its `Debug` hides it,
/// so options structs that derive `Debug` never log it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token must be one word of visible ASCII characters")]
pub struct BadToken;

impl BearerToken {
    /// The secret, to put into an `Authorization` header and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for BearerToken {
    type Err = BadToken;
    /// Surrounding whitespace (a newline from a file or `$(cat ...)`) is dropped.
    fn from_str(text: &str) -> Result<Self, BadToken> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadToken);
        }
        Ok(BearerToken(text.to_owned()))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    pub role: Role,
    /// The queues a worker token may serve; required for `worker`, refused for the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueName>,
    /// The signal names a signaler token may send; required for `signaler`, refused for the
    /// others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<String>,
    /// The workflow types a signaler token may signal runs of; required for `signaler`,
    /// refused for the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflow_types: Vec<WorkflowType>,
    /// How long the token lives, as a duration (`"30d"`, `"12h"`); absent = until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// A token as `GET /v1/tokens` shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub queues: Vec<QueueName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflow_types: Vec<WorkflowType>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked: bool,
}

/// The answer to `POST /v1/tokens`: the token, and its secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// What a caller sends as `Authorization: Bearer <token>`.
    pub token: String,
}

/// The answer to `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_and_print_in_lowercase() {
        for role in [Role::Admin, Role::Client, Role::Worker, Role::Signaler] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_string(&role).ok(), Some(format!("\"{role}\"")));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn bearer_tokens_are_trimmed_checked_and_never_debug_printed() {
        let token: BearerToken = "shop_abc\n".parse().expect("valid");
        assert_eq!(token.expose(), "shop_abc");
        assert!(!format!("{token:?}").contains("abc"));
        assert_eq!("".parse::<BearerToken>(), Err(BadToken));
        assert_eq!("a b".parse::<BearerToken>(), Err(BadToken));
    }
}
