//! The inventory domain: products (price, available and reserved units) and one reservation
//! per order, owned in memory and persisted in the inventory's own sled store.
//!
//! Every change is one atomic batch holding the products it touches together with the
//! order's reservation record, which doubles as the idempotency record: a retried reserve,
//! release or commit finds it and changes nothing. The batch is handed to the store's flusher
//! (which applies every batch of a group in one write before its sync) under the lock that
//! orders the memory, and every call flushes before it returns, so nothing is reported that a
//! crash could take back. This module must never let available or reserved units go negative,
//! and never speaks HTTP.

use crate::store;
use serde::{Deserialize, Serialize};
use shop_types::limits::{MAX_LINE_QUANTITY, MAX_ORDER_LINES};
use shop_types::order::{errors, OrderItem, Product, ReserveOutput, SetStockRequest};
use shop_types::WorkflowId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

mod records;

use records::*;

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

/// The inventory: cheap to share behind an `Arc`; all calls are safe from many tasks.
#[derive(Debug)]
pub struct Inventory {
    db: sled::Tree,
    flusher: std::sync::Arc<store::Flusher>,
    state: Mutex<State>,
}

impl Inventory {
    /// Loads the products and reservations of `db`, seeding the default catalog into a store
    /// that has never been seeded.
    pub fn open(opened: store::DomainStore) -> Result<Self, store::Error> {
        let store::DomainStore { tree: db, flusher, store } = opened;
        if db.get(SEEDED_KEY)?.is_none() {
            // Written directly, so synced here: before anything the flusher logs after it.
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
            store.sync()?;
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
        let mut batch = shop_durable::LogBatch::default();
        batch.insert(product.key(), store::encode(&product)?);
        self.flusher.write(&self.db, batch).map_err(store::Error::from)?;
        let view = product.view();
        state.products.insert(product_id, product);
        Ok(view)
    }

    pub async fn flush(&self) -> Result<(), store::Error> {
        store::flush(&self.flusher, crate::activities::Domain::Inventory.as_str()).await
    }

    /// Hands the changed products and the reservation to the flusher as one batch, then
    /// mirrors them in memory. Called with the lock held so sled and memory see changes in the
    /// same order; the caller flushes before it answers.
    fn write(&self, state: &mut State, products: Vec<ProductRecord>, reservation: Reservation) -> Result<(), Error> {
        let mut batch = shop_durable::LogBatch::default();
        for product in &products {
            check_product(product)?;
            batch.insert(product.key(), store::encode(product)?);
        }
        batch.insert(reservation.key(), store::encode(&reservation)?);
        self.flusher.write(&self.db, batch).map_err(store::Error::from)?;
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

#[cfg(test)]
mod tests;
