//! Tests of `parallel` steps in the decider and their validation: both branches run at once,
//! a permanent failure in one stops the other and lets its held attempt settle before
//! compensating in reverse order of completion, and a property test with random hand-outs,
//! completions, failures, timer firings, cancels and replays.

use super::test_run::{op, Run};
use super::*;
use crate::definition;
use proptest::prelude::*;
use shop_types::api::WorkflowStatus;

/// f0 reserve, f1 the parallel step, f2 confirm; branch "pay": f3 charge; branch "stock":
/// f4 pick, f5 pack.
const DEF: &str = r#"
name = "par"
version = 1
execution_timeout = "1h"
[defaults.retry]
initial_interval = "100ms"
max_attempts = 3
[defaults.timeouts]
schedule_to_start = "1m"
start_to_close = "10s"

[[steps]]
name = "reserve"
activity = "x.reserve"
queue = "q"

[[steps]]
name = "both"
parallel = ["stock", "pay"]

[[steps]]
name = "confirm"
activity = "x.confirm"
queue = "q"

[[branches.stock]]
name = "pick"
activity = "x.pick"
queue = "q"

[[branches.stock]]
name = "pack"
activity = "x.pack"
queue = "q"

[[branches.pay]]
name = "charge"
activity = "x.charge"
queue = "p"

[[compensations]]
step = "reserve"
activity = "x.release"
queue = "q"

[[compensations]]
step = "pick"
activity = "x.unpick"
queue = "q"

[[compensations]]
step = "charge"
activity = "x.refund"
queue = "p"
"#;

impl Run {
    fn parallel() -> Run {
        Run::start("par.toml", DEF, "p-1", JsonText::parse("{}").expect("valid"))
    }

    fn scheduled_steps(&self) -> Vec<StepRef> {
        self.history
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::StepScheduled { step, .. } => Some(step),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn branches_run_at_once_and_the_step_completes_when_all_have() {
    let mut run = Run::parallel();
    run.take(0);
    run.report(0, true);
    assert_eq!(run.standing(false).len(), 2, "pick and charge are both scheduled");
    run.take(3);
    run.take(4);
    run.report(4, true);
    run.take(5);
    run.report(5, true);
    assert!(run.names().contains(&"BranchCompleted"));
    assert!(run.state.attempts.keys().all(|n| n.index() == 3), "confirm waits for the charge");
    run.report(3, true);
    run.take(2);
    run.report(2, true);
    assert_eq!(run.state.status(), WorkflowStatus::Completed);
    assert_eq!(run.names().iter().filter(|n| **n == "BranchCompleted").count(), 2);
}

#[test]
fn a_branch_failing_for_good_stops_the_other_lets_it_settle_then_compensates_newest_completion_first() {
    let mut run = Run::parallel();
    run.take(0);
    run.report(0, true);
    run.take(4);
    run.take(3);
    run.report(3, false);
    assert_eq!(run.names().last(), Some(&"ParallelStopped"));
    assert!(run.state.compensation_plan.is_none(), "pick is held by a worker: it settles first");
    run.report(4, true);
    assert!(!run.scheduled_steps().contains(&StepRef::forward(5)), "pack is never scheduled once stopped");
    let plan: Vec<String> = run
        .state
        .compensation_plan
        .clone()
        .expect("compensating")
        .iter()
        .filter_map(|n| run.def.node_def(*n).map(|d| d.name.to_string()))
        .collect();
    assert_eq!(plan, ["pick.compensation", "charge.compensation", "reserve.compensation"]);
}

#[test]
fn parallel_is_validated_with_lines() {
    let head = "name = \"w\"\nversion = 1\n[[steps]]\nname = \"a\"\nactivity = \"x.y\"\nqueue = \"q\"\n";
    let branch = |name: &str| format!("[[branches.{name}]]\nname = \"s_{name}\"\nactivity = \"x.y\"\nqueue = \"q\"\n");
    let with = |parallel: &str, names: &[&str]| {
        let branches: String = names.iter().map(|n| branch(n)).collect();
        format!("{head}[[steps]]\nname = \"p\"\nparallel = {parallel}\n{branches}")
    };
    let error = |source: String| definition::parse("w.toml", &source).expect_err("invalid");
    let one = error(with("[\"a1\"]", &["a1"]));
    assert!(one.reason.contains("2 to"), "{one}");
    assert_eq!(one.line, Some(8));
    assert!(error(with("[\"a1\", \"zz\"]", &["a1"])).reason.contains("not declared"));
    assert!(error(with("[\"a1\", \"a1\"]", &["a1"])).reason.contains("twice"));
    let names: Vec<String> = (0..=MAX_PARALLEL_BRANCHES).map(|i| format!("b{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let list = |n: usize| format!("[{}]", refs[..n].iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", "));
    assert!(definition::parse("w.toml", &with(&list(MAX_PARALLEL_BRANCHES), &refs[..MAX_PARALLEL_BRANCHES])).is_ok());
    let over = error(with(&list(MAX_PARALLEL_BRANCHES + 1), &refs));
    assert!(over.reason.contains("2 to"), "{over}");
    let shared = format!(
        "{}[[steps]]\nname = \"c\"\nchoice = [{{ branch = \"a1\" }}]\n",
        with("[\"a1\", \"a2\"]", &["a1", "a2"])
    );
    assert!(error(shared).reason.contains("used by two steps"));
    let comp = format!(
        "{}[[compensations]]\nstep = \"p\"\nactivity = \"x.u\"\nqueue = \"q\"\n",
        with("[\"a1\", \"a2\"]", &["a1", "a2"])
    );
    assert!(error(comp).reason.contains("no effect of its own"));
    let nested = format!(
        "{head}[[steps]]\nname = \"p\"\nparallel = [\"a1\", \"a2\"]\n{}[[branches.a2]]\nname = \"inner\"\nparallel = [\"a1\", \"a1\"]\n",
        branch("a1")
    );
    assert!(error(nested).reason.contains("cannot be inside a branch"));
}

use crate::definition::MAX_PARALLEL_BRANCHES;

proptest! {
    /// Any mix of hand-outs, completions, failures, timer firings and cancels while branches
    /// run: a replay reproduces the state (as a restart would), an attempt a worker holds is
    /// never dropped but by its own report or timeout, compensation never starts while one is
    /// held, and it covers every handed-out step that has a compensation.
    #[test]
    fn parallel_runs_replay_and_never_abandon_a_held_attempt(ops in proptest::collection::vec(op(), 0..60)) {
        let mut run = Run::parallel();
        for op in ops {
            // Only branch steps settle: a main-line step in flight is abandoned by a cancel as
            // it always was (its compensation covers it), and so is a compensation.
            let main_len = run.def.main_len;
            run.act_and_check(&op, |step| {
                step.phase == shop_types::StepPhase::Forward && usize::from(step.index) >= main_len
            })?;
        }
        prop_assert!(run.history.iter().filter(|e| e.kind.is_terminal()).count() <= 1);
    }
}
