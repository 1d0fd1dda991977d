//! The contract every [`HistoryStore`] backend must pass, as a public suite: sled runs it in
//! `engine/tests/store_contract.rs`, and the PostgreSQL backend of a later issue calls the
//! same [`run_all`].
//!
//! It checks: conditional appends (a wrong expectation is refused and changes nothing),
//! atomicity across runs, ordering (history in sequence order over many turns), cursors
//! (pages cover every run once), the in-flight index across a reopen, tokens, definitions,
//! the task-token key, the epochs a batch carries, event positions (every event numbered
//! once, read back after any position, across a reopen), and that a run taken out of flight
//! reads the same as before, however the backend keeps it (sled packs it). This is test code: it panics on the
//! first broken promise, naming it. It must never depend on a backend.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use super::{Epoch, Error, HistoryStore, RunSummary, ShardId, TokenRecord, WriteBatch, TOKEN_DIGEST_LEN};
use shop_types::api::WorkflowStatus;
use shop_types::auth::Role;
use shop_types::history::{Event, EventKind};
use shop_types::{QueueName, WorkflowId};

/// How the suite gets stores: a fresh, empty one, and the same one closed and opened again.
pub trait Harness {
    fn fresh(&mut self) -> Box<dyn HistoryStore>;
    /// Closes `store` and opens what it holds again, as a restarted process would.
    fn reopen(&mut self, store: Box<dyn HistoryStore>) -> Box<dyn HistoryStore>;
}

/// Runs every check, each on a fresh store.
pub fn run_all(harness: &mut dyn Harness) {
    conditional_appends(harness);
    batches_are_all_or_nothing(harness);
    histories_keep_sequence_order(harness);
    cursors_cover_every_run_once(harness);
    in_flight_runs_survive_a_reopen(harness);
    tokens_round_trip(harness);
    definitions_round_trip(harness);
    redrive_jobs_round_trip(harness);
    the_task_token_key_is_made_once(harness);
    epochs_are_carried(harness);
    positions_number_every_event_once(harness);
    a_run_s_transitions_in_one_batch_join(harness);
    finished_runs_read_the_same(harness);
}

/// The first shard `store` owns (sled's only one).
fn first_shard(store: &dyn HistoryStore) -> ShardId {
    store.shards().first().map(|(shard, _)| *shard).expect("a store owns a shard")
}

fn id(text: &str) -> WorkflowId {
    WorkflowId::parse(text).expect("valid id")
}

/// Events `from..=to` of one kind, each reason `<tag><seq>`: a history to write and compare
/// (the backends' own tests use it too).
pub fn events(from: u64, to: u64, tag: &str) -> Vec<Event> {
    (from..=to)
        .map(|seq| Event { seq, at_ms: seq, kind: EventKind::CancelRequested { reason: format!("{tag}{seq}") } })
        .collect()
}

/// A run's summary with `status` and fixed other fields.
pub fn summary(status: WorkflowStatus) -> RunSummary {
    RunSummary {
        workflow_type: shop_types::WorkflowType::parse("w").expect("valid"),
        definition_version: 1,
        status,
        created_at_ms: 1,
        closed_at_ms: None,
        reason: None,
        output: None,
    }
}

fn seqs(store: &dyn HistoryStore, run: &WorkflowId) -> Vec<u64> {
    store.history(run).expect("reads").iter().map(|e| e.seq).collect()
}

/// A new run: its first events and a RUNNING summary, in flight.
fn start(batch: &mut WriteBatch, run: &WorkflowId, last: u64) {
    batch.append_events(run, &events(1, last, run.as_str())).expect("encodes");
    batch.put_run(run, &summary(WorkflowStatus::Running), None, true).expect("encodes");
}

pub fn conditional_appends(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let a = id("a");
    let mut batch = WriteBatch::default();
    start(&mut batch, &a, 3);
    store.commit(batch).expect("a first append follows 0");

    let mut stale = WriteBatch::default();
    stale.append_events(&a, &events(3, 4, "again")).expect("encodes");
    match store.commit(stale) {
        Err(Error::Conflict { run, expected: 2, found: 3 }) => assert_eq!(run, a),
        other => panic!("an append expecting 2 after 3 must be a conflict, got {other:?}"),
    }
    let mut ahead = WriteBatch::default();
    ahead.append_events(&a, &events(5, 5, "gap")).expect("encodes");
    assert!(matches!(store.commit(ahead), Err(Error::Conflict { expected: 4, found: 3, .. })));
    let mut restart = WriteBatch::default();
    restart.append_events(&a, &events(1, 1, "over")).expect("encodes");
    assert!(matches!(store.commit(restart), Err(Error::Conflict { expected: 0, found: 3, .. })));
    assert_eq!(seqs(&*store, &a), vec![1, 2, 3], "refused appends change nothing");
    let first = store.first_event(&a).expect("reads").expect("exists");
    assert_eq!(first, events(1, 1, "a")[0], "nothing was overwritten");
    let start_events = store.start_events(&a).expect("reads");
    assert_eq!(start_events.first(), Some(&first), "the start's events begin with the first event");
    assert!(start_events.iter().all(|e| e.seq <= 3), "only the first transition: {start_events:?}");
    assert!(store.start_events(&id("nobody")).expect("reads").is_empty(), "no run, no events");

    let mut next = WriteBatch::default();
    next.append_events(&a, &events(4, 5, "a")).expect("encodes");
    next.append_events(&a, &events(6, 6, "a")).expect("encodes");
    store.commit(next).expect("two appends to one run chain within a batch");
    assert_eq!(seqs(&*store, &a), vec![1, 2, 3, 4, 5, 6]);

    let mut gap = WriteBatch::default();
    let mut broken = events(7, 8, "a");
    broken[1].seq = 9;
    assert!(matches!(gap.append_events(&a, &broken), Err(Error::Gap { seq: 9, .. })));
    assert!(gap.is_empty(), "events with a gap are not added");
}

pub fn batches_are_all_or_nothing(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let (a, b, c) = (id("a"), id("b"), id("c"));
    let mut batch = WriteBatch::default();
    start(&mut batch, &a, 2);
    store.commit(batch).expect("commits");

    let mut mixed = WriteBatch::default();
    start(&mut mixed, &b, 2);
    mixed.put_definition("d", 1, "name = \"d\"").expect("encodes");
    mixed.put_token(&[1; TOKEN_DIGEST_LEN], &token(false)).expect("encodes");
    mixed.append_events(&a, &events(2, 2, "stale")).expect("encodes");
    start(&mut mixed, &c, 1);
    assert!(matches!(store.commit(mixed), Err(Error::Conflict { .. })));
    assert!(store.run(&b).expect("reads").is_none(), "no summary of a refused batch");
    assert!(store.history(&b).expect("reads").is_empty() && store.history(&c).expect("reads").is_empty());
    assert!(store.definitions().expect("reads").is_empty() && store.tokens().expect("reads").is_empty());
    assert_eq!(store.in_flight_held().expect("reads"), vec![a.clone()]);
    assert_eq!(seqs(&*store, &a), vec![1, 2]);

    let mut good = WriteBatch::default();
    start(&mut good, &b, 2);
    good.append_events(&a, &events(3, 3, "a")).expect("encodes");
    start(&mut good, &c, 1);
    store.commit(good).expect("commits");
    assert_eq!((seqs(&*store, &a), seqs(&*store, &b), seqs(&*store, &c)), (vec![1, 2, 3], vec![1, 2], vec![1]));
}

pub fn histories_keep_sequence_order(harness: &mut dyn Harness) {
    let store = harness.fresh();
    // `a` is a prefix of `ab`: their histories must stay apart.
    let runs = [id("a"), id("ab"), id("b")];
    let mut last = [0u64; 3];
    // 300 events each, over many turns of 1 to 4 events, several turns per batch: numbers
    // past 255 check that keys order numerically, not by their last byte.
    let mut turn = 0u64;
    while last.iter().any(|&l| l < 300) {
        let mut batch = WriteBatch::default();
        for _ in 0..3 {
            for (i, run) in runs.iter().enumerate() {
                let size = 1 + (turn + i as u64) % 4;
                let to = (last[i] + size).min(300);
                if to > last[i] {
                    batch.append_events(run, &events(last[i] + 1, to, run.as_str())).expect("encodes");
                    last[i] = to;
                }
                turn += 1;
            }
        }
        store.apply(batch).expect("applies");
    }
    store.sync().expect("syncs");
    for run in &runs {
        let history = store.history(run).expect("reads");
        assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=300).collect::<Vec<_>>(), "{run}");
        assert!(history.iter().all(|e| e.kind == events(e.seq, e.seq, run.as_str())[0].kind), "{run}'s own events");
    }
}

pub fn cursors_cover_every_run_once(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let mut batch = WriteBatch::default();
    let mut all = Vec::new();
    for n in 0..23 {
        let run = id(&format!("run-{n:02}"));
        start(&mut batch, &run, 1);
        all.push(run);
    }
    store.commit(batch).expect("commits");
    let mut finish = WriteBatch::default();
    for run in all.iter().step_by(3) {
        finish
            .put_run(run, &summary(WorkflowStatus::Completed), Some(WorkflowStatus::Running), false)
            .expect("encodes");
    }
    store.commit(finish).expect("commits");
    let completed: Vec<WorkflowId> = all.iter().step_by(3).cloned().collect();
    let running: Vec<WorkflowId> = all.iter().filter(|r| !completed.contains(r)).cloned().collect();
    for (status, expected) in
        [(None, &all), (Some(WorkflowStatus::Completed), &completed), (Some(WorkflowStatus::Running), &running)]
    {
        for limit in [1, 5, 8, 100] {
            let (mut seen, mut cursor) = (Vec::new(), None::<WorkflowId>);
            loop {
                let (page, more) = store.list_ids(status, cursor.as_ref(), limit).expect("lists");
                assert!(page.len() <= limit);
                seen.extend(page.iter().cloned());
                cursor = page.last().cloned();
                if !more {
                    break;
                }
                assert!(!page.is_empty(), "a page that says more follows is not empty");
            }
            assert_eq!(&seen, expected, "pages of {limit} with status {status:?} cover every run once, in order");
        }
    }
    assert_eq!(store.list_ids(Some(WorkflowStatus::Failed), None, 10).expect("lists"), (Vec::new(), false));
}

pub fn in_flight_runs_survive_a_reopen(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let (done, parked, live) = (id("done"), id("parked"), id("live"));
    let mut batch = WriteBatch::default();
    for run in [&done, &parked, &live] {
        start(&mut batch, run, 2);
    }
    store.commit(batch).expect("commits");
    let mut batch = WriteBatch::default();
    batch.append_events(&done, &events(3, 3, "done")).expect("encodes");
    batch.put_run(&done, &summary(WorkflowStatus::Completed), Some(WorkflowStatus::Running), false).expect("encodes");
    batch.put_run(&parked, &summary(WorkflowStatus::Failed), Some(WorkflowStatus::Running), true).expect("encodes");
    store.commit(batch).expect("commits");
    let store = harness.reopen(store);
    let in_flight = store.in_flight_held().expect("reads");
    assert_eq!(in_flight, vec![live.clone(), parked.clone()], "finished runs are not replayed; parked ones are");
    assert_eq!(store.run(&done).expect("reads").map(|s| s.status), Some(WorkflowStatus::Completed));
    let mut stale = WriteBatch::default();
    stale.append_events(&live, &events(2, 2, "stale")).expect("encodes");
    assert!(
        matches!(store.commit(stale), Err(Error::Conflict { expected: 1, found: 2, .. })),
        "checked after a reopen"
    );
    let mut next = WriteBatch::default();
    next.append_events(&live, &events(3, 3, "live")).expect("encodes");
    next.append_events(&done, &events(4, 4, "done")).expect("encodes");
    store.commit(next).expect("the expectation of a reopened store is its stored history");
    assert_eq!(seqs(&*store, &live), vec![1, 2, 3]);
}

fn token(revoked: bool) -> TokenRecord {
    TokenRecord {
        id: "tok_1".into(),
        name: "payments".into(),
        role: Role::Worker,
        queues: vec![QueueName::parse("payment").expect("valid")],
        created_at_ms: 5,
        expires_at_ms: Some(10),
        revoked,
        signals: Vec::new(),
        workflow_types: Vec::new(),
    }
}

pub fn tokens_round_trip(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let mut batch = WriteBatch::default();
    batch.put_token(&[7; TOKEN_DIGEST_LEN], &token(false)).expect("encodes");
    store.commit(batch).expect("commits");
    assert_eq!(store.tokens().expect("reads"), vec![([7; TOKEN_DIGEST_LEN], token(false))]);
    let mut batch = WriteBatch::default();
    batch.put_token(&[7; TOKEN_DIGEST_LEN], &token(true)).expect("encodes");
    store.commit(batch).expect("commits");
    let store = harness.reopen(store);
    assert_eq!(store.tokens().expect("reads"), vec![([7; TOKEN_DIGEST_LEN], token(true))], "revocation replaces");
}

/// A redrive job is rewritten whole as it goes: the last write of an id wins, in one batch or
/// across batches.
pub fn redrive_jobs_round_trip(harness: &mut dyn Harness) {
    use shop_types::redrive::{RedriveJob, RedriveState};
    let job = |id: &str, state: RedriveState| RedriveJob {
        id: id.into(),
        state,
        reason: "refund fixed".into(),
        by: "admin-file".into(),
        dry_run: false,
        rate: 50,
        created_at_ms: 1,
        ended_at_ms: None,
        request_digest: "d".into(),
        targets: Vec::new(),
    };
    let store = harness.fresh();
    let mut batch = WriteBatch::default();
    batch.put_redrive(&job("a", RedriveState::Running)).expect("encodes");
    batch.put_redrive(&job("a", RedriveState::Stopped)).expect("encodes");
    batch.put_redrive(&job("b", RedriveState::Running)).expect("encodes");
    store.commit(batch).expect("commits");
    let mut batch = WriteBatch::default();
    batch.put_redrive(&job("b", RedriveState::Completed)).expect("encodes");
    store.commit(batch).expect("commits");
    let store = harness.reopen(store);
    let mut stored = store.redrives().expect("reads");
    stored.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(stored, vec![job("a", RedriveState::Stopped), job("b", RedriveState::Completed)]);
}

pub fn definitions_round_trip(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let mut batch = WriteBatch::default();
    batch.put_definition("order", 2, "name = \"order\"").expect("encodes");
    batch.put_definition("order", 1, "v1").expect("encodes");
    batch.put_definition("ord", 1, "other").expect("encodes");
    store.commit(batch).expect("commits");
    let store = harness.reopen(store);
    let mut stored = store.definitions().expect("reads");
    stored.sort();
    let expected: Vec<(String, u32, String)> = vec![
        ("ord".into(), 1, "other".into()),
        ("order".into(), 1, "v1".into()),
        ("order".into(), 2, "name = \"order\"".into()),
    ];
    assert_eq!(stored, expected);
}

pub fn the_task_token_key_is_made_once(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let key = store.task_token_key().expect("creates the key");
    assert_eq!(store.task_token_key().expect("reads the key"), key, "made once");
    assert_ne!(key, [0u8; super::TASK_TOKEN_KEY_LEN]);
    let store = harness.reopen(store);
    assert_eq!(store.task_token_key().expect("reads the key"), key, "kept across a restart");
    let other = harness.fresh();
    assert_ne!(other.task_token_key().expect("creates the key"), key, "each store has its own key");
}

pub fn epochs_are_carried(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let shards = store.shards();
    assert!(!shards.is_empty(), "a store lets its owner write at least one shard");
    let mut batch = WriteBatch::default();
    for (shard, epoch) in &shards {
        batch.fence(*shard, *epoch);
    }
    assert_eq!(batch.fences(), shards.as_slice(), "a batch carries the epochs it was decided under");
    start(&mut batch, &id("a"), 1);
    store.commit(batch).expect("a batch fenced by the epochs the store holds applies");
    if store.fences_epochs() {
        let (shard, Epoch(epoch)) = shards[0];
        let mut stale = WriteBatch::default();
        stale.fence(shard, Epoch(epoch.wrapping_sub(1)));
        start(&mut stale, &id("b"), 1);
        assert!(matches!(store.commit(stale), Err(Error::Fenced { .. })), "a stale epoch is refused");
        assert!(store.run(&id("b")).expect("reads").is_none());
    }
}

pub fn positions_number_every_event_once(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let shard = first_shard(store.as_ref());
    assert_eq!(store.last_position(shard).expect("reads"), 0, "no event, no position");
    assert!(store.events_after(shard, 0, 10).expect("reads").is_empty());
    let (a, b) = (id("a"), id("b"));
    let mut first = WriteBatch::default();
    start(&mut first, &a, 3);
    start(&mut first, &b, 2);
    assert_eq!(first.number(shard, 1).expect("encodes"), 5);
    store.commit(first).expect("commits");
    let mut second = WriteBatch::default();
    second.append_transition(&b, &events(3, 4, "b"), WorkflowStatus::Failed).expect("encodes");
    let end = Event { seq: 4, at_ms: 4, kind: EventKind::WorkflowTerminated { reason: "end".into() } };
    second.append_events(&a, &[end]).expect("encodes");
    second.put_token(&[2; TOKEN_DIGEST_LEN], &token(false)).expect("encodes");
    assert_eq!(second.number(shard, 6).expect("encodes"), 3);
    store.commit(second).expect("commits");
    let mut no_events = WriteBatch::default();
    no_events.put_definition("d", 1, "d").expect("encodes");
    assert_eq!(no_events.number(shard, 9).expect("encodes"), 0, "nothing to number");
    assert!(no_events.index().next().is_none());
    store.commit(no_events).expect("commits");

    let expected: Vec<(u64, &WorkflowId, u64, WorkflowStatus)> = vec![
        (1, &a, 1, WorkflowStatus::Running),
        (2, &a, 2, WorkflowStatus::Running),
        (3, &a, 3, WorkflowStatus::Running),
        (4, &b, 1, WorkflowStatus::Running),
        (5, &b, 2, WorkflowStatus::Running),
        (6, &b, 3, WorkflowStatus::Failed),
        (7, &b, 4, WorkflowStatus::Failed),
        (8, &a, 4, WorkflowStatus::Terminated),
    ];
    let store = harness.reopen(store);
    assert_eq!(store.last_position(shard).expect("reads"), 8, "learned again after a reopen");
    for after in 0..=8u64 {
        for limit in [1, 2, 3, 100] {
            let read = store.events_after(shard, after, limit).expect("reads");
            let want: Vec<_> = expected.iter().filter(|e| e.0 > after).take(limit).collect();
            assert_eq!(read.len(), want.len(), "after {after}, limit {limit}");
            for (got, want) in read.iter().zip(want) {
                assert_eq!((got.position, &got.run, got.event.seq, got.status), (want.0, want.1, want.2, want.3));
                let stored = store.history(&got.run).expect("reads");
                assert_eq!(Some(&got.event), stored.iter().find(|e| e.seq == got.event.seq), "the stored event");
            }
        }
    }
    assert!(store.events_after(shard, u64::MAX, 10).expect("reads").is_empty(), "nothing after the end");
}

/// A run's next transition in the same batch joins its first one's append: the batch numbers
/// each run's events together, in the order of the appends, and the store reads back what it
/// numbered. A transition that does not follow its run's last one stays an append of its own
/// (and the store refuses it).
pub fn a_run_s_transitions_in_one_batch_join(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let shard = first_shard(store.as_ref());
    let (a, b) = (id("a"), id("b"));
    let mut batch = WriteBatch::default();
    start(&mut batch, &a, 2);
    start(&mut batch, &b, 1);
    assert!(!batch.joined_appends());
    batch.append_events(&a, &events(3, 4, "a")).expect("encodes");
    assert!(batch.joined_appends());
    assert_eq!(batch.appends().len(), 2, "a's second transition joined its first");
    assert_eq!(batch.events(), 5);
    assert_eq!(batch.number(shard, 1).expect("encodes"), 5);
    store.commit(batch).expect("commits");
    let read: Vec<_> = store
        .events_after(shard, 0, 10)
        .expect("reads")
        .into_iter()
        .map(|e| (e.position, e.run, e.event.seq))
        .collect();
    let expected = [(1, &a, 1), (2, &a, 2), (3, &a, 3), (4, &a, 4), (5, &b, 1)];
    assert_eq!(read, expected.map(|(position, run, seq)| (position, run.clone(), seq)));
    assert_eq!(store.history(&a).expect("reads"), events(1, 4, "a"));
    assert_eq!(store.events_after(shard, 3, 1).expect("reads")[0].event, events(4, 4, "a")[0], "from the middle");

    let mut gap = WriteBatch::default();
    gap.append_events(&b, &events(2, 2, "b")).expect("encodes");
    gap.append_events(&b, &events(4, 4, "b")).expect("encodes");
    assert!(!gap.joined_appends(), "not the next event: an append of its own");
    assert!(store.commit(gap).is_err(), "and refused");
    assert_eq!(store.history(&b).expect("reads"), events(1, 1, "b"), "nothing of it applied");
}

/// A run taken out of flight (which sled packs into one record) reads as it did in flight:
/// history, first and start events, summary, lists, events by position; its expectation
/// still holds; and a later append (the seam allows one) and a second finish keep it whole.
pub fn finished_runs_read_the_same(harness: &mut dyn Harness) {
    let store = harness.fresh();
    let shard = first_shard(store.as_ref());
    let (run, other) = (id("finished"), id("other"));
    let mut first = WriteBatch::default();
    start(&mut first, &run, 2);
    start(&mut first, &other, 1);
    first.number(shard, 1).expect("encodes");
    store.commit(first).expect("commits");
    let mut middle = WriteBatch::default();
    middle.append_events(&run, &events(3, 5, "mid")).expect("encodes");
    middle.number(shard, 4).expect("encodes");
    store.commit(middle).expect("commits");
    let in_flight = (store.history(&run).expect("reads"), store.first_event(&run).expect("reads"));
    let mut finish = WriteBatch::default();
    finish.append_events(&run, &events(6, 6, "end")).expect("encodes");
    finish.append_events(&other, &events(2, 2, "other")).expect("encodes");
    let mut done = summary(WorkflowStatus::Completed);
    done.closed_at_ms = Some(6);
    finish.put_run(&run, &done, Some(WorkflowStatus::Running), false).expect("encodes");
    finish.number(shard, 7).expect("encodes");
    store.commit(finish).expect("commits");

    let store = harness.reopen(store);
    let history = store.history(&run).expect("reads");
    assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(history[..5], in_flight.0[..], "the events it had in flight, unchanged");
    assert_eq!(store.first_event(&run).expect("reads"), in_flight.1);
    let start_events = store.start_events(&run).expect("reads");
    assert_eq!(start_events.first(), in_flight.1.as_ref());
    assert!(start_events.iter().all(|e| e.seq <= 2), "only the start's transition");
    assert_eq!(store.run(&run).expect("reads"), Some(done.clone()));
    assert_eq!(store.list_ids(Some(WorkflowStatus::Completed), None, 10).expect("lists"), (vec![run.clone()], false));
    assert_eq!(store.list_ids(None, None, 10).expect("lists"), (vec![run.clone(), other.clone()], false));
    assert_eq!(store.in_flight_held().expect("reads"), vec![other.clone()]);
    let positioned = store.events_after(shard, 0, 100).expect("reads");
    let of_run: Vec<(u64, u64)> =
        positioned.iter().filter(|p| p.run == run).map(|p| (p.position, p.event.seq)).collect();
    assert_eq!(of_run, vec![(1, 1), (2, 2), (4, 3), (5, 4), (6, 5), (7, 6)]);
    for positioned in &positioned {
        let stored = store.history(&positioned.run).expect("reads");
        assert_eq!(Some(&positioned.event), stored.iter().find(|e| e.seq == positioned.event.seq));
    }
    assert_eq!(store.events_after(shard, 6, 1).expect("reads")[0].event, history[5], "read from the middle");

    let mut stale = WriteBatch::default();
    stale.append_events(&run, &events(3, 3, "stale")).expect("encodes");
    assert!(matches!(store.commit(stale), Err(Error::Conflict { expected: 2, found: 6, .. })));
    let mut more = WriteBatch::default();
    more.append_events(&run, &events(7, 7, "again")).expect("encodes");
    store.commit(more).expect("the expectation of a finished run is its last event");
    assert_eq!(seqs(&*store, &run), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(store.run(&run).expect("reads"), Some(done.clone()), "its summary stays");
    let mut resumed = WriteBatch::default();
    resumed.append_events(&run, &events(8, 8, "resumed")).expect("encodes");
    resumed.put_run(&run, &summary(WorkflowStatus::Running), Some(WorkflowStatus::Completed), true).expect("encodes");
    store.commit(resumed).expect("commits");
    let mut again = WriteBatch::default();
    again.append_events(&run, &events(9, 9, "end")).expect("encodes");
    again.put_run(&run, &done, Some(WorkflowStatus::Running), false).expect("encodes");
    store.commit(again).expect("commits");
    let store = harness.reopen(store);
    assert_eq!(seqs(&*store, &run), (1..=9).collect::<Vec<_>>());
    assert_eq!(store.history(&run).expect("reads")[..6], history[..], "nothing lost to packing twice");
    assert_eq!(store.list_ids(Some(WorkflowStatus::Running), None, 10).expect("lists"), (vec![other], false));
}
