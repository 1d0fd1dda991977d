//! The engine's records through the one codec of `shop-durable` (family
//! [`Family::Engine`]), and the shape of its history records.
//!
//! Every record is a format version byte followed by its bincode 1.3 encoding (see
//! `shop_durable::codec`). For history records the version also says their shape: version 3
//! (written now) holds every event of one transition (a run's transitions in one batch join
//! one record: [`extend_events`]), so a saga is a few records; versions 1 (fixed-width
//! integers) and 2 (varints) hold one event each. All three are read. This module must never
//! know where a record is kept.

use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_durable::codec::{self as durable, Family};
use shop_types::history::Event;

pub use shop_durable::codec::{Error, FORMAT_VERSION};

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    durable::encode(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    durable::decode(Family::Engine, bytes)
}

/// Encodes the events of one transition as one history record.
pub fn encode_events(events: &[Event]) -> Result<Vec<u8>, Error> {
    encode(events)
}

/// Adds `more` (numbered right after them) to the events a history record of the current
/// version holds: a run's second transition in one batch joins its first.
pub fn extend_events(record: &mut Vec<u8>, more: &[Event]) -> Result<(), Error> {
    durable::extend_sequence(Family::Engine, record, more)
}

/// Decodes a history record: the events of one transition (version 3), or one event (the
/// records of versions 1 and 2).
pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, Error> {
    match durable::version(bytes) {
        Some(FORMAT_VERSION) => decode(bytes),
        _ => Ok(vec![decode(bytes)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options as _;
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
        let mut fixed = vec![durable::LEGACY_FIXINT];
        let fixint = bincode::DefaultOptions::new().with_fixint_encoding().with_big_endian();
        fixint.serialize_into(&mut fixed, &event).expect("encodes");
        let mut single = vec![durable::ENGINE_VARINT];
        let varint = bincode::DefaultOptions::new().with_varint_encoding().with_big_endian();
        varint.serialize_into(&mut single, &event).expect("encodes");
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
        assert!(matches!(decode::<Event>(&[9, 1, 2]), Err(Error::UnknownVersion { version: 9, .. })));
        assert!(matches!(decode::<Event>(&[FORMAT_VERSION, 0xff, 0xff, 0xff]), Err(Error::Corrupt(_))));
        let mut huge_length = vec![durable::LEGACY_FIXINT];
        huge_length.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        huge_length.extend_from_slice(&[0; 8]);
        huge_length.extend_from_slice(&[2, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Event>(&huge_length).is_err());
    }
}
