//! Task-token MACs: proof that a token was handed out by this engine for this attempt.
//!
//! A token names (workflow, step, attempt); one attempt is handed out at most once, so a MAC
//! over that text binds the token to its hand-out. The MAC is HMAC-SHA256 (RFC 2104) with the
//! store's secret key, truncated to [`TASK_TOKEN_MAC_LEN`] bytes. The key lives in the store
//! (`store::Store::task_token_key`), so a token stays valid across an engine restart, and
//! nothing about it enters a history: the decider and the storage format are untouched.
//!
//! This module must never log or show the key, and must compare MACs only in constant time.

use crate::store::TASK_TOKEN_KEY_LEN;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shop_types::ids::TASK_TOKEN_MAC_LEN;
use shop_types::TaskToken;
use subtle::ConstantTimeEq;

/// Signs and checks task tokens with the store's secret key.
pub struct TaskSigner {
    key: [u8; TASK_TOKEN_KEY_LEN],
}

impl std::fmt::Debug for TaskSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskSigner { key: <secret> }")
    }
}

impl TaskSigner {
    pub fn new(key: [u8; TASK_TOKEN_KEY_LEN]) -> TaskSigner {
        TaskSigner { key }
    }

    /// `token` with its MAC set.
    pub fn sign(&self, token: TaskToken) -> TaskToken {
        let mac = self.mac(&token);
        TaskToken { mac: Some(mac), ..token }
    }

    /// Whether `token` carries the MAC this engine gave it; a token without one fails.
    pub fn verify(&self, token: &TaskToken) -> bool {
        let Some(given) = &token.mac else {
            return false;
        };
        bool::from(self.mac(token).ct_eq(given))
    }

    /// The full HMAC of `text` under the same key, for other capabilities the engine derives
    /// (callback tokens, `api/callbacks.rs`). Callers must prefix `text` with a domain that no
    /// task token's text can start with, so one MAC never verifies as the other.
    pub fn mac_text(&self, text: &str) -> [u8; 32] {
        hmac_sha256(&self.key, text.as_bytes())
    }

    fn mac(&self, token: &TaskToken) -> [u8; TASK_TOKEN_MAC_LEN] {
        let full = hmac_sha256(&self.key, token.signed_text().as_bytes());
        let mut mac = [0u8; TASK_TOKEN_MAC_LEN];
        mac.copy_from_slice(&full[..TASK_TOKEN_MAC_LEN]);
        mac
    }
}

fn hmac_sha256(key: &[u8; TASK_TOKEN_KEY_LEN], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length, so `new_from_slice` cannot fail on ours.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::{StepRef, WorkflowId};

    fn token(attempt: u32) -> TaskToken {
        TaskToken {
            workflow_id: WorkflowId::parse("o-1").expect("valid"),
            step: StepRef::forward(1),
            attempt,
            mac: None,
        }
    }

    #[test]
    fn only_the_signed_token_verifies() {
        let signer = TaskSigner::new([7; TASK_TOKEN_KEY_LEN]);
        let signed = signer.sign(token(1));
        assert!(signer.verify(&signed));
        assert!(!signer.verify(&token(1)), "a token without a MAC is refused");
        let mut forged = signed.clone();
        if let Some(mac) = &mut forged.mac {
            mac[0] ^= 1;
        }
        assert!(!signer.verify(&forged), "one flipped bit is refused");
        let moved = TaskToken { attempt: 2, ..signed.clone() };
        assert!(!signer.verify(&moved), "a MAC does not carry over to another attempt");
        let other = TaskSigner::new([8; TASK_TOKEN_KEY_LEN]);
        assert!(!other.verify(&signed), "another store's key does not verify it");
        assert!(format!("{signer:?}").contains("<secret>"));
    }
}
