//! The payment domain: a fake provider with a durable ledger of charges and refunds,
//! persisted in the payment's own sled store.
//!
//! Each order has one payment record, which is also the idempotency record: at most one
//! charge and at most one refund per order, whatever the number of attempts. A refund that
//! finds no charge leaves a void tombstone so a late charge attempt is refused. The record
//! and its ledger entry are written in one atomic batch, and every call flushes before it
//! returns. This module never injects faults (the caller does) and never speaks HTTP.

use crate::store;
use serde::{Deserialize, Serialize};
use shop_types::order::{errors, ChargeOutput, PaymentEntry, DECLINED_PAYMENT_METHOD, PAYMENT_METHODS};
use shop_types::WorkflowId;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// A charge attempt after the order's payment was already voided by its compensation.
pub const PAYMENT_VOIDED: &str = "PAYMENT_VOIDED";

const ORDER_PREFIX: u8 = b'o';
const LEDGER_PREFIX: u8 = b'l';

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("the card of order {0} was declined")]
    Declined(WorkflowId),
    #[error("the payment of order {0} was voided before any charge")]
    Voided(WorkflowId),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// The stable error type reported to the engine.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadInput(_) => errors::BAD_INPUT,
            Error::Declined(_) => errors::PAYMENT_DECLINED,
            Error::Voided(_) => PAYMENT_VOIDED,
            Error::Store(_) => crate::activities::STORE_UNAVAILABLE,
        }
    }

    /// Only a failing store may heal by itself; every other failure is the order's fate.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store(_))
    }
}

/// Where an order's payment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PaymentState {
    Charged {
        amount_cents: i64,
    },
    Refunded {
        amount_cents: i64,
    },
    /// Refunded before any charge: a later charge attempt is refused.
    Voided,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OrderPayment {
    order_id: String,
    state: PaymentState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum EntryKind {
    Charge,
    Refund,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LedgerRecord {
    order_id: String,
    kind: EntryKind,
    amount_cents: i64,
    idempotency_key: String,
}

impl LedgerRecord {
    fn view(&self) -> PaymentEntry {
        PaymentEntry {
            order_id: self.order_id.clone(),
            kind: match self.kind {
                EntryKind::Charge => "charge",
                EntryKind::Refund => "refund",
            }
            .to_owned(),
            amount_cents: self.amount_cents,
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    orders: HashMap<String, OrderPayment>,
    /// In insertion order; an entry's position is its ledger sequence number.
    ledger: Vec<LedgerRecord>,
}

/// The payment provider: cheap to share behind an `Arc`; all calls are safe from many tasks.
#[derive(Debug)]
pub struct Payment {
    db: sled::Tree,
    flusher: std::sync::Arc<store::Flusher>,
    state: Mutex<State>,
}

impl Payment {
    pub fn open(opened: store::DomainStore) -> Result<Self, store::Error> {
        let store::DomainStore { tree: db, flusher, .. } = opened;
        let mut state = State::default();
        for payment in store::scan::<OrderPayment>(&db, &[ORDER_PREFIX])? {
            state.orders.insert(payment.order_id.clone(), payment);
        }
        state.ledger = store::scan(&db, &[LEDGER_PREFIX])?;
        Ok(Payment { db, flusher, state: Mutex::new(state) })
    }

    /// `payment.charge`: charges the order once; a repeat returns the first charge.
    pub async fn charge(
        &self,
        order_id: &WorkflowId,
        amount_cents: i64,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<ChargeOutput, Error> {
        let outcome = self.charge_now(order_id, amount_cents, payment_method, idempotency_key);
        self.flush().await?;
        outcome
    }

    fn charge_now(
        &self,
        order_id: &WorkflowId,
        amount_cents: i64,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<ChargeOutput, Error> {
        let mut state = self.lock();
        match state.orders.get(order_id.as_str()).map(|p| &p.state) {
            Some(PaymentState::Charged { amount_cents } | PaymentState::Refunded { amount_cents }) => {
                return Ok(ChargeOutput { amount_cents: *amount_cents });
            }
            Some(PaymentState::Voided) => return Err(Error::Voided(order_id.clone())),
            None => {}
        }
        if payment_method == DECLINED_PAYMENT_METHOD {
            return Err(Error::Declined(order_id.clone()));
        }
        // The engine refuses such orders at the door; a provider still never charges a
        // method it does not offer, whoever started the run.
        if !PAYMENT_METHODS.contains(&payment_method) {
            return Err(Error::BadInput(format!("{payment_method:?} is not a payment method the shop takes")));
        }
        if amount_cents < 0 {
            return Err(Error::BadInput(format!("the amount to charge is negative: {amount_cents}")));
        }
        let payment = OrderPayment { order_id: order_id.to_string(), state: PaymentState::Charged { amount_cents } };
        let entry = LedgerRecord {
            order_id: order_id.to_string(),
            kind: EntryKind::Charge,
            amount_cents,
            idempotency_key: idempotency_key.to_owned(),
        };
        self.write(&mut state, payment, Some(entry))?;
        Ok(ChargeOutput { amount_cents })
    }

    /// `payment.refund`, the compensation of a charge: refunds it once, or voids the order's
    /// payment when it was never charged.
    pub async fn refund(&self, order_id: &WorkflowId, idempotency_key: &str) -> Result<(), Error> {
        let outcome = self.refund_now(order_id, idempotency_key);
        self.flush().await?;
        outcome
    }

    fn refund_now(&self, order_id: &WorkflowId, idempotency_key: &str) -> Result<(), Error> {
        let mut state = self.lock();
        match state.orders.get(order_id.as_str()).map(|p| p.state.clone()) {
            Some(PaymentState::Charged { amount_cents }) => {
                let payment =
                    OrderPayment { order_id: order_id.to_string(), state: PaymentState::Refunded { amount_cents } };
                let entry = LedgerRecord {
                    order_id: order_id.to_string(),
                    kind: EntryKind::Refund,
                    amount_cents,
                    idempotency_key: idempotency_key.to_owned(),
                };
                self.write(&mut state, payment, Some(entry))
            }
            Some(PaymentState::Refunded { .. } | PaymentState::Voided) => Ok(()),
            None => {
                let payment = OrderPayment { order_id: order_id.to_string(), state: PaymentState::Voided };
                self.write(&mut state, payment, None)
            }
        }
    }

    /// The ledger, in insertion order.
    pub fn ledger(&self) -> Vec<PaymentEntry> {
        self.lock().ledger.iter().map(LedgerRecord::view).collect()
    }

    pub async fn flush(&self) -> Result<(), store::Error> {
        store::flush(&self.flusher, crate::activities::Domain::Payment.as_str()).await
    }

    /// Hands the order's payment record and its ledger entry to the flusher as one batch,
    /// then mirrors them in memory. Called with the lock held so the ledger's sequence is
    /// sled's; the caller flushes before it answers.
    fn write(&self, state: &mut State, payment: OrderPayment, entry: Option<LedgerRecord>) -> Result<(), Error> {
        let mut batch = shop_durable::LogBatch::default();
        batch.insert(store::text_key(ORDER_PREFIX, &payment.order_id), store::encode(&payment)?);
        if let Some(entry) = &entry {
            let seq = u64::try_from(state.ledger.len()).expect("a ledger length fits in u64");
            batch.insert(store::number_key(LEDGER_PREFIX, seq), store::encode(entry)?);
        }
        self.flusher.write(&self.db, batch).map_err(store::Error::from)?;
        state.orders.insert(payment.order_id.clone(), payment);
        state.ledger.extend(entry);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("no code panics while holding the payment lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> WorkflowId {
        WorkflowId::parse(id).expect("valid order id")
    }

    #[tokio::test]
    async fn charging_twice_writes_one_ledger_entry() {
        let payment = Payment::open(store::temporary()).expect("opens");
        let first = payment.charge(&order("o-1"), 1234, "CREDIT_CARD", "k").await.expect("charges");
        let second = payment.charge(&order("o-1"), 1234, "CREDIT_CARD", "k").await.expect("replays");
        assert_eq!(first, second);
        assert_eq!(
            payment.ledger(),
            vec![PaymentEntry {
                order_id: "o-1".to_owned(),
                kind: "charge".to_owned(),
                amount_cents: 1234,
                idempotency_key: "k".to_owned(),
            }]
        );
    }

    #[tokio::test]
    async fn refunding_twice_refunds_once() {
        let payment = Payment::open(store::temporary()).expect("opens");
        payment.charge(&order("o-1"), 500, "CREDIT_CARD", "c").await.expect("charges");
        payment.refund(&order("o-1"), "r").await.expect("refunds");
        payment.refund(&order("o-1"), "r").await.expect("no-op");
        let kinds: Vec<_> = payment.ledger().into_iter().map(|e| (e.kind, e.amount_cents)).collect();
        assert_eq!(kinds, vec![("charge".to_owned(), 500), ("refund".to_owned(), 500)]);
        let late =
            payment.charge(&order("o-1"), 500, "CREDIT_CARD", "c").await.expect("a late attempt replays the charge");
        assert_eq!(late.amount_cents, 500);
        assert_eq!(payment.ledger().len(), 2);
    }

    #[tokio::test]
    async fn a_declined_card_leaves_no_entry() {
        let payment = Payment::open(store::temporary()).expect("opens");
        let err = payment.charge(&order("o-1"), 500, DECLINED_PAYMENT_METHOD, "c").await.expect_err("declined");
        assert_eq!(err.error_type(), errors::PAYMENT_DECLINED);
        assert!(!err.is_retryable());
        assert!(payment.ledger().is_empty());
        payment.refund(&order("o-1"), "r").await.expect("voids");
        assert!(payment.ledger().is_empty());
    }

    #[tokio::test]
    async fn a_method_the_shop_does_not_take_is_never_charged() {
        let payment = Payment::open(store::temporary()).expect("opens");
        let err = payment.charge(&order("o-1"), 500, "BITCOIN", "c").await.expect_err("refused");
        assert_eq!(err.error_type(), errors::BAD_INPUT);
        assert!(!err.is_retryable());
        assert!(payment.ledger().is_empty());
    }

    #[tokio::test]
    async fn refund_before_charge_voids_the_late_charge() {
        let payment = Payment::open(store::temporary()).expect("opens");
        payment.refund(&order("o-1"), "r").await.expect("voids");
        let err = payment.charge(&order("o-1"), 500, "CREDIT_CARD", "c").await.expect_err("voided");
        assert_eq!(err.error_type(), PAYMENT_VOIDED);
        assert!(payment.ledger().is_empty());
    }

    #[tokio::test]
    async fn the_ledger_survives_a_reopen_in_order() {
        let db = store::temporary();
        let payment = Payment::open(db.clone()).expect("opens");
        for (index, id) in ["o-1", "o-2", "o-3"].into_iter().enumerate() {
            let amount = i64::try_from(index).expect("small") + 1;
            payment.charge(&order(id), amount, "CREDIT_CARD", id).await.expect("charges");
        }
        payment.refund(&order("o-2"), "r").await.expect("refunds");
        let before = payment.ledger();
        drop(payment);
        let reopened = Payment::open(db).expect("reopens");
        assert_eq!(reopened.ledger(), before);
        reopened.refund(&order("o-2"), "r").await.expect("still one refund");
        assert_eq!(reopened.ledger().len(), 4);
    }
}
