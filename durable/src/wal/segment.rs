//! The log's files: numbered segments, their records (format in the parent module's doc),
//! and reading them back. It must never touch the tree.

use super::io;
use crate::open::{Durability, Error, Opened};
use std::fs::{File, OpenOptions as FileOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The segment being written.
struct Segment {
    number: u64,
    file: File,
    len: u64,
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

fn create_segment(dir: &Path, number: u64, durability: Durability) -> Result<Segment, Error> {
    let path = segment_path(dir, number);
    let file = FileOptions::new().create(true).append(true).open(&path).map_err(|source| io(&path, source))?;
    // The new file's name must survive a power loss before any record in it is acknowledged.
    sync_dir(dir, durability)?;
    Ok(Segment { number, file, len: 0 })
}

fn sync_dir(dir: &Path, durability: Durability) -> Result<(), Error> {
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
fn read_segment(path: &Path, is_last: bool) -> Result<Vec<Record>, Error> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut file| file.read_to_end(&mut bytes)).map_err(|source| io(path, source))?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Some((seq, ops, used)) => {
                records.push(Record { seq, ops: ops.to_vec() });
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

/// The whole record at the start of `bytes`: its number, its ops and its length in bytes;
/// `None` when it is short or fails its CRC.
fn parse_record(bytes: &[u8]) -> Option<(u64, &[u8], usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    let (ops, seq) = body.split_at(len.checked_sub(8)?);
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((u64::from_le_bytes(seq.try_into().ok()?), ops, 8 + len))
}

/// One op of a record.
pub(super) enum Op<'a> {
    Insert(&'a [u8], &'a [u8]),
    Remove(&'a [u8]),
    /// The record's later ops go to this tree.
    Tree(&'a [u8]),
}

/// A record's ops in order; `None` when they do not parse.
pub(super) fn parse_ops(mut ops: &[u8]) -> Option<Vec<Op<'_>>> {
    fn take<'a>(ops: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(ops.get(0..4)?.try_into().ok()?) as usize;
        let bytes = ops.get(4..4 + len)?;
        *ops = &ops[4 + len..];
        Some(bytes)
    }
    let mut parsed = Vec::new();
    while let Some((&tag, rest)) = ops.split_first() {
        ops = rest;
        let bytes = take(&mut ops)?;
        parsed.push(match tag {
            INSERT => Op::Insert(bytes, take(&mut ops)?),
            REMOVE => Op::Remove(bytes),
            TREE => Op::Tree(bytes),
            _ => return None,
        });
    }
    Some(parsed)
}

/// A record's writes, by tree: `tree` until an op names another (written by a log that
/// serves several trees).
pub(super) fn decode_ops(
    path: &Path,
    ops: &[u8],
    db: &sled::Db,
    tree: &sled::Tree,
) -> Result<Vec<(sled::Tree, sled::Batch)>, Error> {
    let mut sections = Vec::new();
    decode_ops_into(path, ops, db, tree, &mut sections)?;
    Ok(sections)
}

/// Adds a record's writes to `sections`, one section per tree: a batch keeps one write per
/// key, the latest, so the records coalesce (a key written and removed again within them
/// costs sled nothing). Trees have key spaces of their own, so the order between two
/// trees' writes changes nothing; the mark is written after all of them, and recovery
/// applies every record after the last mark again, in order.
fn decode_ops_into(
    path: &Path,
    ops: &[u8],
    db: &sled::Db,
    tree: &sled::Tree,
    sections: &mut Vec<(sled::Tree, sled::Batch)>,
) -> Result<(), Error> {
    let ops = parse_ops(ops)
        .ok_or_else(|| Error::Corrupt(format!("{}: a record's operations do not parse", path.display())))?;
    let mut batch = batch_of(sections, tree.clone());
    for op in ops {
        match op {
            Op::Tree(name) => batch = batch_of(sections, db.open_tree(name).map_err(Error::Flush)?),
            Op::Insert(key, value) => batch.insert(key, value),
            Op::Remove(key) => batch.remove(key),
        }
    }
    Ok(())
}

/// The batch of `tree`'s writes in `sections`, in a new section if it has none yet.
fn batch_of(sections: &mut Vec<(sled::Tree, sled::Batch)>, tree: sled::Tree) -> &mut sled::Batch {
    let index = match sections.iter().position(|(known, _)| known.name() == tree.name()) {
        Some(index) => index,
        None => {
            sections.push((tree, sled::Batch::default()));
            sections.len() - 1
        }
    };
    &mut sections[index].1
}

/// The writes of whole records this process wrote to `dir`'s log (buffers of them, in
/// order), coalesced by tree and key (see [`decode_ops_into`]).
pub(super) fn decode_records(
    dir: &Path,
    buffers: &[Vec<u8>],
    db: &sled::Db,
    tree: &sled::Tree,
) -> Result<Vec<(sled::Tree, sled::Batch)>, Error> {
    let mut sections = Vec::new();
    for buffer in buffers {
        let mut records = buffer.as_slice();
        while !records.is_empty() {
            let (_, ops, used) = parse_record(records).ok_or_else(|| {
                Error::Corrupt(format!("{}: a record written by this process does not parse", dir.display()))
            })?;
            decode_ops_into(dir, ops, db, tree, &mut sections)?;
            records = &records[used..];
        }
    }
    Ok(sections)
}

/// An op's first byte.
pub(super) const REMOVE: u8 = 0;
pub(super) const INSERT: u8 = 1;
pub(super) const TREE: u8 = 2;

pub(super) fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are bounded far below 4 GiB by the callers' own limits (sled's too).
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends one record of `ops`, numbered `seq`, to `out`.
pub(super) fn encode_record(out: &mut Vec<u8>, ops: &[u8], seq: u64) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(ops);
    crc.update(&seq.to_le_bytes());
    out.extend_from_slice(&((ops.len() + 8) as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(ops);
    out.extend_from_slice(&seq.to_le_bytes());
}

/// The log's folder and the segment being written.
pub(super) struct Log {
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    segment: Segment,
}

impl Log {
    /// Opens the log in `dir`: hands every record numbered after `applied` to `replay`, in
    /// order, then, when there were segments, syncs `store` and deletes them, and starts a
    /// fresh segment. Returns the log and the last record number (at least `applied`).
    pub(super) fn open(
        dir: &Path,
        store: &Opened,
        durability: Durability,
        segment_bytes: u64,
        applied: u64,
        mut replay: impl FnMut(&Path, &Record) -> Result<(), Error>,
    ) -> Result<(Log, u64), Error> {
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        let segments = list_segments(dir)?;
        let mut last_seq = applied;
        for (index, (number, path)) in segments.iter().enumerate() {
            for record in read_segment(path, index + 1 == segments.len())? {
                if record.seq <= applied {
                    continue;
                }
                if record.seq != last_seq + 1 {
                    return Err(Error::Corrupt(format!(
                        "{}: record {} follows {last_seq} (segment {number})",
                        path.display(),
                        record.seq
                    )));
                }
                replay(path, &record)?;
                last_seq = record.seq;
            }
        }
        let next_number = segments.last().map_or(1, |(number, _)| number + 1);
        if !segments.is_empty() {
            store.sync()?;
            for (_, path) in &segments {
                std::fs::remove_file(path).map_err(|source| io(path, source))?;
            }
        }
        let segment = create_segment(dir, next_number, durability)?;
        Ok((Log { dir: dir.to_owned(), durability, segment_bytes, segment }, last_seq))
    }

    /// Writes `records` and, power-safe, `fdatasync`s them. Returns the number of the segment
    /// closed when this one filled it (a new one is open then), for [`checkpoint`].
    pub(super) fn write(&mut self, records: &[u8]) -> Result<Option<u64>, std::io::Error> {
        self.segment.file.write_all(records)?;
        if self.durability == Durability::PowerSafe {
            self.segment.file.sync_data()?;
        }
        self.segment.len += records.len() as u64;
        if self.segment.len < self.segment_bytes {
            return Ok(None);
        }
        let closed = self.segment.number;
        self.segment = create_segment(&self.dir, closed + 1, self.durability).map_err(std::io::Error::other)?;
        Ok(Some(closed))
    }

    #[cfg(test)]
    pub(super) fn refuse_writes(&mut self) {
        let path = segment_path(&self.dir, self.segment.number);
        self.segment.file = File::open(path).expect("opens read-only");
    }
}

/// Bytes the segments in `dir` hold on disk.
pub(super) fn size_on_disk(dir: &Path) -> Result<u64, Error> {
    list_segments(dir)?
        .iter()
        .map(|(_, path)| std::fs::metadata(path).map(|meta| meta.len()).map_err(|source| io(path, source)))
        .sum()
}

/// Once every batch of the segments up to `closed` was applied to the store's trees: makes
/// the store durable, then deletes those segments.
pub(super) fn checkpoint(store: &Opened, dir: &Path, durability: Durability, closed: u64) -> Result<(), Error> {
    store.sync()?;
    for (segment, path) in list_segments(dir)? {
        if segment <= closed {
            std::fs::remove_file(&path).map_err(|source| io(&path, source))?;
        }
    }
    sync_dir(dir, durability)
}
