//! The customer's notification stream on the wire: the messages the notification worker's
//! WebSocket pushes, and the tickets a browser connects with (minted and verified by the
//! engine). Plain data only: who may mint or verify a ticket is the engine's business, and
//! the stream itself is the worker's.

use crate::ids::CustomerId;
use serde::{Deserialize, Serialize};

/// How long a notification ticket lets a browser open its WebSocket. Short, because a ticket
/// travels in a URL (`?ticket=`), where proxies and browser histories may keep it; an open
/// socket outlives its ticket.
pub const NOTIFICATION_TICKET_TTL_MS: u64 = 60_000;

/// Longest ticket accepted anywhere: a real one is far shorter (a customer id of at most
/// `MAX_ID_LEN` bytes, a time and a MAC), so anything longer is refused before any work.
pub const MAX_TICKET_LEN: usize = 512;

/// The WebSocket's path on the notification worker's listener.
pub const NOTIFICATION_WS_PATH: &str = "/api/notifications/ws";

/// What every ticket starts with, so it is never mistaken for a bearer token or a JWT.
pub const TICKET_PREFIX: &str = "nt1.";

/// One notification as the customer's WebSocket pushes it, in `customer_seq` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NotificationMessage {
    /// 1, 2, 3, ... per customer, with no gap: a reconnect asks for what follows the last one
    /// it saw (`?after=`).
    pub customer_seq: u64,
    pub order_id: String,
    pub kind: String,
    pub message: String,
    /// When the outbox took it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// `POST /api/notifications/tickets` body. A JWT with a `sub` may leave it empty (the ticket
/// is for that customer); a client token or admin names the customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TicketRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
}

/// A minted ticket: pass it as `?ticket=` when opening the WebSocket before `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NotificationTicket {
    pub ticket: String,
    pub customer_id: CustomerId,
    /// Milliseconds since the Unix epoch, by the engine's clock.
    pub expires_at_ms: u64,
}

/// `POST /v1/notifications/verify` body: what a WebSocket was opened with, a ticket or a
/// bearer credential (a JWT with a `sub`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyRequest {
    pub credential: String,
}

/// The engine's answer: whose notifications the credential may read, and until when the
/// answer may be believed (a ticket's expiry, or the JWT's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub customer_id: CustomerId,
    pub valid_until_ms: u64,
}
