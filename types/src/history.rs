//! History events: the append-only log that is the single source of truth for a workflow run.
//!
//! A run's state is a fold over these events. They are persisted (bincode, behind the engine's
//! codec and its format version byte) and served as JSON by the history API, so every change
//! here is a format change.

use crate::api::WorkflowStatus;
use crate::ids::{StepRef, WorkerId, WorkflowId, WorkflowType};
use crate::json::JsonText;
use serde::{Deserialize, Serialize};

/// One entry of a run's history. `seq` is contiguous from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch when the engine decided this event.
    pub at_ms: u64,
    pub kind: EventKind,
}

/// Why an attempt timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TimeoutKind {
    /// No worker took the task in time.
    ScheduleToStart,
    /// The attempt ran too long.
    StartToClose,
    /// The worker stopped heartbeating.
    Heartbeat,
    /// All attempts together took too long.
    ScheduleToClose,
}

impl TimeoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::ScheduleToStart => "schedule_to_start",
            TimeoutKind::StartToClose => "start_to_close",
            TimeoutKind::Heartbeat => "heartbeat",
            TimeoutKind::ScheduleToClose => "schedule_to_close",
        }
    }
}

/// A failure reported by an activity.
/// Unknown fields are refused on the wire like every request body's (bincode, the store's
/// format, has no field names, so this changes nothing for stored histories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ActivityError {
    /// A stable error type, matched against a retry policy's `non_retryable` list
    /// (e.g. `OUT_OF_STOCK`, `PAYMENT_DECLINED`).
    pub error_type: String,
    pub message: String,
    /// The worker's own verdict; `false` makes the failure permanent whatever the policy.
    #[serde(default = "default_true")]
    pub retryable: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    WorkflowStarted {
        workflow_type: WorkflowType,
        definition_version: u32,
        input: JsonText,
    },
    StepScheduled {
        step: StepRef,
        attempt: u32,
    },
    StepStarted {
        step: StepRef,
        attempt: u32,
        worker: WorkerId,
    },
    StepCompleted {
        step: StepRef,
        attempt: u32,
        output: JsonText,
    },
    StepFailed {
        step: StepRef,
        attempt: u32,
        error: ActivityError,
        /// False when this failure is final for the step.
        will_retry: bool,
    },
    StepTimedOut {
        step: StepRef,
        attempt: u32,
        timeout: TimeoutKind,
        will_retry: bool,
    },
    StepRetryScheduled {
        step: StepRef,
        /// The attempt that will run when the backoff ends.
        attempt: u32,
        delay_ms: u64,
    },
    /// A cancel was asked for: by an operator through the API before [`EventKind::CancelRequestedBy`]
    /// existed, or by the engine itself (a parent compensating cancels its child).
    CancelRequested {
        reason: String,
    },
    CompensationStarted {
        reason: String,
    },
    WorkflowCompleted {
        output: JsonText,
    },
    WorkflowCompensated {
        reason: String,
    },
    WorkflowFailed {
        reason: String,
    },
    /// Ended at once, nothing undone: before [`EventKind::WorkflowTerminatedBy`] existed, or
    /// by the engine itself.
    WorkflowTerminated {
        reason: String,
    },
    /// A compensation failed for good: the run waits for an operator (status FAILED, not
    /// terminal). Appended after the terminal kinds so older records still decode.
    RunParked {
        reason: String,
    },
    /// An operator resumed a parked run: the failed compensation runs again (recorded before
    /// [`EventKind::RunResumedBy`] existed).
    RunResumed {
        reason: String,
    },
    // The workflow language (issue 9). Appended after every older kind, so stored records
    // still decode.
    /// A sleep step started; it ends at `until_ms` (clock ms), decided once here.
    SleepStarted {
        step: StepRef,
        until_ms: u64,
    },
    /// A sleep step's time came (or was already past when it started).
    SleepEnded {
        step: StepRef,
    },
    /// A signal was accepted. Its `key` de-duplicates it for the life of the run; until a
    /// wait consumes it, it stays buffered.
    SignalReceived {
        name: String,
        key: String,
        payload: JsonText,
    },
    /// A wait step opened: it listens for `signals` until `deadline_ms` (clock ms).
    WaitOpened {
        step: StepRef,
        signals: Vec<String>,
        deadline_ms: u64,
    },
    /// A wait consumed the signal recorded as event `seq`; its payload is the step's output.
    WaitCompleted {
        step: StepRef,
        signal: String,
        seq: u64,
    },
    /// A wait reached its deadline with no signal: a permanent failure of the step.
    WaitTimedOut {
        step: StepRef,
    },
    /// A step's `when` was false when it would have been scheduled: it never runs.
    StepSkipped {
        step: StepRef,
    },
    /// A choice step took `branch`; its steps run next, in order.
    ChoiceTaken {
        step: StepRef,
        branch: String,
    },
    // Parallel branches (issue 9, part 4). Appended after every older kind.
    /// A `parallel` step started its `branches`, which now run at once.
    ParallelStarted {
        step: StepRef,
        branches: Vec<String>,
    },
    /// Every step of `branch` of the `parallel` step `step` is finished with; the step
    /// completes with the last of its branches.
    BranchCompleted {
        step: StepRef,
        branch: String,
    },
    /// The `parallel` step `step` stops: nothing more is scheduled in any branch, attempts
    /// not yet handed to a worker (and sleeps and waits) end here, and those a worker holds
    /// settle; then the run compensates (or fails past the pivot) for `reason`.
    ParallelStopped {
        step: StepRef,
        reason: String,
    },
    // for_each (issue 9, part 5). Appended after every older kind.
    /// A `for_each` step started: its items pointer held an array of `count` items, decided
    /// once here. Its instances are addressed by instance step refs (see `StepRef` in the
    /// engine's definition: a forward index from `FOR_EACH_REF_BASE` up), one per item; with
    /// `count` 0 the step completes here with `[]`.
    ForEachStarted {
        step: StepRef,
        count: u32,
    },
    /// The `for_each` step `step` stops (more instances failed for good than it tolerates,
    /// a cancel, a timeout): nothing more is scheduled, instances no worker holds end here,
    /// those a worker holds settle; then the run compensates (or fails past the pivot).
    ForEachStopped {
        step: StepRef,
        reason: String,
    },
    // The definition's hash (issue 9). Appended after every older kind.
    /// The run is pinned to the definition whose TOML source hashes to `content_hash`
    /// (`sha256:<hex>`, as the registry computes it). Emitted right after `WorkflowStarted`
    /// by runs started since this kind exists; older runs have none. A new kind rather than a
    /// field of `WorkflowStarted`, whose stored bincode records could not be read if it grew.
    DefinitionPinned {
        content_hash: String,
    },
    // Child workflows (issue 9, the last construct). Appended after every older kind.
    /// In the parent: child workflow step `step` started run `child` on version `version`
    /// of its definition (decided once here; the child's own history begins in the same
    /// batch).
    ChildStarted {
        step: StepRef,
        child: WorkflowId,
        version: u32,
    },
    /// In the parent: the child of `step` completed; `output` (the child's output) is the
    /// step's.
    ChildCompleted {
        step: StepRef,
        output: JsonText,
    },
    /// In the parent: the child of `step` ended without completing (compensated, failed,
    /// terminated) or could not start: a permanent failure of the step.
    ChildFailed {
        step: StepRef,
        reason: String,
    },
    /// In the child, right after `DefinitionPinned`: the run is the child of step `step` of
    /// run `parent`, `depth` levels below a run nobody started (1 for a parent's child). Its
    /// terminal outcome goes back to the parent.
    ParentLinked {
        parent: WorkflowId,
        step: StepRef,
        depth: u32,
    },
    // A child's completed effects undone with its parent (issue 9). Appended after every
    // older kind.
    /// In a child: its forward path completed with `output`, which went to its parent (whose
    /// step completes with it). The run stays open, held by its parent, until the parent's
    /// verdict: `WorkflowCompleted` when the parent completes; otherwise it compensates
    /// itself (`CancelRequested`, `CompensationStarted`, ...) and tells the parent it ended.
    HeldByParent {
        output: JsonText,
    },
    /// In the parent: compensation reached child step `step`, whose child `child` completed
    /// and was held: the child was told to compensate itself, and the parent's compensation
    /// goes on once the child reports its end (`ChildFailed`, with how it ended).
    ChildCompensating {
        step: StepRef,
        child: WorkflowId,
    },
    // Audited operator actions (issue 10). Appended after every older kind, so stored records
    // still decode: a field added to `CancelRequested`, `WorkflowTerminated` or `RunResumed`
    // would make their stored bincode records unreadable. Each means what the kind it extends
    // means, and names who asked: a credential's subject (`token:<id>`, `jwt:<sub>`,
    // `admin-file`, `open`), never a secret.
    /// `CancelRequested`, asked for by `by`.
    CancelRequestedBy {
        reason: String,
        by: String,
    },
    /// `WorkflowTerminated` (terminal), asked for by `by`.
    WorkflowTerminatedBy {
        reason: String,
        by: String,
    },
    /// `RunResumed`, asked for by `by`.
    RunResumedBy {
        reason: String,
        by: String,
    },
    /// The run's distributed trace: the W3C `traceparent` of the request span that started
    /// it (written in the start batch when tracing is on). A kind of its own, appended,
    /// because a stored kind cannot take a new field; a history is what survives a restart.
    TraceLinked {
        traceparent: String,
    },
}

impl EventKind {
    /// The name of every kind, in declaration order (what [`EventKind::name`] gives): the
    /// `event:` field of the SSE streams, which a browser must listen for by name. The
    /// golden tests check that it lists every variant.
    pub const NAMES: [&'static str; 39] = [
        "WorkflowStarted",
        "StepScheduled",
        "StepStarted",
        "StepCompleted",
        "StepFailed",
        "StepTimedOut",
        "StepRetryScheduled",
        "CancelRequested",
        "CompensationStarted",
        "WorkflowCompleted",
        "WorkflowCompensated",
        "WorkflowFailed",
        "WorkflowTerminated",
        "RunParked",
        "RunResumed",
        "SleepStarted",
        "SleepEnded",
        "SignalReceived",
        "WaitOpened",
        "WaitCompleted",
        "WaitTimedOut",
        "StepSkipped",
        "ChoiceTaken",
        "ParallelStarted",
        "BranchCompleted",
        "ParallelStopped",
        "ForEachStarted",
        "ForEachStopped",
        "DefinitionPinned",
        "ChildStarted",
        "ChildCompleted",
        "ChildFailed",
        "ParentLinked",
        "HeldByParent",
        "ChildCompensating",
        "CancelRequestedBy",
        "WorkflowTerminatedBy",
        "RunResumedBy",
        "TraceLinked",
    ];

    /// The event's name as shown in timelines (`StepScheduled`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::WorkflowStarted { .. } => "WorkflowStarted",
            EventKind::StepScheduled { .. } => "StepScheduled",
            EventKind::StepStarted { .. } => "StepStarted",
            EventKind::StepCompleted { .. } => "StepCompleted",
            EventKind::StepFailed { .. } => "StepFailed",
            EventKind::StepTimedOut { .. } => "StepTimedOut",
            EventKind::StepRetryScheduled { .. } => "StepRetryScheduled",
            EventKind::CancelRequested { .. } => "CancelRequested",
            EventKind::CompensationStarted { .. } => "CompensationStarted",
            EventKind::WorkflowCompleted { .. } => "WorkflowCompleted",
            EventKind::WorkflowCompensated { .. } => "WorkflowCompensated",
            EventKind::WorkflowFailed { .. } => "WorkflowFailed",
            EventKind::WorkflowTerminated { .. } => "WorkflowTerminated",
            EventKind::RunParked { .. } => "RunParked",
            EventKind::RunResumed { .. } => "RunResumed",
            EventKind::SleepStarted { .. } => "SleepStarted",
            EventKind::SleepEnded { .. } => "SleepEnded",
            EventKind::SignalReceived { .. } => "SignalReceived",
            EventKind::WaitOpened { .. } => "WaitOpened",
            EventKind::WaitCompleted { .. } => "WaitCompleted",
            EventKind::WaitTimedOut { .. } => "WaitTimedOut",
            EventKind::StepSkipped { .. } => "StepSkipped",
            EventKind::ChoiceTaken { .. } => "ChoiceTaken",
            EventKind::ParallelStarted { .. } => "ParallelStarted",
            EventKind::BranchCompleted { .. } => "BranchCompleted",
            EventKind::ParallelStopped { .. } => "ParallelStopped",
            EventKind::ForEachStarted { .. } => "ForEachStarted",
            EventKind::ForEachStopped { .. } => "ForEachStopped",
            EventKind::DefinitionPinned { .. } => "DefinitionPinned",
            EventKind::ChildStarted { .. } => "ChildStarted",
            EventKind::ChildCompleted { .. } => "ChildCompleted",
            EventKind::ChildFailed { .. } => "ChildFailed",
            EventKind::ParentLinked { .. } => "ParentLinked",
            EventKind::HeldByParent { .. } => "HeldByParent",
            EventKind::ChildCompensating { .. } => "ChildCompensating",
            EventKind::CancelRequestedBy { .. } => "CancelRequestedBy",
            EventKind::WorkflowTerminatedBy { .. } => "WorkflowTerminatedBy",
            EventKind::RunResumedBy { .. } => "RunResumedBy",
            EventKind::TraceLinked { .. } => "TraceLinked",
        }
    }

    /// The run's status once this event is applied, given its status before: a terminal
    /// event ends it, a park makes it FAILED (waiting for an operator), a resume makes it
    /// RUNNING again; every other event leaves it as it was.
    pub fn status_after(&self, before: WorkflowStatus) -> WorkflowStatus {
        match self {
            EventKind::WorkflowCompleted { .. } => WorkflowStatus::Completed,
            EventKind::WorkflowCompensated { .. } => WorkflowStatus::Compensated,
            EventKind::WorkflowFailed { .. } | EventKind::RunParked { .. } => WorkflowStatus::Failed,
            EventKind::WorkflowTerminated { .. } | EventKind::WorkflowTerminatedBy { .. } => WorkflowStatus::Terminated,
            EventKind::RunResumed { .. } | EventKind::RunResumedBy { .. } => WorkflowStatus::Running,
            _ => before,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::WorkflowCompleted { .. }
                | EventKind::WorkflowCompensated { .. }
                | EventKind::WorkflowFailed { .. }
                | EventKind::WorkflowTerminated { .. }
                | EventKind::WorkflowTerminatedBy { .. }
        )
    }

    /// Who asked for an operator action (cancel, terminate, resume), when the event says.
    pub fn requested_by(&self) -> Option<&str> {
        match self {
            EventKind::CancelRequestedBy { by, .. }
            | EventKind::WorkflowTerminatedBy { by, .. }
            | EventKind::RunResumedBy { by, .. } => Some(by),
            _ => None,
        }
    }

    /// The step and attempt this event concerns, where it concerns one.
    pub fn step_attempt(&self) -> Option<(StepRef, u32)> {
        match self {
            EventKind::StepScheduled { step, attempt }
            | EventKind::StepStarted { step, attempt, .. }
            | EventKind::StepCompleted { step, attempt, .. }
            | EventKind::StepFailed { step, attempt, .. }
            | EventKind::StepTimedOut { step, attempt, .. }
            | EventKind::StepRetryScheduled { step, attempt, .. } => Some((*step, *attempt)),
            _ => None,
        }
    }

    /// The step this event concerns, attempt or not (sleeps, waits, skips and choices too).
    pub fn step(&self) -> Option<StepRef> {
        match self {
            EventKind::SleepStarted { step, .. }
            | EventKind::SleepEnded { step }
            | EventKind::WaitOpened { step, .. }
            | EventKind::WaitCompleted { step, .. }
            | EventKind::WaitTimedOut { step }
            | EventKind::StepSkipped { step }
            | EventKind::ChoiceTaken { step, .. }
            | EventKind::ParallelStarted { step, .. }
            | EventKind::BranchCompleted { step, .. }
            | EventKind::ParallelStopped { step, .. }
            | EventKind::ForEachStarted { step, .. }
            | EventKind::ForEachStopped { step, .. }
            | EventKind::ChildStarted { step, .. }
            | EventKind::ChildCompleted { step, .. }
            | EventKind::ChildFailed { step, .. }
            | EventKind::ChildCompensating { step, .. } => Some(*step),
            other => other.step_attempt().map(|(step, _)| step),
        }
    }
}
