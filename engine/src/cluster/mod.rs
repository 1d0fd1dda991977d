//! Where a run lives: the shard of a run and the node that owns that shard now
//! (design.md section 10). Handlers ask [`Cluster::route`] before they act on a run, and
//! forward what belongs to another node.
//!
//! One engine on sled is a cluster of one node that owns every shard, so [`Cluster::single`]
//! routes everything locally. On PostgreSQL the lease manager (`lease.rs`) keeps the shard
//! map current ([`Cluster::set_map`]) from the lease rows it reads every renewal.
//!
//! This module must never write workflow state or decide anything about a run.

pub mod lease;

use crate::store::ShardId;
use shop_types::cluster::{ClusterStatus, NodeStatus, ShardStatus};
use shop_types::WorkflowId;
use std::sync::RwLock;

/// Characters of a node id at most (`--node-id`): it is a primary key and a log field.
pub const MAX_NODE_ID_LEN: usize = 128;

/// A node's identity and leases (`--node-id`, `--advertise-url`, `--lease-ms`).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `None`: [`default_node_id`].
    pub node_id: Option<String>,
    /// Where other nodes and workers reach this node; `None`: `http://<listen address>`.
    pub advertise_url: Option<String>,
    pub lease: std::time::Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { node_id: None, advertise_url: None, lease: lease::DEFAULT_LEASE_DURATION }
    }
}

/// Why cluster options were refused.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("--node-id must be 1 to {MAX_NODE_ID_LEN} characters of letters, digits, '-', '_' and '.'; got {0:?}")]
    NodeId(String),
    #[error("--advertise-url must be an http:// or https:// URL; got {0:?}")]
    AdvertiseUrl(String),
    #[error("--lease-ms must be {min} to {max} ms; got {0}", min = lease::MIN_LEASE_DURATION.as_millis(), max = lease::MAX_LEASE_DURATION.as_millis())]
    Lease(u128),
}

impl ClusterOptions {
    pub fn check(&self) -> Result<(), OptionsError> {
        if let Some(node) = &self.node_id {
            let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if node.is_empty() || node.len() > MAX_NODE_ID_LEN || !node.chars().all(fine) {
                return Err(OptionsError::NodeId(node.clone()));
            }
        }
        if let Some(url) = &self.advertise_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
                return Err(OptionsError::AdvertiseUrl(url.clone()));
            }
        }
        if !(lease::MIN_LEASE_DURATION..=lease::MAX_LEASE_DURATION).contains(&self.lease) {
            return Err(OptionsError::Lease(self.lease.as_millis()));
        }
        Ok(())
    }
}

/// `<hostname>-<pid>-<8 hex digits>`: unique per process, readable in `shopctl cluster status`.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    let host = if host.is_empty() { "engine".to_owned() } else { host };
    let random = uuid::Uuid::now_v7().simple().to_string();
    // The tail of a v7 UUID is random; its head is the time.
    let random = &random[random.len() - 8..];
    format!("{host}-{}-{random}", std::process::id())
}

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

/// What the lease manager read last: the node and lease rows, and each shard's live owner
/// with its URL (`None`: released or expired).
#[derive(Debug, Clone, Default)]
pub struct ClusterMap {
    pub nodes: Vec<lease::NodeRow>,
    pub leases: Vec<lease::LeaseRow>,
    pub owners: Vec<(ShardId, Option<(String, String)>)>,
}

/// The shard map as this node knows it.
pub struct Cluster {
    node: String,
    store: &'static str,
    shard_count: u32,
    /// By shard: its owner's node id and URL, `None` while unowned.
    owners: RwLock<Vec<Option<(String, String)>>>,
    status: RwLock<Option<ClusterStatus>>,
    /// Made by [`Cluster::single`]: no other node can own a shard.
    single: bool,
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
            single: true,
        }
    }

    /// A node of a cluster of `shard_count` shards whose owners the lease manager tells it;
    /// every shard is unowned until it does.
    pub fn leased(node: String, store: &'static str, shard_count: u32) -> Cluster {
        Cluster {
            node,
            store,
            shard_count,
            owners: RwLock::new(vec![None; shard_count as usize]),
            status: RwLock::new(None),
            single: false,
        }
    }

    /// Replaces the shard map with what the lease manager read.
    pub fn set_map(&self, map: ClusterMap) {
        let mut owners = vec![None; self.shard_count as usize];
        for (shard, owner) in map.owners {
            if let Some(slot) = owners.get_mut(shard.0 as usize) {
                *slot = owner;
            }
        }
        let owned = |node: &str| owners.iter().flatten().filter(|(owner, _)| owner == node).count() as u32;
        let status = ClusterStatus {
            node: self.node.clone(),
            store: self.store.to_owned(),
            shard_count: self.shard_count,
            nodes: map
                .nodes
                .iter()
                .map(|row| NodeStatus {
                    id: row.node.clone(),
                    url: row.url.clone(),
                    heartbeat_age_ms: row.heartbeat_age_ms.max(0) as u64,
                    live: row.heartbeat_age_ms < lease::NODE_LIVENESS.as_millis() as i64,
                    shards_owned: owned(&row.node),
                })
                .collect(),
            shards: map
                .leases
                .iter()
                .map(|lease| ShardStatus {
                    shard: lease.shard.0,
                    owner: (!lease.owner.is_empty()).then(|| lease.owner.clone()),
                    epoch: lease.epoch.0,
                    lease_expires_in_ms: lease.expires_in_ms,
                })
                .collect(),
            fence_rejections: 0,
        };
        // Poisoned locks only mean a panic elsewhere; the values are replaced whole.
        *self.owners.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = owners;
        *self.status.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(status);
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node is the only one there can be (a store with one owner, sled): every
    /// run is local, so nothing is ever routed elsewhere.
    pub fn is_single(&self) -> bool {
        self.single
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

    /// What `GET /v1/cluster` answers (the caller adds the core's fence rejections).
    pub fn status(&self) -> ClusterStatus {
        if let Some(status) = self.status.read().ok().and_then(|status| status.clone()) {
            return status;
        }
        let owners = self.owners.read().map(|owners| owners.clone()).unwrap_or_default();
        let url = owners.iter().flatten().find(|(node, _)| *node == self.node).map(|(_, url)| url.clone());
        let owned = owners.iter().flatten().filter(|(node, _)| *node == self.node).count() as u32;
        ClusterStatus {
            node: self.node.clone(),
            store: self.store.to_owned(),
            shard_count: self.shard_count,
            nodes: vec![NodeStatus {
                id: self.node.clone(),
                url: url.unwrap_or_default(),
                heartbeat_age_ms: 0,
                live: true,
                shards_owned: owned,
            }],
            shards: owners
                .iter()
                .enumerate()
                .map(|(shard, owner)| ShardStatus {
                    shard: shard as u32,
                    owner: owner.as_ref().map(|(node, _)| node.clone()),
                    epoch: 0,
                    lease_expires_in_ms: 0,
                })
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
