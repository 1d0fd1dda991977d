//! The worker's side of the engine's task protocol: a [`shop_client::Client`] built with the
//! worker's timeouts and credential, and the calls the poller makes in the shapes it wants.
//!
//! It sends one request per call; it never retries or sleeps (the poller owns backoff, with
//! [`Error::is_retryable`] to tell what is worth another try) and never interprets a task.
//! Cheap to clone: clones share one connection pool.

use reqwest::Url;
use shop_client::{Options, Service};
use shop_types::api::{ActivityTask, PollRequest, ReportBatchRequest, ReportBatchResponse};
use shop_types::auth::BearerToken;
use shop_types::{QueueName, TaskToken};
use std::time::Duration;

pub use shop_client::tasks::Heartbeat;
pub use shop_client::Error;

/// Timeout of reports and heartbeats, which the engine answers without waiting (a report's
/// `then_poll` wait is added to it); polls wait their own `wait_ms` plus a margin.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct EngineClient {
    client: shop_client::Client,
}

impl EngineClient {
    pub fn new(engine: &Url, token: Option<&BearerToken>) -> Result<Self, Error> {
        // No retry of 429/503 in the client: the poller's backoff covers those and an engine
        // that is down alike.
        let options = Options { request_timeout: REQUEST_TIMEOUT, ..Options::default() };
        let client = shop_client::Client::new(Service::Engine, engine.as_str(), options)?.with_token(token)?;
        Ok(EngineClient { client })
    }

    /// Long-polls `queue` for up to `max_tasks` tasks, waiting up to `wait` for the first.
    pub async fn poll(
        &self,
        queue: &QueueName,
        worker_id: &shop_types::WorkerId,
        max_tasks: u32,
        wait: Duration,
    ) -> Result<Vec<ActivityTask>, Error> {
        let request = PollRequest {
            queue: queue.clone(),
            worker_id: worker_id.clone(),
            max_tasks,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        Ok(self.client.poll(&request).await?.body.tasks)
    }

    /// Reports a batch; one result per report, in order (`None` = accepted).
    /// With `batch.then_poll`, the answer also carries the next tasks of that queue.
    pub async fn report(&self, batch: &ReportBatchRequest) -> Result<ReportBatchResponse, Error> {
        Ok(self.client.report(batch).await?.body)
    }

    /// The live engine nodes (`GET /v1/tasks/nodes`).
    pub async fn nodes(&self) -> Result<Vec<shop_types::cluster::NodeAddress>, Error> {
        Ok(self.client.nodes().await?.body.nodes)
    }

    /// The same client (its credential and timeouts) at another engine node's URL.
    pub fn at(&self, url: &str) -> Result<Self, Error> {
        Ok(EngineClient { client: self.client.at(shop_client::Service::Engine, url)? })
    }

    /// The engine URL this client talks to.
    pub fn url(&self) -> &str {
        self.client.base_str()
    }

    pub async fn heartbeat(&self, token: &TaskToken) -> Result<Heartbeat, Error> {
        self.client.heartbeat(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_engine_that_is_down_is_a_retryable_error() {
        // Port 1 on loopback is not served here: the connect is refused.
        let client = EngineClient::new(&Url::parse("http://127.0.0.1:1/").expect("a URL"), None).expect("a client");
        let queue: QueueName = "inventory".parse().expect("a queue");
        let err =
            client.poll(&queue, &"w".parse().expect("valid"), 1, Duration::ZERO).await.expect_err("nothing listens");
        assert!(err.is_retryable() && err.is_connect(), "{err:?}");
    }
}
