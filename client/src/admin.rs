//! Typed calls of a worker's admin API: stock, payments, notifications, faults, health.
//!
//! The admin API takes the engine's admin credentials, so a client built with the engine's
//! admin token serves both ([`Client::at`] points it at a worker). This module never
//! interprets an answer beyond decoding it.

use crate::{Client, Error, Reply};
use shop_types::order::{FaultConfig, NotificationEntry, PaymentEntry, Product, SetStockRequest};

impl Client {
    /// `GET /stock`.
    pub async fn stock(&self) -> Result<Reply<Vec<Product>>, Error> {
        self.get(&["stock"], &[]).await
    }

    /// `PUT /stock/{id}`: sets a product's available units (creating it if new).
    pub async fn set_stock(&self, product_id: i64, request: &SetStockRequest) -> Result<Reply<Product>, Error> {
        self.put_json(&["stock", &product_id.to_string()], request).await
    }

    /// `GET /payments`: the ledger.
    pub async fn payments(&self) -> Result<Reply<Vec<PaymentEntry>>, Error> {
        self.get(&["payments"], &[]).await
    }

    /// `GET /notifications`: the outbox.
    pub async fn notifications(&self) -> Result<Reply<Vec<NotificationEntry>>, Error> {
        self.get(&["notifications"], &[]).await
    }

    /// `GET /faults`.
    pub async fn faults(&self) -> Result<Reply<FaultConfig>, Error> {
        self.get(&["faults"], &[]).await
    }

    /// `PUT /faults`.
    pub async fn set_faults(&self, faults: &FaultConfig) -> Result<Reply<FaultConfig>, Error> {
        self.put_json(&["faults"], faults).await
    }
}
