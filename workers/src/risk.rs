//! The fraud check (`risk.score` on the `risk` queue): a stateless, deterministic score of an
//! order, and one named refusal rule.
//!
//! It owns the rule and the score; it must never keep state, read a clock or draw a random
//! number, so every attempt of the same order gets the same answer (a retry cannot turn a
//! refusal into an acceptance) and it needs no idempotency record.

use serde::Serialize;
use shop_types::order::{errors, OrderInput};
// The rule's limits live in `shop_types::order`, so the audit knows which orders it refuses.
pub use shop_types::order::{FLAGGED_ADDRESS_WORDS, FRAUD_QUANTITY_THRESHOLD};
/// The name of the refusal rule, reported in its message so an operator can look it up.
pub const LARGE_ORDER_TO_FLAGGED_ADDRESS: &str = "large-order-to-flagged-address";
/// Highest score; a refused order would score at least this.
pub const MAX_SCORE: u32 = 100;

/// The check's output for an order it lets through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskScore {
    /// 0 (no risk seen) ..= `MAX_SCORE`.
    pub score: u32,
    pub total_quantity: i64,
    /// The flagged word the address contains, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flagged_word: Option<&'static str>,
}

/// A refusal of the order; never retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {LARGE_ORDER_TO_FLAGGED_ADDRESS}: {total_quantity} units (more than {FRAUD_QUANTITY_THRESHOLD}) to an address containing {flagged_word:?}")]
pub struct FraudSuspected {
    pub total_quantity: i64,
    pub flagged_word: &'static str,
}

impl FraudSuspected {
    pub fn error_type(&self) -> &'static str {
        errors::FRAUD_SUSPECTED
    }
}

/// Scores `order`, or refuses it by the rule `LARGE_ORDER_TO_FLAGGED_ADDRESS`: more than
/// `FRAUD_QUANTITY_THRESHOLD` units in total AND a flagged word in the shipping address.
pub fn score(order: &OrderInput) -> Result<RiskScore, FraudSuspected> {
    // Saturating: the quantities are checked when the order is placed, but this must not
    // overflow on any input a task can carry.
    let total_quantity = order.order_items.iter().fold(0i64, |sum, item| sum.saturating_add(item.quantity.max(0)));
    let address = order.shipping_address.to_lowercase();
    let flagged_word = FLAGGED_ADDRESS_WORDS.into_iter().find(|word| address.contains(word));
    if let Some(flagged_word) = flagged_word {
        if total_quantity > FRAUD_QUANTITY_THRESHOLD {
            return Err(FraudSuspected { total_quantity, flagged_word });
        }
    }
    // Half the score from the size of the order (relative to the threshold), half from the
    // address: each alone stays below the refusal.
    let size =
        total_quantity.clamp(0, FRAUD_QUANTITY_THRESHOLD) as u32 * (MAX_SCORE / 2) / FRAUD_QUANTITY_THRESHOLD as u32;
    let place = if flagged_word.is_some() { MAX_SCORE / 2 - 1 } else { 0 };
    Ok(RiskScore { score: size + place, total_quantity, flagged_word })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::order::OrderItem;

    fn order(quantities: &[i64], address: &str) -> OrderInput {
        OrderInput {
            order_id: "o-1".to_owned(),
            order_items: quantities
                .iter()
                .enumerate()
                .map(|(n, &quantity)| OrderItem { product_id: n as i64 + 1, quantity })
                .collect(),
            shipping_address: address.to_owned(),
            payment_method: "CREDIT_CARD".to_owned(),
            customer_id: None,
        }
    }

    #[test]
    fn a_large_order_to_a_flagged_address_is_refused_at_the_threshold_edge() {
        let at = score(&order(&[FRAUD_QUANTITY_THRESHOLD - 10, 10], "PO Box 12, Springfield"));
        assert!(at.is_ok(), "exactly the threshold is allowed: {at:?}");
        let refused = score(&order(&[FRAUD_QUANTITY_THRESHOLD - 10, 11], "PO Box 12, Springfield"))
            .expect_err("one unit over the threshold to a PO box is refused");
        assert_eq!(refused, FraudSuspected { total_quantity: FRAUD_QUANTITY_THRESHOLD + 1, flagged_word: "po box" });
        assert_eq!(refused.error_type(), errors::FRAUD_SUSPECTED);
        assert!(refused.to_string().contains(LARGE_ORDER_TO_FLAGGED_ADDRESS));
    }

    #[test]
    fn either_condition_alone_only_raises_the_score() {
        let large = score(&order(&[500], "1 Main St")).expect("a large order to a plain address passes");
        let flagged = score(&order(&[1], "Forwarding Co, Dock 4")).expect("a small order to a forwarder passes");
        let plain = score(&order(&[1], "1 Main St")).expect("passes");
        assert!(large.score > plain.score && flagged.score > plain.score);
        assert!(large.score < MAX_SCORE && flagged.score < MAX_SCORE);
        assert_eq!(flagged.flagged_word, Some("forwarding"));
    }

    #[test]
    fn the_score_is_deterministic() {
        let a = order(&[3, 4], "Drop Point 9");
        assert_eq!(score(&a), score(&a));
    }
}
