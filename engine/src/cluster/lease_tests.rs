//! Placement and the monotonic guard, with every time passed in.

use super::*;
use crate::cluster::Cluster;

fn placement(shards: u32, live: &[&str]) -> Vec<String> {
    (0..shards).map(|shard| owner_of(ShardId(shard), live).expect("a live node").to_owned()).collect()
}

#[test]
fn rendezvous_spreads_shards_over_the_live_nodes() {
    let nodes = ["node-a", "node-b", "node-c"];
    let placed = placement(1024, &nodes);
    for node in nodes {
        let owned = placed.iter().filter(|owner| *owner == node).count();
        // A third each (341), within a wide band: the hash is fixed, so this never flakes.
        assert!((250..=430).contains(&owned), "{node} owns {owned} of 1024 shards");
    }
    assert_eq!(owner_of(ShardId(0), &[]), None, "nobody live, nobody owns");
    assert_eq!(placement(16, &["solo"]), vec!["solo".to_owned(); 16]);
}

#[test]
fn a_node_joining_or_leaving_moves_only_its_own_shards() {
    let before = placement(256, &["node-a", "node-b", "node-c"]);
    let joined = placement(256, &["node-a", "node-b", "node-c", "node-d"]);
    for (old, new) in before.iter().zip(&joined) {
        assert!(old == new || new == "node-d", "a shard moved from {old} to {new}, not to the newcomer");
    }
    let moved = joined.iter().filter(|owner| *owner == "node-d").count();
    assert!((32..=96).contains(&moved), "the newcomer takes about a quarter: {moved} of 256");
    let left = placement(256, &["node-a", "node-c"]);
    for (old, new) in before.iter().zip(&left) {
        assert!(old == new || old == "node-b", "a shard of {old} moved to {new} though {old} stayed");
    }
}

#[test]
fn placement_does_not_depend_on_the_order_nodes_are_listed_in() {
    assert_eq!(placement(64, &["x", "y", "z"]), placement(64, &["z", "x", "y"]));
}

#[test]
fn the_guard_drops_a_shard_once_its_last_renewal_is_too_old() {
    let lease = Duration::from_secs(4);
    let guard = LeaseGuard::new(lease);
    let t0 = Instant::now();
    guard.claimed(ShardId(3), t0);
    let usable = lease - LEASE_SAFETY_MARGIN;
    assert!(guard.lapsed(t0 + usable - Duration::from_millis(1)).is_empty(), "still usable just before");
    // A renewal sent a second later extends it by as much.
    guard.renewed(ShardId(3), t0 + Duration::from_secs(1));
    assert!(guard.lapsed(t0 + usable).is_empty(), "the renewal moved the edge");
    assert_eq!(guard.lapsed(t0 + usable + Duration::from_secs(1)), vec![ShardId(3)], "lapsed at the edge");
    assert!(!guard.holds(ShardId(3)), "a lapsed shard is forgotten");
    // A late renewal does not bring back a shard the core already dropped.
    guard.renewed(ShardId(3), t0 + Duration::from_secs(5));
    assert!(!guard.holds(ShardId(3)));
}

#[test]
fn an_older_renewal_never_shortens_a_lease() {
    let guard = LeaseGuard::new(Duration::from_secs(4));
    let t0 = Instant::now();
    guard.claimed(ShardId(1), t0 + Duration::from_secs(2));
    guard.renewed(ShardId(1), t0);
    assert!(guard.lapsed(t0 + Duration::from_secs(4)).is_empty());
    assert_eq!(guard.lapsed(t0 + Duration::from_secs(5)), vec![ShardId(1)]);
}

/// The database as a map, with the clock passed in (milliseconds): only inside unit tests.
#[derive(Default)]
struct FakeDb {
    now_ms: i64,
    nodes: BTreeMap<String, i64>,
    /// By shard: owner, epoch, expiry (ms).
    leases: BTreeMap<ShardId, (String, Epoch, i64)>,
    held: BTreeMap<ShardId, Epoch>,
}

type Shared = std::sync::Arc<std::sync::Mutex<FakeDb>>;

struct Db(Shared);

impl LeaseDb for Db {
    async fn heartbeat(&mut self, node: &str, _url: &str) -> Result<(), store::Error> {
        let mut db = self.0.lock().expect("not poisoned");
        let now = db.now_ms;
        db.nodes.insert(node.to_owned(), now);
        Ok(())
    }
    async fn nodes(&mut self) -> Result<Vec<NodeRow>, store::Error> {
        let db = self.0.lock().expect("not poisoned");
        let row = |(node, at): (&String, &i64)| NodeRow {
            node: node.clone(),
            url: String::new(),
            heartbeat_age_ms: db.now_ms - at,
        };
        Ok(db.nodes.iter().map(row).collect())
    }
    async fn leases(&mut self) -> Result<Vec<LeaseRow>, store::Error> {
        let db = self.0.lock().expect("not poisoned");
        let row = |(shard, (owner, epoch, until)): (&ShardId, &(String, Epoch, i64))| LeaseRow {
            shard: *shard,
            owner: owner.clone(),
            epoch: *epoch,
            expires_in_ms: until - db.now_ms,
        };
        Ok(db.leases.iter().map(row).collect())
    }
    async fn renew(
        &mut self,
        node: &str,
        held: &[(ShardId, Epoch)],
        lease: Duration,
    ) -> Result<Vec<ShardId>, store::Error> {
        let mut db = self.0.lock().expect("not poisoned");
        let until = db.now_ms + lease.as_millis() as i64;
        let mut renewed = Vec::new();
        for (shard, epoch) in held {
            if let Some(row) = db.leases.get_mut(shard).filter(|row| row.0 == node && row.1 == *epoch) {
                row.2 = until;
                renewed.push(*shard);
            }
        }
        Ok(renewed)
    }
    async fn claim(
        &mut self,
        node: &str,
        shards: &[ShardId],
        lease: Duration,
    ) -> Result<Vec<(ShardId, Epoch)>, store::Error> {
        let mut db = self.0.lock().expect("not poisoned");
        let (now, until) = (db.now_ms, db.now_ms + lease.as_millis() as i64);
        let mut won = Vec::new();
        for shard in shards {
            let row = db.leases.entry(*shard).or_insert((String::new(), Epoch(0), now));
            if row.0.is_empty() || row.0 == node || row.2 < now {
                *row = (node.to_owned(), Epoch(row.1 .0 + 1), until);
                won.push((*shard, row.1));
            }
        }
        Ok(won)
    }
    async fn release(&mut self, node: &str, shard: ShardId, epoch: Epoch) -> Result<(), store::Error> {
        let mut db = self.0.lock().expect("not poisoned");
        let now = db.now_ms;
        if let Some(row) = db.leases.get_mut(&shard).filter(|row| row.0 == node && row.1 == epoch) {
            *row = (String::new(), epoch, now);
        }
        Ok(())
    }
    async fn leave(&mut self, node: &str) -> Result<(), store::Error> {
        self.0.lock().expect("not poisoned").nodes.remove(node);
        Ok(())
    }
    fn set_held(&self, held: &BTreeMap<ShardId, Epoch>) {
        self.0.lock().expect("not poisoned").held = held.clone();
    }
}

/// A core that records what it holds, and may refuse to drop.
#[derive(Clone, Default)]
struct Holder {
    held: std::sync::Arc<std::sync::Mutex<BTreeMap<ShardId, Epoch>>>,
    refuse_drops: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ShardHolder for Holder {
    fn take(&self, shard: ShardId, epoch: Epoch) -> Taking {
        self.held.lock().expect("not poisoned").insert(shard, epoch);
        Box::pin(std::future::ready(Ok(())))
    }
    async fn release(&self, shard: ShardId) -> Result<(), String> {
        if self.refuse_drops.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("busy".into());
        }
        self.held.lock().expect("not poisoned").remove(&shard);
        Ok(())
    }
}

#[tokio::test]
async fn a_shard_is_released_only_after_the_core_dropped_it() {
    const SHARDS: u32 = 8;
    let db: Shared = Default::default();
    for shard in 0..SHARDS {
        db.lock().expect("not poisoned").leases.insert(ShardId(shard), (String::new(), Epoch(0), 0));
    }
    let holder = Holder::default();
    let cluster = std::sync::Arc::new(Cluster::leased("a".into(), "test", SHARDS));
    let guard = std::sync::Arc::new(LeaseGuard::new(DEFAULT_LEASE_DURATION));
    let options = LeaseOptions { node: "a".into(), url: "http://a".into(), lease: DEFAULT_LEASE_DURATION };
    let mut manager = LeaseManager::new(Db(db.clone()), holder.clone(), cluster.clone(), guard, options);
    manager.tick().await.expect("a round");
    assert_eq!(holder.held.lock().expect("not poisoned").len(), SHARDS as usize, "alone, a takes all");
    assert_eq!(db.lock().expect("not poisoned").held.len(), SHARDS as usize, "and tells its store");

    // b turns up; the core cannot drop anything yet: a keeps (and renews) every lease.
    db.lock().expect("not poisoned").nodes.insert("b".into(), 0);
    holder.refuse_drops.store(true, std::sync::atomic::Ordering::SeqCst);
    manager.tick().await.expect("a round");
    let owners = |db: &Shared| db.lock().expect("not poisoned").leases.values().filter(|row| row.0 == "a").count();
    assert_eq!(owners(&db), SHARDS as usize, "no lease released while the core holds its shard");
    // The core lets go: b's share is released, and only that.
    holder.refuse_drops.store(false, std::sync::atomic::Ordering::SeqCst);
    manager.tick().await.expect("a round");
    let for_b: Vec<ShardId> = (0..SHARDS).map(ShardId).filter(|s| owner_of(*s, &["a", "b"]) == Some("b")).collect();
    assert!(!for_b.is_empty(), "placement gives b some of 8 shards");
    let released: Vec<ShardId> =
        db.lock().expect("not poisoned").leases.iter().filter(|(_, row)| row.0.is_empty()).map(|(s, _)| *s).collect();
    assert_eq!(released, for_b);
    assert_eq!(db.lock().expect("not poisoned").held.len(), SHARDS as usize - for_b.len(), "the store forgot them");
}
