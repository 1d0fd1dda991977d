//! Placement and the monotonic guard, with every time passed in.

use super::*;

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
