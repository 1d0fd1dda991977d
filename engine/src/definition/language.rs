//! The constructs of the workflow language beyond an activity step: durable `sleep`,
//! `wait_for` signals, `choice` between branches (and `when` on any step, in `predicate`).
//!
//! This module owns their declared shape and validation (names of signals and branches,
//! pointers, required deadlines, limits). It must never evaluate anything at run time but a
//! predicate handed to it, and never accept a construct the decider cannot run.

use super::predicate::{check_pointer, Predicate, RawPredicate};
use serde::Deserialize;
use shop_types::{ActivityName, QueueName};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Longest a wait may wait: every wait has a deadline, and no deadline is further than this.
pub const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest a `sleep = "..."` may sleep.
pub const MAX_SLEEP: Duration = Duration::from_secs(365 * 24 * 3600);
/// Most signal names one version declares.
pub const MAX_SIGNALS_DECLARED: usize = 64;
/// Longest signal name, in bytes.
pub const MAX_SIGNAL_NAME_BYTES: usize = 64;
/// Most branches one definition declares.
pub const MAX_BRANCHES: usize = 16;
/// Most cases of one `choice`.
pub const MAX_CHOICE_CASES: usize = 16;
/// Most branches one `parallel` step runs at once (and at least 2: one branch is a
/// sequence, not a parallel).
pub const MAX_PARALLEL_BRANCHES: usize = 8;

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Construct {
    /// Run an activity on a worker.
    Activity { activity: ActivityName, queue: QueueName },
    /// A durable timer.
    Sleep(Sleep),
    /// Wait for one of some signals, until a deadline.
    Wait(Wait),
    /// Take the first branch whose case holds; a case without `when` is the default.
    Choice(Vec<Case>),
    /// Run every named branch at once; the step completes when all have.
    Parallel(Vec<String>),
    /// Run another workflow as a child run; the step completes with its output.
    Child(super::Child),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sleep {
    /// `sleep = "30m"`: this long after the step starts (`0` completes at once).
    For { ms: u64 },
    /// `sleep_until = "/input/..."`: until the time the context holds there (epoch ms, or
    /// an RFC 3339 string).
    Until { pointer: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// The signals that end the wait, in declared order.
    pub signals: Vec<String>,
    /// Those of `signals` that end it as a permanent failure of the step.
    pub fail_on: Vec<String>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub when: Option<Predicate>,
    pub branch: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignal {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCase {
    when: Option<RawPredicate>,
    branch: String,
}

/// The construct keys of one `[[steps]]` entry, as written.
#[derive(Default)]
pub(super) struct RawConstruct<'a> {
    /// The step's activity and queue, parsed, when it names both.
    pub activity: Option<(ActivityName, QueueName)>,
    /// It names one of them.
    pub has_activity: bool,
    pub sleep: Option<&'a str>,
    pub sleep_until: Option<&'a str>,
    pub wait_for: Option<&'a [String]>,
    pub fail_on: Option<&'a [String]>,
    pub timeout: Option<&'a str>,
    pub choice: Option<&'a [RawCase]>,
    pub parallel: Option<&'a [String]>,
    pub in_branch: bool,
}

/// What validating a construct needs to know about the whole definition.
pub(super) struct Names<'a> {
    pub signals: &'a BTreeSet<String>,
    pub branches: &'a BTreeMap<String, usize>,
    pub steps: &'a dyn Fn(&str) -> bool,
}

/// Checks a signal name: 1 to [`MAX_SIGNAL_NAME_BYTES`] of ASCII letters, digits, `_`, `-`
/// and `.` (it appears in URLs).
pub fn check_signal_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.len() > MAX_SIGNAL_NAME_BYTES || !name.chars().all(ok_char) {
        return Err(format!(
            "signal name {name:?} must be 1 to {MAX_SIGNAL_NAME_BYTES} ASCII letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

pub(super) fn resolve(raw: &RawConstruct<'_>, names: &Names<'_>) -> Result<Construct, String> {
    let given = [
        raw.has_activity,
        raw.sleep.is_some(),
        raw.sleep_until.is_some(),
        raw.wait_for.is_some(),
        raw.choice.is_some(),
        raw.parallel.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(
            "a step has exactly one of activity (with queue), sleep, sleep_until, wait_for, choice, parallel".into()
        );
    }
    if raw.wait_for.is_none() && (raw.fail_on.is_some() || raw.timeout.is_some()) {
        return Err("fail_on and timeout belong to a wait_for step".into());
    }
    if raw.has_activity {
        let Some((activity, queue)) = raw.activity.clone() else {
            return Err("an activity step needs both activity and queue".into());
        };
        return Ok(Construct::Activity { activity, queue });
    }
    if let Some(text) = raw.sleep {
        let duration = humantime::parse_duration(text).map_err(|e| format!("sleep {text:?}: {e}"))?;
        if duration > MAX_SLEEP {
            return Err(format!("sleep is longer than {}", humantime::format_duration(MAX_SLEEP)));
        }
        let ms = u64::try_from(duration.as_millis()).map_err(|_| "sleep is too long".to_owned())?;
        return Ok(Construct::Sleep(Sleep::For { ms }));
    }
    if let Some(pointer) = raw.sleep_until {
        check_pointer(pointer, names.steps)?;
        return Ok(Construct::Sleep(Sleep::Until { pointer: pointer.to_owned() }));
    }
    if let Some(signals) = raw.wait_for {
        return resolve_wait(raw, signals, names).map(Construct::Wait);
    }
    if let Some(branches) = raw.parallel {
        return resolve_parallel(raw, branches, names).map(Construct::Parallel);
    }
    let cases = raw.choice.unwrap_or_default();
    if raw.in_branch {
        return Err("a choice cannot be inside a branch (branches do not nest)".into());
    }
    if cases.is_empty() || cases.len() > MAX_CHOICE_CASES {
        return Err(format!("a choice needs 1 to {MAX_CHOICE_CASES} cases"));
    }
    let last = cases.len() - 1;
    let mut out = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        if case.when.is_none() && i != last {
            return Err("only the last case of a choice may have no `when` (it is the default)".into());
        }
        if !names.branches.contains_key(&case.branch) {
            return Err(format!("choice names branch {:?}, which is not declared", case.branch));
        }
        let when = case.when.as_ref().map(|w| w.resolve(names.steps)).transpose()?;
        out.push(Case { when, branch: case.branch.clone() });
    }
    Ok(Construct::Choice(out))
}

fn resolve_wait(raw: &RawConstruct<'_>, signals: &[String], names: &Names<'_>) -> Result<Wait, String> {
    if signals.is_empty() {
        return Err("wait_for needs at least one signal".into());
    }
    let mut seen = BTreeSet::new();
    for name in signals {
        if !names.signals.contains(name) {
            return Err(format!("wait_for names signal {name:?}, which [signals] does not declare"));
        }
        if !seen.insert(name) {
            return Err(format!("wait_for names signal {name:?} twice"));
        }
    }
    let fail_on = raw.fail_on.unwrap_or_default().to_vec();
    if let Some(name) = fail_on.iter().find(|n| !signals.contains(n)) {
        return Err(format!("fail_on names signal {name:?}, which this step does not wait for"));
    }
    let Some(text) = raw.timeout else {
        return Err("a wait_for step needs a timeout (every wait has a deadline)".into());
    };
    let timeout = humantime::parse_duration(text).map_err(|e| format!("timeout {text:?}: {e}"))?;
    if timeout > MAX_WAIT_TIMEOUT {
        return Err(format!("timeout is longer than {}", humantime::format_duration(MAX_WAIT_TIMEOUT)));
    }
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if timeout_ms == 0 {
        return Err("timeout must be at least 1ms".into());
    }
    Ok(Wait { signals: signals.to_vec(), fail_on, timeout_ms })
}

fn resolve_parallel(raw: &RawConstruct<'_>, branches: &[String], names: &Names<'_>) -> Result<Vec<String>, String> {
    if raw.in_branch {
        return Err("a parallel cannot be inside a branch (branches do not nest)".into());
    }
    if branches.len() < 2 || branches.len() > MAX_PARALLEL_BRANCHES {
        return Err(format!("a parallel needs 2 to {MAX_PARALLEL_BRANCHES} branches"));
    }
    let mut seen = BTreeSet::new();
    for branch in branches {
        if !names.branches.contains_key(branch) {
            return Err(format!("parallel names branch {branch:?}, which is not declared"));
        }
        if !seen.insert(branch) {
            return Err(format!("parallel names branch {branch:?} twice"));
        }
    }
    Ok(branches.to_vec())
}

/// Every declared branch is used by exactly one choice or one parallel of the main line (a
/// branch shared by two would name the same steps twice in one run).
pub(super) fn check_branches_used<'a>(
    main: &[super::StepDef],
    mut declared: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    let mut used = BTreeMap::new();
    for step in main {
        let branches: Vec<&String> = match &step.construct {
            Construct::Choice(cases) => cases.iter().map(|c| &c.branch).collect(),
            Construct::Parallel(branches) => branches.iter().collect(),
            _ => continue,
        };
        for branch in branches {
            if let Some(other) = used.insert(branch.clone(), step.name.clone()) {
                if other != step.name {
                    return Err(format!("branch {branch:?} is used by two steps ({other} and {})", step.name));
                }
            }
        }
    }
    match declared.find(|name| !used.contains_key(*name)) {
        Some(name) => Err(format!("branch {name:?} is declared but no choice or parallel uses it")),
        None => Ok(()),
    }
}
