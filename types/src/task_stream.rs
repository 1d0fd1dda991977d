//! The streaming worker protocol (`GET /v1/tasks/stream`, a WebSocket): the frames both sides
//! send, as JSON text frames of one enum per direction, externally tagged (`{"hello":{...}}`,
//! `"drain"`): serde reads such a frame without buffering it, which payloads kept as raw JSON
//! text (`JsonText`) need, where an internally tagged enum would buffer them. A worker process opens one
//! stream per engine node and carries every queue it serves on it: tasks flow to the worker
//! as its credit allows, reports and heartbeats flow back in batches.
//!
//! Flow control is by credit: a worker announces free slots per queue (`Hello`, then with
//! each `Report` the slots its reports free, or `Credit`), and the engine never sends more
//! tasks on a queue than the credit outstanding. The verdicts (`Reported`) carry the same
//! codes as `POST /v1/tasks/report` (`STALE_TASK`, `SHARD_MOVED`, ...).
//!
//! This module only defines shapes; it never decides anything about a frame.

use crate::api::{ActivityTask, ErrorDetail, TaskReport};
use crate::{QueueName, TaskToken, WorkerId};
use serde::{Deserialize, Serialize};

/// Where the stream is opened (a WebSocket upgrade, worker credentials).
pub const TASK_STREAM_PATH: &str = "/v1/tasks/stream";

/// Free slots a worker gives the engine on one queue: up to `credit` more tasks may be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueCredit {
    pub queue: QueueName,
    pub credit: u32,
}

/// What a worker sends. The first frame must be `Hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkerFrame {
    /// The queues this stream serves and the free slots of each.
    Hello { worker_id: WorkerId, queues: Vec<QueueCredit> },
    /// More free slots on a queue of the `Hello`.
    Credit(QueueCredit),
    /// Outcomes, answered by one `Reported` with the same `id`; `credits` are the slots these
    /// reports free (a finished task returns its slot with its report, in one frame).
    Report {
        id: u64,
        reports: Vec<TaskReport>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        credits: Vec<QueueCredit>,
    },
    /// Signs of life of running attempts, answered by one `HeartbeatAck` with the same `id`.
    Heartbeat { id: u64, tokens: Vec<TaskToken> },
    /// The worker takes no more tasks on this stream (it is shutting down): every queue's
    /// credit drops to zero. Reports and heartbeats are still answered.
    Drain,
}

/// What the engine sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EngineFrame {
    /// Tasks of one queue, within the credit the worker gave it.
    Tasks { queue: QueueName, tasks: Vec<ActivityTask> },
    /// One verdict per report of the `Report` with this `id`, in its order (`None` = recorded).
    Reported { id: u64, results: Vec<Option<ErrorDetail>> },
    /// The tokens of the `Heartbeat` with this `id` whose attempts are no longer current: stop
    /// heartbeating them (their reports will be refused as stale).
    HeartbeatAck { id: u64, stale: Vec<TaskToken> },
    /// Why the engine is about to close the stream.
    Error(ErrorDetail),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_json() {
        let hello: WorkerFrame =
            serde_json::from_str(r#"{"hello":{"worker_id":"w-1","queues":[{"queue":"payment","credit":2}]}}"#)
                .expect("a hello");
        assert!(matches!(hello, WorkerFrame::Hello { ref queues, .. } if queues[0].credit == 2));
        let credit: WorkerFrame =
            serde_json::from_str(r#"{"credit":{"queue":"payment","credit":3}}"#).expect("a credit");
        assert!(matches!(credit, WorkerFrame::Credit(QueueCredit { credit: 3, .. })));
        let drain: WorkerFrame = serde_json::from_str(r#""drain""#).expect("a drain");
        assert!(matches!(drain, WorkerFrame::Drain));
        assert!(serde_json::from_str::<WorkerFrame>(r#"{"hello":{"worker_id":"w","queues":[],"x":1}}"#).is_err());
        let error = EngineFrame::Error(ErrorDetail { code: "FORBIDDEN".into(), message: "no".into() });
        assert_eq!(serde_json::to_string(&error).expect("encodes"), r#"{"error":{"code":"FORBIDDEN","message":"no"}}"#);
    }

    #[test]
    fn payloads_of_raw_json_text_round_trip() {
        let report =
            r#"{"report":{"id":1,"reports":[{"token":"o-1~f0~1","outcome":{"completed":{"output":{"a":[1,2]}}}}]}}"#;
        let frame: WorkerFrame = serde_json::from_str(report).expect("a report");
        let WorkerFrame::Report { reports, .. } = frame else { panic!("a report") };
        let crate::api::TaskOutcome::Completed { output } = &reports[0].outcome else { panic!("completed") };
        assert_eq!(output.to_value(), serde_json::json!({"a": [1, 2]}));
    }
}
