//! Unit tests of the inventory's operations on a temporary store.

use super::*;

fn order(id: &str) -> WorkflowId {
    WorkflowId::parse(id).expect("valid order id")
}

fn items(lines: &[(i64, i64)]) -> Vec<OrderItem> {
    lines.iter().map(|&(product_id, quantity)| OrderItem { product_id, quantity }).collect()
}

fn product(inventory: &Inventory, id: i64) -> Product {
    inventory.products().into_iter().find(|p| p.product_id == id).expect("product exists")
}

#[tokio::test]
async fn a_fresh_store_has_the_catalog_and_seeds_it_once() {
    let db = store::temporary();
    let inventory = Inventory::open(db.clone()).expect("opens");
    let products = inventory.products();
    assert_eq!(products.len(), 10);
    assert!(products.iter().all(|p| p.stock == 100 && p.reserved == 0));
    assert_eq!(products.iter().map(|p| p.product_id).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    inventory.set_stock(1, &SetStockRequest { units: 5, name: None, price_cents: None }).await.expect("sets");
    drop(inventory);
    let reopened = Inventory::open(db).expect("reopens");
    assert_eq!(product(&reopened, 1).stock, 5, "a reopen must not re-seed");
}

#[tokio::test]
async fn reserving_twice_has_one_effect_and_the_same_output() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    let price = product(&inventory, 2).price_cents;
    let first = inventory.reserve(&order("o-1"), &items(&[(2, 3)]), "k1").await.expect("reserves");
    let second = inventory.reserve(&order("o-1"), &items(&[(2, 3)]), "k1").await.expect("replays");
    assert_eq!(first, second);
    assert_eq!(first.total_cents, 3 * price);
    let p = product(&inventory, 2);
    assert_eq!((p.stock, p.reserved), (97, 3));
}

#[tokio::test]
async fn out_of_stock_changes_nothing_on_any_line() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    let err =
        inventory.reserve(&order("o-1"), &items(&[(1, 5), (2, 101)]), "k").await.expect_err("product 2 has only 100");
    assert!(matches!(err, Error::OutOfStock { product_id: 2, available: 100, requested: 101 }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("product 2"), "{err}");
    assert_eq!(product(&inventory, 1).stock, 100);
    assert_eq!(product(&inventory, 1).reserved, 0);
    // The refused order left no record: a later reserve of fewer units succeeds.
    inventory.reserve(&order("o-1"), &items(&[(2, 100)]), "k").await.expect("now fits");
}

#[tokio::test]
async fn lines_of_one_product_are_checked_together_so_stock_never_goes_negative() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    let err = inventory.reserve(&order("o-1"), &items(&[(3, 60), (3, 60)]), "k").await.expect_err("120 of 100");
    assert!(matches!(err, Error::OutOfStock { requested: 120, .. }), "{err}");
    inventory.reserve(&order("o-2"), &items(&[(3, 100)]), "k2").await.expect("exactly all");
    let err = inventory.reserve(&order("o-3"), &items(&[(3, 1)]), "k3").await.expect_err("nothing left");
    assert!(matches!(err, Error::OutOfStock { available: 0, .. }), "{err}");
    assert!(inventory.products().iter().all(|p| p.stock >= 0 && p.reserved >= 0));
}

#[tokio::test]
async fn release_before_reserve_refuses_the_late_reserve() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    inventory.release(&order("o-1"), "rel").await.expect("tombstone");
    let err = inventory.reserve(&order("o-1"), &items(&[(1, 1)]), "res").await.expect_err("already released");
    assert_eq!(err.error_type(), ALREADY_RELEASED);
    assert!(!err.is_retryable());
    assert_eq!(product(&inventory, 1).stock, 100);
    inventory.release(&order("o-1"), "rel").await.expect("no-op");
}

#[tokio::test]
async fn release_returns_held_units_once() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    inventory.reserve(&order("o-1"), &items(&[(4, 10)]), "res").await.expect("reserves");
    inventory.release(&order("o-1"), "rel").await.expect("releases");
    inventory.release(&order("o-1"), "rel").await.expect("no-op");
    let p = product(&inventory, 4);
    assert_eq!((p.stock, p.reserved), (100, 0));
    let err = inventory.commit(&order("o-1"), "com").await.expect_err("released");
    assert_eq!(err.error_type(), NOT_RESERVED);
}

#[tokio::test]
async fn commit_sells_held_units_once_and_blocks_release() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    inventory.reserve(&order("o-1"), &items(&[(5, 7)]), "res").await.expect("reserves");
    inventory.commit(&order("o-1"), "com").await.expect("commits");
    inventory.commit(&order("o-1"), "com").await.expect("no-op");
    let p = product(&inventory, 5);
    assert_eq!((p.stock, p.reserved), (93, 0));
    let err = inventory.release(&order("o-1"), "rel").await.expect_err("sold");
    assert_eq!(err.error_type(), ALREADY_COMMITTED);
    let replay =
        inventory.reserve(&order("o-1"), &items(&[(5, 7)]), "res").await.expect("a late reserve replays the output");
    assert_eq!(replay.total_cents, 7 * p.price_cents);
    let err = inventory.commit(&order("o-2"), "com").await.expect_err("never reserved");
    assert_eq!(err.error_type(), NOT_RESERVED);
}

#[tokio::test]
async fn bad_lines_and_unknown_products_are_permanent() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    for lines in [vec![], vec![(1, 0)], vec![(1, -1)], vec![(1, MAX_LINE_QUANTITY + 1)]] {
        let err = inventory.reserve(&order("o-1"), &items(&lines), "k").await.expect_err("bad input");
        assert_eq!(err.error_type(), errors::BAD_INPUT, "{lines:?}");
    }
    let err = inventory.reserve(&order("o-1"), &items(&[(1, 1), (999, 1)]), "k").await.expect_err("unknown");
    assert_eq!(err.error_type(), errors::UNKNOWN_PRODUCT);
    assert_eq!(product(&inventory, 1).stock, 100);
}

#[tokio::test]
async fn reservations_survive_a_reopen() {
    let db = store::temporary();
    let inventory = Inventory::open(db.clone()).expect("opens");
    inventory.reserve(&order("o-1"), &items(&[(6, 2)]), "res").await.expect("reserves");
    drop(inventory);
    let reopened = Inventory::open(db).expect("reopens");
    reopened.release(&order("o-1"), "rel").await.expect("releases");
    assert_eq!(product(&reopened, 6).stock, 100);
}

#[tokio::test]
async fn set_stock_creates_products_and_checks_bounds() {
    let inventory = Inventory::open(store::temporary()).expect("opens");
    let created =
        inventory.set_stock(42, &SetStockRequest { units: 7, name: None, price_cents: None }).await.expect("creates");
    assert_eq!(created.name, "Product 42");
    assert_eq!(created.price_cents, DEFAULT_PRICE_CENTS);
    assert_eq!(created.stock, 7);
    for units in [-1, MAX_STOCK_UNITS + 1] {
        let err = inventory
            .set_stock(42, &SetStockRequest { units, name: None, price_cents: None })
            .await
            .expect_err("out of range");
        assert!(matches!(err, Error::BadInput(_)));
    }
    inventory
        .set_stock(42, &SetStockRequest { units: MAX_STOCK_UNITS, name: None, price_cents: None })
        .await
        .expect("the edge is allowed");
}
