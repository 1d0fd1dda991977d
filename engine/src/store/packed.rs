//! The packed record of a finished run (sled backend): its summary and every transition's
//! history record in one value, so a finished run costs the store one record instead of a
//! summary and one record per transition.
//!
//! Layout: a tag byte that no codec version uses ([`PACKED`]), a compression byte, the
//! summary record (length-prefixed, never compressed, so a summary read does not inflate the
//! history), then the transitions: for each, the sequence number of its first event and its
//! history record exactly as it was written (`codec::encode_events`), length-prefixed, the
//! whole list compressed with LZ4 when that is smaller. Lengths and numbers are LEB128
//! varints. Keeping each transition's record whole keeps what a reader by position needs
//! (the events of one transition, found by its first sequence number) and the start's
//! events (the first transition).
//!
//! This module only encodes and decodes; it must never read or write a store.

use crate::codec;

/// First byte of a packed record; codec records begin with a format version (1 to 3).
pub const PACKED: u8 = 0xB0;
/// The transitions are stored as they are.
const RAW: u8 = 0;
/// The transitions are LZ4 block-compressed (`lz4_flex`), their raw length before them.
const LZ4: u8 = 1;
/// Largest raw transitions list a packed record may declare: far above any history the
/// engine allows (`MAX_HISTORY_EVENTS` of bounded events), so a damaged length cannot make a
/// reader allocate without bound.
pub const MAX_PACKED_RAW_BYTES: usize = 256 * 1024 * 1024;

/// Whether `bytes` (the value of a run key) is a packed record rather than a summary.
pub fn is_packed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&PACKED)
}

/// One transition's history record and the sequence number of its first event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub first_seq: u64,
    pub record: Vec<u8>,
}

/// Packs a finished run: its summary record and its transitions in sequence order.
pub fn pack(summary: &[u8], transitions: &[Transition]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(transitions.iter().map(|t| t.record.len() + 6).sum());
    for transition in transitions {
        put_varint(&mut raw, transition.first_seq);
        put_varint(&mut raw, transition.record.len() as u64);
        raw.extend_from_slice(&transition.record);
    }
    let compressed = lz4_flex::block::compress(&raw);
    let mut out = Vec::with_capacity(summary.len() + compressed.len().min(raw.len()) + 16);
    out.push(PACKED);
    // Compression pays on all but the shortest histories (measured in docs/performance.md);
    // it is kept only where it does.
    let (kind, body) = if compressed.len() + 4 < raw.len() { (LZ4, &compressed) } else { (RAW, &raw) };
    out.push(kind);
    put_varint(&mut out, summary.len() as u64);
    out.extend_from_slice(summary);
    put_varint(&mut out, raw.len() as u64);
    out.extend_from_slice(body);
    out
}

/// The summary record of a packed record (not decoded).
pub fn summary(bytes: &[u8]) -> Result<&[u8], codec::Error> {
    Ok(split(bytes)?.1)
}

/// The transitions of a packed record, in sequence order.
pub fn transitions(bytes: &[u8]) -> Result<Vec<Transition>, codec::Error> {
    let (kind, _, mut rest) = split(bytes)?;
    let raw_len = usize::try_from(take_varint(&mut rest)?).map_err(|_| corrupt("a raw length out of range"))?;
    if raw_len > MAX_PACKED_RAW_BYTES {
        return Err(corrupt("a raw length beyond MAX_PACKED_RAW_BYTES"));
    }
    let inflated;
    let mut raw: &[u8] = match kind {
        RAW => rest,
        LZ4 => {
            inflated = lz4_flex::block::decompress(rest, raw_len).map_err(|e| corrupt(&e.to_string()))?;
            &inflated
        }
        _ => return Err(corrupt("an unknown compression")),
    };
    if raw.len() != raw_len {
        return Err(corrupt("transitions of another length than declared"));
    }
    let mut out = Vec::new();
    while !raw.is_empty() {
        let first_seq = take_varint(&mut raw)?;
        let record = take_bytes(&mut raw)?.to_vec();
        out.push(Transition { first_seq, record });
    }
    Ok(out)
}

/// The compression byte, the summary, and what follows it.
fn split(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), codec::Error> {
    let [PACKED, kind, rest @ ..] = bytes else {
        return Err(corrupt("not a packed record"));
    };
    let mut rest = rest;
    let summary = take_bytes(&mut rest)?;
    Ok((*kind, summary, rest))
}

fn corrupt(what: &str) -> codec::Error {
    codec::Error::Corrupt(Box::new(bincode::ErrorKind::Custom(format!("packed run record: {what}"))))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, codec::Error> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or_else(|| corrupt("a number cut short"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(corrupt("a number longer than 64 bits"))
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], codec::Error> {
    let len = usize::try_from(take_varint(bytes)?).map_err(|_| corrupt("a length out of range"))?;
    if len > bytes.len() {
        return Err(corrupt("a length beyond the record"));
    }
    let (taken, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transitions_of(records: &[&[u8]]) -> Vec<Transition> {
        (1..).zip(records).map(|(seq, r)| Transition { first_seq: seq * 300, record: r.to_vec() }).collect()
    }

    #[test]
    fn a_packed_run_gives_back_its_summary_and_transitions_compressed_or_not() {
        let long = b"{\"orderId\":\"o-1\",\"items\":[1,2,3]}".repeat(20);
        for records in [vec![&b"x"[..]], vec![&long[..], &long[..], b"tail"]] {
            let expected = transitions_of(&records);
            let packed = pack(b"summary!", &expected);
            assert!(is_packed(&packed));
            assert_eq!(summary(&packed).expect("reads"), b"summary!");
            assert_eq!(transitions(&packed).expect("reads"), expected);
        }
        let repetitive = pack(b"s", &transitions_of(&[&long[..], &long[..]]));
        assert_eq!(repetitive[1], LZ4, "repetitive histories are compressed");
        assert!(repetitive.len() < long.len());
        assert_eq!(pack(b"s", &transitions_of(&[b"x"]))[1], RAW, "a tiny one is not");
    }

    #[test]
    fn damaged_packed_records_are_refused_not_panicked_on() {
        let long = b"abcdefgh".repeat(40);
        let packed = pack(b"summary", &transitions_of(&[&long[..], b"y"]));
        for cut in 0..packed.len() {
            let _ = transitions(&packed[..cut]);
            let _ = summary(&packed[..cut]);
        }
        let mut huge = vec![PACKED, RAW, 1, b's'];
        put_varint(&mut huge, (MAX_PACKED_RAW_BYTES + 1) as u64);
        assert!(transitions(&huge).is_err());
        assert!(transitions(&[PACKED, 9, 0, 0]).is_err(), "unknown compression");
        assert!(summary(&[1, 2, 3]).is_err(), "a summary record is not packed");
    }
}
