//! Tests of `for_each` steps in the decider and their validation: instances run at most
//! `max_concurrency` at once and the step's output is theirs in item order; tolerated
//! failures; the item-count edge; a failure past the tolerance stops the step, lets held
//! instances settle, then compensates newest completion first; and a property test with
//! random hand-outs, reports, timers, cancels and replays.

use super::test_run::{op, Run};
use super::*;
use crate::definition::{self, FOR_EACH_REF_BASE, MAX_FOR_EACH_CONCURRENCY, MAX_FOR_EACH_ITEMS, MAX_FOR_EACH_STEPS};
use proptest::prelude::*;
use shop_types::api::WorkflowStatus;

/// f0 reserve, f1 ship (for_each over /input/items), f2 confirm.
fn def(max_concurrency: u32, tolerated: u32) -> String {
    format!(
        r#"
name = "fe"
version = 1
execution_timeout = "1h"
[defaults.retry]
initial_interval = "100ms"
max_attempts = 2
[defaults.timeouts]
schedule_to_start = "1m"
start_to_close = "10s"

[[steps]]
name = "reserve"
activity = "x.reserve"
queue = "q"

[[steps]]
name = "ship"
activity = "x.ship"
queue = "s"
for_each = {{ items = "/input/items", max_concurrency = {max_concurrency}, tolerated_failures = {tolerated} }}

[[steps]]
name = "confirm"
activity = "x.confirm"
queue = "q"

[[compensations]]
step = "reserve"
activity = "x.release"
queue = "q"

[[compensations]]
step = "ship"
activity = "x.unship"
queue = "s"
"#
    )
}

const ITEM: u16 = FOR_EACH_REF_BASE;

impl Run {
    fn for_each(max_concurrency: u32, tolerated: u32, items: usize) -> Run {
        let items: Vec<serde_json::Value> = (0..items).map(|i| serde_json::json!({ "n": i })).collect();
        let input = JsonText::from_value(&serde_json::json!({ "items": items }));
        Run::start("fe.toml", &def(max_concurrency, tolerated), "fe-1", input)
    }

    fn instances_in_flight(&self) -> usize {
        self.state.attempts.values().filter(|a| a.step.index >= FOR_EACH_REF_BASE).count()
    }

    fn ship_output(&self) -> Option<serde_json::Value> {
        self.state.results.iter().find(|(n, _)| n == "ship").map(|(_, o)| o.to_value())
    }
}

#[test]
fn instances_run_at_most_max_concurrency_at_once_and_the_output_is_in_item_order() {
    let mut run = Run::for_each(2, 0, 3);
    run.take(0);
    run.report(0, true);
    assert!(run.names().contains(&"ForEachStarted"));
    assert_eq!(run.instances_in_flight(), 2, "two of three items at once");
    run.take(ITEM);
    run.take(ITEM + 1);
    run.report(ITEM + 1, true);
    assert_eq!(run.instances_in_flight(), 2, "item 2 took item 1's place");
    run.take(ITEM + 2);
    run.report(ITEM + 2, true);
    assert!(run.state.attempts.keys().all(|n| run.def.instance_of(*n).is_some()), "confirm waits for item 0");
    run.report(ITEM, true);
    assert_eq!(run.ship_output(), Some(serde_json::json!([{ "i": ITEM }, { "i": ITEM + 1 }, { "i": ITEM + 2 }])));
    run.take(2);
    run.report(2, true);
    assert_eq!(run.state.status(), WorkflowStatus::Completed);
}

#[test]
fn tolerated_failures_leave_null_in_the_output_and_the_run_goes_on() {
    let mut run = Run::for_each(4, 1, 2);
    run.take(0);
    run.report(0, true);
    run.take(ITEM);
    run.take(ITEM + 1);
    run.report(ITEM, false);
    assert!(!run.names().contains(&"ForEachStopped"), "one failure is tolerated");
    run.report(ITEM + 1, true);
    assert_eq!(run.ship_output(), Some(serde_json::json!([null, { "i": ITEM + 1 }])));
    assert!(run.state.attempt(run.def.main_line().nth(2).expect("confirm")).is_some(), "confirm is next");
}

#[test]
fn an_empty_array_completes_at_once_and_the_item_limit_is_an_edge() {
    let mut run = Run::for_each(4, 0, 0);
    run.take(0);
    run.report(0, true);
    assert_eq!(run.ship_output(), Some(serde_json::json!([])));

    let mut run = Run::for_each(MAX_FOR_EACH_CONCURRENCY, 0, MAX_FOR_EACH_ITEMS);
    run.take(0);
    run.report(0, true);
    let count = MAX_FOR_EACH_ITEMS as u32;
    assert!(run.history.iter().any(|e| e.kind == EventKind::ForEachStarted { step: StepRef::forward(1), count }));
    assert_eq!(run.instances_in_flight(), MAX_FOR_EACH_CONCURRENCY as usize);

    let mut run = Run::for_each(4, 0, MAX_FOR_EACH_ITEMS + 1);
    run.take(0);
    run.report(0, true);
    assert!(!run.names().contains(&"ForEachStarted"));
    let reason = run.state.compensation_reason.clone().expect("compensates");
    assert!(reason.contains("more than 256"), "{reason}");
}

#[test]
fn items_that_are_not_an_array_fail_the_step() {
    let def = definition::parse("fe.toml", &def(2, 0)).expect("valid");
    let input = JsonText::parse(r#"{"items":{"not":"an array"}}"#).expect("valid");
    let mut state = WorkflowState::new(WorkflowId::parse("fe-2").expect("valid"), &def, input.clone(), 0);
    let ctx = Context::new(0, 10_000);
    start(&def, &mut state, &input, ctx);
    let mut run = Run { def, state, history: Vec::new(), now: 0 };
    run.take(0);
    run.report(0, true);
    let reason = run.state.compensation_reason.clone().expect("compensates");
    assert!(reason.contains("does not hold an array"), "{reason}");
}

#[test]
fn a_failure_past_the_tolerance_stops_lets_held_settle_then_compensates_newest_completion_first() {
    let mut run = Run::for_each(2, 0, 3);
    run.take(0);
    run.report(0, true);
    run.take(ITEM);
    run.take(ITEM + 1);
    run.report(ITEM + 1, false);
    assert_eq!(run.names().last(), Some(&"ForEachStopped"));
    assert!(run.state.compensation_plan.is_none(), "item 0 is held by a worker: it settles first");
    run.report(ITEM, true);
    let scheduled: Vec<StepRef> = run.history.iter().filter_map(|e| e.kind.step_attempt().map(|(s, _)| s)).collect();
    assert!(!scheduled.contains(&StepRef::forward(ITEM + 2)), "item 2 is never scheduled once stopped");
    let plan: Vec<StepRef> = run
        .state
        .compensation_plan
        .clone()
        .expect("compensating")
        .iter()
        .filter_map(|n| run.def.node(*n).map(|n| n.step))
        .collect();
    let comp = |index| StepRef { phase: shop_types::StepPhase::Compensation, index };
    assert_eq!(plan, [comp(ITEM), comp(ITEM + 1), comp(0)], "item 0 settled last, so it is undone first");
    let item = run.state.instance_item(&run.def, run.def.node_id(comp(ITEM + 1)).expect("a node"));
    assert_eq!(item.map(|(i, v)| (i, v.to_value())), Some((1, serde_json::json!({ "n": 1 }))));
}

#[test]
fn for_each_is_validated_with_lines() {
    let head = "name = \"w\"\nversion = 1\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\nqueue = \"q\"\n";
    let with = |for_each: &str, extra: &str| {
        format!("{head}[[steps]]\nname = \"e\"\nactivity = \"x.y\"\nqueue = \"q\"\nfor_each = {for_each}\n{extra}")
    };
    let error = |source: String| definition::parse("w.toml", &source).expect_err("invalid");
    let ok = |source: String| definition::parse("w.toml", &source).expect("valid");
    let max = MAX_FOR_EACH_CONCURRENCY;
    ok(with(&format!("{{ items = \"/input/x\", max_concurrency = {max} }}"), ""));
    let over = error(with(&format!("{{ items = \"/input/x\", max_concurrency = {} }}", max + 1), ""));
    assert!(over.reason.contains("max_concurrency must be between 1 and 32"), "{over}");
    assert_eq!(over.line, Some(8));
    assert!(error(with("{ items = \"/input/x\", max_concurrency = 0 }", "")).reason.contains("max_concurrency"));
    ok(with(&format!("{{ items = \"/input/x\", tolerated_failures = {} }}", MAX_FOR_EACH_ITEMS - 1), ""));
    let tolerated = with(&format!("{{ items = \"/input/x\", tolerated_failures = {MAX_FOR_EACH_ITEMS} }}"), "");
    assert!(error(tolerated).reason.contains("tolerated_failures"));
    assert!(error(with("{ items = \"input/x\" }", "")).reason.contains("for_each items"));
    assert!(error(with("{ items = \"/steps/nope/x\" }", "")).reason.contains("for_each items"));
    assert!(error(with("{ items = \"/input/x\", colour = 1 }", "")).reason.contains("colour"));
    assert!(error(with("{ items = \"/input/x\" }", "pivot = true\n")).reason.contains("pivot"));
    assert!(error(with("{ items = \"/input/x\" }", "on_failure = \"continue\"\n")).reason.contains("on_failure"));
    assert!(error(with("{ items = \"/input/x\" }", "params = { item = 1 }\n")).reason.contains("params.item"));
    let sleep = format!("{head}[[steps]]\nname = \"e\"\nsleep = \"1s\"\nfor_each = {{ items = \"/input/x\" }}\n");
    assert!(error(sleep).reason.contains("activity step"));
    let branch = format!(
        "{head}[[steps]]\nname = \"c\"\nchoice = [{{ branch = \"b\" }}]\n[[branches.b]]\nname = \"e\"\nactivity = \"x.y\"\nqueue = \"q\"\nfor_each = {{ items = \"/input/x\" }}\n"
    );
    assert!(error(branch).reason.contains("inside a branch"));
    let many = |n: usize| {
        let steps: String = (0..n)
            .map(|i| format!("[[steps]]\nname = \"e{i}\"\nactivity = \"x.y\"\nqueue = \"q\"\nfor_each = {{ items = \"/input/x\" }}\n"))
            .collect();
        format!("name = \"w\"\nversion = 1\n{steps}")
    };
    ok(many(MAX_FOR_EACH_STEPS));
    let too_many = error(many(MAX_FOR_EACH_STEPS + 1));
    assert!(too_many.reason.contains("at most 8 for_each steps"), "{too_many}");
    assert_eq!(too_many.line, Some(4 + 5 * MAX_FOR_EACH_STEPS), "the name line of the 9th");
}

proptest! {
    /// Any mix of hand-outs, completions, failures (some while others run), timer firings
    /// and cancels: a replay reproduces the state, never more than `max_concurrency`
    /// instances are in flight, a held instance is never dropped but by its own report or
    /// timeout, compensation never starts while one is held, and it covers every instance
    /// handed out.
    #[test]
    fn for_each_runs_replay_and_never_abandon_a_held_instance(
        ops in proptest::collection::vec(op(), 0..80),
        max_concurrency in 1u32..4,
        tolerated in 0u32..3,
        items in 0usize..6,
    ) {
        let mut run = Run::for_each(max_concurrency, tolerated, items);
        for op in ops {
            let instance = |step: StepRef| step.phase == shop_types::StepPhase::Forward && step.index >= FOR_EACH_REF_BASE;
            run.act_and_check(&op, instance)?;
            let forward_instances = run.state.attempts.values().filter(|a| instance(a.step)).count();
            prop_assert!(forward_instances <= max_concurrency as usize);
        }
        prop_assert!(run.history.iter().filter(|e| e.kind.is_terminal()).count() <= 1);
        if run.state.status() == WorkflowStatus::Completed {
            let output = run.ship_output().expect("ship completed");
            prop_assert_eq!(output.as_array().map(Vec::len), Some(items));
        }
    }
}
