//! Typed calls of the engine's API for callers (not workers): health and readiness, the
//! seed-compatible order API, workflows (with `?wait`), histories, definitions, API tokens
//! and stats. Each is one request; each returns the decoded answer with its raw body.
//!
//! This module must never interpret an answer beyond decoding it: what to do with a
//! PENDING order or a 409 is the caller's business.

use crate::{Body, Client, Error, Reply, HEALTH_PROBE_TIMEOUT};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_types::api::{
    CallbackRequest, DefinitionList, DefinitionPlan, HistoryResponse, ReasonRequest, RegisteredDefinition, SignalReply,
    WorkflowList, WorkflowView,
};
use shop_types::auth::{CreateTokenRequest, CreatedToken, TokenList, TokenView};
use shop_types::order::{OrderList, OrderView};
use shop_types::redrive::{ParkedGroups, RedriveJob, RedriveRequest};
use std::time::Duration;

/// The filters and page of a list (`GET /api/orders`, `GET /v1/workflows`).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<String>,
    /// `type` (workflows only).
    pub workflow_type: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl ListQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(status) = &self.status {
            query.push(("status", status.clone()));
        }
        if let Some(workflow_type) = &self.workflow_type {
            query.push(("type", workflow_type.clone()));
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            query.push(("cursor", cursor.clone()));
        }
        query
    }
}

/// An operator's action on a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAction {
    Cancel,
    Terminate,
    /// Resume a parked run.
    Resume,
}

impl RunAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RunAction::Cancel => "cancel",
            RunAction::Terminate => "terminate",
            RunAction::Resume => "resume",
        }
    }
}

impl Client {
    /// `GET /healthz` (engine and worker alike), as JSON.
    pub async fn health(&self) -> Result<Reply<serde_json::Value>, Error> {
        self.get(&["healthz"], &[]).await
    }

    /// `GET /readyz`, as JSON; a not-ready engine is an `Error::Status` 503.
    pub async fn ready(&self) -> Result<Reply<serde_json::Value>, Error> {
        self.get(&["readyz"], &[]).await
    }

    /// The process ID in the service's `GET /healthz` answer, within
    /// [`HEALTH_PROBE_TIMEOUT`] and without retries: `None` when it does not answer with a
    /// success, `Some(None)` when it answers without naming its process.
    pub async fn health_pid(&self) -> Option<Option<u32>> {
        let (_, bytes, _) = self.exchange_once(&Method::GET, &["healthz"], HEALTH_PROBE_TIMEOUT).await.ok()?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        Some(body.get("pid").and_then(serde_json::Value::as_u64).and_then(|pid| u32::try_from(pid).ok()))
    }

    /// `POST /api/orders` (a `PlaceOrderRequest`, or any JSON a test wants to send).
    pub async fn place_order(&self, body: &impl Serialize) -> Result<Reply<OrderView>, Error> {
        self.post_json(&["api", "orders"], body).await
    }

    /// `GET /api/orders/{id}`, or with `?wait` until it is final or `wait` passes.
    pub async fn order(&self, id: &str, wait: Option<Duration>) -> Result<Reply<OrderView>, Error> {
        match wait {
            Some(wait) => self.get_waiting(&["api", "orders", id], wait).await,
            None => self.get(&["api", "orders", id], &[]).await,
        }
    }

    /// `GET /api/orders`.
    pub async fn orders(&self, query: &ListQuery) -> Result<Reply<OrderList>, Error> {
        self.get(&["api", "orders"], &query.pairs()).await
    }

    /// `POST /api/orders/{id}/cancel`.
    pub async fn cancel_order(&self, id: &str) -> Result<Reply<OrderView>, Error> {
        self.post(&["api", "orders", id, "cancel"], Body::Empty).await
    }

    /// `POST /v1/workflows` (a `StartWorkflowRequest`, or any JSON).
    pub async fn start_workflow(&self, body: &impl Serialize) -> Result<Reply<WorkflowView>, Error> {
        self.post_json(&["v1", "workflows"], body).await
    }

    /// `GET /v1/workflows/{id}`, or with `?wait` until it is terminal or `wait` passes.
    pub async fn workflow(&self, id: &str, wait: Option<Duration>) -> Result<Reply<WorkflowView>, Error> {
        match wait {
            Some(wait) => self.get_waiting(&["v1", "workflows", id], wait).await,
            None => self.get(&["v1", "workflows", id], &[]).await,
        }
    }

    /// `GET /v1/workflows`: one page.
    pub async fn workflows(&self, query: &ListQuery) -> Result<Reply<WorkflowList>, Error> {
        self.get(&["v1", "workflows"], &query.pairs()).await
    }

    /// `GET /v1/workflows/{id}/history`.
    pub async fn history(&self, id: &str) -> Result<Reply<HistoryResponse>, Error> {
        self.get(&["v1", "workflows", id, "history"], &[]).await
    }

    /// `POST /v1/workflows/{id}/{cancel|terminate|resume}`.
    pub async fn run_action(
        &self,
        id: &str,
        action: RunAction,
        body: &ReasonRequest,
    ) -> Result<Reply<WorkflowView>, Error> {
        self.post_json(&["v1", "workflows", id, action.as_str()], body).await
    }

    /// `POST /v1/workflows/{id}/signals/{name}` with `payload` as the body, once per
    /// `idempotency_key` (the same key again is answered `duplicate` and changes nothing).
    pub async fn signal(
        &self,
        id: &str,
        name: &str,
        idempotency_key: &str,
        payload: &impl Serialize,
    ) -> Result<Reply<SignalReply>, Error> {
        let json = serde_json::to_vec(payload).map_err(|err| Error::Encode {
            path: format!("v1/workflows/{id}/signals/{name}"),
            reason: err.to_string(),
        })?;
        self.post(&["v1", "workflows", id, "signals", name], Body::KeyedJson { json: &json, idempotency_key }).await
    }

    /// `GET /v1/parked?group_by=fingerprint`: failed and parked runs grouped by error.
    pub async fn parked(&self) -> Result<Reply<ParkedGroups>, Error> {
        self.get(&["v1", "parked"], &[("group_by", "fingerprint".to_owned())]).await
    }

    /// `POST /v1/redrives`: starts a redrive job, once per `idempotency_key` (the same key
    /// again returns the job it started).
    pub async fn start_redrive(
        &self,
        request: &RedriveRequest,
        idempotency_key: &str,
    ) -> Result<Reply<RedriveJob>, Error> {
        let json = serde_json::to_vec(request)
            .map_err(|err| Error::Encode { path: "v1/redrives".to_owned(), reason: err.to_string() })?;
        self.post(&["v1", "redrives"], Body::KeyedJson { json: &json, idempotency_key }).await
    }

    /// `GET /v1/redrives/{id}`: the job with its per-run results.
    pub async fn redrive(&self, id: &str) -> Result<Reply<RedriveJob>, Error> {
        self.get(&["v1", "redrives", id], &[]).await
    }

    /// `DELETE /v1/redrives/{id}`: stops the job.
    pub async fn stop_redrive(&self, id: &str) -> Result<Reply<RedriveJob>, Error> {
        self.call_within(Method::DELETE, &["v1", "redrives", id], Body::Empty, self.request_timeout()).await
    }

    /// `POST` of a callback path (`/v1/callbacks/{token}`, as a wait's view names it): the
    /// token is the credential; whatever this client carries is sent too and ignored.
    pub async fn callback(&self, path: &str, body: &CallbackRequest) -> Result<Reply<SignalReply>, Error> {
        let token = path.strip_prefix("/v1/callbacks/").unwrap_or(path);
        self.post_json(&["v1", "callbacks", token], body).await
    }

    /// `GET /v1/definitions`.
    pub async fn definitions(&self) -> Result<Reply<DefinitionList>, Error> {
        self.get(&["v1", "definitions"], &[]).await
    }

    /// `POST /v1/definitions` with a TOML body.
    /// The answer names the open runs of older versions, which stay on theirs.
    pub async fn register_definition(&self, toml: &str) -> Result<Reply<RegisteredDefinition>, Error> {
        self.post(&["v1", "definitions"], Body::Toml(toml)).await
    }

    /// `POST /v1/definitions/check` with a TOML body: the resolved plan; registers nothing.
    pub async fn check_definition(&self, toml: &str) -> Result<Reply<DefinitionPlan>, Error> {
        self.post(&["v1", "definitions", "check"], Body::Toml(toml)).await
    }

    /// `POST /v1/tokens`.
    pub async fn create_token(&self, request: &CreateTokenRequest) -> Result<Reply<CreatedToken>, Error> {
        self.post_json(&["v1", "tokens"], request).await
    }

    /// `GET /v1/tokens`.
    pub async fn tokens(&self) -> Result<Reply<TokenList>, Error> {
        self.get(&["v1", "tokens"], &[]).await
    }

    /// `POST /v1/tokens/{id}/revoke`.
    pub async fn revoke_token(&self, id: &str) -> Result<Reply<TokenView>, Error> {
        self.post(&["v1", "tokens", id, "revoke"], Body::Empty).await
    }

    /// `GET /v1/stats`, decoded as the caller's view of it (the engine's counters grow
    /// with its versions; a caller names the ones it reads).
    pub async fn stats<T: DeserializeOwned>(&self) -> Result<Reply<T>, Error> {
        self.get(&["v1", "stats"], &[]).await
    }

    /// `GET /v1/cluster` (admin): nodes, shards and leases as the answering node sees them.
    pub async fn cluster(&self) -> Result<Reply<shop_types::cluster::ClusterStatus>, Error> {
        self.get(&["v1", "cluster"], &[]).await
    }
}
