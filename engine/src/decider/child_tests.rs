//! Tests of child workflow steps in the decider: the child starts with the parent's context
//! and completes or fails the step; cancelling the parent while the child runs cancels it
//! and compensation waits for the child's outcome; a child whose forward path completes is
//! held, and completes with its parent or compensates itself when the parent's compensation
//! reaches its step (or the parent ends otherwise); a replay reaches the same state.

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
    assert!(state.held_children.values().any(|c| c.child == child()), "the child is held");
    // A second report of the same hold is stale.
    let again = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome: Ok(JsonText::null()) };
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

/// A child definition: charge (a pivot or not), then a sleep of 0s; charge has a refund.
const CHILD_DEF: &str = r#"
name = "payment"
version = 2
execution_timeout = "1h"
[defaults.timeouts]
schedule_to_start = "1m"
start_to_close = "10s"

[[steps]]
name = "charge"
activity = "x.charge"
queue = "q"
pivot = false

[[steps]]
name = "s"
sleep = "0s"

[[compensations]]
step = "charge"
activity = "x.refund"
queue = "q"
"#;

/// A child run of `CHILD_DEF`, started by step f1 of `p-1`, driven until it is held.
fn held_child(pivot: bool) -> (Definition, WorkflowState) {
    let source = CHILD_DEF.replace("pivot = false", &format!("pivot = {pivot}"));
    let def = definition::parse("child.toml", &source).expect("valid");
    let input = JsonText::parse("{}").expect("json");
    let mut state = WorkflowState::new(child(), &def, input.clone(), 0);
    let link = ParentLink { parent: WorkflowId::parse("p-1").expect("valid"), step: StepRef::forward(1), depth: 1 };
    let mut history = start_child(&def, &mut state, &input, link, Context::new(0, 1_000)).events;
    let f0 = StepRef::forward(0);
    let worker = shop_types::WorkerId::parse("w").expect("valid");
    for input in [
        Input::Started { step: f0, attempt: 1, worker },
        Input::Completed { step: f0, attempt: 1, output: JsonText::parse(r#"{"charged":5}"#).expect("json") },
    ] {
        let decision = decide(&def, &mut state, input, Context::new(1, 1_000)).expect("accepted");
        history.extend(decision.events);
        if state.held() {
            let [Effect::ChildEnded { outcome: Ok(output), parent, .. }] = decision.effects.as_slice() else {
                panic!("the hold is reported: {:?}", decision.effects);
            };
            assert_eq!((parent.as_str(), output.to_value()), ("p-1", serde_json::json!({"charge": {"charged": 5}})));
        }
    }
    assert_eq!(history.last().map(|e| e.kind.name()), Some("HeldByParent"));
    assert_eq!(WorkflowState::replay(child(), &def, &history).expect("replays"), state);
    (def, state)
}

#[test]
fn a_child_whose_forward_path_completes_is_held_and_completes_with_its_parent() {
    let (def, mut state) = held_child(false);
    assert_eq!(state.status(), WorkflowStatus::Running);
    assert!(timers(&def, &state).is_empty(), "no execution timeout while held");
    let cancel = Input::Cancel { reason: "by hand".into(), by: None };
    let parent = WorkflowId::parse("p-1").expect("valid");
    assert_eq!(decide(&def, &mut state, cancel, Context::new(2, 1_000)), Err(Rejection::HeldByParent(parent)));
    let decision = decide(&def, &mut state, Input::Verdict(Verdict::Complete), Context::new(2, 1_000)).expect("ok");
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["WorkflowCompleted"]);
    assert!(decision.effects.is_empty(), "the parent, which completed, is not told");
    let output = state.terminal.as_ref().and_then(|t| t.output.clone()).expect("an output");
    assert_eq!(output.to_value(), serde_json::json!({"charge": {"charged": 5}}));
}

#[test]
fn a_held_child_told_to_compensate_undoes_itself_and_reports_its_end() {
    let (def, mut state) = held_child(false);
    let verdict = Verdict::Compensate { reason: "the parent p-1 compensates".into() };
    let decision = decide(&def, &mut state, Input::Verdict(verdict), Context::new(2, 1_000)).expect("ok");
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["CancelRequested", "CompensationStarted", "StepScheduled"], "the refund runs");
    assert!(decision.effects.is_empty());
    let refund = StepRef { phase: shop_types::StepPhase::Compensation, index: 0 };
    let worker = shop_types::WorkerId::parse("w").expect("valid");
    decide(&def, &mut state, Input::Started { step: refund, attempt: 1, worker }, Context::new(3, 1_000)).expect("ok");
    let done = Input::Completed { step: refund, attempt: 1, output: JsonText::null() };
    let decision = decide(&def, &mut state, done, Context::new(4, 1_000)).expect("ok");
    assert_eq!(state.status(), WorkflowStatus::Compensated);
    let [Effect::ChildEnded { outcome: Err(reason), .. }] = decision.effects.as_slice() else {
        panic!("the end is reported: {:?}", decision.effects);
    };
    assert!(reason.contains("ended COMPENSATED"), "{reason}");
    let again = Input::Verdict(Verdict::Complete);
    assert_eq!(decide(&def, &mut state, again, Context::new(5, 1_000)), Err(Rejection::Finished));
}

#[test]
fn a_held_child_past_its_pivot_cannot_compensate_and_fails() {
    let (def, mut state) = held_child(true);
    let verdict = Verdict::Compensate { reason: "the parent p-1 compensates".into() };
    let decision = decide(&def, &mut state, Input::Verdict(verdict), Context::new(2, 1_000)).expect("ok");
    assert_eq!(state.status(), WorkflowStatus::Failed);
    assert!(state.terminal.as_ref().and_then(|t| t.reason.clone()).is_some_and(|r| r.contains("pivot")));
    assert!(matches!(decision.effects.as_slice(), [Effect::ChildEnded { outcome: Err(_), .. }]));
}

/// The parent of `setup` with its child held (`pay` completed).
fn parent_with_held_child() -> (Definition, WorkflowState, Vec<Event>) {
    let (def, mut state, mut history) = setup();
    let output = JsonText::parse(r#"{"paid":true}"#).expect("json");
    let ended = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome: Ok(output) };
    history.extend(decide(&def, &mut state, ended, Context::new(2, 1_000)).expect("accepted").events);
    (def, state, history)
}

#[test]
fn a_parent_that_completes_completes_its_held_child() {
    let (def, mut state, _) = parent_with_held_child();
    let f2 = StepRef::forward(2);
    let worker = shop_types::WorkerId::parse("w").expect("valid");
    decide(&def, &mut state, Input::Started { step: f2, attempt: 1, worker }, Context::new(3, 1_000)).expect("ok");
    let done = Input::Completed { step: f2, attempt: 1, output: JsonText::null() };
    let decision = decide(&def, &mut state, done, Context::new(4, 1_000)).expect("ok");
    assert_eq!(state.status(), WorkflowStatus::Completed);
    assert!(matches!(decision.effects.as_slice(),
        [Effect::Verdict { run, verdict: Verdict::Complete, .. }] if *run == child()));
}

#[test]
fn compensation_reaches_the_held_child_in_reverse_order_and_waits_for_it() {
    let (def, mut state, mut history) = parent_with_held_child();
    let f2 = StepRef::forward(2);
    let worker = shop_types::WorkerId::parse("w").expect("valid");
    history.extend(
        decide(&def, &mut state, Input::Started { step: f2, attempt: 1, worker }, Context::new(3, 1_000))
            .expect("ok")
            .events,
    );
    let error = ActivityError { error_type: "NO".into(), message: "no".into(), retryable: false };
    let decision =
        decide(&def, &mut state, Input::Failed { step: f2, attempt: 1, error }, Context::new(4, 1_000)).expect("ok");
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["StepFailed", "CompensationStarted", "ChildCompensating"], "the child first: newest");
    let [Effect::Verdict { run, verdict: Verdict::Compensate { reason }, parent, step }] = decision.effects.as_slice()
    else {
        panic!("the child is told: {:?}", decision.effects);
    };
    assert_eq!((run, parent.as_str(), *step), (&child(), "p-1", StepRef::forward(1)));
    assert!(reason.contains("compensates"), "{reason}");
    assert!(!state.idle(), "the release waits for the child");
    history.extend(decision.events);
    let outcome = Err("child p-1.pay ended COMPENSATED: cancelled".to_owned());
    let ended = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome };
    let decision = decide(&def, &mut state, ended, Context::new(5, 1_000)).expect("ok");
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["ChildFailed", "StepScheduled"], "then the release runs");
    history.extend(decision.events);
    assert_eq!(WorkflowState::replay(state.id.clone(), &def, &history).expect("replays"), state);
}

#[test]
fn a_parent_that_ends_otherwise_tells_its_held_child_to_compensate() {
    let (def, mut state, _) = parent_with_held_child();
    let decision = decide(&def, &mut state, Input::Terminate { reason: "op".into(), by: None }, Context::new(3, 1_000))
        .expect("ok");
    assert!(matches!(decision.effects.as_slice(),
        [Effect::Verdict { run, verdict: Verdict::Compensate { .. }, .. }] if *run == child()));
}

#[test]
fn a_held_child_that_ends_on_its_own_is_recorded_and_not_compensated_again() {
    let (def, mut state, _) = parent_with_held_child();
    let outcome = Err("child p-1.pay ended TERMINATED: by hand".to_owned());
    let ended = Input::ChildEnded { step: StepRef::forward(1), child: child(), outcome };
    let names: Vec<_> = decide(&def, &mut state, ended, Context::new(3, 1_000))
        .expect("recorded")
        .events
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(names, ["ChildFailed"], "the step stays completed; the run goes on");
    let decision =
        decide(&def, &mut state, Input::Cancel { reason: "c".into(), by: None }, Context::new(4, 1_000)).expect("ok");
    let names: Vec<_> = decision.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["CancelRequested", "CompensationStarted", "StepScheduled"], "straight to the release");
    assert!(decision.effects.is_empty());
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
