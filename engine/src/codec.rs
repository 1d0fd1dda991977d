//! The one place persisted records are encoded and decoded.
//!
//! Every record is a format version byte followed by its bincode 1.3 encoding. A record with
//! an unknown version or a body that does not decode is reported, never guessed at.
//!
//! Versions: 1 encodes integers at fixed width; 2 (written now) encodes them as varints,
//! which makes a saga's history about a tenth smaller. Both are read.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format of every record this build writes.
pub const FORMAT_VERSION: u8 = 2;
/// The first format: fixed-width integers. Still read.
const FORMAT_FIXINT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("empty record")]
    Empty,
    #[error("record format version {0} is not one this build reads (it reads {FORMAT_FIXINT} and {FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("record does not decode: {0}")]
    Corrupt(#[from] bincode::Error),
}

use bincode::Options as _;

fn varint() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_varint_encoding().with_big_endian()
}

fn fixint() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_big_endian()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![FORMAT_VERSION];
    varint().serialize_into(&mut bytes, value)?;
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes.split_first().ok_or(Error::Empty)?;
    // Limit allocations to the record's own size so a corrupt length prefix cannot ask for
    // gigabytes.
    let limit = body.len() as u64 + 64;
    match version {
        FORMAT_VERSION => Ok(varint().with_limit(limit).deserialize(body)?),
        FORMAT_FIXINT => Ok(fixint().with_limit(limit).deserialize(body)?),
        other => Err(Error::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::history::{Event, EventKind};
    use shop_types::{JsonText, StepRef};

    #[test]
    fn events_round_trip() {
        let event = Event {
            seq: 3,
            at_ms: 1_700_000_000_000,
            kind: EventKind::StepCompleted {
                step: StepRef::forward(1),
                attempt: 2,
                output: JsonText::parse(r#"{"totalCents":1999}"#).expect("valid"),
            },
        };
        let bytes = encode(&event).expect("encodes");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Event>(&bytes).expect("decodes"), event);
    }

    #[test]
    fn records_of_the_first_format_still_decode() {
        let event = Event { seq: 1, at_ms: 5, kind: EventKind::CancelRequested { reason: "r".into() } };
        let mut old = vec![FORMAT_FIXINT];
        fixint().serialize_into(&mut old, &event).expect("encodes");
        assert_eq!(decode::<Event>(&old).expect("decodes"), event);
        assert!(encode(&event).expect("encodes").len() < old.len(), "the current format is smaller");
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert!(matches!(decode::<Event>(&[]), Err(Error::Empty)));
        assert!(matches!(decode::<Event>(&[9, 1, 2]), Err(Error::UnknownVersion(9))));
        assert!(matches!(decode::<Event>(&[FORMAT_VERSION, 0xff, 0xff, 0xff]), Err(Error::Corrupt(_))));
        let mut huge_length = vec![FORMAT_FIXINT];
        huge_length.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        huge_length.extend_from_slice(&[0; 8]);
        huge_length.extend_from_slice(&[2, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Event>(&huge_length).is_err());
    }
}
