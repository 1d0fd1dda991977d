//! The inventory's records as they are stored and held in memory: products, reservations
//! (which double as idempotency records) and their keys, with the check every product
//! passes before it is written and after it is read. This module must never change a
//! record: the operations in the parent module do that, in one batch each.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ProductRecord {
    pub(super) product_id: i64,
    pub(super) name: String,
    pub(super) price_cents: i64,
    pub(super) stock: i64,
    pub(super) reserved: i64,
}

impl ProductRecord {
    pub(super) fn view(&self) -> Product {
        Product {
            product_id: self.product_id,
            name: self.name.clone(),
            price_cents: self.price_cents,
            stock: self.stock,
            reserved: self.reserved,
        }
    }

    pub(super) fn key(&self) -> [u8; 9] {
        product_key(self.product_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum ReservationState {
    Held,
    Committed,
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Line {
    pub(super) product_id: i64,
    pub(super) quantity: i64,
}

/// One order's reservation, and the idempotency record of every inventory call for it.
/// A release that finds no reservation writes a `Released` one with no lines (a tombstone),
/// so a reserve attempt arriving after the compensation is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Reservation {
    pub(super) order_id: String,
    pub(super) state: ReservationState,
    pub(super) lines: Vec<Line>,
    pub(super) total_cents: i64,
    /// The idempotency key of the call that last changed the state, for audits.
    pub(super) last_key: String,
}

impl Reservation {
    pub(super) fn key(&self) -> Vec<u8> {
        store::text_key(RESERVATION_PREFIX, &self.order_id)
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) products: BTreeMap<i64, ProductRecord>,
    pub(super) reservations: HashMap<String, Reservation>,
}

pub(super) fn product_key(product_id: i64) -> [u8; 9] {
    // Product ids are positive (checked where they enter), so the cast keeps their order.
    store::number_key(PRODUCT_PREFIX, product_id.unsigned_abs())
}

/// Asserts a product before it is written and after it is read.
pub(super) fn check_product(product: &ProductRecord) -> Result<(), store::Error> {
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
