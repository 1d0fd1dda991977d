//! The storage contract (`shop_engine::store::contract`) run against the sled backend, with
//! both durabilities: every backend must pass the same suite.

use shop_engine::store::contract::{self, Harness};
use shop_engine::store::{Durability, HistoryStore, SledStore};
use std::path::PathBuf;

/// Longest a reopen waits for sled to release the folder's lock after the last handle drops.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

struct Sled {
    dir: tempfile::TempDir,
    durability: Durability,
    /// Where each live store lives, by its address, so `reopen` opens the same one.
    opened: Vec<(usize, PathBuf)>,
    next: usize,
}

impl Sled {
    fn new(durability: Durability) -> Sled {
        Sled { dir: tempfile::tempdir().expect("tempdir"), durability, opened: Vec::new(), next: 0 }
    }

    fn open(&mut self, path: PathBuf) -> Box<dyn HistoryStore> {
        // sled releases its folder's lock when its background threads notice the last handle
        // is gone, a moment after the drop: a reopen tries again for a bounded while.
        let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
        let store = loop {
            match SledStore::open(&path, self.durability, None) {
                Ok(store) => break store,
                Err(error) if std::time::Instant::now() < deadline && error.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => panic!("cannot open the store at {}: {error}", path.display()),
            }
        };
        let store: Box<dyn HistoryStore> = Box::new(store);
        self.opened.push((address(&*store), path));
        store
    }
}

fn address(store: &dyn HistoryStore) -> usize {
    store as *const dyn HistoryStore as *const () as usize
}

impl Harness for Sled {
    fn fresh(&mut self) -> Box<dyn HistoryStore> {
        self.next += 1;
        let path = self.dir.path().join(format!("store-{}", self.next));
        self.open(path)
    }

    fn reopen(&mut self, store: Box<dyn HistoryStore>) -> Box<dyn HistoryStore> {
        let at = address(&*store);
        let index = self.opened.iter().rposition(|(a, _)| *a == at).expect("a store this harness opened");
        let (_, path) = self.opened.remove(index);
        // sled holds a lock on its folder until every handle is gone.
        drop(store);
        self.open(path)
    }
}

#[test]
fn sled_passes_the_store_contract_power_safe() {
    contract::run_all(&mut Sled::new(Durability::PowerSafe));
}

#[test]
fn sled_passes_the_store_contract_process_crash() {
    contract::run_all(&mut Sled::new(Durability::ProcessCrash));
}
