//! Golden histories: the safety net for any change to the state or the decider.
//!
//! Each path of the order saga was driven once through `decider::start`/`decider::decide`
//! with a fixed clock, and three things were checked in under `tests/golden/`: the history as
//! the store writes it (`<path>.hex`, one codec record per transition, one record a line), the
//! definition it ran on (a copy of `workflows/order.toml`, so editing the real one does not
//! move the goldens), and what must hold after a replay (`<path>.json`): the status, the
//! terminal outcome, the live timers, the attempts in flight, and the next decision for a
//! fixed set of probe inputs, as events. These are described in terms of events, statuses,
//! timers and attempts, never as a dump of the state's fields, so the state may be reshaped
//! freely as long as it behaves the same.
//!
//! This test only reads: it replays each history and compares. To record the goldens of new
//! paths (only ever on purpose; recorded ones are kept):
//! `cargo test -p shop-engine --test golden -- --ignored regenerate`.

#[path = "golden/paths.rs"]
mod paths;

use paths::{Path, PATHS};
use serde_json::{json, Value};
use shop_engine::codec;
use shop_engine::decider::{self, Context, Input, Rejection, Timer, TimerKind};
use shop_engine::definition::{self, Definition};
use shop_engine::state::{AttemptStatus, WorkflowState};
use shop_types::history::{ActivityError, Event, EventKind};
use shop_types::{JsonText, StepPhase, StepRef, WorkflowId};
use std::path::PathBuf;

/// The run id of every golden run (retry jitter is derived from it).
pub const RUN_ID: &str = "golden-1";
/// The input every golden run starts with.
pub const INPUT: &str = r#"{"orderId":"golden-1","orderItems":[{"productId":1,"quantity":2}],"shippingAddress":"1 Main St","paymentMethod":"CREDIT_CARD"}"#;
/// Every event kind a history can hold: each must appear in at least one golden.
const EVENT_KINDS: &[&str] = &EventKind::NAMES;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("reading golden {name}: {e}"))
}

pub fn load_definition(file: &str) -> Definition {
    definition::parse(file, &read(file)).expect("a golden definition is valid")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(line: &str) -> Vec<u8> {
    (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("golden records are hex"))
        .collect()
}

fn step_text(step: StepRef) -> String {
    let phase = match step.phase {
        StepPhase::Forward => 'f',
        StepPhase::Compensation => 'c',
        StepPhase::AfterCompensation => 'a',
    };
    format!("{phase}{}", step.index)
}

fn timer_text(timer: &Timer) -> String {
    let kind = match timer.kind {
        TimerKind::ExecutionTimeout => "ExecutionTimeout".to_owned(),
        TimerKind::ScheduleToClose { step } => format!("ScheduleToClose {}", step_text(step)),
        TimerKind::ScheduleToStart { step, attempt } => format!("ScheduleToStart {}#{attempt}", step_text(step)),
        TimerKind::StartToClose { step, attempt } => format!("StartToClose {}#{attempt}", step_text(step)),
        TimerKind::Heartbeat { step, attempt } => format!("Heartbeat {}#{attempt}", step_text(step)),
        TimerKind::RetryDue { step, attempt } => format!("RetryDue {}#{attempt}", step_text(step)),
        TimerKind::SleepDue { step } => format!("SleepDue {}", step_text(step)),
        TimerKind::WaitDeadline { step } => format!("WaitDeadline {}", step_text(step)),
    };
    format!("{kind} due {}", timer.due_ms)
}

/// A one-line summary of an event, for a reader of the expectations file.
fn event_line(event: &Event) -> String {
    let mut line = format!("#{} @{} {}", event.seq, event.at_ms, event.kind.name());
    if let Some((step, attempt)) = event.kind.step_attempt() {
        line.push_str(&format!(" {}#{attempt}", step_text(step)));
    } else if let Some(step) = event.kind.step() {
        line.push_str(&format!(" {}", step_text(step)));
    }
    line
}

fn timers_json(definition: &Definition, state: &WorkflowState) -> Value {
    let mut timers = decider::timers(definition, state);
    timers.sort();
    Value::from(timers.iter().map(timer_text).collect::<Vec<_>>())
}

fn status_text(status: &AttemptStatus) -> String {
    match status {
        AttemptStatus::Scheduled { at_ms } => format!("scheduled at {at_ms}"),
        AttemptStatus::Started { at_ms, .. } => format!("started at {at_ms}"),
        AttemptStatus::BackingOff { until_ms } => format!("backing off until {until_ms}"),
    }
}

fn in_flight_json(state: &WorkflowState) -> Value {
    let attempts: Vec<Value> = state
        .in_flight()
        .map(|(step, attempt, status)| {
            let (stands, since) = match status {
                AttemptStatus::Scheduled { at_ms } => ("scheduled", *at_ms),
                AttemptStatus::Started { at_ms, .. } => ("started", *at_ms),
                AttemptStatus::BackingOff { until_ms } => ("backing off until", *until_ms),
            };
            json!({ "step": step_text(step), "attempt": attempt, "status": stands, "at_ms": since })
        })
        .collect();
    Value::from(attempts)
}

fn outcome_json(definition: &Definition, state: &WorkflowState) -> Value {
    let terminal = state.terminal.as_ref().map(|t| {
        json!({
            "status": t.status.as_str(),
            "at_ms": t.at_ms,
            "reason": t.reason,
            "output": t.output.as_ref().map(JsonText::to_value),
        })
    });
    json!({
        "status": state.status().as_str(),
        "terminal": terminal,
        "parked": state.parked,
        "timers": timers_json(definition, state),
        "in_flight": in_flight_json(state),
    })
}

/// The probe inputs, each decided on its own copy of the replayed state: what the run does
/// next when a worker reports, a timer fires or an operator acts.
fn probes(definition: &Definition, state: &WorkflowState, last_at_ms: u64) -> Vec<(String, u64, Input)> {
    let now = last_at_ms + 1;
    let (step, attempt) = state.in_flight().next().map_or((StepRef::forward(0), 1), |(s, a, _)| (s, a));
    let error = |retryable| ActivityError { error_type: "PROBE_ERROR".into(), message: "probe".into(), retryable };
    let output = JsonText::parse(r#"{"probe":true}"#).expect("valid json");
    let execution_due = state.created_at_ms + definition.execution_timeout_ms.unwrap_or_default();
    let mut out = vec![
        ("start in flight".to_owned(), now, Input::Started { step, attempt, worker: "probe".parse().expect("valid") }),
        ("complete in flight".to_owned(), now, Input::Completed { step, attempt, output: output.clone() }),
        ("fail in flight, retryable".to_owned(), now, Input::Failed { step, attempt, error: error(true) }),
        ("fail in flight, permanent".to_owned(), now, Input::Failed { step, attempt, error: error(false) }),
        ("stale completion".to_owned(), now, Input::Completed { step, attempt: attempt + 1, output }),
        ("execution timeout".to_owned(), now.max(execution_due), Input::TimerFired(TimerKind::ExecutionTimeout)),
        ("cancel".to_owned(), now, Input::Cancel { reason: "probe cancel".into(), by: None }),
        ("terminate".to_owned(), now, Input::Terminate { reason: "probe terminate".into(), by: None }),
        ("resume".to_owned(), now, Input::Resume { reason: "probe resume".into(), by: None }),
    ];
    // Only definitions that declare signals are probed with them (the order saga's goldens
    // were recorded without these probes).
    for name in &definition.signals {
        let payload = JsonText::parse(r#"{"probe":true}"#).expect("valid json");
        let input = Input::Signal { name: name.clone(), key: format!("probe-{name}"), payload };
        out.push((format!("signal {name}"), now, input));
    }
    let mut timers = decider::timers(definition, state);
    timers.sort();
    for timer in timers {
        out.push((format!("fire {}", timer_text(&timer)), now.max(timer.due_ms), Input::TimerFired(timer.kind)));
    }
    out
}

/// Everything the golden promises about a replayed history.
pub fn expectations(path: &Path, definition: &Definition, records: &[Vec<Event>]) -> Value {
    let events: Vec<Event> = records.iter().flatten().cloned().collect();
    let events = events.as_slice();
    let state = WorkflowState::replay(WorkflowId::parse(RUN_ID).expect("valid id"), definition, events)
        .expect("a golden history replays");
    let last_at_ms = events.last().map_or(0, |e| e.at_ms);
    let mut probe_results = serde_json::Map::new();
    for (name, now, input) in probes(definition, &state, last_at_ms) {
        let mut copy = state.clone();
        let ctx = Context::new(now, path.max_history_events);
        let result = match decider::decide(definition, &mut copy, input, ctx) {
            Ok(decision) => json!({
                "events": decision.events.iter().map(|e| serde_json::to_value(e).expect("events serialize")).collect::<Vec<_>>(),
                "then": outcome_json(definition, &copy),
            }),
            Err(rejection) => json!({ "rejected": rejection_name(&rejection) }),
        };
        probe_results.insert(name, result);
    }
    json!({
        "path": path.name,
        "about": path.about,
        "definition": path.definition,
        "max_history_events": path.max_history_events,
        "history": events.iter().map(event_line).collect::<Vec<_>>(),
        "after_each_transition": after_each_transition(definition, records),
        "after_replay": outcome_json(definition, &state),
        "next_decision": probe_results,
    })
}

/// After each record (transition) of the history: the status, the attempts in flight and
/// the live timers, one line each, so a reshaped state is held to every step of the way.
fn after_each_transition(definition: &Definition, records: &[Vec<Event>]) -> Value {
    let id = WorkflowId::parse(RUN_ID).expect("valid id");
    let mut lines = Vec::new();
    let mut events = Vec::new();
    for record in records {
        events.extend(record.iter().cloned());
        let state = WorkflowState::replay(id.clone(), definition, &events).expect("a golden history replays");
        let in_flight: Vec<String> = state
            .in_flight()
            .map(|(step, attempt, status)| format!("{}#{attempt} {}", step_text(step), status_text(status)))
            .collect();
        let mut timers = decider::timers(definition, &state);
        timers.sort();
        let timers: Vec<String> = timers.iter().map(timer_text).collect();
        lines.push(format!(
            "after #{}: {}; in flight [{}]; timers [{}]",
            state.next_seq - 1,
            state.status().as_str(),
            in_flight.join(", "),
            timers.join(", ")
        ));
    }
    Value::from(lines)
}

fn rejection_name(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::Stale => "Stale",
        Rejection::Finished => "Finished",
        Rejection::PastPivot => "PastPivot",
        Rejection::NotParked => "NotParked",
        Rejection::HeldByParent(_) => "HeldByParent",
        Rejection::UnknownSignal(_) => "UnknownSignal",
        Rejection::DuplicateSignal => "DuplicateSignal",
        Rejection::KeyReused => "KeyReused",
        Rejection::TooManySignals => "TooManySignals",
        Rejection::SignalTooLarge(_) => "SignalTooLarge",
        Rejection::SignalBufferFull => "SignalBufferFull",
        Rejection::SignalsClosed(_) => "SignalsClosed",
        Rejection::SignalNotAwaited(_) => "SignalNotAwaited",
    }
}

/// The records of a golden file, as bytes and decoded, and the history's events in order.
fn decode_records(text: &str) -> (Vec<Vec<u8>>, Vec<Vec<Event>>, Vec<Event>) {
    let records: Vec<Vec<u8>> = text.lines().filter(|l| !l.is_empty()).map(unhex).collect();
    let decoded: Vec<Vec<Event>> =
        records.iter().map(|r| codec::decode_events(r).expect("a golden record decodes")).collect();
    let events = decoded.iter().flatten().cloned().collect();
    (records, decoded, events)
}

#[test]
fn golden_histories_replay_to_their_recorded_expectations() {
    let mut kinds_seen = std::collections::BTreeSet::new();
    for path in PATHS {
        let definition = load_definition(path.definition);
        let (records, decoded, events) = decode_records(&read(&format!("{}.hex", path.name)));
        for (bytes, record) in records.iter().zip(&decoded) {
            assert_eq!(&codec::encode_events(record).expect("encodes"), bytes, "{}: re-encoding", path.name);
        }
        kinds_seen.extend(events.iter().map(|e| e.kind.name()));
        let expected: Value =
            serde_json::from_str(&read(&format!("{}.json", path.name))).expect("expectations are JSON");
        let actual = expectations(path, &definition, &decoded);
        assert!(
            actual == expected,
            "golden {} changed:\n--- recorded\n{}\n--- now\n{}",
            path.name,
            serde_json::to_string_pretty(&expected).unwrap_or_default(),
            serde_json::to_string_pretty(&actual).unwrap_or_default()
        );
    }
    for kind in EVENT_KINDS {
        assert!(kinds_seen.contains(kind), "no golden history holds a {kind} event");
    }
}

/// `EVENT_KINDS` names every variant of `EventKind`: serde lists them all when it refuses
/// an unknown one, so a kind added without a golden fails here, not only at review.
#[test]
fn event_kinds_lists_every_kind_of_event() {
    let error = serde_json::from_str::<EventKind>(r#"{"NoSuchKind":null}"#).expect_err("unknown kind");
    let message = error.to_string();
    let (_, listed) = message.split_once("expected one of").expect("serde names the variants");
    let listed = listed.split(" at line").next().unwrap_or(listed);
    let variants: Vec<&str> =
        listed.split(',').map(|v| v.trim().trim_matches(|c: char| !c.is_ascii_alphanumeric())).collect();
    assert!(variants.len() >= EVENT_KINDS.len(), "{message}");
    for variant in &variants {
        assert!(EVENT_KINDS.contains(variant), "EventKind::{variant} is not in EVENT_KINDS (and so has no golden)");
    }
    assert_eq!(variants.len(), EVENT_KINDS.len(), "EVENT_KINDS lists a kind twice or one that is gone");
}

/// Records of the older formats (1: fixed-width integers, 2: varints; one event a record)
/// still decode to the same events as today's records of the same history.
#[test]
fn records_of_older_formats_decode_to_the_same_history() {
    let (_, _, current) = decode_records(&read("confirmed.hex"));
    for old in ["confirmed.v1.hex", "confirmed.v2.hex"] {
        let (records, _, events) = decode_records(&read(old));
        assert_eq!(records.len(), current.len(), "{old}: one event a record");
        assert_eq!(events, current, "{old}");
    }
}

/// Drives every path not yet recorded through the decider and writes its golden. Recorded
/// goldens are never rewritten (their histories are what older engines wrote, which today's
/// decider may no longer write: a child run then completed instead of being held); delete a
/// path's files to record it again. Run only on purpose.
#[test]
#[ignore = "writes the golden files; run on purpose only"]
fn regenerate() {
    use bincode::Options as _;
    for path in PATHS.iter().filter(|p| !dir().join(format!("{}.hex", p.name)).exists()) {
        let definition = load_definition(path.definition);
        let run = paths::drive(path, &definition);
        let events: Vec<Event> = run.records.iter().flatten().cloned().collect();
        let replayed =
            WorkflowState::replay(WorkflowId::parse(RUN_ID).expect("valid id"), &definition, &events).expect("replays");
        assert_eq!(replayed, run.state, "{}: replay reproduces the driven state", path.name);
        let lines: Vec<String> = run.records.iter().map(|r| hex(&codec::encode_events(r).expect("encodes"))).collect();
        std::fs::write(dir().join(format!("{}.hex", path.name)), lines.join("\n") + "\n").expect("writes");
        let expected = expectations(path, &definition, &run.records);
        let text = serde_json::to_string_pretty(&expected).expect("serializes") + "\n";
        std::fs::write(dir().join(format!("{}.json", path.name)), text).expect("writes");
        if path.name == "confirmed" {
            // The older formats, as builds before version 3 wrote them: one event a record.
            let fixint = bincode::DefaultOptions::new().with_fixint_encoding().with_big_endian();
            let varint = bincode::DefaultOptions::new().with_varint_encoding().with_big_endian();
            let (mut v1, mut v2) = (Vec::new(), Vec::new());
            for event in &events {
                let mut bytes = vec![1u8];
                fixint.serialize_into(&mut bytes, event).expect("encodes");
                v1.push(hex(&bytes));
                let mut bytes = vec![2u8];
                varint.serialize_into(&mut bytes, event).expect("encodes");
                v2.push(hex(&bytes));
            }
            std::fs::write(dir().join("confirmed.v1.hex"), v1.join("\n") + "\n").expect("writes");
            std::fs::write(dir().join("confirmed.v2.hex"), v2.join("\n") + "\n").expect("writes");
        }
    }
}

/// Keeps `EventKind` and this file's list in step: a new kind must be added to a golden.
#[allow(dead_code)]
fn every_kind_is_listed(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::WorkflowStarted { .. }
        | EventKind::StepScheduled { .. }
        | EventKind::StepStarted { .. }
        | EventKind::StepCompleted { .. }
        | EventKind::StepFailed { .. }
        | EventKind::StepTimedOut { .. }
        | EventKind::StepRetryScheduled { .. }
        | EventKind::CancelRequested { .. }
        | EventKind::CompensationStarted { .. }
        | EventKind::WorkflowCompleted { .. }
        | EventKind::WorkflowCompensated { .. }
        | EventKind::WorkflowFailed { .. }
        | EventKind::WorkflowTerminated { .. }
        | EventKind::RunParked { .. }
        | EventKind::RunResumed { .. }
        | EventKind::SleepStarted { .. }
        | EventKind::SleepEnded { .. }
        | EventKind::SignalReceived { .. }
        | EventKind::WaitOpened { .. }
        | EventKind::WaitCompleted { .. }
        | EventKind::WaitTimedOut { .. }
        | EventKind::StepSkipped { .. }
        | EventKind::ChoiceTaken { .. }
        | EventKind::ParallelStarted { .. }
        | EventKind::BranchCompleted { .. }
        | EventKind::ParallelStopped { .. }
        | EventKind::ForEachStarted { .. }
        | EventKind::ForEachStopped { .. }
        | EventKind::DefinitionPinned { .. }
        | EventKind::ChildStarted { .. }
        | EventKind::ChildCompleted { .. }
        | EventKind::ChildFailed { .. }
        | EventKind::ParentLinked { .. }
        | EventKind::HeldByParent { .. }
        | EventKind::ChildCompensating { .. }
        | EventKind::CancelRequestedBy { .. }
        | EventKind::WorkflowTerminatedBy { .. }
        | EventKind::RunResumedBy { .. }
        | EventKind::TraceLinked { .. } => kind.name(),
    }
}
