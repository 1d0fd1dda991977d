//! Moving a data dir of the older layout (one sled store per domain, `DIR/<domain>`) into the
//! domain's tree of the process's one store (`DIR/store`), once, at open.
//!
//! Why it exists: `shopctl dev` and any deployment with a kept `--data-dir` hold stores of the
//! older layout; a worker that ignored them would seed a fresh catalog and forget every
//! reservation, charge and outbox entry, so a retried activity would happen twice.
//!
//! How it stays safe across a crash at any point: the copy starts by writing a "migrating"
//! mark into the tree and ends by writing a "migrated" mark (both keys begin with a zero byte,
//! which no domain's prefix scan reads), synced, before the old folder is renamed to
//! `<domain>.migrated` (kept, never deleted: the operator removes it). Nothing else writes the
//! tree before this returns, so an interrupted copy is simply copied again. This module must
//! never overwrite a tree that holds data it did not copy, and never delete the old store.

use super::{open, Durability, Error, Opened};
use std::path::Path;

/// Written first: the tree's data, if any, came from an unfinished copy.
const MIGRATING_KEY: &[u8] = b"\0migrating-from-per-domain-store";
/// Written last, in the same batch as the copy's end: the old store was copied whole.
const MIGRATED_KEY: &[u8] = b"\0migrated-from-per-domain-store";
/// Records per batch of the copy, so a large old store is not held in memory at once.
pub const MIGRATION_BATCH_RECORDS: usize = 10_000;
/// What the old folder is renamed to once copied (beside it, in the data dir).
pub const MIGRATED_SUFFIX: &str = ".migrated";

/// Copies the older store of `domain` under `data_dir`, when there is one, into `tree`.
pub(super) fn from_per_domain_dir(
    data_dir: &Path,
    domain: &str,
    tree: &sled::Tree,
    store: &Opened,
) -> Result<(), Error> {
    let old_path = data_dir.join(domain);
    if !old_path.join("db").is_file() {
        return Ok(());
    }
    let refused = |reason: String| Error::Migration { path: old_path.clone(), reason };
    if tree.get(MIGRATED_KEY)?.is_none() {
        if !tree.is_empty() && tree.get(MIGRATING_KEY)?.is_none() {
            return Err(refused(format!(
                "the {domain} data in {} was written after it; move one of them away",
                data_dir.join(super::STORE_DIR).display()
            )));
        }
        tree.insert(MIGRATING_KEY, &[])?;
        // Only read: its log is never synced, so how durable its open is does not matter.
        let old = open(&old_path, Durability::ProcessCrash)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in old.db.iter() {
            let (key, value) = entry?;
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == MIGRATION_BATCH_RECORDS {
                tree.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        batch.insert(MIGRATED_KEY, &[]);
        batch.remove(MIGRATING_KEY);
        tree.apply_batch(batch)?;
        store.sync()?;
        tracing::info!(domain, from = %old_path.display(), "moved the domain's store of the older layout into the worker's store");
    }
    let mut renamed = old_path.clone().into_os_string();
    renamed.push(MIGRATED_SUFFIX);
    std::fs::rename(&old_path, &renamed)
        .map_err(|error| refused(format!("copied, but cannot rename it to {}: {error}", Path::new(&renamed).display())))
}

#[cfg(test)]
mod tests {
    use super::super::{DomainStore, WorkerStore, STORE_DIR};
    use super::*;
    use crate::inventory::Inventory;
    use shop_types::order::{OrderItem, SetStockRequest};
    use std::sync::Arc;

    fn order(id: &str) -> shop_types::WorkflowId {
        shop_types::WorkflowId::parse(id).expect("valid id")
    }

    /// An inventory written the way a worker of the older layout wrote it: in the default
    /// tree of its own store at `DIR/inventory`.
    async fn old_inventory(data_dir: &Path) {
        let old = open(&data_dir.join("inventory"), Durability::PowerSafe).expect("opens the old layout");
        let flusher = Arc::new(shop_durable::Flusher::start(&old, "old").expect("starts"));
        let inventory =
            Inventory::open(DomainStore { tree: (*old.db).clone(), flusher, store: old.clone() }).expect("loads");
        inventory.set_stock(1, &SetStockRequest { units: 7, name: None, price_cents: None }).await.expect("sets");
        let items = [OrderItem { product_id: 2, quantity: 3 }];
        inventory.reserve(&order("o-1"), &items, "res-1").await.expect("reserves");
    }

    #[tokio::test]
    async fn an_older_per_domain_store_is_moved_in_once_and_kept_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        old_inventory(dir.path()).await;
        for _ in 0..2 {
            let store = WorkerStore::open(dir.path(), Durability::PowerSafe).expect("opens");
            let inventory = Inventory::open(store.domain("inventory").expect("migrates")).expect("loads");
            let products = inventory.products();
            assert_eq!(products.iter().find(|p| p.product_id == 1).map(|p| p.stock), Some(7), "not re-seeded");
            assert_eq!(products.iter().find(|p| p.product_id == 2).map(|p| p.reserved), Some(3));
            // The reservation is the idempotency record: the retried reserve changes nothing.
            let items = [OrderItem { product_id: 2, quantity: 3 }];
            inventory.reserve(&order("o-1"), &items, "res-1").await.expect("replays");
            assert_eq!(inventory.products().iter().find(|p| p.product_id == 2).map(|p| p.reserved), Some(3));
        }
        assert!(!dir.path().join("inventory").exists(), "the old folder is renamed");
        assert!(dir.path().join("inventory.migrated").join("db").is_file(), "and kept");
        assert!(dir.path().join(STORE_DIR).join("db").is_file());
    }

    #[tokio::test]
    async fn a_copy_cut_short_is_done_again_and_a_tree_with_other_data_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        old_inventory(dir.path()).await;
        {
            // A crash after the first batch: the mark says the tree's data is a partial copy.
            let store = WorkerStore::open(dir.path(), Durability::PowerSafe).expect("opens");
            let tree = store.opened.db.open_tree("inventory").expect("opens the tree");
            tree.insert(MIGRATING_KEY, &[]).expect("marks");
        }
        let store = WorkerStore::open(dir.path(), Durability::PowerSafe).expect("opens");
        let inventory = Inventory::open(store.domain("inventory").expect("copies again")).expect("loads");
        assert_eq!(inventory.products().iter().find(|p| p.product_id == 1).map(|p| p.stock), Some(7));
        drop((inventory, store));

        // An old folder appearing beside a tree that already holds the new layout's data.
        let other = tempfile::tempdir().expect("temp dir");
        {
            let store = WorkerStore::open(other.path(), Durability::PowerSafe).expect("opens");
            Inventory::open(store.domain("inventory").expect("nothing to move")).expect("seeds");
        }
        old_inventory(other.path()).await;
        let store = WorkerStore::open(other.path(), Durability::PowerSafe).expect("opens");
        let refused = store.domain("inventory");
        assert!(matches!(refused, Err(Error::Migration { .. })), "{refused:?}");
        assert!(other.path().join("inventory").join("db").is_file(), "the old store is left alone");
    }
}
