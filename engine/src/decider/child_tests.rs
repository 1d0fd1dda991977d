//! Tests of child workflow steps in the decider: the child starts with the parent's context
//! and completes or fails the step; cancelling the parent while the child runs cancels it
//! and compensation waits for the child's outcome; a replay reaches the same state.

use super::*;
use crate::definition;
use crate::state::ParentLink;
use shop_types::api::WorkflowStatus;

/// f0 reserve, f1 the child step (`pay` v2), f2 confirm.
const DEF: &str = r#"
name = "parent"
version = 1
[defaults.timeouts]
schedule_to_start = "1m"
start_to_close = "10s"

[[steps]]
name = "reserve"
activity = "x.reserve"
queue = "q"

[[steps]]
name = "pay"
workflow = { name = "payment", version = 2 }

[[steps]]
name = "confirm"
activity = "x.confirm"
queue = "q"

[[compensations]]
step = "reserve"
activity = "x.release"
queue = "q"
"#;

fn setup() -> (Definition, WorkflowState, Vec<Event>) {
    let def = definition::parse("parent.toml", DEF).expect("valid");
    let id = WorkflowId::parse("p-1").expect("valid");
    let input = JsonText::parse(r#"{"a":1}"#).expect("json");
    let mut state = WorkflowState::new(id, &def, input.clone(), 0);
    let mut history = start_pinned(&def, &mut state, &input, Context::new(0, 1_000)).events;
    let f0 = StepRef::forward(0);
    for input in [
        Input::Started { step: f0, attempt: 1, worker: shop_types::WorkerId::parse("w").expect("valid") },
        Input::Completed { step: f0, attempt: 1, output: JsonText::parse("7").expect("json") },
    ] {
        history.extend(decide(&def, &mut state, input, Context::new(1, 1_000)).expect("accepted").events);
    }
    (def, state, history)
}

fn child() -> WorkflowId {
    WorkflowId::parse("p-1.pay").expect("valid")
}

#[test]
fn the_child_starts_with_the_parents_context_and_its_output_completes_the_step() {
    let (def, mut state, history) = setup();
    let started = history.iter().find(|e| e.kind.name() == "ChildStarted").expect("started");
    assert_eq!(started.kind, EventKind::ChildStarted { step: StepRef::forward(1), child: child(), version: 2 });
    assert!(!state.idle(), "the child is in flight");
    let output = JsonText::parse(r#"{"paid":true}"#).expect("json");
    let ended = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome: Ok(output.clone()) };
    let decision = decide(&def, &mut state, ended, Context::new(2, 1_000)).expect("accepted");
    assert_eq!(decision.events[0].kind, EventKind::ChildCompleted { step: StepRef::forward(1), output });
    assert_eq!(decision.events[1].kind, EventKind::StepScheduled { step: StepRef::forward(2), attempt: 1 });
    // A second report of the same child is stale.
    let again = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome: Err("x".into()) };
    assert_eq!(decide(&def, &mut state, again, Context::new(3, 1_000)), Err(Rejection::Stale));
}

#[test]
fn the_start_effect_carries_the_context_and_the_depth() {
    let def = definition::parse("parent.toml", DEF).expect("valid");
    let id = WorkflowId::parse("p-1").expect("valid");
    let input = JsonText::parse(r#"{"a":1}"#).expect("json");
    let mut state = WorkflowState::new(id, &def, input.clone(), 0);
    start_pinned(&def, &mut state, &input, Context::new(0, 1_000));
    let f0 = StepRef::forward(0);
    let worker = shop_types::WorkerId::parse("w").expect("valid");
    decide(&def, &mut state, Input::Started { step: f0, attempt: 1, worker }, Context::new(1, 1_000)).expect("ok");
    let done = Input::Completed { step: f0, attempt: 1, output: JsonText::parse("7").expect("json") };
    let decision = decide(&def, &mut state, done, Context::new(1, 1_000)).expect("ok");
    let [Effect::Start { run, version, input, depth, parent, .. }] = decision.effects.as_slice() else {
        panic!("one start: {:?}", decision.effects);
    };
    assert_eq!((run, *version, *depth, parent.as_str()), (&child(), 2, 1, "p-1"));
    assert_eq!(input.to_value(), serde_json::json!({"input": {"a": 1}, "steps": {"reserve": 7}}));
}

#[test]
fn a_failed_child_fails_the_step_and_the_parent_compensates() {
    let (def, mut state, _) = setup();
    let ended = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome: Err("declined".into()) };
    let events = decide(&def, &mut state, ended, Context::new(2, 1_000)).expect("accepted").events;
    let names: Vec<_> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["ChildFailed", "CompensationStarted", "StepScheduled"]);
}

#[test]
fn cancelling_the_parent_cancels_the_child_and_compensation_waits_for_it() {
    let (def, mut state, mut history) = setup();
    let decision =
        decide(&def, &mut state, Input::Cancel { reason: "r".into(), by: None }, Context::new(2, 1_000)).expect("ok");
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["CancelRequested", "CompensationStarted"], "nothing is undone while the child runs");
    assert!(matches!(decision.effects.as_slice(), [Effect::Cancel { run, .. }] if *run == child()));
    history.extend(decision.events);
    let ended = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome: Err("compensated".into()) };
    let decision = decide(&def, &mut state, ended, Context::new(3, 1_000)).expect("accepted");
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["ChildFailed", "StepScheduled"], "then the release runs");
    history.extend(decision.events);
    let replayed = WorkflowState::replay(state.id.clone(), &def, &history).expect("replays");
    assert_eq!(replayed, state);
}

#[test]
fn terminating_the_parent_cancels_the_child() {
    let (def, mut state, _) = setup();
    let decision = decide(&def, &mut state, Input::Terminate { reason: "op".into(), by: None }, Context::new(2, 1_000))
        .expect("ok");
    assert_eq!(state.status(), WorkflowStatus::Terminated);
    assert!(matches!(decision.effects.as_slice(), [Effect::Cancel { run, .. }] if *run == child()));
}

#[test]
fn a_child_links_its_parent_and_tells_it_how_it_ended() {
    let def =
        definition::parse("child.toml", "name = \"payment\"\nversion = 2\n[[steps]]\nname = \"s\"\nsleep = \"0s\"\n")
            .expect("valid");
    let input = JsonText::parse("{}").expect("json");
    let mut state = WorkflowState::new(child(), &def, input.clone(), 0);
    let link = ParentLink { parent: WorkflowId::parse("p-1").expect("valid"), step: StepRef::forward(1), depth: 1 };
    let decision = start_child(&def, &mut state, &input, link, Context::new(0, 1_000));
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        ["WorkflowStarted", "DefinitionPinned", "ParentLinked", "SleepStarted", "SleepEnded", "WorkflowCompleted"]
    );
    assert!(matches!(decision.effects.as_slice(), [Effect::ChildEnded { outcome: Ok(_), .. }]));
}

#[test]
fn a_child_past_the_depth_limit_fails_its_step() {
    let def = definition::parse("parent.toml", DEF).expect("valid");
    let input = JsonText::parse("{}").expect("json");
    let mut state = WorkflowState::new(child(), &def, input.clone(), 0);
    let parent = WorkflowId::parse("p-0").expect("valid");
    let link = ParentLink { parent, step: StepRef::forward(1), depth: definition::MAX_CHILD_DEPTH };
    let mut history = start_child(&def, &mut state, &input, link, Context::new(0, 1_000)).events;
    let f0 = StepRef::forward(0);
    let worker = shop_types::WorkerId::parse("w").expect("valid");
    history.extend(
        decide(&def, &mut state, Input::Started { step: f0, attempt: 1, worker }, Context::new(1, 1_000))
            .expect("ok")
            .events,
    );
    let done = Input::Completed { step: f0, attempt: 1, output: JsonText::parse("7").expect("json") };
    let decision = decide(&def, &mut state, done, Context::new(1, 1_000)).expect("ok");
    assert!(decision
        .events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::ChildFailed { reason, .. } if reason.contains("levels deep"))));
    assert!(decision.effects.is_empty(), "no child starts");
}
