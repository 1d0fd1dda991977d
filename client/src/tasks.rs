//! The engine's task protocol, as workers (and tests that play a worker) speak it: the
//! engine nodes to poll, poll, report a batch (optionally polling again in the same round
//! trip), complete, fail, heartbeat.
//!
//! One request per call; it never retries or sleeps (the worker's poller owns backoff, and
//! [`Error::is_retryable`] tells it what is worth another try) and never interprets a task.

use crate::{Body, Client, Error, Reply, WAIT_MARGIN};
use reqwest::{Method, StatusCode};
use shop_types::api::{
    CompleteRequest, FailRequest, HeartbeatRequest, PollRequest, PollResponse, ReportBatchRequest, ReportBatchResponse,
};
use shop_types::cluster::NodeList;
use shop_types::TaskToken;
use std::time::Duration;

/// What the engine said to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The attempt is current and its lease was extended.
    Alive,
    /// The attempt is no longer current (409): its result will be refused.
    Stale,
}

impl Client {
    /// `POST /v1/tasks/poll`: up to `max_tasks` tasks, waiting up to `wait_ms` for the first.
    /// The timeout is the wait plus [`WAIT_MARGIN`]: the engine answers at the end of the
    /// wait at the latest, so only a lost connection takes longer.
    pub async fn poll(&self, request: &PollRequest) -> Result<Reply<PollResponse>, Error> {
        let bytes = encode(request)?;
        let timeout = Duration::from_millis(request.wait_ms) + WAIT_MARGIN;
        self.call_within(Method::POST, &["v1", "tasks", "poll"], Body::Json(&bytes), timeout).await
    }

    /// `POST /v1/tasks/report`: one result per report, in order (`None` = accepted); with
    /// `then_poll`, the next tasks of that queue too. An answer with another number of
    /// results than reports sent is [`Error::ResultCount`].
    pub async fn report(&self, batch: &ReportBatchRequest) -> Result<Reply<ReportBatchResponse>, Error> {
        let bytes = encode(batch)?;
        let poll_wait = batch.then_poll.as_ref().map_or(Duration::ZERO, |p| Duration::from_millis(p.wait_ms));
        let timeout = self.request_timeout() + poll_wait;
        let reply: Reply<ReportBatchResponse> =
            self.call_within(Method::POST, &["v1", "tasks", "report"], Body::Json(&bytes), timeout).await?;
        if reply.body.results.len() != batch.reports.len() {
            return Err(Error::ResultCount { sent: batch.reports.len(), answered: reply.body.results.len() });
        }
        Ok(reply)
    }

    /// `GET /v1/tasks/nodes`: the live engine nodes, each of which hands out the tasks of
    /// its own shards (one engine on sled: itself).
    pub async fn nodes(&self) -> Result<Reply<NodeList>, Error> {
        self.get(&["v1", "tasks", "nodes"], &[]).await
    }

    /// `POST /v1/tasks/complete`.
    pub async fn complete(&self, request: &CompleteRequest) -> Result<Reply<serde_json::Value>, Error> {
        self.post_json(&["v1", "tasks", "complete"], request).await
    }

    /// `POST /v1/tasks/fail`.
    pub async fn fail(&self, request: &FailRequest) -> Result<Reply<serde_json::Value>, Error> {
        self.post_json(&["v1", "tasks", "fail"], request).await
    }

    /// `POST /v1/tasks/heartbeat`: a 409 is an answer ([`Heartbeat::Stale`]), not an error.
    pub async fn heartbeat(&self, token: &TaskToken) -> Result<Heartbeat, Error> {
        let bytes = encode(&HeartbeatRequest { token: token.clone() })?;
        let segments = ["v1", "tasks", "heartbeat"];
        // Only the status matters: the body is not decoded.
        match self.exchange(&Method::POST, &segments, &[], Body::Json(&bytes), self.request_timeout(), 0).await {
            Ok(_) => Ok(Heartbeat::Alive),
            Err(err) if err.status() == Some(StatusCode::CONFLICT) => Ok(Heartbeat::Stale),
            Err(err) => Err(err),
        }
    }
}

fn encode(body: &impl serde::Serialize) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body).map_err(|err| Error::Encode { path: "/v1/tasks".to_owned(), reason: err.to_string() })
}
