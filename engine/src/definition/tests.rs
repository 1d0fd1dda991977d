//! Tests of parsing, validation and resolution of definitions.

use super::*;

const ORDER: &str = include_str!("../../../workflows/order.toml");

#[test]
fn the_order_saga_loads_with_resolved_policies() {
    let def = parse("order.toml", ORDER).expect("order.toml is valid");
    assert_eq!(def.name, "order");
    assert_eq!(def.steps.len(), 4);
    let reserve = &def.steps[0];
    assert_eq!(reserve.retry.max_attempts, 6);
    assert_eq!(reserve.retry.initial_interval_ms, 100);
    assert!(reserve.retry.non_retryable.contains(&"OUT_OF_STOCK".to_owned()));
    assert_eq!(reserve.timeouts.start_to_close_ms, 10_000);
    assert!(def.compensations[0].is_some() && def.compensations[1].is_some());
    assert!(def.compensations[2].is_none());
    assert_eq!(def.compensations[0].as_ref().map(|c| c.retry.max_attempts), Some(20));
    assert!(def.steps[2].pivot);
    assert_eq!(def.steps[3].on_failure, OnFailure::Continue);
    assert_eq!(def.steps[3].params.as_str(), r#"{"kind":"ORDER_CONFIRMED"}"#);
    assert_eq!(def.after_compensation.len(), 1);
}

fn error_of(source: &str) -> DefinitionError {
    parse("bad.toml", source).expect_err("must be rejected")
}

const MINIMAL: &str = "name = \"w\"\nversion = 1\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\nqueue = \"q\"\n";

#[test]
fn a_minimal_definition_is_accepted() {
    let def = parse("ok.toml", MINIMAL).expect("valid");
    assert_eq!(def.steps[0].retry.max_attempts, DEFAULT_MAX_ATTEMPTS);
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let err = error_of(&format!("{MINIMAL}colour = \"red\"\n"));
    assert_eq!(err.line, Some(7));
    assert!(err.reason.contains("colour"), "{err}");
    assert!(err.to_string().starts_with("bad.toml:7: "), "{err}");
}

#[test]
fn a_missing_activity_is_rejected() {
    let err = error_of("name = \"w\"\nversion = 1\n[[steps]]\nname = \"a\"\nqueue = \"q\"\n");
    assert!(err.reason.contains("activity"), "{err}");
    assert!(err.line.is_some());
}

#[test]
fn negative_and_zero_durations_are_rejected() {
    let err = error_of(&format!("{MINIMAL}timeouts = {{ start_to_close = \"-5s\" }}\n"));
    assert!(err.line.is_some(), "{err}");
    let err = error_of(&format!("{MINIMAL}timeouts = {{ start_to_close = \"0s\" }}\n"));
    assert!(err.reason.contains("at least 1ms"), "{err}");
}

#[test]
fn a_compensation_for_a_missing_step_is_rejected_at_its_line() {
    let err = error_of(&format!("{MINIMAL}[[compensations]]\nstep = \"nope\"\nactivity = \"x.undo\"\nqueue = \"q\"\n"));
    assert_eq!(err.line, Some(8));
    assert!(err.reason.contains("does not exist"), "{err}");
}

#[test]
fn out_of_range_policies_are_rejected() {
    let err = error_of(&format!("{MINIMAL}retry = {{ max_attempts = 0 }}\n"));
    assert!(err.reason.contains("max_attempts"), "{err}");
    let err = error_of(&format!("{MINIMAL}retry = {{ jitter = 1.5 }}\n"));
    assert!(err.reason.contains("jitter"), "{err}");
    let err = error_of(&format!("{MINIMAL}queue = \"bad queue\"\n"));
    assert!(err.line.is_some(), "{err}");
}

#[test]
fn duplicate_step_names_are_rejected() {
    let err = error_of(&format!("{MINIMAL}[[steps]]\nname = \"a\"\nactivity = \"x.z\"\nqueue = \"q\"\n"));
    assert!(err.reason.contains("used twice"), "{err}");
}

#[test]
fn params_nest_no_deeper_than_any_other_payload() {
    // `levels` nested tables: the JSON the worker gets nests exactly that deep.
    let params = |levels: usize| format!("params = {}1{}\n", "{ a = ".repeat(levels), " }".repeat(levels));
    let deepest = shop_types::json::MAX_JSON_DEPTH;
    let def = parse("ok.toml", &format!("{MINIMAL}{}", params(deepest))).expect("at the limit");
    assert!(def.steps[0].params.as_str().starts_with("{\"a\":{"));
    let err = error_of(&format!("{MINIMAL}{}", params(deepest + 1)));
    assert!(err.reason.contains("nests deeper"), "{err}");
}

#[test]
fn the_language_is_validated_with_lines() {
    let wait = "[signals]\nok = {}\n[[steps]]\nname = \"w\"\nwait_for = [\"ok\", \"nope\"]\ntimeout = \"1m\"\n";
    let err = error_of(&format!("name = \"w\"\nversion = 1\n{wait}"));
    assert!(err.reason.contains("\"nope\""), "{err}");
    assert_eq!(err.line, Some(6));
    let no_timeout = "name = \"w\"\nversion = 1\n[signals]\nok = {}\n[[steps]]\nname = \"w\"\nwait_for = [\"ok\"]\n";
    assert!(error_of(no_timeout).reason.contains("needs a timeout"));
    let long = "name = \"w\"\nversion = 1\n[signals]\nok = {}\n[[steps]]\nname = \"w\"\nwait_for = [\"ok\"]\ntimeout = \"31days\"\n";
    assert!(error_of(long).reason.contains("longer than"), "MAX_WAIT_TIMEOUT is the edge");
    let at_limit = long.replace("31days", "30days");
    assert!(parse("w.toml", &at_limit).is_ok(), "the limit itself is allowed");
    let fail_on = "name = \"w\"\nversion = 1\n[signals]\nok = {}\nno = {}\n[[steps]]\nname = \"w\"\nwait_for = [\"ok\"]\nfail_on = [\"no\"]\ntimeout = \"1m\"\n";
    assert!(error_of(fail_on).reason.contains("does not wait for"));
    let no_branch = format!("{MINIMAL}[[steps]]\nname = \"c\"\nchoice = [{{ branch = \"x\" }}]\n");
    assert!(error_of(&no_branch).reason.contains("not declared"));
    let empty = format!("{MINIMAL}[[steps]]\nname = \"c\"\nchoice = []\n");
    assert!(error_of(&empty).reason.contains("1 to"));
    let unused = format!("{MINIMAL}[[branches.b]]\nname = \"x\"\nactivity = \"x.y\"\nqueue = \"q\"\n");
    assert!(error_of(&unused).reason.contains("no choice or parallel uses it"));
    let pointer = format!("{MINIMAL}[[steps]]\nname = \"s\"\nsleep_until = \"/elsewhere\"\n");
    assert!(error_of(&pointer).reason.contains("must start with"));
    let when =
        format!("{MINIMAL}[[steps]]\nname = \"s\"\nsleep = \"1s\"\nwhen = {{ path = \"/steps/zz\", exists = true }}\n");
    assert!(error_of(&when).reason.contains("does not have"));
    let two = format!("{MINIMAL}[[steps]]\nname = \"s\"\nsleep = \"1s\"\nactivity = \"x.y\"\nqueue = \"q\"\n");
    assert!(error_of(&two).reason.contains("exactly one of"));
    let default_first = format!(
        "{MINIMAL}[[steps]]\nname = \"c\"\nchoice = [{{ branch = \"b\" }}, {{ branch = \"b\" }}]\n[[branches.b]]\nname = \"x\"\nactivity = \"x.y\"\nqueue = \"q\"\n"
    );
    assert!(error_of(&default_first).reason.contains("only the last case"));
    let comp_sleep = format!("{MINIMAL}[[steps]]\nname = \"s\"\nsleep = \"0s\"\n[[compensations]]\nstep = \"s\"\nactivity = \"x.u\"\nqueue = \"q\"\n");
    assert!(error_of(&comp_sleep).reason.contains("no effect"));
    let bad_signal = "name = \"w\"\nversion = 1\n[signals]\n\"a b\" = {}\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\nqueue = \"q\"\n";
    assert!(error_of(bad_signal).reason.contains("signal name"));
}

#[test]
fn a_step_s_lane_is_its_branch_or_its_for_each_item() {
    let source = r#"
name = "lanes"
version = 1
[[steps]]
name = "both"
parallel = ["a", "b"]
[[steps]]
name = "ship"
activity = "x.ship"
queue = "q"
for_each = { items = "/input/items" }
[[branches.a]]
name = "a1"
activity = "x.a"
queue = "q"
[[branches.b]]
name = "b1"
activity = "x.b"
queue = "q"
[[compensations]]
step = "a1"
activity = "x.undo"
queue = "q"
"#;
    let def = parse("lanes.toml", source).expect("valid");
    let index = |name: &str| def.steps.iter().position(|s| s.name == name).map(|i| i as u16).expect("a step");
    assert_eq!(def.lane(StepRef::forward(index("both"))), None, "the main line");
    assert_eq!(def.lane(StepRef::forward(index("a1"))).as_deref(), Some("a"));
    assert_eq!(def.lane(StepRef::forward(index("b1"))).as_deref(), Some("b"));
    let undo = StepRef { phase: StepPhase::Compensation, index: index("a1") };
    assert_eq!(def.lane(undo).as_deref(), Some("a"), "a compensation runs in its step's lane");
    let item = StepRef::forward(FOR_EACH_REF_BASE + 2);
    assert_eq!(def.lane(item).as_deref(), Some("ship[2]"));
}
