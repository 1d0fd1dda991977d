//! The task stream's reports and heartbeats: the `Report` frames waiting recorded as one
//! batch through `route_reports` (the HTTP path's), one `Reported` per frame, and the
//! heartbeat frames answered. It never reads the socket or hands out a task (the session in
//! `task_stream` does).

use super::{feed_frame, End, Recorded, Session, MAX_RECORDING};
use crate::api::auth::check_task_queues;
use crate::api::tasks::{api_detail, check_mac, route_reports};
use crate::api::{ApiError, AppState};
use crate::auth::Principal;
use axum::extract::ws::WebSocket;
use axum::http::StatusCode;
use shop_types::limits::MAX_REPORTS_PER_BATCH;
use shop_types::task_stream::EngineFrame;
use shop_types::TaskToken;

impl Session {
    /// Starts recording the frames waiting, as one batch of at most
    /// [`MAX_REPORTS_PER_BATCH`] reports, unless [`MAX_RECORDING`] batches are in flight.
    pub(super) fn record_next(&mut self) {
        if self.recording.len() >= MAX_RECORDING || self.pending.is_empty() {
            return;
        }
        let mut frames = Vec::new();
        let (mut reports, mut verdicts) = (Vec::new(), Vec::new());
        while let Some((_, next, _)) = self.pending.front() {
            if !frames.is_empty() && reports.len() + next.len() > MAX_REPORTS_PER_BATCH {
                break;
            }
            let Some((id, next, first)) = self.pending.pop_front() else { break };
            self.pending_reports -= next.len();
            reports.extend(next);
            verdicts.extend(first.iter().cloned());
            frames.push((id, first));
        }
        let (state, headers) = (self.state.clone(), self.headers.clone());
        self.recording.push(Box::pin(async move {
            let results = route_reports(&state, &headers, reports, verdicts).await;
            (frames, results)
        }));
    }
}

/// One `Reported` per frame of a recorded batch. A batch refused whole (no disk) gives each
/// report not refused before the batch's refusal, so the worker sends it again.
pub(super) async fn answer_recorded(socket: &mut WebSocket, (frames, results): Recorded) -> Result<(), End> {
    let mut results = match results {
        Ok(results) => results.into_iter(),
        Err(refusal) => {
            let refusal = api_detail(refusal);
            let all: Vec<_> = frames
                .iter()
                .flat_map(|(_, first)| first.iter().map(|v| v.clone().or_else(|| Some(refusal.clone()))))
                .collect();
            all.into_iter()
        }
    };
    for (id, first) in frames {
        let results: Vec<_> = results.by_ref().take(first.len()).collect();
        feed_frame(socket, &EngineFrame::Reported { id, results }).await?;
    }
    Ok(())
}

/// Extends each attempt's lease; answers the tokens whose attempts are no longer current.
/// A refusal that is not about the attempt (shard moving, overload) is not "stale": the
/// worker heartbeats again at its next period.
pub(super) async fn heartbeat(
    state: AppState,
    principal: Principal,
    id: u64,
    tokens: Vec<TaskToken>,
) -> Result<EngineFrame, ApiError> {
    let (signed, mut stale): (Vec<TaskToken>, Vec<TaskToken>) =
        tokens.into_iter().partition(|token| check_mac(&state, token).is_ok());
    check_task_queues(&state, &principal, &signed)?;
    let beats = signed.iter().map(|token| state.core.heartbeat(token.clone()));
    for (token, beat) in signed.iter().zip(futures_util::future::join_all(beats).await) {
        if let Err(error) = beat {
            let status = ApiError::from(error).status;
            if status == StatusCode::CONFLICT || status == StatusCode::NOT_FOUND {
                stale.push(token.clone());
            }
        }
    }
    Ok(EngineFrame::HeartbeatAck { id, stale })
}
