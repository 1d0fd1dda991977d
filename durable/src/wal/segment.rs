//! The log's files: numbered segments, their records (format in the parent module's doc),
//! and reading them back. It must never touch the tree.

use super::io;
use crate::open::{Durability, Error};
use std::fs::{File, OpenOptions as FileOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The segment being written.
pub(super) struct Segment {
    pub(super) number: u64,
    pub(super) file: File,
    pub(super) len: u64,
}

const SUFFIX: &str = ".wal";

pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}{SUFFIX}"))
}

/// The folder's segments, oldest first.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|source| io(dir, source))? {
        let path = entry.map_err(|source| io(dir, source))?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(SUFFIX))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(number) = number {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

pub(super) fn create_segment(dir: &Path, number: u64, durability: Durability) -> Result<Segment, Error> {
    let path = segment_path(dir, number);
    let file = FileOptions::new().create(true).append(true).open(&path).map_err(|source| io(&path, source))?;
    // The new file's name must survive a power loss before any record in it is acknowledged.
    sync_dir(dir, durability)?;
    Ok(Segment { number, file, len: 0 })
}

pub(super) fn sync_dir(dir: &Path, durability: Durability) -> Result<(), Error> {
    if durability == Durability::PowerSafe {
        File::open(dir).and_then(|folder| folder.sync_all()).map_err(|source| io(dir, source))?;
    }
    Ok(())
}

pub(super) struct Record {
    pub(super) seq: u64,
    pub(super) ops: Vec<u8>,
}

/// The whole records of one segment. A torn or corrupt record ends the last segment (see
/// the module's doc) and is an error in any other.
pub(super) fn read_segment(path: &Path, is_last: bool) -> Result<Vec<Record>, Error> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut file| file.read_to_end(&mut bytes)).map_err(|source| io(path, source))?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Some((record, used)) => {
                records.push(record);
                at += used;
            }
            None if is_last => break,
            None => {
                return Err(Error::Corrupt(format!("{}: a torn or corrupt record at byte {at}", path.display())));
            }
        }
    }
    Ok(records)
}

fn parse_record(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    let (ops, seq) = body.split_at(len.checked_sub(8)?);
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((Record { seq: u64::from_le_bytes(seq.try_into().ok()?), ops: ops.to_vec() }, 8 + len))
}

pub(super) fn decode_ops(path: &Path, mut ops: &[u8]) -> Result<sled::Batch, Error> {
    let corrupt = || Error::Corrupt(format!("{}: a record's operations do not parse", path.display()));
    let take = |ops: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(ops.get(0..4)?.try_into().ok()?) as usize;
        let bytes = ops.get(4..4 + len)?.to_vec();
        *ops = &ops[4 + len..];
        Some(bytes)
    };
    let mut batch = sled::Batch::default();
    while let Some((&tag, rest)) = ops.split_first() {
        ops = rest;
        let key = take(&mut ops).ok_or_else(corrupt)?;
        match tag {
            1 => batch.insert(key, take(&mut ops).ok_or_else(corrupt)?),
            0 => batch.remove(key),
            _ => return Err(corrupt()),
        }
    }
    Ok(batch)
}
