//! The stored shape of an API token ([`TokenRecord`]) and how every shape it ever had is
//! read back.
//!
//! Records are bincode, which is not self-describing: a field added to the struct would make
//! every record written before it fail to decode. So each shape the record ever had stays
//! here, and [`decode_token`] reads the current one first and then the older ones. Bincode
//! makes this unambiguous: a record of an older shape is shorter than the current one (its
//! fields are a prefix of today's), so it fails as the current shape at its end, and a
//! current record read as an older shape leaves trailing bytes, which the codec refuses.
//!
//! This module must never hold a token's secret, and never drop a shape that may still be on
//! disk.

use crate::codec;
use serde::{Deserialize, Serialize};
use shop_types::auth::Role;
use shop_types::{QueueName, WorkflowType};

/// An API token as stored: everything about it except its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The queues a worker token may serve; empty for other roles.
    pub queues: Vec<QueueName>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked: bool,
    /// The signal names a signaler token may send; empty for other roles. (Appended in the
    /// second shape, with `workflow_types`.)
    pub signals: Vec<String>,
    /// The workflow types a signaler token may signal runs of; empty for other roles.
    pub workflow_types: Vec<WorkflowType>,
}

/// The first shape of [`TokenRecord`], before signaler tokens: no `signals`, no
/// `workflow_types`. Only ever read.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(super) struct TokenRecordV1 {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) role: Role,
    pub(super) queues: Vec<QueueName>,
    pub(super) created_at_ms: u64,
    pub(super) expires_at_ms: Option<u64>,
    pub(super) revoked: bool,
}

impl From<TokenRecordV1> for TokenRecord {
    fn from(old: TokenRecordV1) -> TokenRecord {
        TokenRecord {
            id: old.id,
            name: old.name,
            role: old.role,
            queues: old.queues,
            created_at_ms: old.created_at_ms,
            expires_at_ms: old.expires_at_ms,
            revoked: old.revoked,
            signals: Vec::new(),
            workflow_types: Vec::new(),
        }
    }
}

/// Decodes a stored token of any shape and any codec version. When no shape fits, the
/// current shape's error is the one reported.
pub fn decode_token(bytes: &[u8]) -> Result<TokenRecord, codec::Error> {
    match codec::decode::<TokenRecord>(bytes) {
        Ok(record) => Ok(record),
        Err(current) => codec::decode::<TokenRecordV1>(bytes).map(TokenRecord::from).map_err(|_| current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options as _;

    fn old() -> TokenRecordV1 {
        TokenRecordV1 {
            id: "tok_0123456789abcdef".into(),
            name: "payments".into(),
            role: Role::Worker,
            queues: vec![QueueName::parse("payment").expect("valid")],
            created_at_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_800_000_000_000),
            revoked: true,
        }
    }

    #[test]
    fn records_of_the_first_shape_still_load_at_every_codec_version() {
        let current = codec::encode(&old()).expect("encodes");
        let mut fixint = vec![shop_durable::codec::LEGACY_FIXINT];
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_big_endian()
            .serialize_into(&mut fixint, &old())
            .expect("encodes");
        for bytes in [current, fixint] {
            let record = decode_token(&bytes).expect("an old record loads");
            assert_eq!(record, TokenRecord::from(old()));
            assert!(record.signals.is_empty() && record.workflow_types.is_empty());
            assert!(record.revoked, "every old field kept");
        }
    }

    #[test]
    fn records_of_the_current_shape_round_trip_and_garbage_is_an_error() {
        let record = TokenRecord {
            role: Role::Signaler,
            queues: Vec::new(),
            signals: vec!["payment_confirmed".into()],
            workflow_types: vec![WorkflowType::parse("order").expect("valid")],
            ..TokenRecord::from(old())
        };
        let bytes = codec::encode(&record).expect("encodes");
        assert_eq!(decode_token(&bytes).expect("decodes"), record);
        assert!(decode_token(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_token(&[]).is_err());
    }
}
