//! Where a run lives: the shard of a run and the node that owns that shard now
//! (design.md section 10). Handlers ask [`Cluster::route`] before they act on a run, and
//! forward what belongs to another node.
//!
//! One engine on sled is a cluster of one node that owns every shard, so [`Cluster::single`]
//! routes everything locally. On PostgreSQL the lease manager keeps the shard map current.
//!
//! This module must never write workflow state or decide anything about a run.

use crate::store::ShardId;
use shop_types::cluster::{ClusterStatus, NodeStatus, ShardStatus};
use shop_types::WorkflowId;
use std::sync::RwLock;

/// Where a request about one run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns the run's shard: handle it here.
    Local,
    /// Another node owns it: forward to `url`.
    Remote { node: String, url: String },
    /// No live node owns it right now (a takeover is under way): answer 503 and let the
    /// caller retry.
    Unowned,
}

/// The shard a run belongs to: FNV-1a of its **root** id (the id up to its first `.`),
/// modulo the cluster's shard count. A child run's id is `<parent>.<step>`, so a parent and
/// all its descendants share a shard and one owner applies their effects on each other in
/// one batch. Stable across versions and machines: changing it would move every stored run.
pub fn shard_of(run: &WorkflowId, shards: u32) -> ShardId {
    let root = run.as_str().split('.').next().unwrap_or_default();
    let hash = root
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    ShardId((hash % u64::from(shards.max(1))) as u32)
}

/// The shard map as this node knows it.
pub struct Cluster {
    node: String,
    store: &'static str,
    shard_count: u32,
    /// By shard: its owner's node id and URL, `None` while unowned.
    owners: RwLock<Vec<Option<(String, String)>>>,
    status: RwLock<Option<ClusterStatus>>,
}

impl Cluster {
    /// One node owning every shard of a store with one owner (sled).
    pub fn single(node: String, url: String) -> Cluster {
        Cluster {
            owners: RwLock::new(vec![Some((node.clone(), url))]),
            node,
            store: "sled",
            shard_count: 1,
            status: RwLock::new(None),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    pub fn shard_of(&self, run: &WorkflowId) -> ShardId {
        shard_of(run, self.shard_count)
    }

    /// Where a request about `run` goes now.
    pub fn route(&self, run: &WorkflowId) -> Route {
        let shard = self.shard_of(run);
        let Ok(owners) = self.owners.read() else {
            return Route::Unowned;
        };
        match owners.get(shard.0 as usize).cloned().flatten() {
            Some((node, _)) if node == self.node => Route::Local,
            Some((node, url)) => Route::Remote { node, url },
            None => Route::Unowned,
        }
    }

    /// What `GET /v1/cluster` answers.
    pub fn status(&self) -> ClusterStatus {
        if let Some(status) = self.status.read().ok().and_then(|status| status.clone()) {
            return status;
        }
        let owners = self.owners.read().map(|owners| owners.clone()).unwrap_or_default();
        let url = owners.iter().flatten().find(|(node, _)| *node == self.node).map(|(_, url)| url.clone());
        ClusterStatus {
            node: self.node.clone(),
            store: self.store.to_owned(),
            shard_count: self.shard_count,
            nodes: vec![NodeStatus {
                id: self.node.clone(),
                url: url.unwrap_or_default(),
                heartbeat_age_ms: 0,
                live: true,
                shards_owned: self.shard_count,
            }],
            shards: (0..self.shard_count)
                .map(|shard| ShardStatus { shard, owner: Some(self.node.clone()), epoch: 0, lease_expires_in_ms: 0 })
                .collect(),
            fence_rejections: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> WorkflowId {
        WorkflowId::parse(text).expect("valid id")
    }

    #[test]
    fn a_child_shares_its_root_parents_shard() {
        for shards in [1, 16, 1024] {
            let parent = shard_of(&id("order-1"), shards);
            assert_eq!(shard_of(&id("order-1.payment"), shards), parent);
            assert_eq!(shard_of(&id("order-1.payment.fraud"), shards), parent);
        }
    }

    #[test]
    fn a_single_node_routes_everything_locally() {
        let cluster = Cluster::single("n1".into(), "http://127.0.0.1:1".into());
        assert_eq!(cluster.route(&id("anything")), Route::Local);
        assert_eq!(cluster.status().shards.len(), 1);
    }
}
