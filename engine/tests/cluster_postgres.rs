//! Shard leases on PostgreSQL: two nodes' lease managers (each with its own `PostgresStore`)
//! in one process on a throwaway database, driven round by round. They split the shards; when
//! one stops renewing, the other takes its shards at higher epochs, and a write the stale one
//! still tries is refused (`Fenced`). The core is stood in for by a holder that records what
//! it is told (the core's own take/drop is unit-tested in `core::shard_tests`). SKIPPED
//! (loudly) where PostgreSQL is unreachable, unless `SHOP_REQUIRE_POSTGRES=1`.

use shop_engine::cluster::lease::{LeaseGuard, LeaseManager, LeaseOptions, ShardHolder, Taking, LEASE_RENEW_INTERVAL};
use shop_engine::cluster::{shard_of, Cluster, Route};
use shop_engine::store::postgres::test_db::TestDatabase;
use shop_engine::store::{
    Epoch, Error, HistoryStore, PostgresLeases, PostgresOptions, PostgresStore, ShardId, WriteBatch,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SHARDS: u32 = 8;
/// The shortest lease allowed, so the takeover below comes soon.
const LEASE: Duration = Duration::from_secs(2);
/// Rounds the survivor gets to take a silent node's shards: its heartbeat must age past
/// `NODE_LIVENESS` (5 s) first. Generous, never a timing assertion.
const TAKEOVER_ROUNDS: usize = 30;

/// What the core would hold: shards taken and not dropped since.
#[derive(Clone, Default)]
struct Holder(Arc<Mutex<BTreeMap<ShardId, Epoch>>>);

impl Holder {
    fn held(&self) -> BTreeMap<ShardId, Epoch> {
        self.0.lock().expect("not poisoned").clone()
    }
}

impl ShardHolder for Holder {
    fn take(&self, shard: ShardId, epoch: Epoch) -> Taking {
        self.0.lock().expect("not poisoned").insert(shard, epoch);
        Box::pin(std::future::ready(Ok(())))
    }

    async fn release(&self, shard: ShardId) -> Result<(), String> {
        self.0.lock().expect("not poisoned").remove(&shard);
        Ok(())
    }
}

struct Node {
    store: Arc<PostgresStore>,
    holder: Holder,
    cluster: Arc<Cluster>,
    manager: LeaseManager<PostgresLeases, Holder>,
}

fn node(url: &str, name: &str) -> Node {
    let store =
        Arc::new(PostgresStore::open(&PostgresOptions { url: url.to_owned(), shards: Some(SHARDS) }).expect("opens"));
    let holder = Holder::default();
    let cluster = Arc::new(Cluster::leased(name.to_owned(), "postgres", SHARDS));
    let options = LeaseOptions { node: name.to_owned(), url: format!("http://{name}.invalid"), lease: LEASE };
    let guard = Arc::new(LeaseGuard::new(LEASE));
    let manager = LeaseManager::new(store.leases(), holder.clone(), cluster.clone(), guard, options);
    Node { store, holder, cluster, manager }
}

/// A run id whose shard is `shard`.
fn run_in(shard: ShardId) -> shop_types::WorkflowId {
    (0..10_000)
        .map(|n| shop_types::WorkflowId::parse(format!("run-{n}")).expect("valid"))
        .find(|id| shard_of(id, SHARDS) == shard)
        .expect("some id hashes to every shard")
}

fn start(id: &shop_types::WorkflowId) -> WriteBatch {
    let event = shop_types::history::Event {
        seq: 1,
        at_ms: 1,
        kind: shop_types::history::EventKind::CancelRequested { reason: "test".into() },
    };
    let mut batch = WriteBatch::default();
    batch.append_events(id, &[event]).expect("encodes");
    batch
}

/// Event 2 of `id`.
fn next(id: &shop_types::WorkflowId, reason: &str) -> WriteBatch {
    let event = shop_types::history::Event {
        seq: 2,
        at_ms: 2,
        kind: shop_types::history::EventKind::CancelRequested { reason: reason.into() },
    };
    let mut batch = WriteBatch::default();
    batch.append_events(id, &[event]).expect("encodes");
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_the_shards_and_a_silent_one_is_taken_over_and_fenced() {
    let Some(database) = TestDatabase::create("two_nodes_split_the_shards") else { return };
    let (mut a, mut b) = (node(&database.url, "node-a"), node(&database.url, "node-b"));

    // Alone, a takes every shard.
    a.manager.tick().await.expect("a's round");
    assert_eq!(a.holder.held().len(), SHARDS as usize, "the only live node owns every shard");
    assert_eq!(a.store.shards().len(), SHARDS as usize, "and its store may write them");
    // b joins: a hands off what placement gives b (durable, then released), and b claims it.
    b.manager.tick().await.expect("b's round");
    a.manager.tick().await.expect("a's round");
    b.manager.tick().await.expect("b's round");
    let (held_a, held_b) = (a.holder.held(), b.holder.held());
    assert!(!held_a.is_empty() && !held_b.is_empty(), "both own shards: {held_a:?} {held_b:?}");
    assert_eq!(held_a.len() + held_b.len(), SHARDS as usize, "every shard has one owner");
    assert!(held_a.keys().all(|shard| !held_b.contains_key(shard)), "no shard has two");
    assert!(held_b.values().all(|Epoch(epoch)| *epoch == 2), "a hand-off is a takeover: epoch 2");
    let a_shard = *held_a.keys().next().expect("a owns one");
    let b_shard = *held_b.keys().next().expect("b owns one");
    a.manager.tick().await.expect("a's round");
    assert_eq!(a.cluster.route(&run_in(a_shard)), Route::Local);
    assert!(matches!(a.cluster.route(&run_in(b_shard)), Route::Remote { node, .. } if node == "node-b"));
    let status = a.cluster.status();
    assert_eq!(status.nodes.len(), 2);
    assert_eq!(status.nodes.iter().map(|n| n.shards_owned).sum::<u32>(), SHARDS);

    // Each writes its own shard; neither can write the other's.
    a.store.commit(start(&run_in(a_shard))).expect("the owner writes");
    assert!(matches!(a.store.commit(start(&run_in(b_shard))), Err(Error::Fenced { .. })), "not a's shard");

    // a goes silent (paused, partitioned): b takes its shards once a's heartbeat is stale and
    // its leases expired, each at a higher epoch.
    let mut rounds = 0;
    while b.holder.held().len() < SHARDS as usize {
        rounds += 1;
        assert!(rounds <= TAKEOVER_ROUNDS, "b never took a's shards: {:?}", b.holder.held());
        tokio::time::sleep(LEASE_RENEW_INTERVAL).await;
        b.manager.tick().await.expect("b's round");
    }
    let taken = b.holder.held();
    for (shard, epoch) in &held_a {
        assert!(taken[shard] > *epoch, "shard {} taken at {:?}, after a's {:?}", shard.0, taken[shard], epoch);
    }
    // a's store still believes it holds its shards: its next write is refused by the database.
    let id = run_in(a_shard);
    assert!(matches!(a.store.commit(next(&id, "late")), Err(Error::Fenced { .. })), "a stale owner's write is fenced");
    assert!(a.store.fenced_writes() >= 1, "the refusal is counted");
    // b, the new owner, writes on from what the old one made durable.
    b.store.commit(next(&id, "new owner")).expect("the new owner writes");
}

/// One activity on a queue nobody polls: a started run stays in flight.
const DEFINITION: &str = r#"
name = "solo"
version = 1

[[steps]]
name = "only"
activity = "q.only"
queue = "q"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_whose_shard_was_taken_over_answers_shard_moved_and_drops_it() {
    use shop_engine::core::{Core, CoreError, Limits, StartOutcome};
    let Some(database) = TestDatabase::create("a_core_whose_shard_was_taken_over") else { return };
    let open = || PostgresStore::open(&PostgresOptions { url: database.url.clone(), shards: Some(SHARDS) });
    let old = open().expect("opens");
    old.claim_all(LEASE).expect("claims");
    let store: Arc<dyn HistoryStore> = Arc::new(old);
    let mut registry = shop_engine::registry::Registry::default();
    registry.insert(shop_engine::definition::parse("solo", DEFINITION).expect("parses")).expect("registers");
    let registry = Arc::new(std::sync::RwLock::new(registry));
    let clock: Arc<dyn shop_engine::clock::Clock> = Arc::new(shop_engine::clock::SystemClock);
    let (core, handle) = Core::recover(store.clone(), registry, clock, Limits::default()).expect("recovers");
    let core_thread = std::thread::spawn(move || core.run());
    let solo: shop_types::WorkflowType = "solo".parse().expect("valid");
    let input = || shop_types::JsonText::parse("{}").expect("valid");

    let first = run_in(ShardId(0));
    assert_eq!(handle.start(first.clone(), solo.clone(), input(), None).await, Ok(StartOutcome::Created));
    // Another node takes every shard over (each epoch + 1) while this core still serves.
    let new_owner = open().expect("opens");
    new_owner.claim_all(LEASE).expect("takes over");

    let second = run_in(ShardId(1));
    let refused = handle.start(second.clone(), solo.clone(), input(), None).await;
    assert_eq!(refused, Err(CoreError::ShardMoved), "a fenced write is never acknowledged");
    assert_eq!(handle.stats.fence_rejections.load(std::sync::atomic::Ordering::Relaxed), 1, "and is counted");
    assert_eq!(new_owner.run(&second).expect("reads"), None, "nothing of it was written");
    // The core dropped the fenced shard at its next turn and rebuilt the rest from the store.
    let again = handle.start(second.clone(), solo.clone(), input(), None).await;
    assert_eq!(again, Err(CoreError::NotOwner(ShardId(1))), "the fenced shard is no longer served here");
    assert!(new_owner.run(&first).expect("reads").is_some(), "what was durable before stays");
    drop(handle);
    core_thread.join().expect("the core stops when its handles are gone");
}

/// The deadlock we saw under load: a write transaction holds one lease row (`shop_fence`,
/// FOR SHARE) and wants another while a renewal holds that other one and wants the first.
/// A renewal holds at most one lease row at a time, so a writer holding shard 1 and then
/// asking for shard 0 gets it while the renewal of shard 1 waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_never_holds_one_lease_row_while_waiting_for_another() {
    use shop_engine::cluster::lease::LeaseDb;
    let Some(database) = TestDatabase::create("a_renewal_never_holds_one_lease_row") else { return };
    let store = Arc::new(
        PostgresStore::open(&PostgresOptions { url: database.url.clone(), shards: Some(SHARDS) }).expect("opens"),
    );
    let mut leases = store.leases();
    let won = leases.claim("node-a", &[ShardId(0), ShardId(1), ShardId(2)], LEASE).await.expect("claims");
    assert_eq!(won.len(), 3);

    let (writer, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls).await.expect("connects");
    tokio::spawn(connection);
    writer.batch_execute("BEGIN; SET LOCAL lock_timeout = '20s'").await.expect("begins");
    writer.execute("SELECT 1 FROM shop_shards WHERE shard = 1 FOR SHARE", &[]).await.expect("locks shard 1");
    let expiry = |shard: i32| {
        let url = database.url.clone();
        async move {
            let (reader, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connects");
            tokio::spawn(connection);
            let row = reader.query_one("SELECT expires_at FROM shop_shards WHERE shard = $1", &[&shard]).await;
            row.expect("reads").get::<_, std::time::SystemTime>(0)
        }
    };
    let before = expiry(0).await;
    let renewal = tokio::spawn(async move { leases.renew("node-a", &won, LEASE).await.expect("renews") });
    // Shard 0's renewal commits on its own, while shard 1's waits for the writer.
    let mut rounds = 0;
    while expiry(0).await == before {
        rounds += 1;
        assert!(rounds < 200, "shard 0 was never renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer
        .execute("SELECT 1 FROM shop_shards WHERE shard = 0 FOR SHARE", &[])
        .await
        .expect("the writer gets shard 0: the renewal does not hold it");
    writer.batch_execute("COMMIT").await.expect("commits");
    let renewed = renewal.await.expect("the renewal task");
    assert_eq!(renewed.len(), 3, "every lease renewed once the writer let go: {renewed:?}");
}
