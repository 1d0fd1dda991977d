//! Tests of start-up reconciliation between parents and children (`reconcile`): stores are
//! written by hand in states a crash cannot leave (a lost child, a missed report or verdict,
//! a parent gone), the engine recovers from them, and its first turn repairs each; a second
//! start changes nothing more.

use super::tests::T0;
use super::*;
use crate::clock::ManualClock;
use crate::state::ParentLink;
use crate::store::{Durability, SledStore};
use shop_types::history::EventKind;
use shop_types::StepRef;

/// `pay` runs child `kid`; then the parent waits for a signal that never comes.
const PARENT: &str = r#"
name = "parent"
version = 1
[signals]
go = {}

[[steps]]
name = "pay"
workflow = { name = "kid", version = 1 }

[[steps]]
name = "hold"
wait_for = ["go"]
timeout = "10m"
"#;

/// One charge, refunded when the child compensates.
const KID: &str = r#"
name = "kid"
version = 1

[[steps]]
name = "charge"
activity = "q.charge"
queue = "q"

[[compensations]]
step = "charge"
activity = "q.refund"
queue = "q"
"#;

const PAY: StepRef = StepRef { phase: shop_types::StepPhase::Forward, index: 0 };

fn id(text: &str) -> WorkflowId {
    WorkflowId::parse(text).expect("valid")
}

fn child_of(parent: &str) -> WorkflowId {
    id(&format!("{parent}.pay"))
}

fn definitions() -> (Arc<Definition>, Arc<Definition>) {
    let parse = |source| Arc::new(crate::definition::parse("test", source).expect("parses"));
    (parse(PARENT), parse(KID))
}

/// A store written by hand, then opened by engines one after the other.
struct Disk {
    dir: tempfile::TempDir,
    parent: Arc<Definition>,
    kid: Arc<Definition>,
}

impl Disk {
    fn new() -> Disk {
        let (parent, kid) = definitions();
        Disk { dir: tempfile::tempdir().expect("tempdir"), parent, kid }
    }

    /// Opens the store; a store just dropped may still hold sled's folder lock for a moment
    /// (its flusher thread lets go of it last), so a busy lock is tried again, boundedly.
    fn store(&self) -> Arc<Store> {
        let mut tries = 0;
        loop {
            match SledStore::open(self.dir.path(), Durability::ProcessCrash, None) {
                Ok(store) => return Arc::new(store),
                Err(error) if tries < 250 && error.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(error) => panic!("opens: {error}"),
            }
        }
    }

    /// Writes runs as a store would hold them: each id with its events, in flight or ended.
    fn write(&self, runs: &[(&WorkflowId, &WorkflowState, &[Event])]) {
        let store = self.store();
        let mut batch = store::WriteBatch::default();
        for (id, state, events) in runs {
            let summary = RunSummary {
                workflow_type: state.workflow_type.clone(),
                definition_version: state.definition_version,
                status: state.status(),
                created_at_ms: state.created_at_ms,
                closed_at_ms: state.terminal.as_ref().map(|t| t.at_ms),
                reason: state.terminal.as_ref().and_then(|t| t.reason.clone()),
                output: state.terminal.as_ref().and_then(|t| t.output.clone()),
            };
            batch.put_run(id, &summary, None, state.terminal.is_none()).expect("encodes");
            batch.append_events(id, events).expect("encodes");
        }
        store.apply(batch).expect("applies");
        store.sync().expect("syncs");
    }

    /// Starts an engine on the store and runs its first turn (which reconciles); returns the
    /// histories of `ids` after it.
    fn start_engine(&self, ids: &[&WorkflowId]) -> Vec<Vec<Event>> {
        let mut registry = Registry::default();
        registry.insert((*self.parent).clone()).expect("registers");
        registry.insert((*self.kid).clone()).expect("registers");
        let clock = Arc::new(ManualClock::new(T0 + 1_000));
        let (mut core, _handle) =
            Core::recover(self.store(), Arc::new(RwLock::new(registry)), clock, Limits::default()).expect("recovers");
        core.turn(std::iter::empty(), T0 + 1_000);
        ids.iter().map(|id| core.store.history(id).expect("reads")).collect()
    }

    /// A parent run `name` decided up to its child's start (`ChildStarted`), plus `inputs`.
    fn parent(&self, name: &str, inputs: Vec<Input>) -> (WorkflowState, Vec<Event>) {
        let input = JsonText::parse("{}").expect("json");
        let mut state = WorkflowState::new(id(name), &self.parent, input.clone(), T0);
        let mut events = decider::start_pinned(&self.parent, &mut state, &input, Context::new(T0, 10_000)).events;
        for input in inputs {
            events.extend(decide(&self.parent, &mut state, input, T0).events);
        }
        (state, events)
    }

    /// The child of parent `name`, decided until it is held.
    fn held_child(&self, name: &str) -> (WorkflowState, Vec<Event>) {
        let input = JsonText::parse("{}").expect("json");
        let mut state = WorkflowState::new(child_of(name), &self.kid, input.clone(), T0);
        let link = ParentLink { parent: id(name), step: PAY, depth: 1 };
        let mut events = decider::start_child(&self.kid, &mut state, &input, link, Context::new(T0, 10_000)).events;
        let f0 = StepRef::forward(0);
        let worker = shop_types::WorkerId::parse("w").expect("valid");
        for input in [
            Input::Started { step: f0, attempt: 1, worker },
            Input::Completed { step: f0, attempt: 1, output: JsonText::parse(r#"{"charged":1}"#).expect("json") },
        ] {
            events.extend(decide(&self.kid, &mut state, input, T0).events);
        }
        assert!(state.held());
        (state, events)
    }
}

fn decide(definition: &Definition, state: &mut WorkflowState, input: Input, now: u64) -> decider::Decision {
    decider::decide(definition, state, input, Context::new(now, 10_000)).expect("accepted")
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn held_report(name: &str) -> Input {
    let output = JsonText::parse(r#"{"charge":{"charged":1}}"#).expect("json");
    Input::ChildEnded { step: PAY, child: child_of(name), outcome: Ok(output) }
}

#[test]
fn a_parent_waiting_on_a_child_that_does_not_exist_starts_it_once() {
    let disk = Disk::new();
    let (state, events) = disk.parent("p", Vec::new());
    assert_eq!(names(&events).last(), Some(&"ChildStarted"));
    disk.write(&[(&id("p"), &state, &events)]);
    let [parent, child] = <[_; 2]>::try_from(disk.start_engine(&[&id("p"), &child_of("p")])).expect("two");
    assert_eq!(parent, events, "the parent is unchanged");
    assert_eq!(names(&child), ["WorkflowStarted", "DefinitionPinned", "ParentLinked", "StepScheduled"]);
    assert!(matches!(&child[2].kind, EventKind::ParentLinked { parent, step: PAY, depth: 1 } if *parent == id("p")));
    let again = disk.start_engine(&[&child_of("p")]);
    assert_eq!(again[0], child, "a second start changes nothing");
}

#[test]
fn a_parent_that_missed_its_child_s_hold_hears_it_and_the_child_stays_held() {
    let disk = Disk::new();
    let (parent_state, parent_events) = disk.parent("p", Vec::new());
    let (child_state, child_events) = disk.held_child("p");
    disk.write(&[(&id("p"), &parent_state, &parent_events), (&child_of("p"), &child_state, &child_events)]);
    let histories = disk.start_engine(&[&id("p"), &child_of("p")]);
    let added = &histories[0][parent_events.len()..];
    assert_eq!(names(added), ["ChildCompleted", "WaitOpened"]);
    assert_eq!(histories[1], child_events, "the child stays held");
    assert_eq!(disk.start_engine(&[&id("p"), &child_of("p")]), histories, "a second start changes nothing");
}

#[test]
fn a_held_child_whose_parent_is_unknown_compensates_itself() {
    let disk = Disk::new();
    let (child_state, child_events) = disk.held_child("gone");
    disk.write(&[(&child_of("gone"), &child_state, &child_events)]);
    let child = disk.start_engine(&[&child_of("gone")]).remove(0);
    let added = &child[child_events.len()..];
    assert_eq!(names(added), ["CancelRequested", "CompensationStarted", "StepScheduled"], "the refund runs");
    assert!(matches!(&added[0].kind, EventKind::CancelRequested { reason } if reason.contains("is unknown")));
    assert_eq!(disk.start_engine(&[&child_of("gone")]).remove(0), child, "a second start changes nothing");
}

#[test]
fn a_held_child_whose_parent_ended_without_telling_it_follows_the_parent() {
    let disk = Disk::new();
    // `done` completed and `undone` was terminated, each with its child held, untold.
    let (mut done, mut done_events) = disk.parent("done", vec![held_report("done")]);
    let (mut undone, mut undone_events) = disk.parent("undone", vec![held_report("undone")]);
    let signal = Input::Signal { name: "go".into(), key: "k".into(), payload: JsonText::null() };
    done_events.extend(decide(&disk.parent, &mut done, signal, T0).events);
    undone_events
        .extend(decide(&disk.parent, &mut undone, Input::Terminate { reason: "op".into(), by: None }, T0).events);
    assert_eq!((done.status(), undone.status()), (WorkflowStatus::Completed, WorkflowStatus::Terminated));
    let (done_child, done_child_events) = disk.held_child("done");
    let (undone_child, undone_child_events) = disk.held_child("undone");
    disk.write(&[
        (&id("done"), &done, &done_events),
        (&id("undone"), &undone, &undone_events),
        (&child_of("done"), &done_child, &done_child_events),
        (&child_of("undone"), &undone_child, &undone_child_events),
    ]);
    let histories = disk.start_engine(&[&child_of("done"), &child_of("undone")]);
    assert_eq!(names(&histories[0][done_child_events.len()..]), ["WorkflowCompleted"]);
    let undone_added = &histories[1][undone_child_events.len()..];
    assert_eq!(names(undone_added), ["CancelRequested", "CompensationStarted", "StepScheduled"]);
    assert!(matches!(&undone_added[0].kind, EventKind::CancelRequested { reason } if reason.contains("TERMINATED")));
    assert_eq!(disk.start_engine(&[&child_of("done"), &child_of("undone")]), histories, "idempotent");
}

#[test]
fn a_compensating_parent_whose_held_child_missed_its_verdict_tells_it_again() {
    let disk = Disk::new();
    let cancel = Input::Cancel { reason: "customer".into(), by: None };
    let (parent_state, parent_events) = disk.parent("p", vec![held_report("p"), cancel]);
    assert_eq!(names(&parent_events).last(), Some(&"ChildCompensating"));
    let (child_state, child_events) = disk.held_child("p");
    disk.write(&[(&id("p"), &parent_state, &parent_events), (&child_of("p"), &child_state, &child_events)]);
    let histories = disk.start_engine(&[&id("p"), &child_of("p")]);
    assert_eq!(histories[0], parent_events, "the parent still waits for the child's end");
    let added = &histories[1][child_events.len()..];
    assert_eq!(names(added), ["CancelRequested", "CompensationStarted", "StepScheduled"]);
    assert_eq!(disk.start_engine(&[&id("p"), &child_of("p")]), histories, "a second start changes nothing");
}

#[test]
fn a_verdict_a_child_can_no_longer_take_is_answered_to_its_waiting_parent() {
    let disk = Disk::new();
    let cancel = Input::Cancel { reason: "customer".into(), by: None };
    let (parent_state, parent_events) = disk.parent("p", vec![held_report("p"), cancel]);
    // The child ended before it was held (an older engine completed children at once).
    let (_, mut child_events) = disk.held_child("p");
    child_events.pop();
    let mut child_state = WorkflowState::replay(child_of("p"), &disk.kid, &child_events).expect("replays");
    let output = JsonText::parse("{}").expect("json");
    let completed = Event { seq: child_state.next_seq, at_ms: T0, kind: EventKind::WorkflowCompleted { output } };
    child_state.apply(&disk.kid, &completed);
    child_events.push(completed);
    disk.write(&[(&id("p"), &parent_state, &parent_events), (&child_of("p"), &child_state, &child_events)]);
    let parent = disk.start_engine(&[&id("p")]).remove(0);
    let added = &parent[parent_events.len()..];
    assert_eq!(names(added), ["ChildFailed", "WorkflowCompensated"], "the parent goes on");
    assert!(matches!(&added[0].kind, EventKind::ChildFailed { reason, .. } if reason.contains("ended COMPLETED")));
}

#[test]
fn a_running_child_whose_parent_ended_without_telling_it_is_cancelled() {
    let disk = Disk::new();
    let (mut parent, mut parent_events) = disk.parent("p", Vec::new());
    parent_events
        .extend(decide(&disk.parent, &mut parent, Input::Terminate { reason: "op".into(), by: None }, T0).events);
    let input = JsonText::parse("{}").expect("json");
    let mut child = WorkflowState::new(child_of("p"), &disk.kid, input.clone(), T0);
    let link = ParentLink { parent: id("p"), step: PAY, depth: 1 };
    let child_events = decider::start_child(&disk.kid, &mut child, &input, link, Context::new(T0, 10_000)).events;
    disk.write(&[(&id("p"), &parent, &parent_events), (&child_of("p"), &child, &child_events)]);
    let history = disk.start_engine(&[&child_of("p")]).remove(0);
    let added = &history[child_events.len()..];
    assert_eq!(
        names(added),
        ["CancelRequested", "CompensationStarted", "WorkflowCompensated"],
        "nothing was handed out"
    );
    assert_eq!(disk.start_engine(&[&child_of("p")]).remove(0), history, "a second start changes nothing");
}
