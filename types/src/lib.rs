//! Types shared by the engine, the workers and `shopctl`: typed IDs, the HTTP API's requests
//! and responses, history events, and the shop's order messages.
//!
//! This crate must stay light: it never depends on sled, axum, tokio or reqwest, so the CLI
//! and the workers compile none of the engine's storage or server stack. Persisted and wire
//! types here are a compatibility boundary: change them on purpose, with a format version.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod describe;
pub mod history;
pub mod ids;
pub mod json;
pub mod limits;
pub mod notify;
#[cfg(feature = "openapi")]
mod openapi;
pub mod order;
pub mod parent;
pub mod redrive;
pub mod short_order;
pub mod stats;
pub mod task_stream;
pub mod why;

pub use ids::{
    ActivityName, CustomerId, IdError, QueueName, StepName, StepPhase, StepRef, TaskToken, WorkerId, WorkflowId,
    WorkflowType,
};
pub use json::JsonText;
