//! `POST /v1/callbacks/{token}`: single-use capability URLs for open waits, so a payment
//! provider (or a bank) can answer a wait without an API key.
//!
//! A callback token is derived, never stored: it names the run, the wait step, the sequence
//! number of that wait's `WaitOpened` event and its deadline, and carries an HMAC-SHA256 of
//! exactly those under the store's task-token key (`core::signer`, with the domain
//! [`CALLBACK_DOMAIN`] so it can never pass for a task token's MAC, nor one for it). Text form:
//! `<run>~<step index>~<seq>~<deadline ms>~<mac, 32 hex digits>` (`~` appears in no id).
//!
//! The route needs no credential: the token is the credential. Its body is
//! `{"signal": "<one of the wait's signals>", "payload": <any JSON, default null>}`. The
//! signal is recorded with the token itself as its idempotency key, so the token is single
//! use: once a signal carries it, or once the wait is closed (completed, timed out, the run
//! finished), it answers 410 `GONE`. A forged or malformed token, and one past its deadline
//! whose wait the engine has not yet closed, answer 404 `NOT_FOUND`, the same answer for
//! each, so a caller learns nothing about which. (Only a genuine token can ever see 410.)
//!
//! This module owns minting and checking tokens and the route; it must never write anything
//! but through `Handle::signal`, and never tell a forged token from an expired one.

use super::{ApiError, ApiJson, AppState};
use crate::core::signer::TaskSigner;
use crate::core::{CoreError, SignalOutcome, SignalRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use shop_types::api::{CallbackRequest, SignalReply};
use shop_types::history::{Event, EventKind};
use shop_types::{StepRef, WorkflowId};
use subtle::ConstantTimeEq;

/// Prefix of the text a callback MAC covers: a newline, which no workflow id (and so no task
/// token's text) contains.
pub const CALLBACK_DOMAIN: &str = "callback\n";
/// Bytes of a callback token's MAC (128 bits, like a task token's).
pub const CALLBACK_MAC_LEN: usize = 16;
/// The path prefix of a callback URL.
pub const CALLBACK_PATH: &str = "/v1/callbacks/";

/// What a callback token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackToken {
    pub workflow_id: WorkflowId,
    /// The wait step's forward index.
    pub step: u16,
    /// The sequence number of the wait's `WaitOpened` event.
    pub seq: u64,
    pub deadline_ms: u64,
}

impl CallbackToken {
    fn signed_text(&self) -> String {
        format!("{}~{}~{}~{}", self.workflow_id, self.step, self.seq, self.deadline_ms)
    }

    fn mac(&self, signer: &TaskSigner) -> [u8; CALLBACK_MAC_LEN] {
        let full = signer.mac_text(&format!("{CALLBACK_DOMAIN}{}", self.signed_text()));
        let mut mac = [0u8; CALLBACK_MAC_LEN];
        mac.copy_from_slice(&full[..CALLBACK_MAC_LEN]);
        mac
    }

    /// The token's text, MAC included.
    pub fn mint(&self, signer: &TaskSigner) -> String {
        let hex: String = self.mac(signer).iter().map(|b| format!("{b:02x}")).collect();
        format!("{}~{hex}", self.signed_text())
    }

    /// Parses `text` and checks its MAC; `None` for anything malformed or forged.
    pub fn verify(text: &str, signer: &TaskSigner) -> Option<CallbackToken> {
        let mut parts = text.split('~');
        let (Some(id), Some(step), Some(seq), Some(deadline), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let token = CallbackToken {
            workflow_id: WorkflowId::parse(id).ok()?,
            step: step.parse().ok()?,
            seq: seq.parse().ok()?,
            deadline_ms: deadline.parse().ok()?,
        };
        let given: [u8; CALLBACK_MAC_LEN] = parse_hex(mac)?;
        bool::from(token.mac(signer).ct_eq(&given)).then_some(token)
    }
}

/// The `N` bytes `text` spells in lowercase or uppercase hex, if it spells exactly that many
/// (also for notification tickets' MACs).
pub(crate) fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The callback path of the wait `step` opened in `events`, if it is open there.
pub(crate) fn callback_path(signer: &TaskSigner, id: &WorkflowId, events: &[Event], step: StepRef) -> Option<String> {
    let (seq, deadline_ms) = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::WaitOpened { step: s, deadline_ms, .. } if *s == step => Some((e.seq, *deadline_ms)),
        _ => None,
    })?;
    let token = CallbackToken { workflow_id: id.clone(), step: step.index, seq, deadline_ms };
    Some(format!("{CALLBACK_PATH}{}", token.mint(signer)))
}

fn gone(message: &str) -> ApiError {
    ApiError::new(StatusCode::GONE, "GONE", message)
}

/// `POST /v1/callbacks/{token}` (no credential; see the module doc).
pub(crate) async fn callback(
    State(state): State<AppState>,
    Path(text): Path<String>,
    ApiJson(body): ApiJson<CallbackRequest>,
) -> Result<Json<SignalReply>, ApiError> {
    let unknown = || ApiError::not_found("no such callback");
    let token = CallbackToken::verify(&text, &state.core.signer).ok_or_else(unknown)?;
    let events = state.store.history(&token.workflow_id)?;
    let step = StepRef::forward(token.step);
    let opened = events.iter().find(|e| e.seq == token.seq);
    let Some(EventKind::WaitOpened { step: opened_step, signals, .. }) = opened.map(|e| &e.kind) else {
        return Err(unknown());
    };
    if *opened_step != step {
        return Err(unknown());
    }
    let used = events.iter().any(|e| matches!(&e.kind, EventKind::SignalReceived { key, .. } if *key == text));
    if used {
        return Err(gone("this callback was used already"));
    }
    let closed = events.iter().filter(|e| e.seq > token.seq).any(|e| match &e.kind {
        EventKind::WaitCompleted { step: s, .. } | EventKind::WaitTimedOut { step: s } => *s == step,
        kind => kind.is_terminal(),
    });
    if closed {
        return Err(gone("the wait this callback answers is closed"));
    }
    // Open in the history but past its deadline (its timer has not fired yet): expired.
    if state.clock.now_ms() > token.deadline_ms {
        return Err(unknown());
    }
    if !signals.contains(&body.signal) {
        let message = format!("this wait takes one of {signals:?}, not {:?}", body.signal);
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UNKNOWN_SIGNAL", message));
    }
    let request = SignalRequest { name: body.signal, idempotency_key: text, payload: body.payload };
    match state.core.signal(token.workflow_id, request).await {
        Ok(SignalOutcome::Recorded) => Ok(Json(SignalReply { outcome: "recorded".to_owned() })),
        // A concurrent use of the same token won the race: this one is the second use.
        Ok(SignalOutcome::Duplicate) | Err(CoreError::KeyReused) => Err(gone("this callback was used already")),
        Err(CoreError::Finished) => Err(gone("the wait this callback answers is closed")),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TASK_TOKEN_KEY_LEN;

    fn token() -> CallbackToken {
        CallbackToken { workflow_id: WorkflowId::parse("o-1").expect("valid"), step: 3, seq: 9, deadline_ms: 1_000 }
    }

    #[test]
    fn only_a_minted_token_verifies_and_it_names_what_it_was_minted_for() {
        let signer = TaskSigner::new([7; TASK_TOKEN_KEY_LEN]);
        let text = token().mint(&signer);
        assert_eq!(CallbackToken::verify(&text, &signer), Some(token()));
        let other = TaskSigner::new([8; TASK_TOKEN_KEY_LEN]);
        assert_eq!(CallbackToken::verify(&text, &other), None, "another engine's key");
        let later = text.replacen("~1000~", "~2000~", 1);
        assert_eq!(CallbackToken::verify(&later, &signer), None, "a moved deadline");
        assert_eq!(CallbackToken::verify(&text[..text.len() - 1], &signer), None, "a short MAC");
        assert_eq!(CallbackToken::verify(&format!("{text}~x"), &signer), None, "an extra part");
        assert_eq!(CallbackToken::verify("", &signer), None);
    }

    #[test]
    fn a_callback_mac_is_not_a_task_token_mac() {
        let signer = TaskSigner::new([7; TASK_TOKEN_KEY_LEN]);
        let task = shop_types::TaskToken {
            workflow_id: WorkflowId::parse("o-1").expect("valid"),
            step: StepRef::forward(3),
            attempt: 9,
            mac: None,
        };
        let task_mac = signer.sign(task).mac.expect("signed");
        assert_ne!(token().mac(&signer), task_mac);
    }
}
