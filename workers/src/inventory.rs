//! The inventory domain: products (price, available and reserved units) and one reservation
//! per order, owned in memory and persisted in the inventory's own sled store.
//!
//! Every change is one atomic `apply_batch` holding the products it touches together with the
//! order's reservation record, which doubles as the idempotency record: a retried reserve,
//! release or commit finds it and changes nothing. The memory is updated only after the batch
//! is written, and every call flushes before it returns, so nothing is reported that a crash
//! could take back. This module must never let available or reserved units go negative,
//! and never speaks HTTP.

use crate::store;
use serde::{Deserialize, Serialize};
use shop_types::limits::{MAX_LINE_QUANTITY, MAX_ORDER_LINES};
use shop_types::order::{errors, OrderItem, Product, ReserveOutput, SetStockRequest};
use shop_types::WorkflowId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

/// A late reserve after the saga already released the order.
pub const ALREADY_RELEASED: &str = "ALREADY_RELEASED";
/// A release after the order was confirmed: the units are sold.
pub const ALREADY_COMMITTED: &str = "ALREADY_COMMITTED";
/// A commit for an order that holds no reservation.
pub const NOT_RESERVED: &str = "NOT_RESERVED";

/// Largest stock an admin may set for one product; keeps every sum far from `i64` overflow.
pub const MAX_STOCK_UNITS: i64 = 1_000_000_000;
/// Largest price an admin may set for one product, in cents.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;
/// Longest product name an admin may set.
pub const MAX_PRODUCT_NAME_BYTES: usize = 200;
/// Price given to a product created by a stock update that names none.
pub const DEFAULT_PRICE_CENTS: i64 = 1000;

/// Units of each catalog product in a fresh store.
const CATALOG_UNITS: i64 = 100;
/// The catalog a fresh store starts with: (name, price in cents) for products 1, 2, ...
const CATALOG: [(&str, i64); 10] = [
    ("Espresso Beans 1kg", 2499),
    ("Ceramic Pour-Over Dripper", 3450),
    ("Gooseneck Kettle", 5999),
    ("Burr Coffee Grinder", 12900),
    ("Paper Filters (100)", 699),
    ("Insulated Travel Mug", 2250),
    ("Digital Kitchen Scale", 2799),
    ("Cold Brew Jar", 1999),
    ("Milk Frother", 3999),
    ("Stoneware Mug Set", 3200),
];

const PRODUCT_PREFIX: u8 = b'p';
const RESERVATION_PREFIX: u8 = b'r';
/// Present once the catalog was seeded, so it is seeded exactly once even if the first
/// start crashed half-way.
const SEEDED_KEY: &[u8] = b"m:catalog-seeded";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("unknown product {0}")]
    UnknownProduct(i64),
    #[error("out of stock: product {product_id} has {available} available, {requested} requested")]
    OutOfStock { product_id: i64, available: i64, requested: i64 },
    #[error("the reservation of order {0} was already released")]
    AlreadyReleased(WorkflowId),
    #[error("the reservation of order {0} was already committed")]
    AlreadyCommitted(WorkflowId),
    #[error("order {0} holds no reservation to commit")]
    NotReserved(WorkflowId),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// The stable error type reported to the engine.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadInput(_) => errors::BAD_INPUT,
            Error::UnknownProduct(_) => errors::UNKNOWN_PRODUCT,
            Error::OutOfStock { .. } => errors::OUT_OF_STOCK,
            Error::AlreadyReleased(_) => ALREADY_RELEASED,
            Error::AlreadyCommitted(_) => ALREADY_COMMITTED,
            Error::NotReserved(_) => NOT_RESERVED,
            Error::Store(_) => crate::activities::STORE_UNAVAILABLE,
        }
    }

    /// Only a failing store may heal by itself; every other failure is the order's fate.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProductRecord {
    product_id: i64,
    name: String,
    price_cents: i64,
    stock: i64,
    reserved: i64,
}

impl ProductRecord {
    fn view(&self) -> Product {
        Product {
            product_id: self.product_id,
            name: self.name.clone(),
            price_cents: self.price_cents,
            stock: self.stock,
            reserved: self.reserved,
        }
    }

    fn key(&self) -> [u8; 9] {
        product_key(self.product_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ReservationState {
    Held,
    Committed,
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    product_id: i64,
    quantity: i64,
}

/// One order's reservation, and the idempotency record of every inventory call for it.
/// A release that finds no reservation writes a `Released` one with no lines (a tombstone),
/// so a reserve attempt arriving after the compensation is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reservation {
    order_id: String,
    state: ReservationState,
    lines: Vec<Line>,
    total_cents: i64,
    /// The idempotency key of the call that last changed the state, for audits.
    last_key: String,
}

impl Reservation {
    fn key(&self) -> Vec<u8> {
        store::text_key(RESERVATION_PREFIX, &self.order_id)
    }
}

#[derive(Debug, Default)]
struct State {
    products: BTreeMap<i64, ProductRecord>,
    reservations: HashMap<String, Reservation>,
}

/// The inventory: cheap to share behind an `Arc`; all calls are safe from many tasks.
#[derive(Debug)]
pub struct Inventory {
    db: sled::Db,
    flusher: store::Flusher,
    state: Mutex<State>,
}

impl Inventory {
    /// Loads the products and reservations of `db`, seeding the default catalog into a store
    /// that has never been seeded.
    pub fn open(opened: store::Opened) -> Result<Self, store::Error> {
        let flusher = store::flusher(&opened, "inventory")?;
        let db = opened.db;
        if db.get(SEEDED_KEY)?.is_none() {
            let mut batch = sled::Batch::default();
            for (index, (name, price_cents)) in (1..).zip(CATALOG) {
                let product = ProductRecord {
                    product_id: index,
                    name: name.to_owned(),
                    price_cents,
                    stock: CATALOG_UNITS,
                    reserved: 0,
                };
                batch.insert(&product.key(), store::encode(&product)?);
            }
            batch.insert(SEEDED_KEY, store::encode(&())?);
            db.apply_batch(batch)?;
        }
        let mut state = State::default();
        for product in store::scan::<ProductRecord>(&db, &[PRODUCT_PREFIX])? {
            check_product(&product)?;
            state.products.insert(product.product_id, product);
        }
        for reservation in store::scan::<Reservation>(&db, &[RESERVATION_PREFIX])? {
            state.reservations.insert(reservation.order_id.clone(), reservation);
        }
        Ok(Inventory { db, flusher, state: Mutex::new(state) })
    }

    /// `inventory.reserve`: holds every line of the order, or none.
    pub async fn reserve(
        &self,
        order_id: &WorkflowId,
        items: &[OrderItem],
        idempotency_key: &str,
    ) -> Result<ReserveOutput, Error> {
        let outcome = self.reserve_now(order_id, items, idempotency_key);
        self.flush().await?;
        outcome
    }

    fn reserve_now(
        &self,
        order_id: &WorkflowId,
        items: &[OrderItem],
        idempotency_key: &str,
    ) -> Result<ReserveOutput, Error> {
        let wanted = aggregate_lines(items)?;
        let mut state = self.lock();
        if let Some(existing) = state.reservations.get(order_id.as_str()) {
            return match existing.state {
                ReservationState::Held | ReservationState::Committed => {
                    Ok(ReserveOutput { total_cents: existing.total_cents })
                }
                ReservationState::Released => Err(Error::AlreadyReleased(order_id.clone())),
            };
        }
        let mut changed = Vec::with_capacity(wanted.len());
        let mut total_cents: i64 = 0;
        for (&product_id, &quantity) in &wanted {
            let product = state.products.get(&product_id).ok_or(Error::UnknownProduct(product_id))?;
            if product.stock < quantity {
                return Err(Error::OutOfStock { product_id, available: product.stock, requested: quantity });
            }
            let mut updated = product.clone();
            updated.stock -= quantity;
            updated.reserved = updated
                .reserved
                .checked_add(quantity)
                .ok_or_else(|| Error::BadInput(format!("product {product_id} cannot hold more reserved units")))?;
            total_cents = quantity
                .checked_mul(product.price_cents)
                .and_then(|line| total_cents.checked_add(line))
                .ok_or_else(|| Error::BadInput("the order total overflows".to_owned()))?;
            changed.push(updated);
        }
        let reservation = Reservation {
            order_id: order_id.to_string(),
            state: ReservationState::Held,
            lines: wanted.iter().map(|(&product_id, &quantity)| Line { product_id, quantity }).collect(),
            total_cents,
            last_key: idempotency_key.to_owned(),
        };
        self.write(&mut state, changed, reservation)?;
        Ok(ReserveOutput { total_cents })
    }

    /// `inventory.release`, the compensation of a reserve: gives held units back.
    pub async fn release(&self, order_id: &WorkflowId, idempotency_key: &str) -> Result<(), Error> {
        let outcome = self.release_now(order_id, idempotency_key);
        self.flush().await?;
        outcome
    }

    fn release_now(&self, order_id: &WorkflowId, idempotency_key: &str) -> Result<(), Error> {
        let mut state = self.lock();
        let existing = state.reservations.get(order_id.as_str()).cloned();
        match existing {
            None => {
                let tombstone = Reservation {
                    order_id: order_id.to_string(),
                    state: ReservationState::Released,
                    lines: Vec::new(),
                    total_cents: 0,
                    last_key: idempotency_key.to_owned(),
                };
                self.write(&mut state, Vec::new(), tombstone)
            }
            Some(reservation) => match reservation.state {
                ReservationState::Released => Ok(()),
                ReservationState::Committed => Err(Error::AlreadyCommitted(order_id.clone())),
                ReservationState::Held => {
                    let changed = reservation
                        .lines
                        .iter()
                        .map(|line| {
                            let mut product = held_product(&state, line)?;
                            product.reserved -= line.quantity;
                            product.stock += line.quantity;
                            Ok(product)
                        })
                        .collect::<Result<Vec<_>, Error>>()?;
                    let released = Reservation {
                        state: ReservationState::Released,
                        last_key: idempotency_key.to_owned(),
                        ..reservation
                    };
                    self.write(&mut state, changed, released)
                }
            },
        }
    }

    /// `inventory.commit`, the order's pivot: the held units are sold.
    pub async fn commit(&self, order_id: &WorkflowId, idempotency_key: &str) -> Result<(), Error> {
        let outcome = self.commit_now(order_id, idempotency_key);
        self.flush().await?;
        outcome
    }

    fn commit_now(&self, order_id: &WorkflowId, idempotency_key: &str) -> Result<(), Error> {
        let mut state = self.lock();
        let existing = state.reservations.get(order_id.as_str()).cloned();
        match existing {
            Some(reservation) if reservation.state == ReservationState::Held => {
                let changed = reservation
                    .lines
                    .iter()
                    .map(|line| {
                        let mut product = held_product(&state, line)?;
                        product.reserved -= line.quantity;
                        Ok(product)
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let committed = Reservation {
                    state: ReservationState::Committed,
                    last_key: idempotency_key.to_owned(),
                    ..reservation
                };
                self.write(&mut state, changed, committed)
            }
            Some(reservation) if reservation.state == ReservationState::Committed => Ok(()),
            _ => Err(Error::NotReserved(order_id.clone())),
        }
    }

    /// Every product, sorted by id.
    pub fn products(&self) -> Vec<Product> {
        self.lock().products.values().map(ProductRecord::view).collect()
    }

    /// Sets a product's available units (creating the product when new), durably.
    pub async fn set_stock(&self, product_id: i64, request: &SetStockRequest) -> Result<Product, Error> {
        let outcome = self.set_stock_now(product_id, request);
        self.flush().await?;
        outcome
    }

    fn set_stock_now(&self, product_id: i64, request: &SetStockRequest) -> Result<Product, Error> {
        if product_id < 1 {
            return Err(Error::BadInput(format!("product id must be positive, got {product_id}")));
        }
        if !(0..=MAX_STOCK_UNITS).contains(&request.units) {
            return Err(Error::BadInput(format!("units must be 0..={MAX_STOCK_UNITS}, got {}", request.units)));
        }
        if let Some(price) = request.price_cents {
            if !(0..=MAX_PRICE_CENTS).contains(&price) {
                return Err(Error::BadInput(format!("priceCents must be 0..={MAX_PRICE_CENTS}, got {price}")));
            }
        }
        if let Some(name) = &request.name {
            if name.trim().is_empty() || name.len() > MAX_PRODUCT_NAME_BYTES {
                return Err(Error::BadInput(format!("name must be 1..={MAX_PRODUCT_NAME_BYTES} bytes and not blank")));
            }
        }
        let mut state = self.lock();
        let mut product = state.products.get(&product_id).cloned().unwrap_or_else(|| ProductRecord {
            product_id,
            name: format!("Product {product_id}"),
            price_cents: DEFAULT_PRICE_CENTS,
            stock: 0,
            reserved: 0,
        });
        product.stock = request.units;
        if let Some(name) = &request.name {
            product.name = name.clone();
        }
        if let Some(price) = request.price_cents {
            product.price_cents = price;
        }
        let mut batch = sled::Batch::default();
        batch.insert(&product.key(), store::encode(&product)?);
        self.db.apply_batch(batch).map_err(store::Error::from)?;
        let view = product.view();
        state.products.insert(product_id, product);
        Ok(view)
    }

    pub async fn flush(&self) -> Result<(), store::Error> {
        Ok(self.flusher.flush().await?)
    }

    /// Writes the changed products and the reservation in one batch, then mirrors them in
    /// memory. Called with the lock held so sled and memory see changes in the same order.
    fn write(&self, state: &mut State, products: Vec<ProductRecord>, reservation: Reservation) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for product in &products {
            check_product(product)?;
            batch.insert(&product.key(), store::encode(product)?);
        }
        batch.insert(reservation.key(), store::encode(&reservation)?);
        self.db.apply_batch(batch).map_err(store::Error::from)?;
        for product in products {
            state.products.insert(product.product_id, product);
        }
        state.reservations.insert(reservation.order_id.clone(), reservation);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("no code panics while holding the inventory lock")
    }
}

fn product_key(product_id: i64) -> [u8; 9] {
    // Product ids are positive (checked where they enter), so the cast keeps their order.
    store::number_key(PRODUCT_PREFIX, product_id.unsigned_abs())
}

/// The product a held line reserved units of, which must still hold them.
fn held_product(state: &State, line: &Line) -> Result<ProductRecord, Error> {
    let product = state.products.get(&line.product_id).ok_or_else(|| store::Error::Corrupt {
        key: format!("product {}", line.product_id),
        reason: "a held reservation names a product that does not exist".to_owned(),
    })?;
    if product.reserved < line.quantity {
        return Err(store::Error::Corrupt {
            key: format!("product {}", line.product_id),
            reason: format!("{} reserved units, but a held reservation counts {}", product.reserved, line.quantity),
        }
        .into());
    }
    Ok(product.clone())
}

/// Validates the order's lines and sums the quantities per product, so two lines of the same
/// product are checked against its stock together.
fn aggregate_lines(items: &[OrderItem]) -> Result<BTreeMap<i64, i64>, Error> {
    if items.is_empty() || items.len() > MAX_ORDER_LINES {
        return Err(Error::BadInput(format!("an order has 1..={MAX_ORDER_LINES} lines, got {}", items.len())));
    }
    let mut wanted = BTreeMap::new();
    for item in items {
        if !(1..=MAX_LINE_QUANTITY).contains(&item.quantity) {
            return Err(Error::BadInput(format!(
                "quantity of product {} must be 1..={MAX_LINE_QUANTITY}, got {}",
                item.product_id, item.quantity
            )));
        }
        if item.product_id < 1 {
            return Err(Error::UnknownProduct(item.product_id));
        }
        *wanted.entry(item.product_id).or_insert(0) += item.quantity;
    }
    Ok(wanted)
}

/// Asserts a product before it is written and after it is read.
fn check_product(product: &ProductRecord) -> Result<(), store::Error> {
    if product.product_id < 1 || product.stock < 0 || product.reserved < 0 || product.price_cents < 0 {
        return Err(store::Error::Corrupt {
            key: format!("product {}", product.product_id),
            reason: format!(
                "negative values: stock {}, reserved {}, price {}",
                product.stock, product.reserved, product.price_cents
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        let err = inventory
            .reserve(&order("o-1"), &items(&[(1, 5), (2, 101)]), "k")
            .await
            .expect_err("product 2 has only 100");
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
        let replay = inventory
            .reserve(&order("o-1"), &items(&[(5, 7)]), "res")
            .await
            .expect("a late reserve replays the output");
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
        let created = inventory
            .set_stock(42, &SetStockRequest { units: 7, name: None, price_cents: None })
            .await
            .expect("creates");
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
}
