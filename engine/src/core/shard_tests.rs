//! The core taking and dropping shards, turn by turn on a `ManualClock`: a dropped shard's
//! runs are neither dispatched nor timed out and its commands are refused as not owned; taken
//! back, its runs are recovered from the store as at start-up. And the lease guard: a shard
//! whose lease lapsed by the node's own clock is dropped before the turn dispatches.

use super::tests::{fixture_with, T0};
use super::*;
use crate::cluster::lease::LeaseGuard;
use crate::store::{Epoch, ShardId};

const DEFINITION: &str = r#"
name = "pair"
version = 1

[[steps]]
name = "first"
activity = "q.first"
queue = "q"
retry = { max_attempts = 1 }
timeouts = { schedule_to_start = "1s" }
"#;

fn take(f: &mut super::tests::Fixture, shard: ShardId, epoch: Epoch, now: u64) -> Result<(), CoreError> {
    let (reply, mut answer) = oneshot::channel();
    f.turn(vec![Command::TakeShard { shard, epoch, reply }], now);
    answer.try_recv().expect("answered")
}

fn release(f: &mut super::tests::Fixture, shard: ShardId, now: u64) -> Result<(), CoreError> {
    let (reply, mut answer) = oneshot::channel();
    f.turn(vec![Command::DropShard { shard, reply }], now);
    answer.try_recv().expect("answered once what came before is durable")
}

#[test]
fn a_dropped_shard_is_not_served_and_a_taken_one_is_recovered() {
    let mut f = fixture_with(DEFINITION);
    assert_eq!(f.start("a", "{}", T0), Ok(StartOutcome::Created));
    assert_eq!(f.backlog(), 1);

    assert_eq!(release(&mut f, ShardId::SOLE, T0 + 1), Ok(()));
    assert!(f.core.runs.is_empty(), "its runs are forgotten");
    assert_eq!(f.backlog(), 0, "their ready tasks too");
    assert!(f.core.timers.is_empty(), "and their timers");
    let mut polled = f.poll(T0 + 2, 0);
    assert!(polled.try_recv().expect("answered").is_empty(), "nothing of the shard is handed out");
    assert_eq!(f.start("b", "{}", T0 + 3), Err(CoreError::NotOwner(ShardId::SOLE)), "nor started");
    // Past the schedule-to-start timeout: no timer of a dropped shard fires here.
    f.turn(Vec::new(), T0 + 5_000);

    let id = WorkflowId::parse("a").expect("valid");
    let ended = |f: &super::tests::Fixture| {
        f.core.store.history(&id).expect("reads").last().is_some_and(|e| e.kind.is_terminal())
    };
    assert!(!ended(&f), "still in flight in the store");
    assert_eq!(take(&mut f, ShardId::SOLE, Epoch(2), T0 + 5_001), Ok(()));
    assert_eq!(f.core.held.get(&ShardId::SOLE), Some(&Epoch(2)), "held at the new epoch");
    // Recovered from the store in the turn that took the shard, its overdue timer fired
    // there, as after a restart: the attempt timed out and the run ended.
    assert!(ended(&f), "the recovered run was served again");
    assert!(f.core.runs.is_empty());
}

#[test]
fn numbering_resumes_from_the_store_after_a_take() {
    let mut f = fixture_with(DEFINITION);
    assert_eq!(f.start("a", "{}", T0), Ok(StartOutcome::Created));
    let before = f.core.last_position[&ShardId::SOLE];
    assert_eq!(release(&mut f, ShardId::SOLE, T0 + 1), Ok(()));
    assert!(!f.core.last_position.contains_key(&ShardId::SOLE));
    assert_eq!(take(&mut f, ShardId::SOLE, Epoch(1), T0 + 2), Ok(()));
    assert_eq!(f.core.last_position[&ShardId::SOLE], before, "read back from the store");
    assert_eq!(f.start("b", "{}", T0 + 3), Ok(StartOutcome::Created));
    assert!(f.core.last_position[&ShardId::SOLE] > before);
}

#[test]
fn a_lapsed_lease_drops_the_shard_before_anything_is_dispatched() {
    let mut f = fixture_with(DEFINITION);
    let guard = Arc::new(LeaseGuard::new(std::time::Duration::from_secs(4)));
    f.core.guard_leases(guard.clone());
    assert_eq!(f.start("a", "{}", T0), Ok(StartOutcome::Created));
    // Claimed long enough ago (by the monotonic clock) that its use lapsed.
    let long_ago = std::time::Instant::now().checked_sub(std::time::Duration::from_secs(10));
    guard.claimed(ShardId::SOLE, long_ago.expect("the machine has been up for 10 s"));
    let mut polled = f.poll(T0 + 1, 0);
    assert!(polled.try_recv().expect("answered").is_empty(), "no task of a lapsed shard is handed out");
    assert!(f.core.runs.is_empty());
    assert!(!f.core.held.contains_key(&ShardId::SOLE));
}

#[test]
fn a_drop_in_the_same_turn_as_a_start_goes_first() {
    let mut f = fixture_with(DEFINITION);
    assert_eq!(f.start("a", "{}", T0), Ok(StartOutcome::Created));
    let before = f.core.last_position[&ShardId::SOLE];
    // A start, then a drop of its shard, arriving together: the drop is handled first, so
    // nothing is recorded for a shard whose position the core has just forgotten.
    let (start_reply, mut started) = oneshot::channel();
    let (drop_reply, mut dropped) = oneshot::channel();
    let start = Command::Start {
        id: WorkflowId::parse("b").expect("valid"),
        workflow_type: "pair".parse().expect("valid"),
        input: JsonText::parse("{}").expect("valid"),
        trace: None,
        reply: start_reply,
    };
    f.turn(vec![start, Command::DropShard { shard: ShardId::SOLE, reply: drop_reply }], T0 + 1);
    assert_eq!(dropped.try_recv().expect("answered"), Ok(()));
    assert_eq!(started.try_recv().expect("answered"), Err(CoreError::NotOwner(ShardId::SOLE)));
    assert_eq!(take(&mut f, ShardId::SOLE, Epoch(1), T0 + 2), Ok(()));
    assert_eq!(f.core.last_position[&ShardId::SOLE], before, "nothing was numbered meanwhile");
    assert_eq!(f.start("b", "{}", T0 + 3), Ok(StartOutcome::Created));
}
