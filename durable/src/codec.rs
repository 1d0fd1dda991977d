//! The one encoder and decoder of persisted records, for the engine and the workers alike.
//!
//! Every record is a format version byte followed by its bincode 1.3 encoding. Every new
//! record, of either program, is written at [`FORMAT_VERSION`]: varint integers, big-endian.
//! Older records keep decoding by their [`Family`]'s legacy versions, because the two
//! programs once wrote different formats under overlapping version numbers:
//!
//! | version | engine                         | workers                                 |
//! |---------|--------------------------------|-----------------------------------------|
//! | 1       | fixed-width ints, big-endian   | bincode's default: fixed-width, little-endian |
//! | 2       | varints, big-endian            | never written: refused                  |
//! | 3       | varints, big-endian (current)  | varints, big-endian (current)           |
//!
//! What a version means beyond its encoding (the engine's version-3 history record holds
//! every event of a transition, earlier ones one event) is the family's own business. A
//! record with an unknown version or a body that does not decode is reported, never guessed
//! at. This module must never know what a record means.

use bincode::Options as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format of every record written now, by either program.
pub const FORMAT_VERSION: u8 = 3;
/// The engine's varint format with one event per history record. Still read.
pub const ENGINE_VARINT: u8 = 2;
/// The first format of either program (whose encoding differs by family). Still read.
pub const LEGACY_FIXINT: u8 = 1;
/// Bytes a decoded record may claim beyond its own length (bincode's allocation limit), so a
/// corrupt length prefix cannot ask for gigabytes.
pub const DECODE_SLACK_BYTES: u64 = 64;

/// Who wrote a record: the legacy versions differ by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The engine's history store.
    Engine,
    /// The workers' domain stores.
    Workers,
}

impl Family {
    fn reads(self) -> &'static str {
        match self {
            Family::Engine => "1, 2 and 3",
            Family::Workers => "1 and 3",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("empty record")]
    Empty,
    #[error("record format version {version} is not one this build reads (it reads {})", family.reads())]
    UnknownVersion { version: u8, family: Family },
    #[error("record does not decode: {0}")]
    Corrupt(#[from] bincode::Error),
}

fn current() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_varint_encoding().with_big_endian()
}

fn engine_fixint() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_big_endian()
}

/// What `bincode::serialize` wrote: fixed-width little-endian integers, trailing bytes allowed.
fn workers_legacy() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian().allow_trailing_bytes()
}

/// Encodes `value` at [`FORMAT_VERSION`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![FORMAT_VERSION];
    current().serialize_into(&mut bytes, value)?;
    Ok(bytes)
}

/// Appends `more` to `record`, a record of the current version holding one sequence (a
/// length, then its elements) that `family` wrote: the result is what [`encode`] writes for
/// the sequence with `more` after its elements, without decoding them. A record of an older
/// version is refused, not rewritten.
pub fn extend_sequence<T: Serialize>(family: Family, record: &mut Vec<u8>, more: &[T]) -> Result<(), Error> {
    let (&version, body) = record.split_first().ok_or(Error::Empty)?;
    if version != FORMAT_VERSION {
        return Err(Error::UnknownVersion { version, family });
    }
    let mut rest = body;
    let len: u64 = current().deserialize_from(&mut rest)?;
    let mut extended = Vec::with_capacity(record.len() + 64 * more.len());
    extended.push(FORMAT_VERSION);
    current().serialize_into(&mut extended, &(len + more.len() as u64))?;
    extended.extend_from_slice(rest);
    for item in more {
        current().serialize_into(&mut extended, item)?;
    }
    *record = extended;
    Ok(())
}

/// The version byte of a record, if it has one.
pub fn version(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

/// Decodes a record `family` wrote, at any version that family ever wrote.
pub fn decode<T: DeserializeOwned>(family: Family, bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes.split_first().ok_or(Error::Empty)?;
    let limit = body.len() as u64 + DECODE_SLACK_BYTES;
    match (family, version) {
        (_, FORMAT_VERSION) | (Family::Engine, ENGINE_VARINT) => Ok(current().with_limit(limit).deserialize(body)?),
        (Family::Engine, LEGACY_FIXINT) => Ok(engine_fixint().with_limit(limit).deserialize(body)?),
        (Family::Workers, LEGACY_FIXINT) => Ok(workers_legacy().with_limit(limit).deserialize(body)?),
        (family, version) => Err(Error::UnknownVersion { version, family }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: i64,
        seq: u64,
    }

    fn sample() -> Sample {
        Sample { name: "beans".into(), count: -3, seq: 1_700_000_000_000 }
    }

    #[test]
    fn an_extended_sequence_is_the_sequence_encoded_whole() {
        // 250 is the last length bincode's varint writes in one byte: cross it.
        for (first, more) in [(1, 1), (3, 2), (249, 1), (250, 1), (200, 120), (0, 4)] {
            let all: Vec<Sample> =
                (0..first + more).map(|i| Sample { name: format!("s{i}"), count: -i, seq: i as u64 }).collect();
            let mut record = encode(&all[..first as usize]).expect("encodes");
            extend_sequence(Family::Engine, &mut record, &all[first as usize..]).expect("extends");
            assert_eq!(record, encode(&all).expect("encodes"), "{first} + {more}");
            assert_eq!(decode::<Vec<Sample>>(Family::Engine, &record).expect("decodes"), all);
        }
        let mut old = vec![LEGACY_FIXINT, 0];
        assert!(matches!(extend_sequence(Family::Workers, &mut old, &[sample()]), Err(Error::UnknownVersion { .. })));
        assert!(matches!(extend_sequence(Family::Engine, &mut Vec::new(), &[sample()]), Err(Error::Empty)));
    }

    #[test]
    fn new_records_round_trip_at_the_current_version_for_both_families() {
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(version(&bytes), Some(FORMAT_VERSION));
        for family in [Family::Engine, Family::Workers] {
            assert_eq!(decode::<Sample>(family, &bytes).expect("decodes"), sample());
        }
    }

    #[test]
    fn a_worker_record_of_version_1_still_decodes() {
        // Exactly what the workers wrote before this crate: the version byte, then
        // `bincode::serialize` (fixed-width, little-endian).
        let mut old = vec![LEGACY_FIXINT];
        old.extend(bincode::serialize(&sample()).expect("encodes"));
        assert_eq!(&old[1 + 8 + 5..1 + 8 + 5 + 8], &(-3i64).to_le_bytes(), "little-endian fixint");
        assert_eq!(decode::<Sample>(Family::Workers, &old).expect("decodes"), sample());
        // Read as the engine's version 1 (big-endian), the same bytes are not the same record.
        assert_ne!(decode::<Sample>(Family::Engine, &old).ok(), Some(sample()));
    }

    #[test]
    fn engine_records_of_versions_1_and_2_still_decode() {
        let mut fixed = vec![LEGACY_FIXINT];
        engine_fixint().serialize_into(&mut fixed, &sample()).expect("encodes");
        let mut varint = vec![ENGINE_VARINT];
        current().serialize_into(&mut varint, &sample()).expect("encodes");
        assert!(varint.len() < fixed.len(), "varints are smaller");
        for old in [fixed, varint] {
            assert_eq!(decode::<Sample>(Family::Engine, &old).expect("decodes"), sample());
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors_not_panics() {
        assert!(matches!(decode::<Sample>(Family::Engine, &[]), Err(Error::Empty)));
        assert!(matches!(decode::<Sample>(Family::Engine, &[9, 1]), Err(Error::UnknownVersion { version: 9, .. })));
        let mut two = encode(&sample()).expect("encodes");
        two[0] = ENGINE_VARINT;
        assert!(matches!(decode::<Sample>(Family::Workers, &two), Err(Error::UnknownVersion { version: 2, .. })));
        assert!(matches!(decode::<Sample>(Family::Workers, &[FORMAT_VERSION, 0xff]), Err(Error::Corrupt(_))));
        let mut huge_length = vec![LEGACY_FIXINT];
        huge_length.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        for family in [Family::Engine, Family::Workers] {
            assert!(decode::<Sample>(family, &huge_length).is_err());
        }
    }
}
