//! Who may read a customer's notifications: tickets for the notification WebSocket, which
//! the notification worker serves (the engine holds no notification and pushes nothing).
//!
//! `POST /api/notifications/tickets` (clients and admins) mints a short-lived ticket for one
//! customer: a credential that speaks for a customer (a JWT with a `sub`) gets one for itself
//! only; a client token or admin names the customer. A browser cannot set headers on a
//! WebSocket, so it passes the ticket in the URL; hence the short life
//! ([`NOTIFICATION_TICKET_TTL_MS`]). Text form: `nt1.<customer>.<expires ms>.<mac>`, the MAC
//! (32 hex digits) an HMAC under the store's task-token key with the domain
//! [`TICKET_DOMAIN`], so it can pass for no task token or callback token, nor they for it.
//! Nothing is stored: a ticket cannot be revoked, it expires.
//!
//! `POST /v1/notifications/verify` (workers and admins) is how the worker learns whose
//! stream a WebSocket may read: it sends what the socket was opened with, a ticket or a
//! bearer credential. A dedicated route rather than a `whoami` that accepts tickets as
//! bearer credentials, because a ticket must open that one stream and nothing else: it is
//! accepted here and nowhere in the engine's authentication.
//!
//! This module must never log a ticket or a credential, and compares MACs only in
//! constant time.

use super::{ApiError, ApiJson, AppState};
use crate::auth::Principal;
use crate::core::signer::TaskSigner;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use shop_types::auth::Role;
use shop_types::notify::{
    NotificationTicket, TicketRequest, Verified, VerifyRequest, MAX_TICKET_LEN, NOTIFICATION_TICKET_TTL_MS,
    TICKET_PREFIX,
};
use shop_types::CustomerId;
use subtle::ConstantTimeEq as _;

/// Put in front of a ticket's text before it is MACed (see the module doc).
pub const TICKET_DOMAIN: &str = "notification-ticket\n";
/// The code of a 401 about the credential being verified (not the caller's).
pub const BAD_CREDENTIAL: &str = "BAD_CREDENTIAL";
/// The code of a 403 for a valid credential that speaks for no customer.
pub const NO_CUSTOMER: &str = "NO_CUSTOMER";
/// Bytes of a ticket's MAC (128 bits, like a task token's).
const TICKET_MAC_LEN: usize = 16;

/// A ticket's content: whose stream it opens, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ticket {
    customer: CustomerId,
    expires_at_ms: u64,
}

impl Ticket {
    fn mac(&self, signer: &TaskSigner) -> [u8; TICKET_MAC_LEN] {
        let full = signer.mac_text(&format!("{TICKET_DOMAIN}{}.{}", self.customer, self.expires_at_ms));
        let mut mac = [0u8; TICKET_MAC_LEN];
        mac.copy_from_slice(&full[..TICKET_MAC_LEN]);
        mac
    }

    fn mint(&self, signer: &TaskSigner) -> String {
        let hex: String = self.mac(signer).iter().map(|b| format!("{b:02x}")).collect();
        format!("{TICKET_PREFIX}{}.{}.{hex}", self.customer, self.expires_at_ms)
    }

    /// The ticket `text` names, if this engine signed it (expiry is the caller's check).
    fn verify(text: &str, signer: &TaskSigner) -> Option<Ticket> {
        if text.len() > MAX_TICKET_LEN {
            return None;
        }
        // A customer id may contain dots, so the two fixed parts are split off the right.
        let mut parts = text.strip_prefix(TICKET_PREFIX)?.rsplitn(3, '.');
        let (mac, expires, customer) = (parts.next()?, parts.next()?, parts.next()?);
        let ticket = Ticket {
            customer: CustomerId::parse(customer).ok()?,
            expires_at_ms: expires.parse().ok().filter(|_| expires.bytes().all(|b| b.is_ascii_digit()))?,
        };
        let given: [u8; TICKET_MAC_LEN] = super::callbacks::parse_hex(mac)?;
        bool::from(ticket.mac(signer).ct_eq(&given)).then_some(ticket)
    }
}

/// `POST /api/notifications/tickets`: 201 with a ticket for the caller's customer (a JWT's
/// `sub`) or the one the body names; 403 for a JWT naming another customer; 422 when no
/// customer is known.
pub(crate) async fn mint(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<TicketRequest>,
) -> Result<(StatusCode, Json<NotificationTicket>), ApiError> {
    let customer = match (principal.subject.customer(), request.customer_id) {
        (Some(own), Some(named)) if *own != named => {
            return Err(ApiError::forbidden(format!(
                "this credential speaks for customer {own} and may not read the notifications of customer {named}"
            )))
        }
        (Some(own), _) => own.clone(),
        (None, Some(named)) => named,
        (None, None) => {
            return Err(ApiError::invalid(
                "customerId is required: this credential speaks for no customer (a JWT with a sub does)",
            ))
        }
    };
    let ticket = Ticket { customer, expires_at_ms: state.clock.now_ms().saturating_add(NOTIFICATION_TICKET_TTL_MS) };
    let text = ticket.mint(&state.core.signer);
    Ok((
        StatusCode::CREATED,
        Json(NotificationTicket { ticket: text, customer_id: ticket.customer, expires_at_ms: ticket.expires_at_ms }),
    ))
}

/// `POST /v1/notifications/verify`: whose notifications `credential` may read. 200 with the
/// customer for a valid ticket or a client/admin credential with a customer; 401
/// [`BAD_CREDENTIAL`] for an unknown, forged or expired one; 403 [`NO_CUSTOMER`] for a valid
/// credential that speaks for no customer. The codes are the worker's to tell these apart
/// from a refusal of its own credential (`UNAUTHENTICATED`, `FORBIDDEN`).
pub(crate) async fn verify(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Json<Verified>, ApiError> {
    let now = state.clock.now_ms();
    if request.credential.starts_with(TICKET_PREFIX) {
        let ticket = Ticket::verify(&request.credential, &state.core.signer)
            .ok_or_else(|| bad_credential("not a notification ticket of this engine"))?;
        if ticket.expires_at_ms <= now {
            return Err(bad_credential("the notification ticket has expired; get a new one"));
        }
        return Ok(Json(Verified { customer_id: ticket.customer, valid_until_ms: ticket.expires_at_ms }));
    }
    // The same checks as every request's bearer credential (the failure throttle aside: the
    // caller is a worker relaying its sockets' credentials, not the guesser).
    let principal = state
        .auth
        .authenticate(Some(format!("Bearer {}", request.credential).as_bytes()))
        .map_err(|denied| bad_credential(&denied.to_string()))?;
    let customer = principal.subject.customer().filter(|_| matches!(principal.role, Role::Client | Role::Admin));
    let customer = customer.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            NO_CUSTOMER,
            "this credential speaks for no customer: open the socket with a ticket instead",
        )
    })?;
    Ok(Json(Verified { customer_id: customer.clone(), valid_until_ms: now.saturating_add(NOTIFICATION_TICKET_TTL_MS) }))
}

fn bad_credential(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, BAD_CREDENTIAL, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TASK_TOKEN_KEY_LEN;

    fn ticket(customer: &str) -> Ticket {
        Ticket { customer: CustomerId::parse(customer).expect("valid"), expires_at_ms: 1_700_000_060_000 }
    }

    #[test]
    fn a_ticket_verifies_only_under_its_key_and_unchanged() {
        let signer = TaskSigner::new([7; TASK_TOKEN_KEY_LEN]);
        // A customer id with dots still splits right.
        let text = ticket("cust.a-1").mint(&signer);
        assert!(text.starts_with(TICKET_PREFIX));
        assert_eq!(Ticket::verify(&text, &signer), Some(ticket("cust.a-1")));
        let other = TaskSigner::new([8; TASK_TOKEN_KEY_LEN]);
        assert_eq!(Ticket::verify(&text, &other), None, "another engine's key");
        let moved = text.replace("1700000060000", "1700000099000");
        assert_eq!(Ticket::verify(&moved, &signer), None, "a moved expiry");
        let renamed = text.replace("cust.a-1", "cust.a-2");
        assert_eq!(Ticket::verify(&renamed, &signer), None, "another customer");
        assert_eq!(Ticket::verify(&text[..text.len() - 1], &signer), None, "a short MAC");
        assert_eq!(Ticket::verify(&format!("{text}0"), &signer), None, "a long MAC");
        assert_eq!(Ticket::verify("", &signer), None);
        assert_eq!(Ticket::verify(&"x".repeat(MAX_TICKET_LEN + 1), &signer), None);
    }

    #[test]
    fn a_ticket_mac_is_not_a_callback_mac() {
        assert_ne!(TICKET_DOMAIN, super::super::callbacks::CALLBACK_DOMAIN);
        assert!(TICKET_DOMAIN.ends_with('\n'), "no id contains a newline, so no other text starts the same");
    }
}
