//! The task stream's reports and heartbeats: a finished task's report made ready with the
//! slot it frees, ready reports sent in frames under the limits, the engine's verdicts
//! (accepted, stale, refused for now: sent again within the budget), heartbeat frames.
//! It never runs a task or opens a connection (`stream` does).

use super::{feed_text, send, Outgoing, Socket, TaskStream};
use crate::poller::{panicked, MOVING_SHARD, REPORT_BUDGET, SHUTDOWN_REPORT_BUDGET, STALE_TASK};
use shop_types::api::{ErrorDetail, TaskReport};
use shop_types::limits::{MAX_REPORTS_PER_BATCH, MAX_STREAM_FRAME_BYTES};
use shop_types::task_stream::{QueueCredit, WorkerFrame};
use tokio::time::Instant;

/// Engine codes that refuse a report for now (nothing was recorded): sent again, within the
/// report budget, besides [`MOVING_SHARD`].
const REFUSED_FOR_NOW: &[&str] = &["DISK_FULL", "OVERLOADED", "SHUTTING_DOWN", "STORAGE_UNAVAILABLE"];

impl TaskStream {
    /// A task ended: its report is ready and its slot free.
    pub(super) fn finished(&mut self, joined: Result<(tokio::task::Id, TaskReport), tokio::task::JoinError>) {
        let (id, report) = match joined {
            Ok((id, report)) => (id, Some(report)),
            Err(err) => {
                let id = err.id();
                match self.tasks.get(&id) {
                    // Abandoned at the end of the grace period: nothing to report.
                    Some(_) if err.is_cancelled() => (id, None),
                    // A panic is a bug in the activity: a retryable failure lets the step's
                    // retry policy, not a lease timeout, decide how long to keep trying.
                    Some(running) => {
                        tracing::error!(error = %err, "an activity task panicked");
                        let token = running.token.clone();
                        (id, Some(panicked(token, err)))
                    }
                    None => (id, None),
                }
            }
        };
        let Some(running) = self.tasks.remove(&id) else { return };
        self.beats.remove(&running.token);
        if let Some(busy) = self.busy.get_mut(&running.queue) {
            *busy = busy.saturating_sub(1);
        }
        if self.stopping.is_none() {
            *self.freed.entry(running.queue).or_default() += 1;
        }
        if let Some(report) = report {
            let budget = if self.stopping.is_some() { SHUTDOWN_REPORT_BUDGET } else { REPORT_BUDGET };
            self.ready.push(Outgoing { report, deadline: Instant::now() + budget });
        }
    }

    pub(super) fn reported(&mut self, id: u64, results: Vec<Option<ErrorDetail>>) {
        let Some(sent) = self.unacked.remove(&id) else {
            tracing::warn!(id, "a verdict for a report frame this worker did not send");
            return;
        };
        if results.len() != sent.len() {
            tracing::warn!(id, sent = sent.len(), answered = results.len(), "verdicts do not match the reports sent");
        }
        let mut results = results.into_iter();
        let mut again = false;
        for out in sent {
            match results
                .next()
                .unwrap_or_else(|| Some(ErrorDetail { code: "SHARD_UNAVAILABLE".into(), message: "no verdict".into() }))
            {
                None => tracing::debug!(token = %out.report.token, "report accepted"),
                Some(refusal) if refusal.code == STALE_TASK => {
                    tracing::debug!(token = %out.report.token, "report refused: the attempt is no longer current")
                }
                Some(refusal)
                    if MOVING_SHARD.contains(&refusal.code.as_str())
                        || REFUSED_FOR_NOW.contains(&refusal.code.as_str()) =>
                {
                    if out.deadline > Instant::now() {
                        tracing::debug!(token = %out.report.token, code = %refusal.code, "report refused for now; sending it again");
                        again = true;
                        self.ready.push(out);
                    } else {
                        tracing::warn!(token = %out.report.token, code = %refusal.code, "dropping an undeliverable report; the engine will time the attempt out and retry it");
                    }
                }
                Some(refusal) => tracing::warn!(
                    token = %out.report.token,
                    code = %refusal.code,
                    message = %refusal.message,
                    "report refused"
                ),
            }
        }
        if again {
            self.hold_until = Instant::now() + self.resend_backoff.next_delay();
        } else {
            self.resend_backoff.reset();
        }
    }

    /// Sends every ready report (unless held after a refusal), with the slots freed, in
    /// frames of at most [`MAX_REPORTS_PER_BATCH`] reports and [`MAX_STREAM_FRAME_BYTES`].
    pub(super) async fn flush(&mut self, socket: &mut Socket) -> Result<(), ()> {
        if self.ready.is_empty() {
            if self.freed.values().any(|n| *n > 0) {
                // Slots freed by abandoned tasks only: give them back.
                for (queue, credit) in std::mem::take(&mut self.freed) {
                    send(socket, &WorkerFrame::Credit(QueueCredit { queue, credit })).await?;
                }
            }
            return Ok(());
        }
        if self.hold_until > Instant::now() {
            return Ok(());
        }
        while !self.ready.is_empty() {
            let credits: Vec<QueueCredit> = std::mem::take(&mut self.freed)
                .into_iter()
                .filter(|(_, credit)| *credit > 0)
                .map(|(queue, credit)| QueueCredit { queue, credit })
                .collect();
            let mut take = self.ready.len().min(MAX_REPORTS_PER_BATCH);
            let id = self.next_id;
            let text = loop {
                let reports = self.ready[..take].iter().map(|out| out.report.clone()).collect();
                let frame = WorkerFrame::Report { id, reports, credits: credits.clone() };
                let text = serde_json::to_string(&frame).map_err(|_| ())?;
                if text.len() <= MAX_STREAM_FRAME_BYTES {
                    break Some(text);
                }
                if take == 1 {
                    break None;
                }
                take /= 2;
            };
            let Some(text) = text else {
                let out = self.ready.remove(0);
                tracing::warn!(token = %out.report.token, "a report larger than a frame may be is dropped; the engine will time the attempt out");
                continue;
            };
            self.next_id += 1;
            let sent: Vec<Outgoing> = self.ready.drain(..take).collect();
            self.unacked.insert(id, sent);
            feed_text(socket, text).await?;
        }
        Ok(())
    }

    /// One `Heartbeat` frame for every token due.
    pub(super) async fn heartbeat(&mut self, socket: &mut Socket) -> Result<(), ()> {
        let now = Instant::now();
        let mut tokens = Vec::new();
        for (token, beat) in &mut self.beats {
            if beat.due <= now && tokens.len() < MAX_REPORTS_PER_BATCH {
                tokens.push(token.clone());
                beat.due = now + beat.period;
            }
        }
        if tokens.is_empty() {
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        let frame = WorkerFrame::Heartbeat { id, tokens };
        let text = serde_json::to_string(&frame).map_err(|error| tracing::error!(%error, "cannot encode a frame"))?;
        feed_text(socket, text).await
    }
}
