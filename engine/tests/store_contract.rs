//! The storage contract (`shop_engine::store::contract`) run against the sled backend, with
//! both durabilities: every backend must pass the same suite.

use shop_engine::store::contract::{self, Harness};
use shop_engine::store::{Durability, HistoryStore, SledStore};
use std::path::PathBuf;

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
        let store: Box<dyn HistoryStore> = Box::new(SledStore::open(&path, self.durability, None).expect("opens"));
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
