//! How an event reads in a timeline: the one description of each kind, shared by `shopctl`'s
//! timeline and the engine's console, and the short duration format both use. Pure text:
//! it must never cut, colour or print (each caller fits it to its medium).

use crate::history::EventKind;
use crate::json::JsonText;

/// A duration in milliseconds as a timeline shows it: `12ms`, `1.204s`, `2m03.500s`.
pub fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    } else {
        let seconds = ms / 1000;
        format!("{}m{:02}.{:03}s", seconds / 60, seconds % 60, ms % 1000)
    }
}

impl EventKind {
    /// What an event says beyond its name, on one line (uncut): who, why, what, how long.
    pub fn details(&self) -> String {
        match self {
            EventKind::WorkflowStarted { workflow_type, definition_version, .. } => {
                format!("{workflow_type} v{definition_version}")
            }
            EventKind::StepScheduled { .. } => String::new(),
            EventKind::StepStarted { worker, .. } => format!("by {worker}"),
            EventKind::StepCompleted { output, .. } | EventKind::WorkflowCompleted { output } => payload(output),
            EventKind::StepFailed { error, will_retry, .. } => {
                format!("{}: {} {}", error.error_type, error.message, retry_note(*will_retry))
            }
            EventKind::StepTimedOut { timeout, will_retry, .. } => {
                format!("{} timeout {}", timeout.as_str(), retry_note(*will_retry))
            }
            EventKind::StepRetryScheduled { delay_ms, .. } => {
                format!("retry in {}", millis(*delay_ms))
            }
            EventKind::CancelRequested { reason }
            | EventKind::WorkflowCompensated { reason }
            | EventKind::WorkflowFailed { reason }
            | EventKind::WorkflowTerminated { reason } => reason.clone(),
            EventKind::CompensationStarted { reason } => format!("↩ {reason}"),
            EventKind::RunParked { reason } => format!("⏸ needs attention: {reason}"),
            EventKind::RunResumed { reason } => format!("▶ {reason}"),
            EventKind::CancelRequestedBy { reason, by } | EventKind::WorkflowTerminatedBy { reason, by } => {
                format!("{reason} (by {by})")
            }
            EventKind::RunResumedBy { reason, by } => format!("▶ {reason} (by {by})"),
            EventKind::TraceLinked { traceparent } => format!("trace {traceparent}"),
            EventKind::SleepStarted { until_ms, .. } => format!("until {until_ms} ms"),
            EventKind::SleepEnded { .. } | EventKind::WaitTimedOut { .. } | EventKind::StepSkipped { .. } => {
                String::new()
            }
            EventKind::SignalReceived { name, key, payload: body } => format!("{name} (key {key}) {}", payload(body)),
            EventKind::WaitOpened { signals, deadline_ms, .. } => {
                format!("for {} until {deadline_ms} ms", signals.join(", "))
            }
            EventKind::WaitCompleted { signal, seq, .. } => format!("{signal} (#{seq})"),
            EventKind::ChoiceTaken { branch, .. } => format!("branch {branch}"),
            EventKind::ParallelStarted { branches, .. } => format!("branches {}", branches.join(", ")),
            EventKind::BranchCompleted { branch, .. } => format!("branch {branch} done"),
            EventKind::ParallelStopped { reason, .. } => format!("stopping: {reason}"),
            EventKind::ForEachStarted { count, .. } => format!("{count} items"),
            EventKind::ForEachStopped { reason, .. } => format!("stopping: {reason}"),
            EventKind::DefinitionPinned { content_hash } => content_hash.clone(),
            EventKind::ChildStarted { child, version, .. } => format!("child {child} (v{version})"),
            EventKind::ChildCompleted { output, .. } => format!("held until this run ends: {}", payload(output)),
            EventKind::ChildFailed { reason, .. } => reason.clone(),
            EventKind::ChildCompensating { child, .. } => format!("↩ child {child} compensates itself"),
            EventKind::ParentLinked { parent, depth, .. } => format!("child of {parent} (depth {depth})"),
            EventKind::HeldByParent { output } => format!("held by its parent until it ends: {}", payload(output)),
        }
    }
}

fn retry_note(will_retry: bool) -> &'static str {
    if will_retry {
        "(will retry)"
    } else {
        "(final)"
    }
}

/// A step's output in the timeline: nothing for `null`, else the compact JSON.
pub fn payload(output: &JsonText) -> String {
    match output.as_str().trim() {
        "null" => String::new(),
        text => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_short() {
        assert_eq!(millis(12), "12ms");
        assert_eq!(millis(1204), "1.204s");
        assert_eq!(millis(123_500), "2m03.500s");
    }

    #[test]
    fn an_operator_action_names_who_asked() {
        let kind = EventKind::RunResumedBy { reason: "fixed".into(), by: "jwt:alice".into() };
        assert_eq!(kind.details(), "▶ fixed (by jwt:alice)");
    }
}
