//! The log's files: numbered segments, their records (format in the parent module's doc),
//! and reading them back. It must never touch the tree.
//!
//! Power-safe, a segment is written in place into a file already holding its full size in
//! zeros (written and synced before the segment is used), never appended to: a record then
//! changes none of the file's metadata, so its `fdatasync` writes the record's blocks alone,
//! where an append changes the file's size and every sync writes the inode too. Measured on
//! this machine kind (2 KB written and `fdatasync`ed 2,000 times, `docs/performance.md`, issue
//! 13, part seven): 0.14-0.15 ms appended, 0.09-0.10 ms in place; CPU per sync 0.058 ->
//! 0.040 ms. A sparse or `fallocate`d file does not do it (0.11-0.13 ms): its blocks are
//! still allocated or converted at the write. The next segment is zero-filled by a thread of
//! its own once the current one is half full, a megabyte at a time with a pause after each
//! (one 64 MiB write and sync took 41 ms here, and the log's syncs queued behind it: start
//! p99 5 ms in one run at 1,000 starts/s), so the writer only renames it. The first segment
//! of a log is [`FIRST_SEGMENT_BYTES`] at most, filled while it opens, so a process that
//! writes little (a test, a quiet worker) never fills 64 MiB. Zeros never parse as a record
//! (a record's length is at least 8), so the written part of the last segment ends where its
//! records end, as a torn write's does. Where the zeros cannot be written (no room for a
//! whole segment), the segment is appended to, as before.

use super::io;
use crate::open::{Durability, Error, Opened};
use std::fs::{File, OpenOptions as FileOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// The segment being written.
struct Segment {
    number: u64,
    file: File,
    len: u64,
    /// Its size in zeros when it was made (power-safe), and the length at which it closes.
    capacity: u64,
}

const SUFFIX: &str = ".wal";
/// The file the next segment is zero-filled in before it is renamed to its number; not a
/// segment's name, so `list_segments` never sees it, and one left by a crash is removed.
const NEXT: &str = "next.wal-zeroing";
/// Zeros are written this many at a time.
const ZERO_CHUNK: usize = 1 << 20;
/// The pause after each chunk the zero-filling thread writes: 64 MiB then take about 200 ms
/// (a segment lasts about ten seconds at full load, and filling starts halfway through one).
const ZERO_PACE: Duration = Duration::from_millis(2);
/// The most bytes of the first segment a log opens, filled while it opens (about 5 ms
/// here); the later ones have the log's full segment size.
pub(super) const FIRST_SEGMENT_BYTES: u64 = 8 << 20;

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

/// Segment `number`: power-safe, the zero-filled file `prepared` (or one filled now, when
/// none was) renamed to its number; otherwise, or when the zeros could not be written (a
/// disk without room for a whole segment), an empty file the records are appended to.
fn create_segment(
    dir: &Path,
    number: u64,
    durability: Durability,
    capacity: u64,
    prepared: Option<JoinHandle<std::io::Result<File>>>,
) -> Result<Segment, Error> {
    let path = segment_path(dir, number);
    let file = if durability == Durability::PowerSafe {
        let next = dir.join(NEXT);
        let filled = match prepared {
            Some(thread) => {
                thread.join().unwrap_or_else(|_| Err(std::io::Error::other("the zero-filling thread panicked")))
            }
            None => zero_filled(&next, capacity, None),
        };
        match filled {
            Ok(file) => {
                std::fs::rename(&next, &path).map_err(|source| io(&path, source))?;
                file
            }
            Err(error) => {
                tracing::warn!(%error, segment = %path.display(), "a log segment could not be filled with zeros first; its records are appended");
                empty_file(&path)?
            }
        }
    } else {
        empty_file(&path)?
    };
    // The new file's name must survive a power loss before any record in it is acknowledged.
    sync_dir(dir, durability)?;
    Ok(Segment { number, file, len: 0, capacity })
}

fn empty_file(path: &Path) -> Result<File, Error> {
    FileOptions::new().create(true).truncate(true).write(true).open(path).map_err(|source| io(path, source))
}

/// A file of `bytes` zeros at `path`, synced; none at all when that fails (on a full disk a
/// partly filled one would hold space the log's own records need). `pace`: each chunk is
/// synced by itself and followed by a pause, so the disk writes it in small pieces between
/// the log's own syncs rather than in one large flush that they would queue behind.
fn zero_filled(path: &Path, bytes: u64, pace: Option<Duration>) -> std::io::Result<File> {
    let fill = || {
        let mut file = FileOptions::new().create(true).truncate(true).write(true).open(path)?;
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut left = bytes;
        while left > 0 {
            let chunk = left.min(ZERO_CHUNK as u64) as usize;
            file.write_all(&zeros[..chunk])?;
            left -= chunk as u64;
            if let Some(pause) = pace {
                file.sync_data()?;
                std::thread::sleep(pause);
            }
        }
        file.sync_data()?;
        Ok(file)
    };
    let filled = fill();
    if filled.is_err() {
        let _ = std::fs::remove_file(path);
    }
    filled
}

/// Starts zero-filling the next segment on a thread of its own (power-safe only); `None`
/// when there is nothing to prepare or the thread cannot start (the segment is then filled
/// when it is needed).
fn prepare_next(dir: &Path, durability: Durability, bytes: u64) -> Option<JoinHandle<std::io::Result<File>>> {
    if durability != Durability::PowerSafe {
        return None;
    }
    let next = dir.join(NEXT);
    std::thread::Builder::new()
        .name("wal-zeroing".into())
        .spawn(move || zero_filled(&next, bytes, Some(ZERO_PACE)))
        .ok()
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
/// the module's doc) and is an error in any other. Read a record at a time: a segment is
/// mostly zeros after its records, never read.
fn read_segment(path: &Path, is_last: bool) -> Result<Vec<Record>, Error> {
    let file = File::open(path).map_err(|source| io(path, source))?;
    let size = file.metadata().map_err(|source| io(path, source))?.len();
    let mut reader = std::io::BufReader::new(file);
    let mut records = Vec::new();
    let mut at = 0u64;
    while at < size {
        match read_record(&mut reader, size - at).map_err(|source| io(path, source))? {
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

/// The next whole record of `reader`, which has `left` bytes left, and its length in bytes;
/// `None` when it is short, zeros, or fails its CRC.
fn read_record(reader: &mut impl Read, left: u64) -> std::io::Result<Option<(Record, u64)>> {
    let mut head = [0u8; 8];
    if left < head.len() as u64 {
        return Ok(None);
    }
    reader.read_exact(&mut head)?;
    let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    // A length past the file's end is torn (or garbage): never allocated.
    if len < 8 || len > left - 8 {
        return Ok(None);
    }
    let mut bytes = head.to_vec();
    bytes.resize(8 + len as usize, 0);
    reader.read_exact(&mut bytes[8..])?;
    Ok(parse_record(&bytes).map(|(seq, ops, used)| (Record { seq, ops: ops.to_vec() }, used as u64)))
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
    /// The next segment being zero-filled, once the current one is half full.
    next: Option<JoinHandle<std::io::Result<File>>>,
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
        let next = dir.join(NEXT);
        if next.is_file() {
            std::fs::remove_file(&next).map_err(|source| io(&next, source))?;
        }
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
        let first = segment_bytes.min(FIRST_SEGMENT_BYTES);
        let segment = create_segment(dir, next_number, durability, first, None)?;
        Ok((Log { dir: dir.to_owned(), durability, segment_bytes, segment, next: None }, last_seq))
    }

    /// Writes `records` and, power-safe, `fdatasync`s them. Returns the number of the segment
    /// closed when this one filled it (a new one is open then), for [`checkpoint`].
    pub(super) fn write(&mut self, records: &[u8]) -> Result<Option<u64>, std::io::Error> {
        self.segment.file.write_all_at(records, self.segment.len)?;
        if self.durability == Durability::PowerSafe {
            self.segment.file.sync_data()?;
        }
        self.segment.len += records.len() as u64;
        if self.segment.len < self.segment.capacity {
            if self.next.is_none() && self.segment.len >= self.segment.capacity / 2 {
                self.next = prepare_next(&self.dir, self.durability, self.segment_bytes);
            }
            return Ok(None);
        }
        let closed = self.segment.number;
        let prepared = self.next.take();
        self.segment = create_segment(&self.dir, closed + 1, self.durability, self.segment_bytes, prepared)
            .map_err(std::io::Error::other)?;
        Ok(Some(closed))
    }

    #[cfg(test)]
    pub(super) fn refuse_writes(&mut self) {
        let path = segment_path(&self.dir, self.segment.number);
        self.segment.file = File::open(path).expect("opens read-only");
    }
}

/// Where the records of the segment file `bytes` end (its zeros follow).
#[cfg(test)]
pub(super) fn records_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some((_, _, used)) = bytes.get(at..).and_then(parse_record) {
        at += used;
    }
    at
}

impl Drop for Log {
    /// Waits for the zero-filling thread: a log opened again in this folder must not find
    /// it still writing zeros into the file it renames to a segment.
    fn drop(&mut self) {
        if let Some(thread) = self.next.take() {
            let _ = thread.join();
        }
    }
}

/// Bytes the segments in `dir` hold on disk, the next one being zero-filled included.
pub(super) fn size_on_disk(dir: &Path) -> Result<u64, Error> {
    let next = dir.join(NEXT);
    let segments = list_segments(dir)?.into_iter().map(|(_, path)| path);
    segments
        .chain(next.exists().then_some(next))
        .map(|path| std::fs::metadata(&path).map(|meta| meta.len()).map_err(|source| io(&path, source)))
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
