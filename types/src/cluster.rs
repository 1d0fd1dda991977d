//! What `GET /v1/cluster` answers: the engine nodes of a cluster, the shards each owns and
//! their leases (design.md section 10). One engine on sled is a cluster of one node owning
//! its one shard.
//!
//! Wire types only: this module must never decide placement or talk to a store.

use serde::{Deserialize, Serialize};

/// The cluster as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: String,
    /// The backend: `"sled"` (one node) or `"postgres"`.
    pub store: String,
    /// Fixed when the cluster was created.
    pub shard_count: u32,
    pub nodes: Vec<NodeStatus>,
    pub shards: Vec<ShardStatus>,
    /// Write transactions this node had refused because it no longer held a shard's epoch.
    pub fence_rejections: u64,
}

/// One registered engine node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: String,
    /// Where other nodes and workers reach its HTTP API.
    pub url: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: u64,
    /// Whether its heartbeat is recent enough for it to own shards.
    pub live: bool,
    /// How many shards it owns now.
    pub shards_owned: u32,
}

/// One shard's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub shard: u32,
    /// The owning node's id; `None` when released or never taken.
    pub owner: Option<String>,
    pub epoch: u64,
    /// Milliseconds until the lease expires (negative: expired), by the database's clock.
    pub lease_expires_in_ms: i64,
}

/// What `GET /v1/tasks/nodes` answers a worker: the live engine nodes, each of which hands
/// out the tasks of the shards it owns, so a worker long-polls every one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    pub nodes: Vec<NodeAddress>,
}

/// One live engine node as a worker reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeAddress {
    pub id: String,
    pub url: String,
}
