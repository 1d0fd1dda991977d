//! The shop's order messages: the seed-compatible order API and the payloads its activities
//! exchange. The engine's generic core never reads these; only its thin order API, the
//! workers and the CLI do.

use crate::ids::CustomerId;
use crate::limits::{MAX_LINE_QUANTITY, MAX_ORDER_LINES, MAX_SHIPPING_ADDRESS_BYTES};
use serde::{Deserialize, Serialize};

/// The workflow type that runs an order.
pub const ORDER_WORKFLOW_TYPE: &str = "order";

/// [`ORDER_WORKFLOW_TYPE`] as a typed name.
pub fn order_workflow_type() -> crate::ids::WorkflowType {
    // A constant, not input: the unit test below proves it valid.
    crate::ids::WorkflowType::parse(ORDER_WORKFLOW_TYPE).expect("ORDER_WORKFLOW_TYPE is a valid workflow type")
}

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
    /// The fraud check refused the order (`risk.score`): permanent.
    pub const FRAUD_SUSPECTED: &str = "FRAUD_SUSPECTED";
}

/// The payment method the fake provider always declines.
pub const DECLINED_PAYMENT_METHOD: &str = "DECLINED";

/// The payment methods the shop takes; an order naming any other is refused (422) before a
/// run starts, so nothing is charged for a method nobody offers.
pub const PAYMENT_METHODS: &[&str] =
    &["CREDIT_CARD", "DEBIT_CARD", "PAYPAL", "BANK_TRANSFER", CARD_3DS, DECLINED_PAYMENT_METHOD];

/// A card charged, then confirmed by the customer's 3-D Secure answer (signals
/// `payment_confirmed` / `payment_failed` in `workflows/order-v2.toml`).
pub const CARD_3DS: &str = "CARD_3DS";
/// Paid by bank transfer: nothing is charged; the order waits for `payment_received`. The
/// money comes outside the payment worker, so the ledger holds no entry for such an order
/// (see [`charges_in_ledger`]).
pub const BANK_TRANSFER: &str = "BANK_TRANSFER";

/// The payment methods order v2 sends through the fraud check (`risk.score`): those the
/// shop cannot pull back through a card network. Must match the `when` of `fraud_check` in
/// `workflows/order-v2.toml` (a test reads the file and checks).
pub const FRAUD_SCREENED_PAYMENT_METHODS: &[&str] = &["PAYPAL", BANK_TRANSFER];
/// Total units above which an order is large enough for its address to matter (the fraud
/// check's rule, `large-order-to-flagged-address`).
pub const FRAUD_QUANTITY_THRESHOLD: i64 = 50;
/// Words (matched case-insensitively anywhere in the shipping address) of the places that
/// large fraudulent orders are typically shipped to.
pub const FLAGGED_ADDRESS_WORDS: [&str; 3] = ["po box", "forwarding", "drop point"];

/// Whether the payment worker's ledger carries the money of an order paid with `method`:
/// every method but [`BANK_TRANSFER`], whose money the bank reports by signal.
pub fn charges_in_ledger(method: &str) -> bool {
    method != BANK_TRANSFER
}

/// The fraud rule: `(total units, flagged word)` when an order has more than
/// [`FRAUD_QUANTITY_THRESHOLD`] units in total and a flagged word in its address.
pub fn fraud_rule_hit(order: &OrderInput) -> Option<(i64, &'static str)> {
    // Saturating: quantities are checked when the order is placed, but this must not
    // overflow on any input a task can carry.
    let total = order.order_items.iter().fold(0i64, |sum, item| sum.saturating_add(item.quantity.max(0)));
    let address = order.shipping_address.to_lowercase();
    let word = FLAGGED_ADDRESS_WORDS.into_iter().find(|word| address.contains(word))?;
    (total > FRAUD_QUANTITY_THRESHOLD).then_some((total, word))
}

/// One order line, as the seed API spells it. Unknown fields are refused (a `priceCents` a
/// client sends would otherwise be silently ignored, and the client might think it counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderItem {
    pub product_id: i64,
    pub quantity: i64,
}

/// `POST /api/orders` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrderRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub order_items: Vec<OrderItem>,
    pub shipping_address: String,
    pub payment_method: String,
    /// The customer the order is for, given by a client token or admin acting for its
    /// customers; a JWT with a `sub` may name only itself (see `api/orders.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
}

/// The order workflow's input, as the order API builds it. Every path that starts an `order`
/// run checks it with [`OrderInput::check`], so a stored order is always readable as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderInput {
    pub order_id: String,
    pub order_items: Vec<OrderItem>,
    pub shipping_address: String,
    pub payment_method: String,
    /// Whose order it is: the notifications of its outcome go to this customer's stream.
    /// Absent on orders without a customer (and on every order placed before customers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
}

/// Why an order is refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct OrderInputError {
    pub field: String,
    pub reason: String,
}

impl OrderInput {
    /// Checks the shop's limits on an order: lines, product ids, quantities, a shipping
    /// address and a payment method the shop takes.
    pub fn check(&self) -> Result<(), OrderInputError> {
        let refuse = |field: String, reason: String| Err(OrderInputError { field, reason });
        let lines = self.order_items.len();
        if !(1..=MAX_ORDER_LINES).contains(&lines) {
            return refuse("orderItems".into(), format!("an order has 1 to {MAX_ORDER_LINES} lines, got {lines}"));
        }
        for (i, item) in self.order_items.iter().enumerate() {
            if item.product_id < 1 {
                return refuse(format!("orderItems[{i}].productId"), "must be a positive product id".into());
            }
            if !(1..=MAX_LINE_QUANTITY).contains(&item.quantity) {
                return refuse(
                    format!("orderItems[{i}].quantity"),
                    format!("must be between 1 and {MAX_LINE_QUANTITY}, got {}", item.quantity),
                );
            }
        }
        if self.shipping_address.trim().is_empty() {
            return refuse("shippingAddress".into(), "is required".into());
        }
        if self.shipping_address.len() > MAX_SHIPPING_ADDRESS_BYTES {
            return refuse("shippingAddress".into(), format!("may be at most {MAX_SHIPPING_ADDRESS_BYTES} bytes"));
        }
        if !PAYMENT_METHODS.contains(&self.payment_method.as_str()) {
            return refuse(
                "paymentMethod".into(),
                format!(
                    "{:?} is not a payment method the shop takes; one of {}",
                    self.payment_method,
                    PAYMENT_METHODS.join(", ")
                ),
            );
        }
        Ok(())
    }
}

/// An order as `GET /api/orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderList {
    pub orders: Vec<OrderView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Output of `inventory.reserve`: what was reserved and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReserveOutput {
    pub total_cents: i64,
}

/// Output of `payment.charge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChargeOutput {
    pub amount_cents: i64,
}

/// A product as the inventory worker's admin API and `shopctl stock list --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NotificationEntry {
    pub order_id: String,
    /// e.g. `ORDER_CONFIRMED`, `ORDER_CANCELLED`.
    pub kind: String,
    pub message: String,
    /// The order's customer, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    /// The entry's place in its customer's stream: 1, 2, 3, ... per customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_seq: Option<u64>,
}

/// Faults the worker injects, for tests and demos (`PUT /faults` on its admin API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_workflow_type_is_a_valid_name() {
        assert_eq!(order_workflow_type().as_str(), ORDER_WORKFLOW_TYPE);
    }

    fn order() -> OrderInput {
        OrderInput {
            order_id: "o-1".into(),
            order_items: vec![OrderItem { product_id: 1, quantity: 2 }],
            shipping_address: "1 Main St".into(),
            payment_method: "CREDIT_CARD".into(),
            customer_id: None,
        }
    }

    fn refused_field(input: &OrderInput) -> String {
        input.check().expect_err("refused").field
    }

    #[test]
    fn a_plain_order_passes_and_every_limit_names_its_field() {
        assert_eq!(order().check(), Ok(()));
        for method in PAYMENT_METHODS {
            assert_eq!(OrderInput { payment_method: (*method).into(), ..order() }.check(), Ok(()));
        }
        assert_eq!(refused_field(&OrderInput { payment_method: "BITCOIN".into(), ..order() }), "paymentMethod");
        assert_eq!(refused_field(&OrderInput { shipping_address: " ".into(), ..order() }), "shippingAddress");
        let longest = "x".repeat(MAX_SHIPPING_ADDRESS_BYTES);
        assert_eq!(OrderInput { shipping_address: longest.clone(), ..order() }.check(), Ok(()));
        let too_long = format!("{longest}x");
        assert_eq!(refused_field(&OrderInput { shipping_address: too_long, ..order() }), "shippingAddress");
        assert_eq!(refused_field(&OrderInput { order_items: vec![], ..order() }), "orderItems");
        let line = |product_id, quantity| vec![OrderItem { product_id, quantity }];
        assert_eq!(refused_field(&OrderInput { order_items: line(0, 1), ..order() }), "orderItems[0].productId");
        let most = line(1, MAX_LINE_QUANTITY);
        assert_eq!(OrderInput { order_items: most, ..order() }.check(), Ok(()));
        let over = line(1, MAX_LINE_QUANTITY + 1);
        assert_eq!(refused_field(&OrderInput { order_items: over, ..order() }), "orderItems[0].quantity");
    }

    #[test]
    fn the_fraud_rule_needs_both_a_large_order_and_a_flagged_address() {
        let big = |q: i64, address: &str| OrderInput {
            order_items: vec![OrderItem { product_id: 1, quantity: q }],
            shipping_address: address.into(),
            ..order()
        };
        assert_eq!(fraud_rule_hit(&big(FRAUD_QUANTITY_THRESHOLD, "PO Box 7")), None, "the threshold itself passes");
        assert_eq!(fraud_rule_hit(&big(FRAUD_QUANTITY_THRESHOLD + 1, "PO Box 7")), Some((51, "po box")));
        assert_eq!(fraud_rule_hit(&big(FRAUD_QUANTITY_THRESHOLD + 1, "1 Main St")), None);
        assert!(charges_in_ledger(CARD_3DS) && !charges_in_ledger(BANK_TRANSFER));
    }

    #[test]
    fn order_v2_screens_exactly_the_screened_methods() {
        let v2 = include_str!("../../workflows/order-v2.toml");
        let quoted: Vec<String> = FRAUD_SCREENED_PAYMENT_METHODS.iter().map(|m| format!("{m:?}")).collect();
        let line = format!("when = {{ path = \"/input/paymentMethod\", in = [{}] }}", quoted.join(", "));
        assert!(v2.contains(&line), "order-v2.toml's fraud_check must read: {line}");
    }

    #[test]
    fn unknown_fields_in_a_line_are_refused() {
        let line = r#"{"productId":1,"quantity":1,"priceCents":0}"#;
        assert!(serde_json::from_str::<OrderItem>(line).is_err());
    }
}
