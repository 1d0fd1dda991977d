//! The one place persisted records are encoded and decoded.
//!
//! Every record is a format version byte followed by its bincode 1.3 encoding. A record with
//! an unknown version or a body that does not decode is reported, never guessed at.
//!
//! Versions: 1 encodes integers at fixed width; 2 encodes them as varints, which makes a
//! saga's history about a tenth smaller; 3 (written now) is 2 where a history record holds
//! every event of one transition instead of one event, so a saga is about half as many
//! writes. All three are read.

use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_types::history::Event;

/// The format of every record this build writes.
pub const FORMAT_VERSION: u8 = 3;
/// Varint integers, one event per history record. Still read.
const FORMAT_VARINT: u8 = 2;
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
        FORMAT_VERSION | FORMAT_VARINT => Ok(varint().with_limit(limit).deserialize(body)?),
        FORMAT_FIXINT => Ok(fixint().with_limit(limit).deserialize(body)?),
        other => Err(Error::UnknownVersion(other)),
    }
}

/// Encodes the events of one transition as one history record.
pub fn encode_events(events: &[Event]) -> Result<Vec<u8>, Error> {
    encode(&events)
}

/// Decodes a history record: the events of one transition (version 3), or one event (the
/// records of versions 1 and 2).
pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, Error> {
    match bytes.first() {
        Some(&FORMAT_VERSION) => decode(bytes),
        _ => Ok(vec![decode(bytes)?]),
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
    fn history_records_of_every_format_decode() {
        let event = Event { seq: 1, at_ms: 5, kind: EventKind::CancelRequested { reason: "r".into() } };
        let mut fixed = vec![FORMAT_FIXINT];
        fixint().serialize_into(&mut fixed, &event).expect("encodes");
        let mut single = vec![FORMAT_VARINT];
        varint().serialize_into(&mut single, &event).expect("encodes");
        assert!(single.len() < fixed.len(), "varints are smaller");
        for old in [fixed, single] {
            assert_eq!(decode_events(&old).expect("decodes"), vec![event.clone()]);
        }
        let second = Event { seq: 2, ..event.clone() };
        let batch = encode_events(&[event.clone(), second.clone()]).expect("encodes");
        assert_eq!(decode_events(&batch).expect("decodes"), vec![event, second]);
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
