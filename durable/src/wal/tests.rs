use super::segment::{list_segments, records_end, segment_path, FIRST_SEGMENT_BYTES};
use super::*;
use crate::test_support::reopen;
use crate::{Durability, OpenOptions};
use std::time::{Duration, Instant};

const MARK: &[u8] = b"m applied";

fn options() -> OpenOptions {
    OpenOptions::new(Durability::PowerSafe)
}

/// A store at `path` and its log (in `path`/wal).
fn open_logged(path: &Path, wal: WalOptions) -> (Opened, LoggedTree) {
    let store = reopen(path, options());
    let tree = store.db.open_tree("t").expect("tree");
    let log = LoggedTree::open(&path.join("wal"), &store, tree, MARK, Durability::PowerSafe, wal).expect("log opens");
    (store, log)
}

fn put(log: &LoggedTree, pairs: &[(&str, &str)]) {
    let mut batch = LogBatch::default();
    for (key, value) in pairs {
        batch.insert(key, value);
    }
    log.apply(batch);
}

fn value(log: &LoggedTree, key: &str) -> Option<String> {
    log.get(key).expect("reads").map(|bytes| String::from_utf8(bytes.to_vec()).expect("utf-8"))
}

fn keys(entries: impl Iterator<Item = sled::Result<(IVec, IVec)>>) -> Vec<String> {
    entries.map(|entry| String::from_utf8(entry.expect("reads").0.to_vec()).expect("utf-8")).collect()
}

fn segments(path: &Path) -> Vec<u64> {
    list_segments(&path.join("wal")).expect("lists").into_iter().map(|(number, _)| number).collect()
}

#[test]
fn staged_writes_are_read_at_once_merged_with_the_tree_and_removals_hide_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, log) = open_logged(dir.path(), WalOptions::default());
    put(&log, &[("a1", "x"), ("a3", "x"), ("b1", "x")]);
    log.sync().expect("syncs");
    // Staged, not synced: a new key between two in the tree, one overwritten, one removed.
    let mut batch = LogBatch::default();
    batch.insert("a2", "y");
    batch.insert("a3", "y");
    batch.remove("a1");
    batch.insert("a4", "y");
    batch.remove("a4");
    log.apply(batch);

    assert_eq!(value(&log, "a1"), None);
    assert_eq!(value(&log, "a3").as_deref(), Some("y"));
    assert_eq!(keys(log.scan_prefix("a")), ["a2", "a3"]);
    assert_eq!(keys(log.range_within(b"", b"a25").take(2)), ["a3", "b1"]);
    assert_eq!(
        keys(
            log.range_within(b"a", b"a25")
                .take_while(|entry| entry.as_ref().is_ok_and(|(key, _)| key.starts_with(b"a")))
        ),
        ["a3"]
    );
    let last = |entry: Option<(IVec, IVec)>| entry.map(|(key, _)| String::from_utf8(key.to_vec()).expect("utf-8"));
    assert_eq!(last(log.last_with_prefix("a").expect("reads")).as_deref(), Some("a3"));
    assert_eq!(last(log.last_between(b"a", b"a2").expect("reads")).as_deref(), Some("a2"));
    assert_eq!(last(log.last_between(b"a0", b"a1").expect("reads")), None, "a1 removed, nothing before it");

    log.sync().expect("syncs");
    drop((store, log));
    let (_store, log) = open_logged(dir.path(), WalOptions::default());
    assert_eq!(keys(log.scan_prefix("a")), ["a2", "a3"], "the same after the applier and a reopen");
    assert_eq!(value(&log, "b1").as_deref(), Some("x"));
}

#[test]
fn a_synced_batch_is_applied_again_to_a_tree_that_never_got_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let (_store, log) = open_logged(&first, WalOptions::default());
    put(&log, &[("k1", "v1")]);
    put(&log, &[("k2", "v2"), ("k1", "v1b")]);
    log.sync().expect("syncs");
    put(&log, &[("k3", "never synced")]);
    // What a crash right after the sync leaves: the log's records, and a tree without them.
    std::fs::create_dir_all(second.join("wal")).expect("folder");
    for (number, path) in list_segments(&first.join("wal")).expect("lists") {
        std::fs::copy(&path, segment_path(&second.join("wal"), number)).expect("copies");
    }
    let (_other, replayed) = open_logged(&second, WalOptions::default());
    assert_eq!(value(&replayed, "k1").as_deref(), Some("v1b"));
    assert_eq!(value(&replayed, "k2").as_deref(), Some("v2"));
    assert_eq!(value(&replayed, "k3"), None, "a staged batch is not durable before its sync");
    assert_eq!(stored_seq(&replayed.tree, MARK).expect("reads"), 2, "the tree holds both records");
    assert_eq!(segments(&second).len(), 1, "the replayed segments are gone, a fresh one is open");
}

#[test]
fn records_the_tree_holds_are_not_applied_again_and_numbering_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (_store, log) = open_logged(dir.path(), WalOptions::default());
        put(&log, &[("k", "1")]);
        put(&log, &[("k", "2")]);
        put(&log, &[("other", "3")]);
        log.sync().expect("syncs");
        // Dropping the log lets the applier apply all three: the tree's mark says 3.
    }
    {
        // The tree moves on by itself (as a test may write it, never the engine): if the
        // log replayed records the tree holds, "k" would go back to "2".
        let store = reopen(dir.path(), options());
        let tree = store.db.open_tree("t").expect("tree");
        tree.insert("k", "changed").expect("writes");
        tree.insert(MARK, &2u64.to_be_bytes()).expect("writes");
        store.sync().expect("syncs");
    }
    let (store, log) = open_logged(dir.path(), WalOptions::default());
    assert_eq!(value(&log, "k").as_deref(), Some("changed"), "record 2 is not applied again");
    assert_eq!(value(&log, "other").as_deref(), Some("3"), "record 3 is");
    put(&log, &[("next", "4")]);
    log.sync().expect("syncs");
    drop((store, log));
    let store = reopen(dir.path(), options());
    let tree = store.db.open_tree("t").expect("tree");
    assert_eq!(stored_seq(&tree, MARK).expect("reads"), 4, "the next record is numbered after the last one");
}

#[test]
fn a_torn_last_record_ends_the_log_and_a_bad_record_in_an_earlier_segment_fails_the_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (source, torn, corrupt) = (dir.path().join("s"), dir.path().join("torn"), dir.path().join("corrupt"));
    let (_store, log) = open_logged(&source, WalOptions::default());
    put(&log, &[("k1", "v1")]);
    put(&log, &[("k2", "v2")]);
    log.sync().expect("syncs");
    let (_, path) = list_segments(&source.join("wal")).expect("lists").pop().expect("one segment");
    let bytes = std::fs::read(&path).expect("reads");
    let bytes = &bytes[..records_end(&bytes)];

    // The second record cut short, as a crash mid-write leaves it.
    std::fs::create_dir_all(torn.join("wal")).expect("folder");
    std::fs::write(segment_path(&torn.join("wal"), 1), &bytes[..bytes.len() - 3]).expect("writes");
    let (_other, log) = open_logged(&torn, WalOptions::default());
    assert_eq!((value(&log, "k1").as_deref(), value(&log, "k2")), (Some("v1"), None));

    // The same bytes with a later segment after them: not a torn tail, corruption.
    std::fs::create_dir_all(corrupt.join("wal")).expect("folder");
    std::fs::write(segment_path(&corrupt.join("wal"), 1), &bytes[..bytes.len() - 3]).expect("writes");
    std::fs::write(segment_path(&corrupt.join("wal"), 2), b"").expect("writes");
    let store = reopen(&corrupt, options());
    let tree = store.db.open_tree("t").expect("tree");
    let opened =
        LoggedTree::open(&corrupt.join("wal"), &store, tree, MARK, Durability::PowerSafe, WalOptions::default());
    assert!(matches!(opened, Err(Error::Corrupt(_))), "{opened:?}");
}

#[test]
fn a_full_segment_is_closed_and_deleted_once_the_tree_is_flushed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let small = WalOptions { segment_bytes: 256, ..WalOptions::default() };
    let (store, log) = open_logged(dir.path(), small);
    for round in 0..40 {
        put(&log, &[(&format!("k{round:02}"), "a value of some length")]);
        log.sync().expect("syncs");
    }
    // The applier checkpoints behind the syncs: wait (boundedly) until it caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while segments(dir.path()).len() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = segments(dir.path());
    assert!(left.len() <= 2 && *left.last().expect("one open") > 5, "segments left: {left:?}");
    drop((store, log));
    let (_store, log) = open_logged(dir.path(), small);
    assert_eq!(log.scan_prefix("k").count(), 40, "nothing lost across the checkpoints");
}

#[test]
fn power_safe_segments_are_zeros_before_they_are_written_and_never_grow_by_a_sync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file_len = |number: u64| {
        let path = segment_path(&dir.path().join("wal"), number);
        std::fs::metadata(path).expect("a segment").len()
    };
    let wal = WalOptions { segment_bytes: 4096, ..WalOptions::default() };
    let (store, log) = open_logged(dir.path(), wal);
    assert_eq!(file_len(1), 4096, "the first segment is its size in zeros at open");
    put(&log, &[("k", "v")]);
    log.sync().expect("syncs");
    let bytes = std::fs::read(segment_path(&dir.path().join("wal"), 1)).expect("reads");
    assert_eq!(bytes.len(), 4096, "a record is written in place, the file keeps its size");
    assert!(records_end(&bytes) > 0 && bytes[records_end(&bytes)..].iter().all(|&b| b == 0));
    // Past half of it the next segment is zero-filled aside; past its end it takes over.
    for round in 0..100 {
        put(&log, &[(&format!("k{round:02}"), "a value of some length")]);
        log.sync().expect("syncs");
    }
    let newest = *segments(dir.path()).last().expect("a segment");
    assert!(newest > 1, "the log moved on to a later segment");
    assert_eq!(file_len(newest), 4096, "a later segment is zeros before it is written too");
    drop((store, log));
    let (_store, log) = open_logged(dir.path(), wal);
    assert_eq!(log.scan_prefix("k").count(), 101, "the zeros after the records end each segment's reading");
    let large = WalOptions::default();
    drop(log);
    let (_store, _log) = open_logged(&dir.path().join("large"), large);
    assert_eq!(
        std::fs::metadata(segment_path(&dir.path().join("large/wal"), 1)).expect("a segment").len(),
        FIRST_SEGMENT_BYTES,
        "a log's first segment is small: a process that writes little never fills 64 MiB"
    );
}

#[test]
fn a_segment_that_cannot_be_filled_with_zeros_is_appended_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Where the zeros would be written stands a folder: filling fails, as on a full disk.
    std::fs::create_dir_all(dir.path().join("wal/next.wal-zeroing")).expect("folder");
    let (store, log) = open_logged(dir.path(), WalOptions::default());
    let segment = segment_path(&dir.path().join("wal"), 1);
    assert_eq!(std::fs::metadata(&segment).expect("a segment").len(), 0, "an empty segment, appended to");
    put(&log, &[("k", "v")]);
    log.sync().expect("syncs");
    assert!(std::fs::metadata(&segment).expect("a segment").len() > 0);
    drop((store, log));
    let (_store, log) = open_logged(dir.path(), WalOptions::default());
    assert_eq!(value(&log, "k").as_deref(), Some("v"));
}

#[test]
fn merged_entries_go_backwards_too() {
    let tree: Vec<sled::Result<(IVec, IVec)>> =
        ["a", "c", "e"].iter().map(|key| Ok((IVec::from(*key), IVec::from("t")))).collect();
    let staged =
        vec![(b"b".to_vec(), Some(IVec::from("s"))), (b"c".to_vec(), None), (b"d".to_vec(), Some(IVec::from("s")))];
    assert_eq!(keys(Merged::new(tree.clone().into_iter(), staged.clone(), false)), ["a", "b", "d", "e"]);
    assert_eq!(keys(Merged::new(tree.into_iter().rev(), staged, true)), ["e", "d", "b", "a"]);
}

#[test]
fn after_a_failed_write_no_sync_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_store, log) = open_logged(dir.path(), WalOptions::default());
    // A segment that refuses writes, as a failing disk does.
    lock(&log.log).refuse_writes();
    put(&log, &[("k", "v")]);
    assert!(matches!(log.sync(), Err(Error::Sync(_))));
    put(&log, &[("k2", "v2")]);
    assert!(matches!(log.sync(), Err(Error::Group(_))), "a record after a torn one would never be read");
}

#[test]
fn writes_within_the_apply_window_reach_the_tree_coalesced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held =
        WalOptions { apply: ApplyWindow { delay: Duration::from_secs(3600), bytes: 1 << 20 }, ..WalOptions::default() };
    let (store, log) = open_logged(dir.path(), held);
    let tree = store.db.open_tree("t").expect("tree");
    // sled tells a subscriber every write it applies to a watched key.
    let (mut rewritten, mut short_lived) = (tree.watch_prefix(b"rewritten"), tree.watch_prefix(b"short-lived"));
    put(&log, &[("rewritten", "1"), ("short-lived", "x")]);
    log.sync().expect("syncs");
    put(&log, &[("rewritten", "2")]);
    let mut batch = LogBatch::default();
    batch.remove("short-lived");
    log.apply(batch);
    log.sync().expect("syncs");
    assert_eq!(tree.get("rewritten").expect("reads"), None, "held by the applier, not in sled yet");
    assert_eq!(value(&log, "rewritten").as_deref(), Some("2"), "readers see it meanwhile");

    // Dropping the log applies what it holds: each key's last write, once.
    drop(log);
    let wait = Duration::from_millis(200);
    match rewritten.next_timeout(wait) {
        Ok(sled::Event::Insert { value, .. }) => assert_eq!(&value[..], b"2", "the first write sled saw is the last"),
        other => panic!("expected the rewritten key's last value, got {other:?}"),
    }
    assert!(rewritten.next_timeout(wait).is_err(), "and only that one");
    assert!(
        !matches!(short_lived.next_timeout(wait), Ok(sled::Event::Insert { .. })),
        "a key written and removed within the window never reached sled"
    );
    assert_eq!(tree.get("short-lived").expect("reads"), None);
    assert_eq!(stored_seq(&tree, MARK).expect("reads"), 3, "marked at the last record");
}

#[test]
fn records_alternating_between_trees_decode_to_one_batch_per_tree() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = reopen(dir.path(), options());
    let (a, b) = (store.db.open_tree("a").expect("tree a"), store.db.open_tree("b").expect("tree b"));
    let mut records = Vec::new();
    for (seq, value) in [(1u64, "1"), (2, "2")] {
        let mut ops = Vec::new();
        for tree in ["a", "b"] {
            ops.push(segment::TREE);
            segment::push_bytes(&mut ops, tree.as_bytes());
            let mut batch = LogBatch::default();
            batch.insert("k", value);
            ops.extend_from_slice(&batch.ops);
        }
        segment::encode_record(&mut records, &ops, seq);
    }
    let sections = segment::decode_records(dir.path(), &[records], &store.db, &a).expect("decodes");
    let trees: Vec<_> = sections.iter().map(|(tree, _)| tree.name()).collect();
    assert_eq!(trees, [a.name(), b.name()], "one section per tree, not one per tree switch");
    apply_record(&a, sections, MARK, 2).expect("applies");
    assert_eq!(a.get("k").expect("reads").as_deref(), Some(&b"2"[..]), "the later record's write wins");
    assert_eq!(b.get("k").expect("reads").as_deref(), Some(&b"2"[..]));
    assert_eq!(stored_seq(&a, MARK).expect("reads"), 2);
}
