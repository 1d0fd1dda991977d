//! Renders a workflow's history as a readable timeline, one line per event, then what the
//! run still waits for and its children:
//!
//! ```text
//! +0ms     #1   WorkflowStarted                             order v2
//! +3ms     #3   ParallelStarted          screen_and_reserve  branches reserve, screen
//! +4ms     #4   ┃ reserve  StepScheduled   reserve_stock    attempt 1
//! +1.204s  #9   ┃ reserve  StepFailed      reserve_stock    attempt 1  OUT_OF_STOCK: ... (final)
//! +1.210s  #12  CompensationStarted                         ↩ reserve_stock failed: ...
//!
//! waiting for:
//!   wait   await_3ds  payment_confirmed | payment_failed  until 2023-11-14T22:28:20Z
//! ```
//!
//! Offsets count from the first event. A step of a parallel or choice branch, or an
//! instance of a `for_each`, runs in a lane (the history's `lane`): its events are indented
//! under `┃ <lane>`, so each branch's attempts, errors and compensations read down their own
//! lane. Compensation steps carry `↩` and the steps run after compensation carry `↪`, so the
//! undo path reads at a glance. This module is pure: it formats what it is given and never
//! fetches or prints.

mod open;

use crate::output::{duration, timestamp, truncate, Table};
use shop_types::api::HistoryEventView;
use shop_types::history::EventKind;
use shop_types::{StepPhase, StepRef};
use std::time::Duration;

/// Longest detail (an error message, a step output) shown on one line; the rest is cut so
/// a large payload cannot drown the timeline.
const MAX_DETAIL_CHARS: usize = 100;
/// How the engine suffixes a compensation step's name.
const COMPENSATION_SUFFIX: &str = ".compensation";
/// What marks a lane: its events are indented under it.
const LANE_MARK: &str = "┃";

/// The timeline of `events` (in history order), one line per event, each ending in `\n`,
/// then (after a blank line) what the run waits for and its children, if anything.
pub fn render(events: &[HistoryEventView]) -> String {
    let Some(first) = events.first() else {
        return String::new();
    };
    let mut table = Table::without_header();
    // A run with no lanes keeps the plain layout (no empty lane column).
    let lanes = events.iter().any(|e| e.lane.is_some());
    for event in events {
        table.row(cells(event, first.at_ms, lanes));
    }
    let mut text = table.render();
    let open = open::render(events);
    if !open.is_empty() {
        text.push('\n');
        text.push_str(&open);
    }
    text
}

/// One event's line as the timeline shows it, its offset counted from `start_ms`: for
/// events that arrive one by one (`shopctl workflow watch`), so columns are not aligned.
pub fn render_one(event: &HistoryEventView, start_ms: u64) -> String {
    cells(event, start_ms, event.lane.is_some())
        .into_iter()
        .filter(|cell| !cell.is_empty())
        .collect::<Vec<_>>()
        .join("  ")
}

/// One event's cells; with `lanes`, a lane column (empty for events outside any lane).
fn cells(event: &HistoryEventView, start_ms: u64, lanes: bool) -> Vec<String> {
    // A clock step backwards on the engine must not panic or print a huge offset.
    let offset = Duration::from_millis(event.at_ms.saturating_sub(start_ms));
    let (step, attempt) = match (event.event.step_attempt(), event.event.step()) {
        (Some((step, attempt)), _) => (step_label(step, event.step_name.as_deref()), format!("attempt {attempt}")),
        (None, Some(step)) => (step_label(step, event.step_name.as_deref()), String::new()),
        (None, None) => (String::new(), String::new()),
    };
    let mut row = vec![format!("+{}", duration(offset)), format!("#{}", event.seq)];
    if lanes {
        row.push(event.lane.as_deref().map_or_else(String::new, |lane| format!("{LANE_MARK} {lane}")));
    }
    row.extend([event.event.name().to_owned(), step, attempt, truncate(&details(event), MAX_DETAIL_CHARS)]);
    row
}

fn step_label(step: StepRef, name: Option<&str>) -> String {
    let name = match name {
        Some(name) => name.to_owned(),
        None => format!("step {}", step.index),
    };
    match step.phase {
        StepPhase::Forward => name,
        // The engine may name a compensation after its step (`reserve_stock.compensation`);
        // the arrow already says it undoes that step.
        StepPhase::Compensation => format!("↩ {}", name.strip_suffix(COMPENSATION_SUFFIX).unwrap_or(&name)),
        StepPhase::AfterCompensation => format!("↪ {name}"),
    }
}

/// A moment after `event` as a timestamp and how long after the event it is.
fn moment(event: &HistoryEventView, at_ms: u64) -> String {
    format!("{} (in {})", timestamp(at_ms), duration(Duration::from_millis(at_ms.saturating_sub(event.at_ms))))
}

/// What the event says beyond its name: the shared description, with the wake-ups and
/// deadlines a terminal reader wants as timestamps.
fn details(event: &HistoryEventView) -> String {
    match &event.event {
        EventKind::SleepStarted { until_ms, .. } => format!("wakes {}", moment(event, *until_ms)),
        EventKind::WaitOpened { signals, deadline_ms, .. } => {
            format!("for {} until {}", signals.join(" | "), moment(event, *deadline_ms))
        }
        kind => kind.details(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::history::{ActivityError, EventKind, TimeoutKind};
    use shop_types::JsonText;

    fn event(seq: u64, at_ms: u64, step_name: Option<&str>, kind: EventKind) -> HistoryEventView {
        HistoryEventView { seq, at_ms, step_name: step_name.map(str::to_owned), lane: None, event: kind }
    }

    /// An event of a step in `lane`.
    fn in_lane(seq: u64, at_ms: u64, step_name: &str, lane: &str, kind: EventKind) -> HistoryEventView {
        HistoryEventView { lane: Some(lane.to_owned()), ..event(seq, at_ms, Some(step_name), kind) }
    }

    fn json(text: &str) -> JsonText {
        JsonText::parse(text).expect("test JSON is valid")
    }

    const CHARGE: StepRef = StepRef { phase: StepPhase::Forward, index: 1 };
    const RELEASE: StepRef = StepRef { phase: StepPhase::Compensation, index: 0 };
    const NOTIFY_CANCELLED: StepRef = StepRef { phase: StepPhase::AfterCompensation, index: 0 };

    /// A declined order with one transient failure and a timeout before the decline.
    fn declined_order() -> Vec<HistoryEventView> {
        let start = 1_700_000_000_000;
        vec![
            event(
                1,
                start,
                None,
                EventKind::WorkflowStarted {
                    workflow_type: "order".parse().expect("valid"),
                    definition_version: 1,
                    input: json("{}"),
                },
            ),
            event(
                2,
                start + 2,
                Some("reserve_stock"),
                EventKind::StepScheduled { step: StepRef::forward(0), attempt: 1 },
            ),
            event(
                3,
                start + 5,
                Some("reserve_stock"),
                EventKind::StepStarted {
                    step: StepRef::forward(0),
                    attempt: 1,
                    worker: "worker-7".parse().expect("valid"),
                },
            ),
            event(
                4,
                start + 12,
                Some("reserve_stock"),
                EventKind::StepCompleted {
                    step: StepRef::forward(0),
                    attempt: 1,
                    output: json(r#"{"totalCents":2598}"#),
                },
            ),
            event(
                5,
                start + 40,
                Some("charge_payment"),
                EventKind::StepTimedOut {
                    step: CHARGE,
                    attempt: 1,
                    timeout: TimeoutKind::StartToClose,
                    will_retry: true,
                },
            ),
            event(
                6,
                start + 40,
                Some("charge_payment"),
                EventKind::StepRetryScheduled { step: CHARGE, attempt: 2, delay_ms: 200 },
            ),
            event(
                7,
                start + 1_244,
                Some("charge_payment"),
                EventKind::StepFailed {
                    step: CHARGE,
                    attempt: 2,
                    error: ActivityError {
                        error_type: "PAYMENT_DECLINED".into(),
                        message: "card declined".into(),
                        retryable: false,
                    },
                    will_retry: false,
                },
            ),
            event(
                8,
                start + 1_244,
                None,
                EventKind::CompensationStarted { reason: "charge_payment failed: PAYMENT_DECLINED".into() },
            ),
            event(
                9,
                start + 1_250,
                Some("reserve_stock.compensation"),
                EventKind::StepScheduled { step: RELEASE, attempt: 1 },
            ),
            event(
                10,
                start + 1_260,
                None,
                EventKind::StepCompleted { step: NOTIFY_CANCELLED, attempt: 1, output: JsonText::null() },
            ),
            event(11, start + 61_300, None, EventKind::WorkflowCompensated { reason: "payment declined".into() }),
        ]
    }

    #[test]
    fn renders_one_aligned_line_per_event() {
        let expected = "\
+0ms        #1   WorkflowStarted                                  order v1
+2ms        #2   StepScheduled        reserve_stock    attempt 1
+5ms        #3   StepStarted          reserve_stock    attempt 1  by worker-7
+12ms       #4   StepCompleted        reserve_stock    attempt 1  {\"totalCents\":2598}
+40ms       #5   StepTimedOut         charge_payment   attempt 1  start_to_close timeout (will retry)
+40ms       #6   StepRetryScheduled   charge_payment   attempt 2  retry in 200ms
+1.244s     #7   StepFailed           charge_payment   attempt 2  PAYMENT_DECLINED: card declined (final)
+1.244s     #8   CompensationStarted                              ↩ charge_payment failed: PAYMENT_DECLINED
+1.250s     #9   StepScheduled        ↩ reserve_stock  attempt 1
+1.260s     #10  StepCompleted        ↪ step 0         attempt 1
+1m01.300s  #11  WorkflowCompensated                              payment declined
";
        assert_eq!(render(&declined_order()), expected);
    }

    const T0: u64 = 1_700_000_000_000;

    fn started() -> HistoryEventView {
        let kind = EventKind::WorkflowStarted {
            workflow_type: "order".parse().expect("valid"),
            definition_version: 2,
            input: json("{}"),
        };
        event(1, T0, None, kind)
    }

    #[test]
    fn parallel_branches_read_down_their_own_lanes_with_attempts_errors_and_compensations() {
        let par = StepRef::forward(0);
        let (reserve, screen) = (StepRef::forward(3), StepRef::forward(4));
        let undo = StepRef { phase: StepPhase::Compensation, index: 3 };
        let declined = ActivityError { error_type: "FRAUD_SUSPECTED".into(), message: "no".into(), retryable: false };
        let events = vec![
            started(),
            event(
                2,
                T0,
                Some("screen_and_reserve"),
                EventKind::ParallelStarted { step: par, branches: vec!["reserve".into(), "screen".into()] },
            ),
            in_lane(3, T0, "reserve_stock", "reserve", EventKind::StepScheduled { step: reserve, attempt: 1 }),
            in_lane(4, T0, "fraud_check", "screen", EventKind::StepScheduled { step: screen, attempt: 1 }),
            in_lane(
                5,
                T0 + 5,
                "fraud_check",
                "screen",
                EventKind::StepStarted { step: screen, attempt: 1, worker: "w".parse().expect("valid") },
            ),
            in_lane(
                6,
                T0 + 9,
                "reserve_stock",
                "reserve",
                EventKind::StepCompleted { step: reserve, attempt: 1, output: json(r#"{"totalCents":5}"#) },
            ),
            in_lane(
                7,
                T0 + 12,
                "fraud_check",
                "screen",
                EventKind::StepFailed { step: screen, attempt: 1, error: declined, will_retry: false },
            ),
            event(
                8,
                T0 + 12,
                Some("screen_and_reserve"),
                EventKind::ParallelStopped { step: par, reason: "fraud".into() },
            ),
            event(9, T0 + 12, None, EventKind::CompensationStarted { reason: "fraud".into() }),
            in_lane(
                10,
                T0 + 12,
                "reserve_stock.compensation",
                "reserve",
                EventKind::StepScheduled { step: undo, attempt: 1 },
            ),
        ];
        let expected = "\
+0ms   #1              WorkflowStarted                                     order v2
+0ms   #2              ParallelStarted      screen_and_reserve             branches reserve, screen
+0ms   #3   ┃ reserve  StepScheduled        reserve_stock       attempt 1
+0ms   #4   ┃ screen   StepScheduled        fraud_check         attempt 1
+5ms   #5   ┃ screen   StepStarted          fraud_check         attempt 1  by w
+9ms   #6   ┃ reserve  StepCompleted        reserve_stock       attempt 1  {\"totalCents\":5}
+12ms  #7   ┃ screen   StepFailed           fraud_check         attempt 1  FRAUD_SUSPECTED: no (final)
+12ms  #8              ParallelStopped      screen_and_reserve             stopping: fraud
+12ms  #9              CompensationStarted                                 ↩ fraud
+12ms  #10  ┃ reserve  StepScheduled        ↩ reserve_stock     attempt 1
";
        assert_eq!(render(&events), expected);
    }

    #[test]
    fn open_waits_sleeps_and_children_are_listed_after_the_timeline() {
        let wait = StepRef::forward(2);
        let events = vec![
            started(),
            event(
                2,
                T0 + 1,
                Some("pay"),
                EventKind::ChildStarted {
                    step: StepRef::forward(0),
                    child: "o-1.pay".parse().expect("valid"),
                    version: 1,
                },
            ),
            event(
                3,
                T0 + 2,
                Some("pay"),
                EventKind::ChildCompleted { step: StepRef::forward(0), output: json(r#"{"paid":true}"#) },
            ),
            event(
                4,
                T0 + 2,
                Some("cool_off"),
                EventKind::SleepStarted { step: StepRef::forward(1), until_ms: T0 + 60_002 },
            ),
            event(5, T0 + 60_002, Some("cool_off"), EventKind::SleepEnded { step: StepRef::forward(1) }),
            event(
                6,
                T0 + 60_002,
                Some("await_3ds"),
                EventKind::WaitOpened {
                    step: wait,
                    signals: vec!["payment_confirmed".into(), "payment_failed".into()],
                    deadline_ms: T0 + 960_002,
                },
            ),
        ];
        let expected = "\
+0ms        #1  WorkflowStarted               order v2
+1ms        #2  ChildStarted     pay          child o-1.pay (v1)
+2ms        #3  ChildCompleted   pay          held until this run ends: {\"paid\":true}
+2ms        #4  SleepStarted     cool_off     wakes 2023-11-14T22:14:20Z (in 1m00.000s)
+1m00.002s  #5  SleepEnded       cool_off
+1m00.002s  #6  WaitOpened       await_3ds    for payment_confirmed | payment_failed until 2023-11-14T22:29:20Z (in 15m00.000s)

waiting for:
  wait  await_3ds  payment_confirmed | payment_failed  until 2023-11-14T22:29:20Z
children:
  pay  o-1.pay  completed, held until this run ends
";
        assert_eq!(render(&events), expected);
    }

    #[test]
    fn empty_history_renders_nothing() {
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn long_details_are_cut_to_one_bounded_line() {
        let events = vec![event(1, 5, None, EventKind::WorkflowFailed { reason: "x\n".repeat(500) })];
        let text = render(&events);
        assert_eq!(text.lines().count(), 1);
        assert!(text.chars().count() < MAX_DETAIL_CHARS + 40);
    }

    #[test]
    fn an_earlier_timestamp_than_the_first_shows_as_zero() {
        let events = vec![
            event(1, 1_000, None, EventKind::CancelRequested { reason: "user".into() }),
            event(2, 900, None, EventKind::WorkflowTerminated { reason: "user".into() }),
        ];
        assert!(render(&events).lines().all(|line| line.starts_with("+0ms")));
    }

    #[test]
    fn an_operator_action_names_who_asked_for_it() {
        let by = || "token:tok_1".to_owned();
        let events = vec![
            event(1, 0, None, EventKind::CancelRequestedBy { reason: "changed my mind".into(), by: by() }),
            event(2, 1, None, EventKind::RunResumedBy { reason: "fixed".into(), by: by() }),
            event(3, 2, None, EventKind::WorkflowTerminatedBy { reason: "stuck".into(), by: by() }),
        ];
        let text = render(&events);
        assert_eq!(text.matches("(by token:tok_1)").count(), 3, "{text}");
    }
}
