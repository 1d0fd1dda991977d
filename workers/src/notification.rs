//! The notification domain: a durable outbox of messages to customers, persisted in the
//! notification's own sled store.
//!
//! The outbox holds one entry per idempotency key: the entry itself carries its key, so the
//! effect and its idempotency record are one atomic write, and the dedup index is rebuilt
//! from the entries at open. Every call flushes before it returns. This module never
//! delivers anything anywhere (a real sender would drain the outbox) and never speaks HTTP.

use crate::store;
use serde::{Deserialize, Serialize};
use shop_types::order::{errors, NotificationEntry};
use shop_types::WorkflowId;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

/// Longest notification kind accepted from a definition's params.
pub const MAX_KIND_BYTES: usize = 64;

const ENTRY_PREFIX: u8 = b'n';

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// The stable error type reported to the engine.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadInput(_) => errors::BAD_INPUT,
            Error::Store(_) => crate::activities::STORE_UNAVAILABLE,
        }
    }

    /// Only a failing store may heal by itself.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OutboxRecord {
    order_id: String,
    kind: String,
    message: String,
    idempotency_key: String,
}

impl OutboxRecord {
    fn view(&self) -> NotificationEntry {
        NotificationEntry { order_id: self.order_id.clone(), kind: self.kind.clone(), message: self.message.clone() }
    }
}

#[derive(Debug, Default)]
struct State {
    /// In insertion order; an entry's position is its outbox sequence number.
    entries: Vec<OutboxRecord>,
    keys: HashSet<String>,
}

/// The outbox: cheap to share behind an `Arc`; all calls are safe from many tasks.
#[derive(Debug)]
pub struct Notification {
    db: sled::Db,
    flusher: store::Flusher,
    state: Mutex<State>,
}

impl Notification {
    pub fn open(opened: store::Opened) -> Result<Self, store::Error> {
        let flusher = store::flusher(&opened, "notification")?;
        let db = opened.db;
        let entries: Vec<OutboxRecord> = store::scan(&db, &[ENTRY_PREFIX])?;
        let keys = entries.iter().map(|e| e.idempotency_key.clone()).collect();
        Ok(Notification { db, flusher, state: Mutex::new(State { entries, keys }) })
    }

    /// `notification.send`: queues one message per idempotency key and returns its text.
    pub async fn send(&self, order_id: &WorkflowId, kind: &str, idempotency_key: &str) -> Result<String, Error> {
        let outcome = self.send_now(order_id, kind, idempotency_key);
        self.flush().await?;
        outcome
    }

    fn send_now(&self, order_id: &WorkflowId, kind: &str, idempotency_key: &str) -> Result<String, Error> {
        if kind.is_empty() || kind.len() > MAX_KIND_BYTES {
            return Err(Error::BadInput(format!("the notification kind must be 1..={MAX_KIND_BYTES} bytes")));
        }
        let message = message_for(order_id, kind);
        let mut state = self.lock();
        if state.keys.contains(idempotency_key) {
            return Ok(message);
        }
        let record = OutboxRecord {
            order_id: order_id.to_string(),
            kind: kind.to_owned(),
            message: message.clone(),
            idempotency_key: idempotency_key.to_owned(),
        };
        let seq = u64::try_from(state.entries.len()).expect("an outbox length fits in u64");
        self.db.insert(store::number_key(ENTRY_PREFIX, seq), store::encode(&record)?).map_err(store::Error::from)?;
        state.keys.insert(record.idempotency_key.clone());
        state.entries.push(record);
        Ok(message)
    }

    /// The outbox, in insertion order.
    pub fn entries(&self) -> Vec<NotificationEntry> {
        self.lock().entries.iter().map(OutboxRecord::view).collect()
    }

    pub async fn flush(&self) -> Result<(), store::Error> {
        Ok(self.flusher.flush().await?)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("no code panics while holding the notification lock")
    }
}

fn message_for(order_id: &WorkflowId, kind: &str) -> String {
    match kind {
        "ORDER_CONFIRMED" => format!("Order {order_id} confirmed"),
        "ORDER_CANCELLED" => format!("Order {order_id} cancelled"),
        other => format!("Order {order_id}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> WorkflowId {
        WorkflowId::parse(id).expect("valid order id")
    }

    #[tokio::test]
    async fn one_entry_per_idempotency_key() {
        let outbox = Notification::open(store::temporary()).expect("opens");
        for _ in 0..3 {
            outbox.send(&order("o-1"), "ORDER_CONFIRMED", "o-1/notify").await.expect("sends");
        }
        outbox.send(&order("o-2"), "ORDER_CANCELLED", "o-2/notify").await.expect("sends");
        assert_eq!(
            outbox.entries(),
            vec![
                NotificationEntry {
                    order_id: "o-1".to_owned(),
                    kind: "ORDER_CONFIRMED".to_owned(),
                    message: "Order o-1 confirmed".to_owned(),
                },
                NotificationEntry {
                    order_id: "o-2".to_owned(),
                    kind: "ORDER_CANCELLED".to_owned(),
                    message: "Order o-2 cancelled".to_owned(),
                },
            ]
        );
    }

    #[tokio::test]
    async fn dedup_survives_a_reopen() {
        let db = store::temporary();
        let outbox = Notification::open(db.clone()).expect("opens");
        outbox.send(&order("o-1"), "ORDER_CONFIRMED", "k").await.expect("sends");
        drop(outbox);
        let reopened = Notification::open(db).expect("reopens");
        reopened.send(&order("o-1"), "ORDER_CONFIRMED", "k").await.expect("replays");
        assert_eq!(reopened.entries().len(), 1);
    }

    #[tokio::test]
    async fn an_empty_kind_is_bad_input() {
        let outbox = Notification::open(store::temporary()).expect("opens");
        let err = outbox.send(&order("o-1"), "", "k").await.expect_err("empty");
        assert_eq!(err.error_type(), errors::BAD_INPUT);
        assert!(outbox.entries().is_empty());
    }
}
