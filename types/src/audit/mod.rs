//! The audit of the order system: the invariants of design.md section 7, items 1-6, as pure
//! functions over what the public APIs show (the engine's order runs and their histories, the
//! inventory's stock, the payment ledger and the notification outbox).
//!
//! This is the one checker: the end-to-end tests, the torture test, `shopctl bench` and
//! `shopctl verify` all gather a [`Snapshot`] and call [`audit`]. It must never fetch
//! anything, read a clock or print: it returns every [`Violation`] it finds rather than
//! stopping at the first, so one run shows the whole damage.
//!
//! What an order's outcome should be is only partly derivable from its input. A declined
//! card, an unknown product or a line asking more than the product ever had always end
//! CANCELLED; but when concurrent orders compete for scarce stock, which of them wins depends
//! on their order of arrival. So the caller who knows its plan passes [`Options::expected`],
//! and without it the audit checks only what holds whatever the order of arrival: those
//! must-cancel cases, and that stock and money agree with the set of CONFIRMED orders.

use crate::api::{HistoryEventView, WorkflowStatus, WorkflowView};
use crate::history::EventKind;
use crate::ids::StepRef;
use crate::order::{
    charges_in_ledger, errors, fraud_rule_hit, NotificationEntry, OrderInput, PaymentEntry, Product,
    DECLINED_PAYMENT_METHOD, FRAUD_SCREENED_PAYMENT_METHODS, ORDER_WORKFLOW_TYPE,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

mod checks;
mod history;

use checks::{check_money, check_notifications, check_outcome, check_stock, index_orders, Outcome};
pub use checks::{expected_outcome, must_cancel, FIRST_SCREENING_VERSION};
pub use history::history_violations;
use history::run_history_violations;
/// The notification the saga sends when an order is confirmed (see `workflows/order.toml`).
pub const ORDER_CONFIRMED: &str = "ORDER_CONFIRMED";
/// The notification the saga sends when an order is cancelled.
pub const ORDER_CANCELLED: &str = "ORDER_CANCELLED";
/// Ledger entry kinds of the payment worker.
pub const CHARGE: &str = "charge";
pub const REFUND: &str = "refund";

/// What a caller that knows its plan expects of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    Confirmed,
    Cancelled,
    /// CONFIRMED, or CANCELLED because transient payment failures outlasted every retry (a
    /// reason naming `PAYMENT_UNAVAILABLE`): with injected failure rates that can happen,
    /// rarely, and the audit counts it in [`Audit::payment_unavailable`].
    ConfirmedOrPaymentUnavailable,
}

/// The initial stock the final stock is compared with.
#[derive(Debug, Clone)]
pub enum InitialStock {
    /// Units per product before the first order; products not listed are not compared.
    Known(BTreeMap<i64, i64>),
    /// Unknown: taken as final stock + reserved + confirmed quantities, so the stock check
    /// is only "never negative, nothing held without a running order".
    Reconstructed,
}

/// How to audit.
#[derive(Debug, Clone)]
pub struct Options {
    pub initial_stock: InitialStock,
    /// Every order the caller placed (and had acknowledged) with its expected outcome. When
    /// given, a missing order is lost and an order not in it was placed by nobody.
    pub expected: Option<HashMap<String, Expected>>,
    /// Whether runs still RUNNING are allowed (a live system); otherwise each is a violation.
    pub allow_running: bool,
}

/// Everything the audit reads, as the public APIs show it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The engine's runs; only those of type `order` are audited.
    pub runs: Vec<WorkflowView>,
    /// Each run's history, by run id.
    pub histories: HashMap<String, Vec<HistoryEventView>>,
    /// The inventory's products; their prices price the orders.
    pub stock: Vec<Product>,
    pub payments: Vec<PaymentEntry>,
    pub notifications: Vec<NotificationEntry>,
}

/// Which invariant a violation breaks; the torture report counts them by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// An acknowledged order the engine does not have.
    Lost,
    /// Something for an order nobody placed, or two runs for one order id.
    Unplaced,
    /// A run that is not terminal.
    Running,
    /// An outcome other than the one its input dictates.
    Outcome,
    /// An effect that happened more than once: a charge, a refund, a notification, a step
    /// completion.
    Duplicate,
    /// Net charged differs from the order total (CONFIRMED) or from zero (otherwise).
    Money,
    /// Stock that does not add up, is negative, or is held by no running order.
    Stock,
    /// A missing outcome notification, or one of the wrong kind.
    Notification,
    /// A malformed history.
    History,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Lost => "lost",
            ViolationKind::Unplaced => "unplaced",
            ViolationKind::Running => "running",
            ViolationKind::Outcome => "outcome",
            ViolationKind::Duplicate => "duplicate",
            ViolationKind::Money => "money",
            ViolationKind::Stock => "stock",
            ViolationKind::Notification => "notification",
            ViolationKind::History => "history",
        }
    }
}

/// One broken invariant: its kind, what it concerns (an order id, `product 3`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub subject: String,
    pub message: String,
}

impl Violation {
    fn new(kind: ViolationKind, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Violation { kind, subject: subject.into(), message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.kind.as_str(), self.subject, self.message)
    }
}

/// The audit's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Order runs audited.
    pub orders: usize,
    pub confirmed: usize,
    pub cancelled: usize,
    pub running: usize,
    /// Orders cancelled because the payment provider stayed unavailable through every retry.
    pub payment_unavailable: usize,
    pub violations: Vec<Violation>,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Violations of one kind.
    pub fn count(&self, kind: ViolationKind) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }

    fn flag(&mut self, kind: ViolationKind, subject: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Violation::new(kind, subject, message));
    }
}

/// Audits `snapshot` against invariants 1-6 of design.md section 7; see the module doc.
pub fn audit(snapshot: &Snapshot, options: &Options) -> Audit {
    let mut audit = Audit::default();
    let orders = index_orders(snapshot, &mut audit);
    audit.orders = orders.len();

    // 1: every acknowledged order exists; the engine holds none nobody placed.
    if let Some(expected) = &options.expected {
        let mut lost: Vec<&String> = expected.keys().filter(|id| !orders.contains_key(id.as_str())).collect();
        lost.sort();
        for id in lost {
            audit.flag(ViolationKind::Lost, id, "acknowledged, but the engine does not have it");
        }
        for id in orders.keys().filter(|id| !expected.contains_key(**id)) {
            audit.flag(ViolationKind::Unplaced, *id, "the engine holds an order nobody placed");
        }
    }

    let prices: HashMap<i64, i64> = snapshot.stock.iter().map(|p| (p.product_id, p.price_cents)).collect();
    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    let mut in_flight: BTreeMap<i64, i64> = BTreeMap::new();
    for order in orders.values() {
        let into = match order.outcome {
            Outcome::Confirmed => &mut sold,
            Outcome::Running => &mut in_flight,
            Outcome::Cancelled | Outcome::Failed => continue,
        };
        for (product, quantity) in order.quantities() {
            *into.entry(product).or_insert(0) += quantity;
        }
    }
    let initial = match &options.initial_stock {
        InitialStock::Known(initial) => initial.clone(),
        InitialStock::Reconstructed => snapshot
            .stock
            .iter()
            .map(|p| (p.product_id, p.stock + p.reserved + sold.get(&p.product_id).copied().unwrap_or(0)))
            .collect(),
    };

    for (id, order) in &orders {
        check_outcome(&mut audit, id, order, &initial, options);
    }
    check_money(&mut audit, &orders, &snapshot.payments, &prices);
    check_stock(&mut audit, &snapshot.stock, &initial, &sold, &in_flight);
    check_notifications(&mut audit, &orders, &snapshot.notifications);
    for (id, order) in &orders {
        match snapshot.histories.get(*id) {
            Some(events) => audit.violations.extend(run_history_violations(id, events, order.view.status)),
            None => audit.flag(ViolationKind::History, *id, "its history was not read"),
        }
    }
    audit
}

#[cfg(test)]
mod tests;
