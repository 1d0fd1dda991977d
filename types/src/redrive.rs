//! Dead letters and redrive on the wire: the groups of parked and failed runs that
//! `GET /v1/parked?group_by=fingerprint` lists, and the redrive jobs of `/v1/redrives`,
//! with their named limits. The engine stores [`RedriveJob`] as it is (a compatibility
//! boundary: change it on purpose). Types only: nothing here decides or does I/O.

use crate::WorkflowId;
use serde::{Deserialize, Serialize};

/// Groups `GET /v1/parked` lists at most (the largest first).
pub const MAX_PARKED_GROUPS: usize = 100;
/// FAILED runs `GET /v1/parked` reads at most; beyond it the answer says `truncated`.
pub const MAX_PARKED_SCANNED: usize = 100_000;
/// Runs one redrive job targets at most (its `max` may ask for fewer).
pub const MAX_REDRIVE_TARGETS: usize = 1_000;
/// Redrive jobs running at once; one more is refused with 429 `TOO_MANY_REDRIVES`.
pub const MAX_RUNNING_REDRIVES: usize = 4;
/// Redrive jobs the engine keeps (finished ones included); one more is refused with 429.
pub const MAX_STORED_REDRIVES: usize = 1_000;
/// Bounds of a job's rate, in runs resumed per second.
pub const MIN_REDRIVE_RATE: u32 = 1;
pub const MAX_REDRIVE_RATE: u32 = 500;
/// The rate of a job that names none.
pub const DEFAULT_REDRIVE_RATE: u32 = 50;
/// Longest reason a job may give, in bytes (it is recorded in every run it resumes).
pub const MAX_REDRIVE_REASON_BYTES: usize = 512;

/// Where a run failed: parked while compensating (it can be redriven) or failed for good
/// (terminal: it is listed, never redriven).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailurePhase {
    Parked,
    Failed,
}

/// Runs that failed the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParkedGroup {
    /// 16 hex digits: a digest of the workflow type, the phase and the normalized reason.
    pub fingerprint: String,
    pub workflow_type: String,
    pub phase: FailurePhase,
    /// The reason with ids and numbers replaced by `#`: what the group has in common.
    pub pattern: String,
    pub count: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// One run of the group, with its reason as recorded.
    pub sample: WorkflowId,
    pub sample_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParkedGroups {
    pub groups: Vec<ParkedGroup>,
    /// FAILED runs read.
    pub scanned: u64,
    /// Whether runs or groups were left out (past [`MAX_PARKED_SCANNED`] or [`MAX_PARKED_GROUPS`]).
    pub truncated: bool,
}

/// What a redrive targets: exactly one of a group, a filter or a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// A fingerprint from `GET /v1/parked`: its parked runs.
    #[serde(default)]
    pub group: Option<String>,
    /// The parked runs of one workflow type.
    #[serde(default)]
    pub workflow_type: Option<String>,
    /// These runs (each must be parked when its turn comes).
    #[serde(default)]
    pub ids: Option<Vec<WorkflowId>>,
    pub reason: String,
    #[serde(default)]
    pub dry_run: bool,
    /// Runs per second, [`MIN_REDRIVE_RATE`] to [`MAX_REDRIVE_RATE`]; [`DEFAULT_REDRIVE_RATE`] when absent.
    #[serde(default)]
    pub rate: Option<u32>,
    /// At most this many runs (1 to [`MAX_REDRIVE_TARGETS`]).
    #[serde(default)]
    pub max: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RedriveState {
    Running,
    Completed,
    /// Stopped by `DELETE`: the targets not reached are left as they were.
    Stopped,
    /// The engine stopped while the job ran; a restart reports it, never resumes it (start a
    /// new job: its targets are what is still parked).
    Interrupted,
}

impl RedriveState {
    /// The state as the API spells it (`running`, `completed`, `stopped`, `interrupted`).
    pub fn as_str(self) -> &'static str {
        match self {
            RedriveState::Running => "running",
            RedriveState::Completed => "completed",
            RedriveState::Stopped => "stopped",
            RedriveState::Interrupted => "interrupted",
        }
    }
}

/// What the job did to one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TargetOutcome {
    /// Not reached (yet, or ever: the job was stopped or interrupted).
    Pending,
    /// A dry run: it is parked and would be resumed.
    WouldResume,
    Resumed,
    /// Refused, with the API's error code (e.g. `NOT_PARKED`, `ALREADY_FINISHED`).
    Skipped {
        code: String,
    },
}

impl TargetOutcome {
    /// How a person reads it: `pending`, `would resume`, `resumed`, `skipped: CODE`.
    pub fn describe(&self) -> String {
        match self {
            TargetOutcome::Pending => "pending".into(),
            TargetOutcome::WouldResume => "would resume".into(),
            TargetOutcome::Resumed => "resumed".into(),
            TargetOutcome::Skipped { code } => format!("skipped: {code}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedriveTarget {
    pub id: WorkflowId,
    pub outcome: TargetOutcome,
}

/// A redrive job: its targets were frozen when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedriveJob {
    pub id: String,
    pub state: RedriveState,
    pub reason: String,
    /// Who started it (a credential's subject).
    pub by: String,
    pub dry_run: bool,
    pub rate: u32,
    pub created_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// A digest of the request, so the same Idempotency-Key with another request is refused.
    pub request_digest: String,
    pub targets: Vec<RedriveTarget>,
}

impl RedriveJob {
    /// How many targets ended with `outcome`'s kind.
    pub fn count(&self, matches: impl Fn(&TargetOutcome) -> bool) -> usize {
        self.targets.iter().filter(|t| matches(&t.outcome)).count()
    }
}
