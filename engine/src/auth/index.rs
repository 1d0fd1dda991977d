//! The in-memory index of stored tokens: finding a token by the digest of its secret in
//! time that does not depend on how much of a guess matched, and whether it may be used.
//!
//! This module must never hold a token's secret, only its digest.

use super::{Denied, Digest, INDEX_KEY_LEN};
use crate::store::TokenRecord;
use std::collections::HashMap;
use subtle::ConstantTimeEq as _;

/// A stored token as the in-memory index keeps it.
pub(super) struct Entry {
    pub(super) digest: Digest,
    pub(super) record: TokenRecord,
}

/// The record whose digest is `digest`. The map finds a candidate by the first half of the
/// digest; the whole digest is then compared in constant time, so how long a refusal takes
/// tells nothing about how close a guess came.
pub(super) fn lookup<'a>(index: &'a HashMap<[u8; INDEX_KEY_LEN], Entry>, digest: &Digest) -> Option<&'a TokenRecord> {
    let entry = index.get(&index_key(digest))?;
    bool::from(entry.digest.ct_eq(digest)).then_some(&entry.record)
}

pub(super) fn index_key(digest: &Digest) -> [u8; INDEX_KEY_LEN] {
    let mut key = [0; INDEX_KEY_LEN];
    key.copy_from_slice(&digest[..INDEX_KEY_LEN]);
    key
}

/// Whether a stored token may be used at `now_ms`.
pub(super) fn check_record(record: &TokenRecord, now_ms: u64) -> Result<(), Denied> {
    if record.revoked {
        return Err(Denied::Revoked);
    }
    if record.expires_at_ms.is_some_and(|expires| expires <= now_ms) {
        return Err(Denied::Expired);
    }
    Ok(())
}
