//! The notification domain: a durable outbox of messages to customers, persisted in the
//! notification's own sled store, and the customer streams read from it.
//!
//! The outbox holds one entry per idempotency key: the entry itself carries its key, and,
//! when the order has a customer, its place in that customer's stream (`customer_seq` = 1, 2,
//! 3, ... per customer), so the effect, its idempotency record and its sequence number are one
//! atomic write; the dedup index and every customer's next number are rebuilt from the
//! entries at open. A retried send finds its entry and keeps its first number.
//!
//! Every call flushes before it returns, and only then is the entry **published**: the
//! durable mark (a `watch` of how many entries are flushed) moves past it. Flushes are group
//! commits that cover every earlier write, so the flushed entries are always a prefix of the
//! outbox, and a reader that follows the mark sees each customer's entries in order, each once,
//! and never one that a crash could take back. This module never speaks HTTP (the WebSocket
//! is `notify_ws`).
//!
//! Keys: `n` + big-endian number for entries written before customers (the first format, still
//! read), `e` + number for entries since; both count in one sequence.

use crate::store;
use serde::{Deserialize, Serialize};
use shop_types::notify::NotificationMessage;
use shop_types::order::{errors, NotificationEntry};
use shop_types::{CustomerId, WorkflowId};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// Longest notification kind accepted from a definition's params.
pub const MAX_KIND_BYTES: usize = 64;
/// Most messages one read of a customer's stream returns; a reader behind by more reads again.
pub const MAX_MESSAGES_PER_READ: usize = 256;

/// Entries of the first format (no customer, no time).
const LEGACY_ENTRY_PREFIX: u8 = b'n';
const ENTRY_PREFIX: u8 = b'e';

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

/// An entry as the first format stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LegacyRecord {
    order_id: String,
    kind: String,
    message: String,
    idempotency_key: String,
}

/// An entry's place in its customer's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerPlace {
    customer: CustomerId,
    seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OutboxRecord {
    order_id: String,
    kind: String,
    message: String,
    idempotency_key: String,
    customer: Option<CustomerPlace>,
    /// When the outbox took it (ms since the Unix epoch; 0 for first-format entries).
    at_ms: u64,
}

impl From<LegacyRecord> for OutboxRecord {
    fn from(old: LegacyRecord) -> Self {
        OutboxRecord {
            order_id: old.order_id,
            kind: old.kind,
            message: old.message,
            idempotency_key: old.idempotency_key,
            customer: None,
            at_ms: 0,
        }
    }
}

impl OutboxRecord {
    fn view(&self) -> NotificationEntry {
        NotificationEntry {
            order_id: self.order_id.clone(),
            kind: self.kind.clone(),
            message: self.message.clone(),
            customer_id: self.customer.as_ref().map(|place| place.customer.clone()),
            customer_seq: self.customer.as_ref().map(|place| place.seq),
        }
    }

    fn message(&self, customer_seq: u64) -> NotificationMessage {
        NotificationMessage {
            customer_seq,
            order_id: self.order_id.clone(),
            kind: self.kind.clone(),
            message: self.message.clone(),
            at_ms: self.at_ms,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// In outbox order; an entry's position is its outbox number.
    entries: Vec<OutboxRecord>,
    /// Idempotency key -> position.
    keys: HashMap<String, usize>,
    /// Each customer's entries by position: the entry with `customer_seq` n is at [n - 1].
    customers: HashMap<CustomerId, Vec<usize>>,
}

impl State {
    fn push(&mut self, record: OutboxRecord) -> usize {
        let position = self.entries.len();
        self.keys.insert(record.idempotency_key.clone(), position);
        if let Some(place) = &record.customer {
            self.customers.entry(place.customer.clone()).or_default().push(position);
        }
        self.entries.push(record);
        position
    }
}

/// One message to queue.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub order_id: &'a WorkflowId,
    /// e.g. `ORDER_CONFIRMED` (1..=[`MAX_KIND_BYTES`]).
    pub kind: &'a str,
    /// The order's customer, whose stream it joins.
    pub customer: Option<&'a CustomerId>,
    /// Now, in ms since the Unix epoch (passed in: this module reads no clock).
    pub at_ms: u64,
    pub idempotency_key: &'a str,
}

/// The outbox: cheap to share behind an `Arc`; all calls are safe from many tasks.
#[derive(Debug)]
pub struct Notification {
    db: sled::Tree,
    flusher: std::sync::Arc<store::Flusher>,
    state: Mutex<State>,
    /// How many entries (a prefix of the outbox) are flushed: what readers may see.
    durable: watch::Sender<usize>,
}

impl Notification {
    pub fn open(opened: store::DomainStore) -> Result<Self, store::Error> {
        let store::DomainStore { tree: db, flusher, .. } = opened;
        let mut numbered: Vec<(Vec<u8>, OutboxRecord)> = Vec::new();
        for (prefix, legacy) in [(LEGACY_ENTRY_PREFIX, true), (ENTRY_PREFIX, false)] {
            for entry in db.scan_prefix([prefix]) {
                let (key, value) = entry?;
                let record = if legacy {
                    store::decode::<LegacyRecord>(&key, &value)?.into()
                } else {
                    store::decode::<OutboxRecord>(&key, &value)?
                };
                numbered.push((key[1..].to_vec(), record));
            }
        }
        // Both formats count in one sequence of big-endian numbers: byte order is outbox order.
        numbered.sort_by(|a, b| a.0.cmp(&b.0));
        let mut state = State::default();
        for (number, record) in numbered {
            let expected = store::number_key(ENTRY_PREFIX, state.entries.len() as u64);
            if number[..] != expected[1..] {
                return Err(store::Error::Corrupt {
                    key: format!("notification entry {number:?}"),
                    reason: format!("the outbox skips from entry {} to it", state.entries.len()),
                });
            }
            if let Some(place) = &record.customer {
                let next = state.customers.get(&place.customer).map_or(0, Vec::len) as u64 + 1;
                if place.seq != next {
                    return Err(store::Error::Corrupt {
                        key: format!("notification entry {}", state.entries.len()),
                        reason: format!("customer {} has seq {} where {next} was due", place.customer, place.seq),
                    });
                }
            }
            state.push(record);
        }
        let (durable, _) = watch::channel(state.entries.len());
        Ok(Notification { db, flusher, state: Mutex::new(state), durable })
    }

    /// `notification.send`: queues one message per idempotency key and returns its text. With
    /// a customer, the entry takes that customer's next number, once.
    pub async fn send(&self, outgoing: &Outgoing<'_>) -> Result<String, Error> {
        let (position, message) = self.send_now(outgoing)?;
        self.flush().await?;
        // The flush covered every write before this one, so everything up to it is durable.
        self.durable.send_if_modified(|durable| {
            let moved = position + 1 > *durable;
            if moved {
                *durable = position + 1;
            }
            moved
        });
        Ok(message)
    }

    fn send_now(&self, outgoing: &Outgoing<'_>) -> Result<(usize, String), Error> {
        let Outgoing { order_id, kind, customer, at_ms, idempotency_key } = *outgoing;
        if kind.is_empty() || kind.len() > MAX_KIND_BYTES {
            return Err(Error::BadInput(format!("the notification kind must be 1..={MAX_KIND_BYTES} bytes")));
        }
        let mut state = self.lock();
        if let Some(&position) = state.keys.get(idempotency_key) {
            return Ok((position, state.entries[position].message.clone()));
        }
        let message = message_for(order_id, kind);
        let customer = customer.map(|customer| CustomerPlace {
            customer: customer.clone(),
            seq: state.customers.get(customer).map_or(0, Vec::len) as u64 + 1,
        });
        let record = OutboxRecord {
            order_id: order_id.to_string(),
            kind: kind.to_owned(),
            message: message.clone(),
            idempotency_key: idempotency_key.to_owned(),
            customer,
            at_ms,
        };
        let number = state.entries.len() as u64;
        // Handed over under the lock, so outbox numbers and customer numbers follow write
        // order; the flusher writes it with the other domains' batches of its group.
        let mut batch = shop_durable::LogBatch::default();
        batch.insert(store::number_key(ENTRY_PREFIX, number), store::encode(&record)?);
        self.flusher.write(&self.db, batch).map_err(store::Error::from)?;
        Ok((state.push(record), message))
    }

    /// The outbox, in insertion order (flushed or not: this is the operator's view).
    pub fn entries(&self) -> Vec<NotificationEntry> {
        self.lock().entries.iter().map(OutboxRecord::view).collect()
    }

    /// Follows the durable mark: changes whenever more entries are flushed.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.durable.subscribe()
    }

    /// `customer`'s flushed messages after `after` (a `customer_seq`), in order, at most
    /// [`MAX_MESSAGES_PER_READ`].
    pub fn customer_after(&self, customer: &CustomerId, after: u64) -> Vec<NotificationMessage> {
        // Read before the lock: entries flushed later are simply read next time.
        let durable = *self.durable.borrow();
        let state = self.lock();
        let Some(positions) = state.customers.get(customer) else {
            return Vec::new();
        };
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(positions.len());
        positions[start..]
            .iter()
            .zip(after + 1..)
            .take_while(|(position, _)| **position < durable)
            .take(MAX_MESSAGES_PER_READ)
            .map(|(position, seq)| state.entries[*position].message(seq))
            .collect()
    }

    pub async fn flush(&self) -> Result<(), store::Error> {
        store::flush(&self.flusher, crate::activities::Domain::Notification.as_str()).await
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

    fn out<'a>(
        order_id: &'a WorkflowId,
        kind: &'a str,
        customer: Option<&'a CustomerId>,
        at_ms: u64,
        idempotency_key: &'a str,
    ) -> Outgoing<'a> {
        Outgoing { order_id, kind, customer, at_ms, idempotency_key }
    }

    fn customer(id: &str) -> CustomerId {
        CustomerId::parse(id).expect("valid customer id")
    }

    fn entry(order_id: &str, kind: &str, message: &str, place: Option<(&str, u64)>) -> NotificationEntry {
        NotificationEntry {
            order_id: order_id.to_owned(),
            kind: kind.to_owned(),
            message: message.to_owned(),
            customer_id: place.map(|(c, _)| customer(c)),
            customer_seq: place.map(|(_, seq)| seq),
        }
    }

    #[tokio::test]
    async fn one_entry_per_idempotency_key() {
        let outbox = Notification::open(store::temporary()).expect("opens");
        for _ in 0..3 {
            outbox.send(&out(&order("o-1"), "ORDER_CONFIRMED", None, 1, "o-1/notify")).await.expect("sends");
        }
        outbox.send(&out(&order("o-2"), "ORDER_CANCELLED", None, 2, "o-2/notify")).await.expect("sends");
        assert_eq!(
            outbox.entries(),
            vec![
                entry("o-1", "ORDER_CONFIRMED", "Order o-1 confirmed", None),
                entry("o-2", "ORDER_CANCELLED", "Order o-2 cancelled", None),
            ]
        );
    }

    #[tokio::test]
    async fn each_customer_counts_from_one_and_a_retry_keeps_its_number() {
        let outbox = Notification::open(store::temporary()).expect("opens");
        let (ann, bob) = (customer("ann"), customer("bob"));
        outbox.send(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&ann), 1, "k1")).await.expect("sends");
        outbox.send(&out(&order("o-2"), "ORDER_CONFIRMED", Some(&bob), 2, "k2")).await.expect("sends");
        outbox.send(&out(&order("o-3"), "ORDER_CONFIRMED", None, 3, "k3")).await.expect("sends");
        // A retry of the first send, even one that names another customer, changes nothing.
        outbox.send(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&bob), 4, "k1")).await.expect("replays");
        outbox.send(&out(&order("o-4"), "ORDER_CANCELLED", Some(&ann), 5, "k4")).await.expect("sends");
        let seqs: Vec<_> = outbox.entries().iter().map(|e| (e.order_id.clone(), e.customer_seq)).collect();
        let expected = [("o-1", Some(1)), ("o-2", Some(1)), ("o-3", None), ("o-4", Some(2))];
        assert_eq!(seqs, expected.map(|(o, s)| (o.to_owned(), s)));
        let ann_stream = outbox.customer_after(&ann, 0);
        assert_eq!(ann_stream.iter().map(|m| (m.customer_seq, m.at_ms)).collect::<Vec<_>>(), vec![(1, 1), (2, 5)]);
        assert_eq!(outbox.customer_after(&ann, 1).len(), 1);
        assert!(outbox.customer_after(&ann, 2).is_empty(), "the last seq: nothing yet");
        assert!(outbox.customer_after(&ann, 99).is_empty(), "beyond the last seq is fine");
        assert!(outbox.customer_after(&customer("carl"), 0).is_empty());
    }

    #[tokio::test]
    async fn numbers_and_dedup_survive_a_reopen() {
        let db = store::temporary();
        let ann = customer("ann");
        let outbox = Notification::open(db.clone()).expect("opens");
        outbox.send(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&ann), 1, "k")).await.expect("sends");
        drop(outbox);
        let reopened = Notification::open(db).expect("reopens");
        reopened.send(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&ann), 2, "k")).await.expect("replays");
        reopened.send(&out(&order("o-2"), "ORDER_CONFIRMED", Some(&ann), 3, "k2")).await.expect("sends");
        assert_eq!(reopened.entries().iter().map(|e| e.customer_seq).collect::<Vec<_>>(), vec![Some(1), Some(2)]);
        assert_eq!(reopened.customer_after(&ann, 0).len(), 2, "everything read at open is durable");
    }

    #[tokio::test]
    async fn first_format_entries_still_read_and_count_in_the_same_sequence() {
        let db = store::temporary();
        let old = LegacyRecord {
            order_id: "o-0".into(),
            kind: "ORDER_CONFIRMED".into(),
            message: "Order o-0 confirmed".into(),
            idempotency_key: "k0".into(),
        };
        db.tree.insert(store::number_key(LEGACY_ENTRY_PREFIX, 0), store::encode(&old).expect("encodes")).expect("put");
        let outbox = Notification::open(db.clone()).expect("opens");
        outbox.send(&out(&order("o-0"), "ORDER_CONFIRMED", None, 1, "k0")).await.expect("replays");
        outbox.send(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&customer("ann")), 1, "k1")).await.expect("sends");
        drop(outbox);
        let reopened = Notification::open(db).expect("reopens");
        assert_eq!(reopened.entries().iter().map(|e| e.order_id.as_str()).collect::<Vec<_>>(), vec!["o-0", "o-1"]);
    }

    #[tokio::test]
    async fn only_flushed_entries_are_read_and_the_mark_moves_after_the_flush() {
        let outbox = Notification::open(store::temporary()).expect("opens");
        let ann = customer("ann");
        let mut mark = outbox.subscribe();
        // Written but not yet flushed (send_now is the write without the flush): not readable.
        outbox.send_now(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&ann), 1, "k1")).expect("writes");
        assert!(outbox.customer_after(&ann, 0).is_empty());
        assert!(!mark.has_changed().expect("open"));
        outbox.send(&out(&order("o-2"), "ORDER_CONFIRMED", Some(&ann), 2, "k2")).await.expect("sends");
        assert!(mark.has_changed().expect("open"));
        assert_eq!(*mark.borrow_and_update(), 2, "the later flush covers the earlier write");
        assert_eq!(outbox.customer_after(&ann, 0).len(), 2);
    }

    #[tokio::test]
    async fn a_read_returns_at_most_its_bound() {
        let outbox = Notification::open(store::temporary()).expect("opens");
        let ann = customer("ann");
        for n in 0..=MAX_MESSAGES_PER_READ {
            outbox.send_now(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&ann), 1, &format!("k{n}"))).expect("writes");
        }
        outbox.send(&out(&order("o-1"), "ORDER_CONFIRMED", Some(&ann), 1, "last")).await.expect("sends");
        let first = outbox.customer_after(&ann, 0);
        assert_eq!(first.len(), MAX_MESSAGES_PER_READ);
        let rest = outbox.customer_after(&ann, first.last().expect("some").customer_seq);
        assert_eq!(rest.iter().map(|m| m.customer_seq).collect::<Vec<_>>(), vec![257, 258]);
    }

    #[tokio::test]
    async fn an_empty_kind_is_bad_input() {
        let outbox = Notification::open(store::temporary()).expect("opens");
        let err = outbox.send(&out(&order("o-1"), "", None, 1, "k")).await.expect_err("empty");
        assert_eq!(err.error_type(), errors::BAD_INPUT);
        assert!(outbox.entries().is_empty());
    }
}
