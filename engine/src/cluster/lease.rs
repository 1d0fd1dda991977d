//! Node registry and shard leases (design.md section 10): which node owns which shard, and
//! for how long, with the database as the one arbiter.
//!
//! Every [`LEASE_RENEW_INTERVAL`] the [`LeaseManager`] of a node, on a connection of its own:
//! heartbeats its node row; reads the live nodes (heartbeat younger than [`NODE_LIVENESS`],
//! by the database's clock); places every shard on one live node by rendezvous hashing
//! ([`owner_of`]: the highest hash of `(node, shard)`, so a node joining or leaving moves only
//! the shards it wins or held); renews the leases it holds (a shard whose renewal does not
//! come back is LOST: the core drops it); hands off the shards placement gives another node
//! (the core drops the shard and answers once its last batch for it is durable, then the
//! lease is released, so the new owner claims it at once instead of waiting for expiry); and
//! claims the shards placement gives it whose lease is released or expired (epoch + 1, by a
//! conditional `UPDATE`, so two nodes racing cannot both win). Then it publishes the shard
//! map to the node's [`super::Cluster`].
//!
//! The monotonic guard ([`LeaseGuard`], temporal#7101): the database says when a lease
//! expires, but a node paused or cut off cannot ask it. So each renewal's SEND time is kept by
//! `Instant`, and a shard whose last successful renewal was sent more than
//! `lease - LEASE_SAFETY_MARGIN` ago is dropped by the core on its own (no dispatch, no
//! write), even if no write failed and the lease manager is stuck. A renewal sent at `t`
//! extends the lease to at least `t + lease` by the database's clock, so by then the node has
//! stopped, whatever its clock drift within the margin.
//!
//! This module must never write a run or decide anything about one: it moves shards between
//! cores through [`ShardHolder`], and nothing else.

use super::{Cluster, ClusterMap};
use crate::store::{self, Epoch, ShardId};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a node heartbeats, renews its leases and looks at placement.
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(1);
/// A node whose last heartbeat (by the database's clock) is older than this is not live: it
/// gets no shard in placement, and its shards go to live nodes once their leases expire.
pub const NODE_LIVENESS: Duration = Duration::from_secs(5);
/// How long a claim or renewal holds a shard (by the database's clock) unless given
/// (`--lease-ms`). With [`NODE_LIVENESS`] it bounds failover: a dead node's shards are
/// claimable at most this long after its last renewal, so takeover begins within
/// `lease + LEASE_RENEW_INTERVAL` (5 s), well under the 10 s goal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(4);
/// How much earlier than its lease a node stops using a shard by its own clock: covers the
/// time a renewal takes to reach the database and clock-rate drift between the two.
pub const LEASE_SAFETY_MARGIN: Duration = Duration::from_secs(1);
/// The shortest lease accepted: a renewal interval plus the safety margin, so a healthy node
/// renews before its own guard drops the shard.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);
/// The longest lease accepted: failover waits for it.
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(60);

/// One node row as the lease manager reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node: String,
    pub url: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
}

/// One lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub shard: ShardId,
    /// Empty when released or never claimed.
    pub owner: String,
    pub epoch: Epoch,
    /// Milliseconds until it expires (negative: expired), by the database's clock.
    pub expires_in_ms: i64,
}

/// What the lease manager needs of the database (PostgreSQL: `store::PostgresLeases`).
pub trait LeaseDb: Send {
    /// Records `node` as alive now, reachable at `url`.
    fn heartbeat(&mut self, node: &str, url: &str) -> impl Future<Output = Result<(), store::Error>> + Send;
    /// Every registered node.
    fn nodes(&mut self) -> impl Future<Output = Result<Vec<NodeRow>, store::Error>> + Send;
    /// Every shard's lease.
    fn leases(&mut self) -> impl Future<Output = Result<Vec<LeaseRow>, store::Error>> + Send;
    /// Extends the leases `node` holds at exactly these epochs by `lease`; returns the shards
    /// renewed (one missing was taken over or released: lost).
    fn renew(
        &mut self,
        node: &str,
        held: &[(ShardId, Epoch)],
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<ShardId>, store::Error>> + Send;
    /// Claims those of `shards` that are released, expired or already `node`'s, each at its
    /// epoch + 1, for `lease`; returns what was won.
    fn claim(
        &mut self,
        node: &str,
        shards: &[ShardId],
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<(ShardId, Epoch)>, store::Error>> + Send;
    /// Releases `shard` if `node` still holds it at `epoch` (expires now, owner empty).
    fn release(
        &mut self,
        node: &str,
        shard: ShardId,
        epoch: Epoch,
    ) -> impl Future<Output = Result<(), store::Error>> + Send;
    /// Removes `node`'s row: it is gone for good (a graceful stop).
    fn leave(&mut self, node: &str) -> impl Future<Output = Result<(), store::Error>> + Send;
    /// Tells the store which shards it may write now, at which epochs.
    fn set_held(&self, held: &BTreeMap<ShardId, Epoch>);
}

/// A take under way: resolves once the core has recovered the shard (or could not).
pub type Taking = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The core as the lease manager sees it (`core::Handle`).
pub trait ShardHolder: Send + Sync {
    /// Asks the core to recover the shard's in-flight runs and serve them, fencing its
    /// writes at `epoch`. The request is queued before this returns (so a later `release`
    /// comes after it); the answer is awaited apart, because replaying a big shard takes a
    /// while and leases must be renewed meanwhile.
    fn take(&self, shard: ShardId, epoch: Epoch) -> Taking;
    /// Forgets the shard's runs; answers once its last batch for the shard is durable (or
    /// refused).
    fn release(&self, shard: ShardId) -> impl Future<Output = Result<(), String>> + Send;
}

/// The rendezvous score of `(node, shard)`: FNV-1a of the node id then the shard, mixed
/// (splitmix64's finalizer) so that close inputs spread. Stable across versions and machines:
/// every node must compute the same placement.
fn score(node: &str, shard: ShardId) -> u64 {
    let hash = node
        .bytes()
        .chain(shard.0.to_be_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The live node that should own `shard`: the highest score, ties to the greater id.
pub fn owner_of<'a>(shard: ShardId, live: &[&'a str]) -> Option<&'a str> {
    live.iter().copied().max_by_key(|node| (score(node, shard), *node))
}

/// When each held shard stops being usable by this node's own monotonic clock.
pub struct LeaseGuard {
    /// Lease minus [`LEASE_SAFETY_MARGIN`].
    usable_for: Duration,
    until: Mutex<HashMap<ShardId, Instant>>,
}

impl LeaseGuard {
    pub fn new(lease: Duration) -> LeaseGuard {
        LeaseGuard { usable_for: lease.saturating_sub(LEASE_SAFETY_MARGIN), until: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShardId, Instant>> {
        // A poisoned lock only means a panic elsewhere; instants stay meaningful.
        self.until.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A claim of `shard` whose request was sent at `sent` succeeded.
    pub fn claimed(&self, shard: ShardId, sent: Instant) {
        self.lock().insert(shard, sent + self.usable_for);
    }

    /// A renewal sent at `sent` succeeded: extends the shard's use, unless the core dropped
    /// it meanwhile (then it stays dropped; the lease manager notices and cleans up).
    pub fn renewed(&self, shard: ShardId, sent: Instant) {
        if let Some(until) = self.lock().get_mut(&shard) {
            *until = (*until).max(sent + self.usable_for);
        }
    }

    pub fn forget(&self, shard: ShardId) {
        self.lock().remove(&shard);
    }

    /// Whether the shard is still usable (held and not lapsed).
    pub fn holds(&self, shard: ShardId) -> bool {
        self.lock().contains_key(&shard)
    }

    /// The shards whose use lapsed at `now`, forgotten as they are returned: the core drops
    /// them at once.
    pub fn lapsed(&self, now: Instant) -> Vec<ShardId> {
        let mut until = self.lock();
        let lapsed: Vec<ShardId> = until.iter().filter(|(_, at)| now >= **at).map(|(shard, _)| *shard).collect();
        for shard in &lapsed {
            until.remove(shard);
        }
        lapsed
    }
}

/// Who this node is and how long its leases last.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub node: String,
    /// Where other nodes and workers reach this node's API.
    pub url: String,
    pub lease: Duration,
}

/// The task that keeps a node's leases (see the module's doc). `run` it on the API's runtime.
pub struct LeaseManager<D: LeaseDb, H: ShardHolder> {
    db: D,
    holder: H,
    cluster: std::sync::Arc<Cluster>,
    guard: std::sync::Arc<LeaseGuard>,
    options: LeaseOptions,
    held: BTreeMap<ShardId, Epoch>,
    /// Shards claimed whose take the core has not answered yet.
    taking: Vec<(ShardId, Epoch, Taking)>,
}

impl<D: LeaseDb, H: ShardHolder> LeaseManager<D, H> {
    pub fn new(
        db: D,
        holder: H,
        cluster: std::sync::Arc<Cluster>,
        guard: std::sync::Arc<LeaseGuard>,
        options: LeaseOptions,
    ) -> Self {
        LeaseManager { db, holder, cluster, guard, options, held: BTreeMap::new(), taking: Vec::new() }
    }

    /// Keeps the leases until `stop` resolves, then hands every shard off and leaves.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(LEASE_RENEW_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => {
                    if let Err(error) = self.tick().await {
                        // Nothing renewed: the guard drops the shards in time on its own.
                        tracing::warn!(%error, node = %self.options.node, "lease renewal failed; retrying");
                    }
                }
            }
        }
        self.leave().await;
    }

    /// One round: heartbeat, renew, hand off, claim, publish the map.
    pub async fn tick(&mut self) -> Result<(), store::Error> {
        let sent = Instant::now();
        let node = self.options.node.clone();
        self.db.heartbeat(&node, &self.options.url).await?;
        self.settle_takes().await?;
        // Shards the core dropped on its own (its guard lapsed): lost, whatever the database says.
        let dropped: Vec<ShardId> = self.held.keys().copied().filter(|shard| !self.guard.holds(*shard)).collect();
        self.lose(&dropped, "its lease lapsed by this node's clock").await;
        self.renew(sent).await?;
        let nodes = self.db.nodes().await?;
        let live: Vec<&str> = nodes
            .iter()
            .filter(|row| row.heartbeat_age_ms < NODE_LIVENESS.as_millis() as i64 || row.node == node)
            .map(|row| row.node.as_str())
            .collect();
        let leases = self.db.leases().await?;
        let mine = |shard: ShardId| owner_of(shard, &live) == Some(node.as_str());
        // Hand off: the core stops and makes its last batch durable before the release.
        let handoff: Vec<(ShardId, Epoch)> =
            self.held.iter().filter(|(shard, _)| !mine(**shard)).map(|(s, e)| (*s, *e)).collect();
        for (shard, epoch) in handoff {
            if let Err(error) = self.holder.release(shard).await {
                // Kept (and renewed) until the core has let go of it: a lease released while
                // the core still serves the shard would only be caught by the fence.
                tracing::warn!(shard = shard.0, %error, "the core could not drop the shard yet; handing it off later");
                continue;
            }
            self.guard.forget(shard);
            self.held.remove(&shard);
            self.taking.retain(|(taken, ..)| *taken != shard);
            self.db.set_held(&self.held);
            self.db.release(&node, shard, epoch).await?;
            tracing::info!(shard = shard.0, epoch = epoch.0, "handed a shard off");
        }
        let claimable: Vec<ShardId> = leases
            .iter()
            .filter(|lease| mine(lease.shard) && !self.held.contains_key(&lease.shard))
            .filter(|lease| lease.owner.is_empty() || lease.expires_in_ms <= 0 || lease.owner == node)
            .map(|lease| lease.shard)
            .collect();
        if !claimable.is_empty() {
            for (shard, epoch) in self.db.claim(&node, &claimable, self.options.lease).await? {
                self.guard.claimed(shard, sent);
                self.held.insert(shard, epoch);
                self.db.set_held(&self.held);
                let taking = self.holder.take(shard, epoch);
                self.taking.push((shard, epoch, taking));
            }
        }
        let leases = self.db.leases().await?;
        self.publish(&nodes, &leases);
        Ok(())
    }

    /// Looks at the takes the core has answered since: a shard it could not take is dropped
    /// there and released here, so a healthy node takes it.
    async fn settle_takes(&mut self) -> Result<(), store::Error> {
        let mut failed = Vec::new();
        let taking = std::mem::take(&mut self.taking);
        for (shard, epoch, mut answer) in taking {
            match futures_util::FutureExt::now_or_never(&mut answer) {
                None => self.taking.push((shard, epoch, answer)),
                Some(Ok(())) => tracing::info!(shard = shard.0, epoch = epoch.0, "took a shard"),
                Some(Err(error)) => {
                    tracing::error!(shard = shard.0, %error, "the core could not take the shard; releasing it");
                    failed.push((shard, epoch));
                }
            }
        }
        for (shard, epoch) in failed {
            if self.holder.release(shard).await.is_err() {
                // Kept: released once the core has dropped it (a later hand-off or loss).
                continue;
            }
            self.guard.forget(shard);
            self.held.remove(&shard);
            self.db.set_held(&self.held);
            self.db.release(&self.options.node, shard, epoch).await?;
        }
        Ok(())
    }

    /// Renews every held lease with a request sent at `sent`; a shard not renewed is lost.
    async fn renew(&mut self, sent: Instant) -> Result<(), store::Error> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held: Vec<(ShardId, Epoch)> = self.held.iter().map(|(s, e)| (*s, *e)).collect();
        let renewed = self.db.renew(&self.options.node, &held, self.options.lease).await?;
        for shard in &renewed {
            self.guard.renewed(*shard, sent);
        }
        let lost: Vec<ShardId> = self.held.keys().copied().filter(|shard| !renewed.contains(shard)).collect();
        self.lose(&lost, "another node took it over").await;
        Ok(())
    }

    /// Drops shards this node no longer holds, whatever the reason.
    async fn lose(&mut self, shards: &[ShardId], why: &str) {
        for shard in shards {
            self.guard.forget(*shard);
            if let Err(error) = self.holder.release(*shard).await {
                tracing::warn!(shard = shard.0, %error, "the core could not drop a lost shard cleanly");
            }
            self.held.remove(shard);
            self.taking.retain(|(taken, ..)| taken != shard);
            self.db.set_held(&self.held);
            tracing::warn!(shard = shard.0, why, "lost a shard");
        }
    }

    /// The shard map and status for routing and `GET /v1/cluster`.
    fn publish(&self, nodes: &[NodeRow], leases: &[LeaseRow]) {
        let urls: HashMap<&str, &str> = nodes.iter().map(|row| (row.node.as_str(), row.url.as_str())).collect();
        let owners = leases
            .iter()
            .map(|lease| {
                let live = !lease.owner.is_empty() && lease.expires_in_ms > 0;
                let url = urls.get(lease.owner.as_str());
                (lease.shard, live.then(|| url.map(|url| (lease.owner.clone(), (*url).to_owned()))).flatten())
            })
            .collect();
        self.cluster.set_map(ClusterMap { nodes: nodes.to_vec(), leases: leases.to_vec(), owners });
    }

    /// A graceful stop: every shard handed off (durable, then released), the node row gone.
    async fn leave(&mut self) {
        let node = self.options.node.clone();
        let held: Vec<(ShardId, Epoch)> = self.held.iter().map(|(s, e)| (*s, *e)).collect();
        for (shard, epoch) in held {
            self.guard.forget(shard);
            if let Err(error) = self.holder.release(shard).await {
                tracing::warn!(shard = shard.0, %error, "the core could not hand the shard off cleanly");
            }
            self.held.remove(&shard);
            self.db.set_held(&self.held);
            if let Err(error) = self.db.release(&node, shard, epoch).await {
                tracing::warn!(shard = shard.0, %error, "could not release a shard; it expires on its own");
            }
        }
        if let Err(error) = self.db.leave(&node).await {
            tracing::warn!(%error, "could not remove this node's row; it stops being live on its own");
        }
        tracing::info!(node = %node, "left the cluster");
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
