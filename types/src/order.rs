//! The shop's order messages: the seed-compatible order API and the payloads its activities
//! exchange. The engine's generic core never reads these; only its thin order API, the
//! workers and the CLI do.

use serde::{Deserialize, Serialize};

/// The workflow type that runs an order.
pub const ORDER_WORKFLOW_TYPE: &str = "order";

/// Activity error types the shop's workers report.
pub mod errors {
    /// Not enough stock for a line: permanent.
    pub const OUT_OF_STOCK: &str = "OUT_OF_STOCK";
    /// A line names a product the inventory does not have: permanent.
    pub const UNKNOWN_PRODUCT: &str = "UNKNOWN_PRODUCT";
    /// The card was declined: permanent.
    pub const PAYMENT_DECLINED: &str = "PAYMENT_DECLINED";
    /// The payment provider failed for now: retryable.
    pub const PAYMENT_UNAVAILABLE: &str = "PAYMENT_UNAVAILABLE";
    /// The task's input could not be understood: permanent.
    pub const BAD_INPUT: &str = "BAD_INPUT";
    /// The activity name is not served by this worker: permanent.
    pub const UNKNOWN_ACTIVITY: &str = "UNKNOWN_ACTIVITY";
}

/// The payment method the fake provider always declines.
pub const DECLINED_PAYMENT_METHOD: &str = "DECLINED";

/// One order line, as the seed API spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    pub product_id: i64,
    pub quantity: i64,
}

/// `POST /api/orders` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrderRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub order_items: Vec<OrderItem>,
    #[serde(default)]
    pub shipping_address: String,
    pub payment_method: String,
}

/// The order workflow's input, as the order API builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderInput {
    pub order_id: String,
    pub order_items: Vec<OrderItem>,
    pub shipping_address: String,
    pub payment_method: String,
}

/// An order as `GET /api/orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: String,
    /// `PENDING`, `CONFIRMED` or `CANCELLED` (or `FAILED` when compensation itself failed).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub order_items: Vec<OrderItem>,
    pub shipping_address: String,
    pub payment_method: String,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Output of `inventory.reserve`: what was reserved and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveOutput {
    pub total_cents: i64,
}

/// Output of `payment.charge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeOutput {
    pub amount_cents: i64,
}

/// A product as the inventory worker's admin API and `shopctl stock list --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub product_id: i64,
    pub name: String,
    pub price_cents: i64,
    /// Units available to new orders.
    pub stock: i64,
    /// Units held by orders that are not final yet.
    pub reserved: i64,
}

/// `PUT /stock/{productId}` on the worker's admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetStockRequest {
    pub units: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub price_cents: Option<i64>,
}

/// One entry of the payment ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentEntry {
    pub order_id: String,
    /// `charge` or `refund`.
    pub kind: String,
    pub amount_cents: i64,
    pub idempotency_key: String,
}

/// One entry of the notification outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationEntry {
    pub order_id: String,
    /// e.g. `ORDER_CONFIRMED`, `ORDER_CANCELLED`.
    pub kind: String,
    pub message: String,
}

/// Faults the worker injects, for tests and demos (`PUT /faults` on its admin API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Fail this many `payment.charge` calls with a retryable error before letting one through.
    #[serde(default)]
    pub payment_fail_next: u32,
    /// Probability (0..=1) that a `payment.charge` call fails with a retryable error.
    #[serde(default)]
    pub payment_failure_rate: f64,
    /// Extra latency added to every activity, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Make the next this-many `payment.charge` calls hang this long before doing the work.
    #[serde(default)]
    pub payment_hang_next: u32,
    #[serde(default)]
    pub payment_hang_ms: u64,
    /// Make the next this-many `payment.charge` calls hang `payment_hang_ms` AFTER charging,
    /// before reporting: a worker that dies then has done the effect without telling anyone.
    #[serde(default)]
    pub payment_hang_after_next: u32,
    /// Fail the next this-many `payment.refund` calls with a retryable error (a compensation
    /// that keeps failing).
    #[serde(default)]
    pub refund_fail_next: u32,
    /// Orders shipped to this address make `inventory.reserve` panic: a poison pill, the way
    /// a bug that trips on one input looks to the engine.
    #[serde(default)]
    pub poison_address: Option<String>,
}
