//! Renders a workflow's history as a readable timeline, one line per event:
//!
//! ```text
//! +0ms     #1  WorkflowStarted     order v1
//! +3ms     #2  StepScheduled       reserve_stock    attempt 1
//! +1.204s  #9  StepFailed          charge_payment   attempt 1  PAYMENT_UNAVAILABLE: ... (will retry)
//! +1.210s  #12 StepScheduled       ↩ reserve_stock  attempt 1
//! ```
//!
//! Offsets count from the first event. Compensation steps carry `↩` and the steps run after
//! compensation carry `↪`, so the undo path reads at a glance. This module is pure: it
//! formats what it is given and never fetches or prints.

use crate::output::{duration, truncate, Table};
use shop_types::api::HistoryEventView;
use shop_types::{StepPhase, StepRef};
use std::time::Duration;

/// Longest detail (an error message, a step output) shown on one line; the rest is cut so
/// a large payload cannot drown the timeline.
const MAX_DETAIL_CHARS: usize = 100;
/// How the engine suffixes a compensation step's name.
const COMPENSATION_SUFFIX: &str = ".compensation";

/// The timeline of `events` (in history order), one line per event, each ending in `\n`.
pub fn render(events: &[HistoryEventView]) -> String {
    let Some(first) = events.first() else {
        return String::new();
    };
    let mut table = Table::without_header();
    for event in events {
        table.row(cells(event, first.at_ms));
    }
    table.render()
}

/// One event's line as the timeline shows it, its offset counted from `start_ms`: for
/// events that arrive one by one (`shopctl workflow watch`), so columns are not aligned.
pub fn render_one(event: &HistoryEventView, start_ms: u64) -> String {
    cells(event, start_ms).into_iter().filter(|cell| !cell.is_empty()).collect::<Vec<_>>().join("  ")
}

fn cells(event: &HistoryEventView, start_ms: u64) -> Vec<String> {
    // A clock step backwards on the engine must not panic or print a huge offset.
    let offset = Duration::from_millis(event.at_ms.saturating_sub(start_ms));
    let (step, attempt) = match event.event.step_attempt() {
        Some((step, attempt)) => (step_label(step, event.step_name.as_deref()), format!("attempt {attempt}")),
        None => (String::new(), String::new()),
    };
    vec![
        format!("+{}", duration(offset)),
        format!("#{}", event.seq),
        event.event.name().to_owned(),
        step,
        attempt,
        truncate(&event.event.details(), MAX_DETAIL_CHARS),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::history::{ActivityError, EventKind, TimeoutKind};
    use shop_types::JsonText;

    fn event(seq: u64, at_ms: u64, step_name: Option<&str>, kind: EventKind) -> HistoryEventView {
        HistoryEventView { seq, at_ms, step_name: step_name.map(str::to_owned), event: kind }
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
