//! The storage contract (`shop_engine::store::contract`) run against the PostgreSQL backend,
//! each store in its own database, created and dropped here; and what only PostgreSQL
//! promises: a second store opened on the same database fences the first, the shard count is
//! fixed, migrations run once. SKIPPED (loudly) where PostgreSQL is unreachable, unless
//! `SHOP_REQUIRE_POSTGRES=1`.

use shop_engine::store::contract::{self, Harness};
use shop_engine::store::postgres::test_db::TestDatabase;
use shop_engine::store::{Epoch, Error, HistoryStore, PostgresOptions, PostgresStore, ShardId, WriteBatch};

struct Postgres {
    /// Every database made, kept until the harness is dropped; with the URL each store uses.
    databases: Vec<TestDatabase>,
    opened: Vec<(usize, String)>,
}

/// A stand-alone store holding every shard (an engine's lease manager claims them instead).
fn open(url: &str, shards: Option<u32>) -> Result<PostgresStore, Error> {
    let store = PostgresStore::open(&PostgresOptions { url: url.to_owned(), shards })?;
    store.claim_all(std::time::Duration::from_secs(30))?;
    Ok(store)
}

fn address(store: &dyn HistoryStore) -> usize {
    store as *const dyn HistoryStore as *const () as usize
}

impl Postgres {
    fn open(&mut self, url: String) -> Box<dyn HistoryStore> {
        let store: Box<dyn HistoryStore> = Box::new(open(&url, None).expect("opens"));
        self.opened.push((address(&*store), url));
        store
    }
}

impl Harness for Postgres {
    fn fresh(&mut self) -> Box<dyn HistoryStore> {
        let database = TestDatabase::create("contract").expect("the server answered a moment ago");
        let url = database.url.clone();
        self.databases.push(database);
        self.open(url)
    }

    fn reopen(&mut self, store: Box<dyn HistoryStore>) -> Box<dyn HistoryStore> {
        let at = address(&*store);
        let index = self.opened.iter().rposition(|(a, _)| *a == at).expect("a store this harness opened");
        let (_, url) = self.opened.remove(index);
        drop(store);
        self.open(url)
    }
}

#[test]
fn postgres_passes_the_store_contract() {
    let Some(probe) = TestDatabase::create("postgres_passes_the_store_contract") else { return };
    drop(probe);
    contract::run_all(&mut Postgres { databases: Vec::new(), opened: Vec::new() });
}

fn start(run: &str) -> WriteBatch {
    let id = shop_types::WorkflowId::parse(run).expect("valid");
    let event = shop_types::history::Event {
        seq: 1,
        at_ms: 1,
        kind: shop_types::history::EventKind::CancelRequested { reason: run.into() },
    };
    let mut batch = WriteBatch::default();
    batch.append_events(&id, &[event]).expect("encodes");
    batch
}

#[test]
fn a_second_store_on_the_database_fences_the_first() {
    let Some(database) = TestDatabase::create("a_second_store_on_the_database_fences_the_first") else { return };
    let first = open(&database.url, Some(4)).expect("opens");
    assert_eq!(first.shards().len(), 4, "one engine claims every shard");
    first.commit(start("before")).expect("the owner writes");
    let second = open(&database.url, None).expect("opens, taking every shard over");
    let epochs = |store: &PostgresStore| store.shards().iter().map(|(_, Epoch(e))| *e).collect::<Vec<_>>();
    assert!(
        epochs(&second).iter().zip(epochs(&first)).all(|(new, old)| *new == old + 1),
        "a takeover bumps each epoch"
    );
    match first.commit(start("after")) {
        Err(Error::Fenced { .. }) => {}
        other => panic!("the fenced store's write must be refused, got {other:?}"),
    }
    assert!(matches!(first.commit(start("again")), Err(Error::Fenced { .. })), "it stays refused");
    assert_eq!(first.fenced_writes(), 2, "refused writes are counted");
    let after = shop_types::WorkflowId::parse("after").expect("valid");
    assert!(second.history(&after).expect("reads").is_empty(), "nothing of a fenced batch was written");
    second.commit(start("after")).expect("the new owner writes");
    assert_eq!(second.history(&after).expect("reads").len(), 1);
}

#[test]
fn the_shard_count_is_fixed_when_the_cluster_is_created() {
    let Some(database) = TestDatabase::create("the_shard_count_is_fixed_when_the_cluster_is_created") else { return };
    for bad in [0, shop_engine::store::postgres::MAX_SHARD_COUNT + 1] {
        assert!(matches!(open(&database.url, Some(bad)), Err(Error::ShardCount { stored: None, .. })), "{bad}");
    }
    let max = open(&database.url, Some(shop_engine::store::postgres::MAX_SHARD_COUNT)).expect("the edge is allowed");
    drop(max);
    match open(&database.url, Some(3)) {
        Err(error @ Error::ShardCount { stored: Some(_), asked: 3 }) => {
            assert!(error.to_string().contains("never changes"), "{error}")
        }
        Err(other) => panic!("a different count must be refused, got {other}"),
        Ok(_) => panic!("a different count must be refused"),
    }
    let store = open(&database.url, None).expect("no flag takes the stored count");
    assert_eq!(store.shards().len() as u32, shop_engine::store::postgres::MAX_SHARD_COUNT);
    assert!(store.shards().iter().all(|(ShardId(s), _)| *s < shop_engine::store::postgres::MAX_SHARD_COUNT));
}

#[test]
fn migrations_run_once_even_when_engines_start_together() {
    let Some(database) = TestDatabase::create("migrations_run_once_even_when_engines_start_together") else { return };
    let url = database.url.clone();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || shop_engine::store::postgres::migrate(&url))
        })
        .collect();
    for start in starts {
        assert_eq!(start.join().expect("no panic").expect("migrates"), 3, "the latest schema version");
    }
    assert_eq!(shop_engine::store::postgres::migrate(&url).expect("again: a no-op"), 3);
    let store = open(&url, None).expect("opens a migrated database");
    store.commit(start("a")).expect("writes");
}
