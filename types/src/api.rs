//! Requests and responses of the engine's generic `/v1` HTTP API, and its error body.
//!
//! Every error the engine answers is `{"error":{"code":"...","message":"..."}}`; `code` is a
//! stable string scripts may match on.

use crate::history::{ActivityError, EventKind};
use crate::ids::{ActivityName, QueueName, StepName, TaskToken, WorkerId, WorkflowId, WorkflowType};
use crate::json::JsonText;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `POST /v1/workflows`. Starting an ID that exists with the same type and input returns
/// the existing run (200); with a different one it is a conflict (409).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartWorkflowRequest {
    #[serde(rename = "type")]
    pub workflow_type: WorkflowType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default = "JsonText::null")]
    pub input: JsonText,
    /// Signal-with-start: recorded with the start in one batch; a retried start with the
    /// same signal changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<StartSignal>,
}

/// What `POST /v1/workflows/{id}/signals/{name}` and `POST /v1/callbacks/{token}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalReply {
    /// `recorded`, or `duplicate` when its key was recorded already (same name and payload).
    pub outcome: String,
}

/// `POST /v1/callbacks/{token}`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    /// One of the signals of the wait the token was minted for.
    pub signal: String,
    #[serde(default = "JsonText::null")]
    pub payload: JsonText,
}

/// The signal of a signal-with-start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartSignal {
    pub name: String,
    #[serde(default = "JsonText::null")]
    pub payload: JsonText,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkflowStatus {
    Running,
    Completed,
    Compensated,
    Failed,
    Terminated,
}

impl WorkflowStatus {
    pub const ALL: [WorkflowStatus; 5] = [
        WorkflowStatus::Running,
        WorkflowStatus::Completed,
        WorkflowStatus::Compensated,
        WorkflowStatus::Failed,
        WorkflowStatus::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "RUNNING",
            WorkflowStatus::Completed => "COMPLETED",
            WorkflowStatus::Compensated => "COMPENSATED",
            WorkflowStatus::Failed => "FAILED",
            WorkflowStatus::Terminated => "TERMINATED",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != WorkflowStatus::Running
    }
}

impl std::str::FromStr for WorkflowStatus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        WorkflowStatus::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(text)).ok_or_else(|| {
            format!("unknown status {text:?}: expected running, completed, compensated, failed or terminated")
        })
    }
}

/// A workflow run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowView {
    pub id: WorkflowId,
    #[serde(rename = "type")]
    pub workflow_type: WorkflowType,
    pub definition_version: u32,
    pub status: WorkflowStatus,
    /// The definition's label for the status (e.g. `CONFIRMED`), when it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_status: Option<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
    /// Why the run was compensated, failed or terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub input: JsonText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<JsonText>,
    /// What a run in flight waits for: its steps in flight, open waits (with their deadline
    /// and signal names) and sleeps (with their wake time). Empty once it has finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<InFlightView>,
    /// `sha256:<hex>` of the definition source the run was started on (its
    /// `DefinitionPinned` event). Shown by `GET /v1/workflows/{id}` only; absent for runs
    /// started before the hash was recorded, and in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_hash: Option<String>,
    /// What the run is doing and why (see [`crate::why`]). Shown by `GET /v1/workflows/{id}`
    /// only; absent in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<Box<crate::why::WhyView>>,
}

/// One thing a run in flight waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InFlightView {
    /// An activity attempt: waiting for a worker, running, or backing off.
    Activity { step: String, attempt: u32 },
    /// A sleep, until `until_ms` (clock ms).
    Sleep { step: String, until_ms: u64 },
    /// A wait for one of `signals`, until `deadline_ms` (clock ms). `callback` is the path of
    /// its single-use callback URL (`POST` it with `{"signal","payload"}`, no credential).
    Wait {
        step: String,
        signals: Vec<String>,
        deadline_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        callback: Option<String>,
    },
    /// A child workflow run in flight (`GET /v1/workflows/{child}` shows it).
    Child { step: String, child: String },
    /// This run is a child whose forward path completed: it is held by its parent `parent`
    /// until the parent completes (then it completes) or compensates (then so does it).
    HeldByParent { parent: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One message of `GET /v1/events`: a committed event, without its payload (read the run's
/// history for that). The message's SSE `id` is the cursor to resume after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CommittedEventView {
    /// The event's durable position in its shard (the cursor is the one to resume from).
    pub position: u64,
    pub workflow_id: crate::WorkflowId,
    pub workflow_type: crate::WorkflowType,
    pub seq: u64,
    /// The event kind's name (`StepCompleted`, ...).
    pub kind: String,
    pub at_ms: u64,
    /// The run's status once this event is applied.
    pub status: WorkflowStatus,
}

/// One second of the engine's activity: the data of each `tick` message of
/// `GET /v1/overview/events` (the console's overview draws its charts from these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LiveStatsTick {
    pub at_ms: u64,
    /// Runs started and finished (ended for good) since the engine started.
    pub started: u64,
    pub finished: u64,
    /// Of those, since the stream's previous tick (0 in the first).
    pub started_per_sec: u64,
    pub finished_per_sec: u64,
    /// End-to-end latency (start to end) percentiles of recent finished runs, in ms.
    pub latency_p50_ms: u64,
    pub latency_p90_ms: u64,
    pub latency_p99_ms: u64,
    /// How many finished runs the percentiles are taken over (0: none yet).
    pub latency_samples: usize,
    /// Backlog (tasks waiting for a worker) per queue; a drained queue shows 0.
    pub backlog: std::collections::BTreeMap<String, usize>,
}

/// The data of the `end` message of `GET /v1/workflows/{id}/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamEnd {
    pub status: WorkflowStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEventView {
    pub seq: u64,
    pub at_ms: u64,
    /// The step's name in the run's definition, for step events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    /// The lane a step event runs in, for timelines: its branch (of a `parallel` or a
    /// `choice`), or `<step>[<item>]` for an instance of a `for_each` step; absent on the
    /// main line and for events of no step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    pub event: EventKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryResponse {
    pub workflow_id: WorkflowId,
    pub events: Vec<HistoryEventView>,
}

/// Body of `POST /v1/workflows/{id}/cancel` and `/terminate` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionSummary {
    pub name: String,
    pub version: u32,
    pub steps: Vec<String>,
    /// `sha256:<hex>` of the TOML source, computed when it is registered (empty from engines
    /// older than this field).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_hash: String,
    /// The definition's TOML source as registered.
    pub source: String,
}

/// The answer of `POST /v1/definitions`: what was registered, and the runs of older
/// versions of the same workflow type that are still open. Those runs stay pinned to their
/// version; registering never migrates a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisteredDefinition {
    #[serde(flatten)]
    pub definition: DefinitionSummary,
    /// One entry per older version with open runs, by version; empty when there are none.
    #[serde(default)]
    pub open_runs_of_older_versions: Vec<OpenRuns>,
}

/// The open (not terminal, parked included) runs of one definition version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenRuns {
    pub version: u32,
    pub count: u64,
    /// At most [`crate::limits::OPEN_RUNS_SAMPLE`] of their ids, in id order.
    pub sample: Vec<WorkflowId>,
}

/// The answer of `POST /v1/definitions/check`: a definition as the engine resolved it,
/// without registering it. New constructs add optional fields (absent when unused), so an
/// older reader still understands a plan that does not use them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionPlan {
    pub name: String,
    pub version: u32,
    /// `sha256:<hex>` of the TOML source, as registering it would record.
    pub content_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_timeout_ms: Option<u64>,
    /// Status labels the definition declares (`completed` = `CONFIRMED`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub status_labels: std::collections::BTreeMap<String, String>,
    /// The forward steps in order, every default resolved.
    pub steps: Vec<PlannedStep>,
    /// The compensations in the order they would run when every step before the last had
    /// completed (reverse step order); only the steps that completed are undone.
    #[serde(default)]
    pub compensation: Vec<PlannedCompensation>,
    /// The steps that run once compensation has finished, in order.
    #[serde(default)]
    pub after_compensation: Vec<PlannedStep>,
    /// The circuit breakers the definition declares: activity -> how it opens and recovers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub circuits: std::collections::BTreeMap<String, String>,
}

/// One resolved activity step of a plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedStep {
    pub name: String,
    /// What the step does when it is not an activity: `sleep 30s`, `wait for a, b (15m)`,
    /// `choice: card | other`; absent for an activity step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub construct: Option<String>,
    /// The activity and its queue; empty for a step that is not an activity.
    #[serde(default)]
    pub activity: String,
    #[serde(default)]
    pub queue: String,
    pub retry: PlannedRetry,
    pub timeouts: PlannedTimeouts,
    /// `compensate` or `continue`: what the step's permanent failure means.
    pub on_failure: String,
    /// Once a pivot step completes, the run no longer compensates.
    #[serde(default)]
    pub pivot: bool,
    /// The compensation step's name, when the step has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensated_by: Option<String>,
    /// The step's static parameters (`{}` when none).
    #[serde(default = "JsonText::null")]
    pub params: JsonText,
}

impl PlannedStep {
    /// Its retry policy in one line, as `shopctl definition check` and the console show it:
    /// `5x 200ms..10s x2 final:A,B`, durations written by `duration`.
    pub fn retry_text(&self, duration: impl Fn(u64) -> String) -> String {
        let retry = &self.retry;
        let mut text = format!(
            "{}x {}..{} x{}",
            retry.max_attempts,
            duration(retry.initial_interval_ms),
            duration(retry.max_interval_ms),
            retry.backoff_coefficient
        );
        if !retry.non_retryable.is_empty() {
            text.push_str(&format!(" final:{}", retry.non_retryable.join(",")));
        }
        text
    }

    /// Its timeouts in one line: `start_to_close=30s heartbeat=5s`, durations written by
    /// `duration`.
    pub fn timeouts_text(&self, duration: impl Fn(u64) -> String) -> String {
        let t = &self.timeouts;
        let mut parts = vec![format!("start_to_close={}", duration(t.start_to_close_ms))];
        let optional = [
            ("schedule_to_start", t.schedule_to_start_ms),
            ("schedule_to_close", t.schedule_to_close_ms),
            ("heartbeat", t.heartbeat_ms),
        ];
        parts.extend(optional.into_iter().filter_map(|(name, value)| Some(format!("{name}={}", duration(value?)))));
        parts.join(" ")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedRetry {
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_interval_ms: u64,
    pub max_attempts: u32,
    pub jitter: f64,
    #[serde(default)]
    pub non_retryable: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_start_ms: Option<u64>,
    pub start_to_close_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_close_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

/// One compensation of a plan: which step it undoes, and in which position it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedCompensation {
    /// 1 for the first compensation to run.
    pub order: u32,
    /// The forward step it undoes.
    pub undoes: String,
    pub step: PlannedStep,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionList {
    pub definitions: Vec<DefinitionSummary>,
}

/// `POST /v1/tasks/poll`: returns as soon as a task is ready, or empty after `wait_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    pub queue: QueueName,
    pub worker_id: WorkerId,
    #[serde(default = "one")]
    pub max_tasks: u32,
    #[serde(default)]
    pub wait_ms: u64,
}

fn one() -> u32 {
    1
}

/// One activity attempt handed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityTask {
    pub token: TaskToken,
    pub workflow_id: WorkflowId,
    pub workflow_type: WorkflowType,
    pub step_name: StepName,
    pub activity: ActivityName,
    pub attempt: u32,
    /// The same for every attempt of this step in this run; another for its compensation.
    pub idempotency_key: String,
    /// The workflow's input.
    pub input: JsonText,
    /// Outputs of the steps completed so far, by step name.
    pub results: JsonText,
    /// The step's static parameters from the definition (`{}` when none).
    pub params: JsonText,
    /// The attempt's lease: report before this many milliseconds or it is timed out.
    pub start_to_close_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// The W3C `traceparent` of this attempt's engine span (`Schedule:<step>`), when the run
    /// is traced: the worker's span for the attempt is its child. Absent from older engines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollResponse {
    pub tasks: Vec<ActivityTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub token: TaskToken,
    #[serde(default = "JsonText::null")]
    pub output: JsonText,
    /// The worker's span of the attempt (W3C `traceparent`), when the task carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub token: TaskToken,
    pub error: ActivityError,
    /// The worker's span of the attempt (W3C `traceparent`), when the task carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub token: TaskToken,
}

/// What `POST /v1/tasks/complete`, `/fail` and `/heartbeat` answer once the report or the
/// heartbeat is recorded: an empty object (room for fields an older worker ignores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskAck {}

/// One outcome in `POST /v1/tasks/report` (a batch of completions and failures).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskOutcome {
    Completed { output: JsonText },
    Failed { error: ActivityError },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskReport {
    pub token: TaskToken,
    pub outcome: TaskOutcome,
    /// The worker's span of the attempt (W3C `traceparent`), when the task carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportBatchRequest {
    pub reports: Vec<TaskReport>,
    /// Poll for the next tasks in the same round trip, once the reports are recorded: a busy
    /// worker then needs one request per batch instead of two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then_poll: Option<PollRequest>,
}

/// Results in the order of the reports: `None` accepted, `Some(error)` refused; and the
/// tasks of `then_poll`, if it was asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportBatchResponse {
    pub results: Vec<Option<ErrorDetail>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<ActivityTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
    pub active_workflows: u64,
    /// The engine's process ID, so a supervisor can tell its own child from another process
    /// answering on the port; absent from engines older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}
