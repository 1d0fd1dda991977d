//! Unit tests of the core driven turn by turn on the test's thread, with time passed in:
//! exact ready queues, waiting polls served when the disk guard clears, canonical JSON on
//! the duplicate-start path, and signed task tokens.

use super::*;
use crate::clock::ManualClock;
use crate::store::Durability;

/// Two steps on a queue nobody polls unless the test does; the first must start within 1 s.
const DEFINITION: &str = r#"
name = "pair"
version = 1

[[steps]]
name = "first"
activity = "q.first"
queue = "q"
retry = { max_attempts = 1 }
timeouts = { schedule_to_start = "1s" }

[[steps]]
name = "second"
activity = "q.second"
queue = "q"
"#;

pub(super) const T0: u64 = 1_000_000;

pub(super) struct Fixture {
    pub(super) core: Core,
    pub(super) clock: Arc<ManualClock>,
    workflow_type: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_with(DEFINITION)
}

/// A core on a temporary store and a [`ManualClock`] at [`T0`], with one definition.
pub(super) fn fixture_with(definition: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(crate::store::SledStore::open(dir.path(), Durability::ProcessCrash, None).expect("opens"));
    let mut registry = Registry::default();
    let definition = crate::definition::parse("test", definition).expect("parses");
    let workflow_type = definition.name.clone();
    registry.insert(definition).expect("registers");
    let clock = Arc::new(ManualClock::new(T0));
    let (core, _handle) =
        Core::recover(store, Arc::new(RwLock::new(registry)), clock.clone(), Limits::default()).expect("recovers");
    Fixture { core, clock, workflow_type: workflow_type.to_string(), _dir: dir }
}

impl Fixture {
    /// One turn at `now` (the clock is set to it): due timers, the commands, waiting polls;
    /// then, with no syncer thread, the sync and the replies, all on the test's thread.
    pub(super) fn turn(&mut self, commands: Vec<Command>, now: u64) {
        self.clock.set(now);
        self.core.turn(commands.into_iter(), self.clock.now_ms());
    }

    pub(super) fn start(&mut self, id: &str, input: &str, now: u64) -> Result<StartOutcome, CoreError> {
        let (reply, mut answer) = oneshot::channel();
        let input = JsonText::parse(input).expect("valid JSON");
        let id = WorkflowId::parse(id).expect("valid");
        self.turn(
            vec![Command::Start {
                id,
                workflow_type: self.workflow_type.parse().expect("valid"),
                input,
                trace: None,
                reply,
            }],
            now,
        );
        answer.try_recv().expect("answered")
    }

    pub(super) fn backlog(&self) -> usize {
        self.core.ready.depths().map(|(_, tasks)| tasks).sum()
    }

    pub(super) fn poll(&mut self, now: u64, wait_ms: u64) -> oneshot::Receiver<Vec<ActivityTask>> {
        let (reply, answer) = oneshot::channel();
        let queue = QueueName::parse("q").expect("valid");
        let command = Command::Poll {
            queue,
            worker_id: "w".parse().expect("valid"),
            max_tasks: 10,
            deadline_ms: now + wait_ms,
            reply,
        };
        self.turn(vec![command], now);
        answer
    }
}

#[test]
fn ready_entries_leave_when_started_timed_out_or_their_run_ends() {
    let mut f = fixture();
    for id in ["a", "b", "c"] {
        assert_eq!(f.start(id, "{}", T0), Ok(StartOutcome::Created));
    }
    assert_eq!(f.backlog(), 3);

    // Terminated: the run ends, and its entry goes with it.
    let (reply, _answer) = oneshot::channel();
    let terminate = Command::Cancel {
        id: WorkflowId::parse("c").expect("valid"),
        reason: "test".into(),
        by: "test".into(),
        terminate: true,
        reply,
    };
    f.turn(vec![terminate], T0 + 1);
    assert_eq!(f.backlog(), 2, "a terminated run leaves its queue at once");

    // `a` times out at schedule_to_start (max_attempts 1): it leaves its queue, `b` too.
    f.turn(Vec::new(), T0 + 2_000);
    assert_eq!(f.backlog(), 0, "timed-out attempts leave their queue");
    assert!(f.core.runs.is_empty(), "both runs ended");

    // A started attempt leaves its queue; the next step enters it.
    assert_eq!(f.start("d", "{}", T0 + 3_000), Ok(StartOutcome::Created));
    let mut answer = f.poll(T0 + 3_000, 0);
    let tasks = answer.try_recv().expect("answered");
    assert_eq!(tasks.len(), 1);
    assert_eq!(f.backlog(), 0, "a started attempt leaves its queue");
    let (reply, _answer) = oneshot::channel();
    let report = TaskReport {
        token: tasks[0].token.clone(),
        outcome: TaskOutcome::Completed { output: JsonText::parse("{}").expect("valid") },
        traceparent: None,
    };
    f.turn(vec![Command::Report { reports: vec![report], reply }], T0 + 3_001);
    assert_eq!(f.backlog(), 1, "the second step waits for a worker");
    let (reply, _answer) = oneshot::channel();
    let cancel = Command::Cancel {
        id: WorkflowId::parse("d").expect("valid"),
        reason: "test".into(),
        by: "test".into(),
        terminate: true,
        reply,
    };
    f.turn(vec![cancel], T0 + 3_002);
    assert_eq!(f.backlog(), 0);
    assert_eq!(f.core.stats.queue_depths.lock().expect("lock").get("q"), Some(&0), "/v1/stats shows 0");
}

#[test]
fn tokens_are_signed_and_a_duplicate_start_compares_json_values() {
    let mut f = fixture();
    assert_eq!(f.start("a", r#"{"x":1,"y":[1,2]}"#, T0), Ok(StartOutcome::Created));
    assert_eq!(f.start("a", r#"{ "y": [1, 2], "x": 1 }"#, T0), Ok(StartOutcome::Existing), "same value");
    assert_eq!(
        f.start("a", r#"{"x":2,"y":[1,2]}"#, T0),
        Err(CoreError::AlreadyExists(WorkflowId::parse("a").expect("valid")))
    );
    let mut answer = f.poll(T0, 0);
    let tasks = answer.try_recv().expect("answered");
    assert!(tasks[0].token.mac.is_some(), "a handed-out token carries a MAC");
    assert!(f.core.signer.verify(&tasks[0].token));
}

#[test]
fn waiting_polls_are_served_when_the_disk_guard_clears() {
    let mut f = fixture();
    assert_eq!(f.start("a", "{}", T0), Ok(StartOutcome::Created));
    // The disk fills: a poll finds a ready task but cannot write its start, so it waits.
    f.core.room_to_write = false;
    let mut answer = {
        let (reply, answer) = oneshot::channel();
        let queue = QueueName::parse("q").expect("valid");
        let command = Command::Poll {
            queue,
            worker_id: "w".parse().expect("valid"),
            max_tasks: 1,
            deadline_ms: T0 + 30_000,
            reply,
        };
        let mut turn = Turn::default();
        f.core.handle(&mut turn, command, T0);
        f.core.serve_waiting_polls(&mut turn, T0);
        assert!(turn.replies.is_empty(), "nobody is answered while the disk is full");
        answer
    };
    assert_eq!(f.core.waiting_polls.count(), 1);
    // Space is freed: the next turn (with nothing new queued) hands the task to that poll.
    f.turn(Vec::new(), T0 + 10);
    assert_eq!(answer.try_recv().expect("answered").len(), 1, "served with its task, not left to its deadline");
    assert_eq!(f.backlog(), 0);
}

/// Every event the store holds, in position order: (position, run, sequence number).
fn stored_positions(f: &Fixture) -> Vec<(u64, WorkflowId, u64)> {
    let events = f.core.store.events_after(store::ShardId::SOLE, 0, 100).expect("reads");
    events.into_iter().map(|e| (e.position, e.run, e.event.seq)).collect()
}

#[test]
fn a_turn_s_events_are_published_once_after_its_sync() {
    let mut f = fixture();
    let mut events =
        f.core.publisher.as_ref().map(Publisher::subscribe).expect("the core publishes until `run` starts");
    assert_eq!(f.start("a", "{}", T0), Ok(StartOutcome::Created));
    assert_eq!(f.start("b", "{}", T0 + 1), Ok(StartOutcome::Created));
    let first = events.try_recv().expect("one message for the first turn");
    assert_eq!(first.number, 1);
    let kinds: Vec<_> = first.events.iter().map(|e| (e.run.as_str().to_owned(), e.seq, e.kind)).collect();
    let expected = [(1, "WorkflowStarted"), (2, "DefinitionPinned"), (3, "StepScheduled")];
    assert_eq!(kinds, expected.map(|(seq, kind)| ("a".to_owned(), seq, kind)));
    assert!(first.events.iter().all(|e| e.at_ms == T0 && !e.settles));
    let second = events.try_recv().expect("one message for the second turn");
    assert_eq!((second.number, second.events_total), (2, 6));
    // A turn that writes nothing publishes nothing.
    f.turn(Vec::new(), T0 + 2);
    assert!(events.try_recv().is_err());
    // A run's end settles it.
    let (reply, _answer) = oneshot::channel();
    let id = WorkflowId::parse("a").expect("valid");
    f.turn(vec![Command::Cancel { id, reason: "test".into(), by: "test".into(), terminate: true, reply }], T0 + 3);
    let ended = events.try_recv().expect("published");
    assert!(ended.events.last().is_some_and(|e| e.settles && e.kind == "WorkflowTerminatedBy"));
    assert_eq!(ended.events.last().map(|e| e.status), Some(WorkflowStatus::Terminated));

    // Every published event carries the position the store reads it back at.
    let published: Vec<_> =
        [first, second, ended].iter().flat_map(|c| c.events.clone()).map(|e| (e.position, e.run, e.seq)).collect();
    let stored = stored_positions(&f);
    assert_eq!(published, stored);
    assert_eq!(published.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=published.len() as u64).collect::<Vec<_>>());
    // A core recovered on the same store numbers on from the last position.
    let (recovered, _handle) =
        Core::recover(f.core.store.clone(), f.core.registry.clone(), f.clock.clone(), Limits::default())
            .expect("recovers");
    assert_eq!(recovered.last_position[&store::ShardId::SOLE], published.len() as u64);
}

#[test]
fn a_hand_out_joins_its_run_s_transition_of_the_same_turn_and_positions_still_match_the_store() {
    let mut f = fixture();
    let mut events =
        f.core.publisher.as_ref().map(Publisher::subscribe).expect("the core publishes until `run` starts");
    // A poll waits on the empty queue; then two runs start in one turn, and the end of that
    // turn hands the first one's step to the poll: the hand-out joins the first run's
    // record, ahead of the second run's events.
    let mut answer = f.poll(T0, 30_000);
    let start = |id: &str| {
        let (reply, _answer) = oneshot::channel();
        Command::Start {
            id: WorkflowId::parse(id).expect("valid"),
            workflow_type: f.workflow_type.parse().expect("valid"),
            input: JsonText::parse("{}").expect("valid JSON"),
            trace: None,
            reply,
        }
    };
    let commands = vec![start("a"), start("b")];
    f.turn(commands, T0 + 1);
    assert_eq!(answer.try_recv().expect("answered").len(), 2, "both runs' first steps handed out");
    let published = events.try_recv().expect("one message for the turn");
    let order: Vec<_> = published.events.iter().map(|e| (e.run.as_str().to_owned(), e.seq, e.kind)).collect();
    let run = |id: &str| {
        [(1, "WorkflowStarted"), (2, "DefinitionPinned"), (3, "StepScheduled"), (4, "StepStarted")]
            .map(|(seq, kind)| (id.to_owned(), seq, kind))
    };
    let expected: Vec<_> = run("a").into_iter().chain(run("b")).collect();
    assert_eq!(order, expected, "each run's events together, in the order of its append");
    let published: Vec<_> = published.events.iter().map(|e| (e.position, e.run.clone(), e.seq)).collect();
    let stored = stored_positions(&f);
    assert_eq!(published, stored, "every published event carries the position the store reads it back at");
    for id in ["a", "b"] {
        let id = WorkflowId::parse(id).expect("valid");
        let seqs: Vec<u64> = f.core.store.history(&id).expect("reads").iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
    }
}

#[test]
fn a_start_or_a_command_in_the_turn_that_started_and_finished_the_run_meets_the_finished_run() {
    // A run started and ended in one turn is in neither the core's memory nor the store
    // until the turn is applied: the core looks at the turn's finished runs first. Without
    // that, a repeated start made a second run under the same id, and the turn's write was
    // refused (a conflicting append), which ends the process.
    let mut f = fixture();
    let id = || WorkflowId::parse("a").expect("valid");
    let start = |input: &str| {
        let (reply, answer) = oneshot::channel();
        let command = Command::Start {
            id: id(),
            workflow_type: f.workflow_type.parse().expect("valid"),
            input: JsonText::parse(input).expect("valid JSON"),
            trace: None,
            reply,
        };
        (command, answer)
    };
    let (first, mut first_answer) = start(r#"{"x":1}"#);
    let (terminate_reply, _terminated) = oneshot::channel();
    let terminate =
        Command::Cancel { id: id(), reason: "test".into(), by: "test".into(), terminate: true, reply: terminate_reply };
    let (same, mut same_answer) = start(r#"{ "x": 1 }"#);
    let (other, mut other_answer) = start(r#"{"x":2}"#);
    let (cancel_reply, mut cancel_answer) = oneshot::channel();
    let cancel =
        Command::Cancel { id: id(), reason: "again".into(), by: "test".into(), terminate: false, reply: cancel_reply };
    f.turn(vec![first, terminate, same, other, cancel], T0);
    assert_eq!(first_answer.try_recv().expect("answered"), Ok(StartOutcome::Created));
    assert_eq!(same_answer.try_recv().expect("answered"), Ok(StartOutcome::Existing), "a repeated start");
    assert_eq!(other_answer.try_recv().expect("answered"), Err(CoreError::AlreadyExists(id())));
    assert!(matches!(cancel_answer.try_recv().expect("answered"), Err(CoreError::Finished)), "not NotFound");
    assert!(f.core.runs.is_empty(), "no second run under the same id");
}
