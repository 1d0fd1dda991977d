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
    errors, NotificationEntry, OrderInput, PaymentEntry, Product, DECLINED_PAYMENT_METHOD, ORDER_WORKFLOW_TYPE,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

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

/// Where a run stands, in the order saga's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Running,
    Confirmed,
    /// Compensated, or terminated by an operator.
    Cancelled,
    /// The run failed (e.g. a compensation that kept failing): it needs attention.
    Failed,
}

impl Outcome {
    fn of(status: WorkflowStatus) -> Outcome {
        match status {
            WorkflowStatus::Running => Outcome::Running,
            WorkflowStatus::Completed => Outcome::Confirmed,
            WorkflowStatus::Compensated | WorkflowStatus::Terminated => Outcome::Cancelled,
            WorkflowStatus::Failed => Outcome::Failed,
        }
    }
}

/// One order run with its parsed input (`None` when the input is not an order).
struct Order<'a> {
    view: &'a WorkflowView,
    input: Option<OrderInput>,
    outcome: Outcome,
}

impl Order<'_> {
    /// `(productId, quantity)` summed per product, as the inventory reserves them.
    fn quantities(&self) -> BTreeMap<i64, i64> {
        self.input.as_ref().map(quantities).unwrap_or_default()
    }
}

fn quantities(input: &OrderInput) -> BTreeMap<i64, i64> {
    let mut wanted = BTreeMap::new();
    for item in &input.order_items {
        *wanted.entry(item.product_id).or_insert(0) += item.quantity;
    }
    wanted
}

/// Why an order's input dictates CANCELLED whatever else happens, if it does: a declined
/// card, an unknown product, or more units than the product had before any order.
pub fn must_cancel(input: &OrderInput, initial_stock: &BTreeMap<i64, i64>) -> Option<String> {
    if input.payment_method == DECLINED_PAYMENT_METHOD {
        return Some("its card is declined".to_owned());
    }
    quantities(input).into_iter().find_map(|(product, wanted)| match initial_stock.get(&product) {
        None => Some(format!("product {product} is unknown")),
        Some(&had) if wanted > had => Some(format!("it asks {wanted} of product {product}, which had {had}")),
        Some(_) => None,
    })
}

/// The outcome an order's input dictates when no other order competes for its stock.
pub fn expected_outcome(input: &OrderInput, initial_stock: &BTreeMap<i64, i64>) -> Expected {
    match must_cancel(input, initial_stock) {
        Some(_) => Expected::Cancelled,
        None => Expected::Confirmed,
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

/// The order runs by id, flagging a second run for one id and inputs that are not orders.
fn index_orders<'a>(snapshot: &'a Snapshot, audit: &mut Audit) -> BTreeMap<&'a str, Order<'a>> {
    let mut orders = BTreeMap::new();
    for view in snapshot.runs.iter().filter(|r| r.workflow_type == ORDER_WORKFLOW_TYPE) {
        let id = view.id.as_str();
        let input = match view.input.deserialize_as::<OrderInput>() {
            Ok(input) => Some(input),
            Err(err) => {
                audit.flag(ViolationKind::Outcome, id, format!("its input is not an order: {err}"));
                None
            }
        };
        let order = Order { view, input, outcome: Outcome::of(view.status) };
        if orders.insert(id, order).is_some() {
            audit.flag(ViolationKind::Unplaced, id, "more than one workflow for this order id");
        }
    }
    orders
}

/// 2: terminal, with the outcome its input (or the caller's plan) dictates.
fn check_outcome(audit: &mut Audit, id: &str, order: &Order<'_>, initial: &BTreeMap<i64, i64>, options: &Options) {
    let reason = order.view.reason.as_deref().unwrap_or("");
    match order.outcome {
        Outcome::Running => {
            audit.running += 1;
            if !options.allow_running {
                audit.flag(ViolationKind::Running, id, "still RUNNING (order PENDING)");
            }
            return;
        }
        Outcome::Failed => {
            audit.flag(ViolationKind::Outcome, id, format!("FAILED and needs attention: {reason}"));
            return;
        }
        Outcome::Confirmed => audit.confirmed += 1,
        Outcome::Cancelled => audit.cancelled += 1,
    }
    let payment_unavailable = order.outcome == Outcome::Cancelled && reason.contains(errors::PAYMENT_UNAVAILABLE);
    let expected = options.expected.as_ref().and_then(|plan| plan.get(id).copied());
    match (expected, order.outcome) {
        (Some(Expected::Confirmed | Expected::ConfirmedOrPaymentUnavailable), Outcome::Confirmed)
        | (Some(Expected::Cancelled), Outcome::Cancelled) => {}
        (Some(Expected::ConfirmedOrPaymentUnavailable), Outcome::Cancelled) if payment_unavailable => {
            audit.payment_unavailable += 1;
        }
        (Some(expected), _) => {
            let want = match expected {
                Expected::Cancelled => "CANCELLED",
                Expected::Confirmed => "CONFIRMED",
                Expected::ConfirmedOrPaymentUnavailable => "CONFIRMED (or CANCELLED for PAYMENT_UNAVAILABLE)",
            };
            let got = if order.outcome == Outcome::Confirmed { "CONFIRMED" } else { "CANCELLED" };
            audit.flag(
                ViolationKind::Outcome,
                id,
                format!("is {got} (reason {reason:?}) but its plan dictates {want}"),
            );
        }
        (None, outcome) => {
            if payment_unavailable {
                audit.payment_unavailable += 1;
            }
            let must = order.input.as_ref().and_then(|input| must_cancel(input, initial));
            if let (Some(why), Outcome::Confirmed) = (must, outcome) {
                audit.flag(ViolationKind::Outcome, id, format!("is CONFIRMED but {why}"));
            }
        }
    }
}

/// 3: at most one charge and one refund per order; net charged = total iff CONFIRMED.
fn check_money(
    audit: &mut Audit,
    orders: &BTreeMap<&str, Order<'_>>,
    payments: &[PaymentEntry],
    prices: &HashMap<i64, i64>,
) {
    let mut ledger: BTreeMap<&str, Vec<&PaymentEntry>> = BTreeMap::new();
    for entry in payments {
        ledger.entry(entry.order_id.as_str()).or_default().push(entry);
    }
    for id in ledger.keys().filter(|id| !orders.contains_key(*id)) {
        audit.flag(ViolationKind::Unplaced, *id, "payment ledger entries for an order the engine does not hold");
    }
    for (id, order) in orders {
        let entries = ledger.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let mut net = 0;
        let (mut charges, mut refunds) = (0, 0);
        for entry in entries {
            match entry.kind.as_str() {
                CHARGE => {
                    charges += 1;
                    net += entry.amount_cents;
                }
                REFUND => {
                    refunds += 1;
                    net -= entry.amount_cents;
                }
                other => audit.flag(ViolationKind::Money, *id, format!("unknown ledger entry kind {other:?}")),
            }
        }
        if charges > 1 || refunds > 1 {
            audit.flag(ViolationKind::Duplicate, *id, format!("{charges} charges and {refunds} refunds"));
        }
        let expected_net = match order.outcome {
            Outcome::Confirmed => order.quantities().iter().map(|(p, q)| prices.get(p).copied().unwrap_or(0) * q).sum(),
            Outcome::Cancelled => 0,
            // Money is still moving, or the failure is flagged already and needs a person.
            Outcome::Running | Outcome::Failed => continue,
        };
        if net != expected_net {
            audit.flag(ViolationKind::Money, *id, format!("net charged {net} cents, expected {expected_net}"));
        }
    }
}

/// 4: stock never negative; stock + reserved = initial - confirmed; reserved units only for
/// running orders. Units of running orders may be anywhere between held and sold.
fn check_stock(
    audit: &mut Audit,
    stock: &[Product],
    initial: &BTreeMap<i64, i64>,
    sold: &BTreeMap<i64, i64>,
    in_flight: &BTreeMap<i64, i64>,
) {
    let current: BTreeMap<i64, &Product> = stock.iter().map(|p| (p.product_id, p)).collect();
    for id in initial.keys().filter(|id| !current.contains_key(id)) {
        audit.flag(ViolationKind::Stock, format!("product {id}"), "disappeared from the inventory");
    }
    for (id, product) in current {
        let subject = format!("product {id}");
        let running = in_flight.get(&id).copied().unwrap_or(0);
        if product.stock < 0 {
            audit.flag(ViolationKind::Stock, &subject, format!("stock is negative: {}", product.stock));
        }
        if product.reserved < 0 || product.reserved > running {
            audit.flag(
                ViolationKind::Stock,
                &subject,
                format!("{} units reserved, but running orders ask for only {running}", product.reserved),
            );
        }
        let Some(&had) = initial.get(&id) else { continue };
        let confirmed = sold.get(&id).copied().unwrap_or(0);
        let most = had - confirmed;
        let held = product.stock + product.reserved;
        if held > most || held < most - running {
            let running_note =
                if running > 0 { format!(" (up to {running} fewer for running orders)") } else { String::new() };
            audit.flag(
                ViolationKind::Stock,
                &subject,
                format!(
                    "stock {} + reserved {} = {held}, expected initial {had} - confirmed {confirmed} = {most}{running_note}",
                    product.stock, product.reserved
                ),
            );
        }
    }
}

/// 5: exactly one outcome notification per finished order, of the right kind.
fn check_notifications(audit: &mut Audit, orders: &BTreeMap<&str, Order<'_>>, outbox: &[NotificationEntry]) {
    let mut sent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for entry in outbox {
        sent.entry(entry.order_id.as_str()).or_default().push(entry.kind.as_str());
    }
    for id in sent.keys().filter(|id| !orders.contains_key(*id)) {
        audit.flag(ViolationKind::Unplaced, *id, "notifications for an order the engine does not hold");
    }
    for (id, order) in orders {
        let kinds = sent.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if kinds.len() > 1 {
            audit.flag(ViolationKind::Duplicate, *id, format!("{} notifications: {kinds:?}", kinds.len()));
            continue;
        }
        // A terminated run stops without notifying; a running or failed one may have sent one.
        let expected = match order.view.status {
            WorkflowStatus::Completed => ORDER_CONFIRMED,
            WorkflowStatus::Compensated => ORDER_CANCELLED,
            WorkflowStatus::Running | WorkflowStatus::Failed | WorkflowStatus::Terminated => continue,
        };
        if kinds != [expected] {
            audit.flag(ViolationKind::Notification, *id, format!("notifications {kinds:?}, expected one {expected}"));
        }
    }
}

/// 6: everything wrong with a finished run's history: numbering from 1, a start first,
/// exactly one terminal event and it last, at most one completion per step attempt and per
/// step.
pub fn history_violations(id: &str, events: &[HistoryEventView]) -> Vec<Violation> {
    shape_violations(id, events, true)
}

/// [`history_violations`] for a run whose status is known: a running run has no terminal
/// event, and a finished one ends with the event its status names.
fn run_history_violations(id: &str, events: &[HistoryEventView], status: WorkflowStatus) -> Vec<Violation> {
    let mut violations = shape_violations(id, events, status.is_terminal());
    let ending = match events.last().map(|e| &e.event) {
        Some(EventKind::WorkflowCompleted { .. }) => Some(WorkflowStatus::Completed),
        Some(EventKind::WorkflowCompensated { .. }) => Some(WorkflowStatus::Compensated),
        Some(EventKind::WorkflowFailed { .. }) => Some(WorkflowStatus::Failed),
        Some(EventKind::WorkflowTerminated { .. }) => Some(WorkflowStatus::Terminated),
        _ => None,
    };
    if let Some(ending) = ending.filter(|ending| *ending != status) {
        let message = format!("the run is {} but its history ends {}", status.as_str(), ending.as_str());
        violations.push(Violation::new(ViolationKind::History, id, message));
    }
    violations
}

fn shape_violations(id: &str, events: &[HistoryEventView], finished: bool) -> Vec<Violation> {
    let history = |message: String| Violation::new(ViolationKind::History, id, message);
    let Some(first) = events.first() else {
        return vec![history("empty history".to_owned())];
    };
    let mut violations = Vec::new();
    if let Some((i, event)) = events.iter().enumerate().find(|(i, e)| e.seq != *i as u64 + 1) {
        violations.push(history(format!("event #{} has seq {}", i + 1, event.seq)));
    }
    if !matches!(first.event, EventKind::WorkflowStarted { .. }) {
        violations.push(history(format!("first event is {}, not WorkflowStarted", first.event.name())));
    }
    let terminals: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| e.event.is_terminal()).map(|(i, _)| i).collect();
    match (terminals.as_slice(), finished) {
        ([], false) => {}
        ([last], true) if *last == events.len() - 1 => {}
        ([], true) => violations.push(history("no terminal event".to_owned())),
        ([only], true) => violations.push(history(format!("terminal event #{} is not the last", only + 1))),
        (some, false) => violations.push(history(format!("{} terminal event(s) in a running run", some.len()))),
        (many, true) => violations.push(history(format!("{} terminal events", many.len()))),
    }
    let mut attempts: HashSet<(StepRef, u32)> = HashSet::new();
    let mut steps: HashSet<StepRef> = HashSet::new();
    for event in events {
        if let EventKind::StepCompleted { step, attempt, .. } = &event.event {
            let step_name = event.step_name.as_deref().unwrap_or("?");
            if !attempts.insert((*step, *attempt)) {
                let message = format!("step {step_name} ({step:?}) attempt {attempt} completed twice");
                violations.push(Violation::new(ViolationKind::Duplicate, id, message));
            } else if !steps.insert(*step) {
                let message = format!("step {step_name} ({step:?}) completed by more than one attempt");
                violations.push(Violation::new(ViolationKind::Duplicate, id, message));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkflowId;
    use crate::json::JsonText;
    use crate::order::OrderItem;

    const PRICE: i64 = 250;
    const PRODUCT: i64 = 1;
    const SOLD_OUT: i64 = 7;
    const UNITS: i64 = 100;
    const QUANTITY: i64 = 2;

    fn input(id: &str, items: &[(i64, i64)], payment_method: &str) -> OrderInput {
        OrderInput {
            order_id: id.to_owned(),
            order_items: items.iter().map(|&(product_id, quantity)| OrderItem { product_id, quantity }).collect(),
            shipping_address: "1 Test Street".to_owned(),
            payment_method: payment_method.to_owned(),
        }
    }

    fn event(seq: u64, kind: EventKind) -> HistoryEventView {
        HistoryEventView { seq, at_ms: seq, step_name: None, event: kind }
    }

    fn completed(seq: u64, index: u16, attempt: u32) -> HistoryEventView {
        event(seq, EventKind::StepCompleted { step: StepRef::forward(index), attempt, output: JsonText::null() })
    }

    fn history_ending(status: WorkflowStatus) -> Vec<HistoryEventView> {
        let start = EventKind::WorkflowStarted {
            workflow_type: ORDER_WORKFLOW_TYPE.to_owned(),
            definition_version: 1,
            input: JsonText::null(),
        };
        let mut events = vec![event(1, start), completed(2, 0, 1)];
        let end = match status {
            WorkflowStatus::Running => return events,
            WorkflowStatus::Completed => EventKind::WorkflowCompleted { output: JsonText::null() },
            WorkflowStatus::Compensated => EventKind::WorkflowCompensated { reason: "step failed".to_owned() },
            WorkflowStatus::Failed => EventKind::WorkflowFailed { reason: "stuck".to_owned() },
            WorkflowStatus::Terminated => EventKind::WorkflowTerminated { reason: "operator".to_owned() },
        };
        events.push(event(3, end));
        events
    }

    /// A consistent world: `confirmed` orders of product 1 confirmed, charged, notified and
    /// sold; `declined` orders cancelled, refunded to zero and notified.
    struct World {
        snapshot: Snapshot,
        initial: BTreeMap<i64, i64>,
    }

    impl World {
        fn new(confirmed: usize, declined: usize) -> World {
            let mut snapshot = Snapshot::default();
            let mut sold = 0;
            for i in 0..confirmed + declined {
                let id = format!("order-{i}");
                let is_confirmed = i < confirmed;
                let method = if is_confirmed { "CREDIT_CARD" } else { DECLINED_PAYMENT_METHOD };
                let status = if is_confirmed { WorkflowStatus::Completed } else { WorkflowStatus::Compensated };
                World::add_run(&mut snapshot, &id, input(&id, &[(PRODUCT, QUANTITY)], method), status);
                if is_confirmed {
                    sold += QUANTITY;
                    snapshot.payments.push(payment(&id, CHARGE, QUANTITY * PRICE));
                }
                let kind = if is_confirmed { ORDER_CONFIRMED } else { ORDER_CANCELLED };
                snapshot.notifications.push(notification(&id, kind));
            }
            snapshot.stock = vec![product(PRODUCT, UNITS - sold, 0), product(SOLD_OUT, 0, 0)];
            World { snapshot, initial: BTreeMap::from([(PRODUCT, UNITS), (SOLD_OUT, 0)]) }
        }

        fn add_run(snapshot: &mut Snapshot, id: &str, input: OrderInput, status: WorkflowStatus) {
            let reason = match status {
                WorkflowStatus::Compensated => Some("step charge_payment failed: PAYMENT_DECLINED".to_owned()),
                _ => None,
            };
            let input = serde_json::to_value(&input).expect("an order input serializes");
            snapshot.runs.push(WorkflowView {
                id: WorkflowId::parse(id).expect("test ids are valid"),
                workflow_type: ORDER_WORKFLOW_TYPE.to_owned(),
                definition_version: 1,
                status,
                domain_status: None,
                created_at_ms: 1,
                closed_at_ms: None,
                reason,
                input: JsonText::from_value(&input),
                output: None,
            });
            snapshot.histories.insert(id.to_owned(), history_ending(status));
        }

        fn run_mut(&mut self, id: &str) -> &mut WorkflowView {
            self.snapshot.runs.iter_mut().find(|r| r.id.as_str() == id).expect("the run exists")
        }

        fn plan(&self) -> HashMap<String, Expected> {
            self.snapshot
                .runs
                .iter()
                .map(|run| {
                    let input: OrderInput = run.input.deserialize_as().expect("the input is an order");
                    (run.id.to_string(), expected_outcome(&input, &self.initial))
                })
                .collect()
        }

        fn audit_known(&self) -> Audit {
            let options = Options {
                initial_stock: InitialStock::Known(self.initial.clone()),
                expected: Some(self.plan()),
                allow_running: false,
            };
            audit(&self.snapshot, &options)
        }

        fn audit_reconstructed(&self, allow_running: bool) -> Audit {
            let options = Options { initial_stock: InitialStock::Reconstructed, expected: None, allow_running };
            audit(&self.snapshot, &options)
        }
    }

    fn product(product_id: i64, stock: i64, reserved: i64) -> Product {
        Product { product_id, name: format!("p{product_id}"), price_cents: PRICE, stock, reserved }
    }

    fn payment(order_id: &str, kind: &str, amount_cents: i64) -> PaymentEntry {
        PaymentEntry {
            order_id: order_id.to_owned(),
            kind: kind.to_owned(),
            amount_cents,
            idempotency_key: format!("{order_id}-{kind}"),
        }
    }

    fn notification(order_id: &str, kind: &str) -> NotificationEntry {
        NotificationEntry { order_id: order_id.to_owned(), kind: kind.to_owned(), message: String::new() }
    }

    fn kinds(audit: &Audit) -> Vec<ViolationKind> {
        audit.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_consistent_world_is_clean_both_ways() {
        let world = World::new(5, 2);
        let known = world.audit_known();
        assert!(known.is_clean(), "{:#?}", known.violations);
        assert_eq!((known.orders, known.confirmed, known.cancelled, known.running), (7, 5, 2, 0));
        let reconstructed = world.audit_reconstructed(false);
        assert!(reconstructed.is_clean(), "{:#?}", reconstructed.violations);
    }

    #[test]
    fn inputs_dictate_cancellation() {
        let initial = BTreeMap::from([(PRODUCT, UNITS), (SOLD_OUT, 0)]);
        let plain = input("a", &[(PRODUCT, QUANTITY)], "CREDIT_CARD");
        assert_eq!(expected_outcome(&plain, &initial), Expected::Confirmed);
        assert_eq!(
            expected_outcome(&input("b", &[(PRODUCT, 1)], DECLINED_PAYMENT_METHOD), &initial),
            Expected::Cancelled
        );
        assert_eq!(expected_outcome(&input("c", &[(PRODUCT, 1), (SOLD_OUT, 1)], "X"), &initial), Expected::Cancelled);
        assert_eq!(expected_outcome(&input("d", &[(99, 1)], "X"), &initial), Expected::Cancelled);
        // Two lines of one product are reserved together: 60 + 60 is more than 100.
        assert_eq!(expected_outcome(&input("e", &[(PRODUCT, 60), (PRODUCT, 60)], "X"), &initial), Expected::Cancelled);
    }

    #[test]
    fn a_lost_order_and_an_unplaced_one_are_caught() {
        let world = World::new(2, 0);
        let mut plan = world.plan();
        plan.remove("order-1");
        plan.insert("order-ghost".to_owned(), Expected::Confirmed);
        let options = Options {
            initial_stock: InitialStock::Known(world.initial.clone()),
            expected: Some(plan),
            allow_running: false,
        };
        let found = audit(&world.snapshot, &options);
        assert_eq!(kinds(&found), [ViolationKind::Lost, ViolationKind::Unplaced], "{:#?}", found.violations);
        assert_eq!(found.violations[0].subject, "order-ghost");
    }

    #[test]
    fn a_doubled_charge_is_caught() {
        let mut world = World::new(3, 0);
        world.snapshot.payments.push(payment("order-1", CHARGE, QUANTITY * PRICE));
        let found = world.audit_known();
        assert_eq!(kinds(&found), [ViolationKind::Duplicate, ViolationKind::Money], "{:#?}", found.violations);
        assert!(found.violations.iter().all(|v| v.subject == "order-1"));
    }

    #[test]
    fn money_kept_by_a_cancelled_order_is_caught() {
        let mut world = World::new(1, 1);
        world.snapshot.payments.push(payment("order-1", CHARGE, QUANTITY * PRICE));
        let found = world.audit_known();
        assert_eq!(kinds(&found), [ViolationKind::Money], "{:#?}", found.violations);
        assert!(found.violations[0].message.contains("expected 0"));
    }

    #[test]
    fn a_held_reservation_is_caught() {
        // Order 0 is confirmed, but its units are still reserved rather than sold.
        let mut world = World::new(1, 0);
        world.snapshot.stock[0] = product(PRODUCT, UNITS - QUANTITY, QUANTITY);
        for found in [world.audit_known(), world.audit_reconstructed(true)] {
            assert!(found.count(ViolationKind::Stock) >= 1, "{:#?}", found.violations);
            assert!(found.violations.iter().any(|v| v.message.contains("reserved")));
        }
    }

    #[test]
    fn stock_changed_behind_the_engines_back_is_caught() {
        let mut world = World::new(2, 0);
        world.snapshot.stock[0].stock += 5;
        let found = world.audit_known();
        assert_eq!(kinds(&found), [ViolationKind::Stock], "{:#?}", found.violations);
        assert_eq!(found.violations[0].subject, format!("product {PRODUCT}"));
        // Negative stock is wrong whatever the initial stock was.
        world.snapshot.stock[0].stock = -1;
        assert!(world.audit_reconstructed(false).violations.iter().any(|v| v.message.contains("negative")));
    }

    #[test]
    fn running_orders_are_violations_unless_allowed_and_may_hold_stock() {
        let mut world = World::new(1, 0);
        World::add_run(&mut world.snapshot, "order-9", input("order-9", &[(PRODUCT, 3)], "X"), WorkflowStatus::Running);
        // Order 9 holds its three units.
        world.snapshot.stock[0].stock -= 3;
        world.snapshot.stock[0].reserved += 3;
        assert_eq!(kinds(&world.audit_reconstructed(false)), [ViolationKind::Running]);
        let allowed = world.audit_reconstructed(true);
        assert!(allowed.is_clean(), "{:#?}", allowed.violations);
        assert_eq!(allowed.running, 1);
        let mut plan = world.plan();
        plan.insert("order-9".to_owned(), Expected::Confirmed);
        let options = Options {
            initial_stock: InitialStock::Known(world.initial.clone()),
            expected: Some(plan),
            allow_running: true,
        };
        assert!(audit(&world.snapshot, &options).is_clean());
    }

    #[test]
    fn a_wrong_outcome_is_caught_with_or_without_a_plan() {
        let mut world = World::new(1, 1);
        // The declined order claims it was confirmed, charged and notified as such.
        world.run_mut("order-1").status = WorkflowStatus::Completed;
        world.snapshot.histories.insert("order-1".to_owned(), history_ending(WorkflowStatus::Completed));
        world.snapshot.payments.push(payment("order-1", CHARGE, QUANTITY * PRICE));
        world.snapshot.notifications.retain(|n| n.order_id != "order-1");
        world.snapshot.notifications.push(notification("order-1", ORDER_CONFIRMED));
        world.snapshot.stock[0].stock -= QUANTITY;
        assert_eq!(kinds(&world.audit_known()), [ViolationKind::Outcome]);
        let unplanned = world.audit_reconstructed(false);
        assert_eq!(kinds(&unplanned), [ViolationKind::Outcome], "{:#?}", unplanned.violations);
        assert!(unplanned.violations[0].message.contains("declined"));
    }

    #[test]
    fn payment_unavailable_is_allowed_only_where_planned_and_counted() {
        let mut world = World::new(2, 0);
        let run = world.run_mut("order-1");
        run.status = WorkflowStatus::Compensated;
        run.reason = Some("step charge_payment failed: PAYMENT_UNAVAILABLE: provider down".to_owned());
        world.snapshot.histories.insert("order-1".to_owned(), history_ending(WorkflowStatus::Compensated));
        world.snapshot.payments.retain(|p| p.order_id != "order-1");
        world.snapshot.notifications.retain(|n| n.order_id != "order-1");
        world.snapshot.notifications.push(notification("order-1", ORDER_CANCELLED));
        world.snapshot.stock[0].stock += QUANTITY;
        assert_eq!(kinds(&world.audit_known()), [ViolationKind::Outcome], "a plain Confirmed plan refuses it");
        let plan = world.plan().into_keys().map(|id| (id, Expected::ConfirmedOrPaymentUnavailable)).collect();
        let options = Options {
            initial_stock: InitialStock::Known(world.initial.clone()),
            expected: Some(plan),
            allow_running: false,
        };
        let found = audit(&world.snapshot, &options);
        assert!(found.is_clean(), "{:#?}", found.violations);
        assert_eq!(found.payment_unavailable, 1);
    }

    #[test]
    fn notifications_missing_doubled_or_of_the_wrong_kind_are_caught() {
        let mut world = World::new(3, 0);
        world.snapshot.notifications.retain(|n| n.order_id != "order-0");
        world.snapshot.notifications.push(notification("order-1", ORDER_CONFIRMED));
        world.snapshot.notifications.retain(|n| n.order_id != "order-2");
        world.snapshot.notifications.push(notification("order-2", ORDER_CANCELLED));
        let found = world.audit_known();
        let by_subject: Vec<(&str, ViolationKind)> =
            found.violations.iter().map(|v| (v.subject.as_str(), v.kind)).collect();
        assert_eq!(
            by_subject,
            [
                ("order-0", ViolationKind::Notification),
                ("order-1", ViolationKind::Duplicate),
                ("order-2", ViolationKind::Notification)
            ]
        );
    }

    #[test]
    fn a_corrupted_history_is_caught() {
        let good = history_ending(WorkflowStatus::Completed);
        assert_eq!(history_violations("h", &good), []);

        let mut gap = good.clone();
        gap[2].seq = 5;
        assert!(history_violations("h", &gap)[0].message.contains("seq 5"));

        let mut headless = good.clone();
        headless.remove(0);
        for (i, e) in headless.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        assert!(history_violations("h", &headless).iter().any(|v| v.message.contains("not WorkflowStarted")));

        let mut twice = good.clone();
        twice.push(event(4, EventKind::WorkflowCompleted { output: JsonText::null() }));
        assert!(history_violations("h", &twice).iter().any(|v| v.message == "2 terminal events"));

        let mut unfinished = good.clone();
        unfinished.pop();
        assert!(history_violations("h", &unfinished).iter().any(|v| v.message == "no terminal event"));

        let mut doubled = good.clone();
        doubled.insert(2, completed(3, 0, 1));
        doubled[3].seq = 4;
        let found = history_violations("h", &doubled);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, ViolationKind::Duplicate);

        let mut two_attempts = good;
        two_attempts.insert(2, completed(3, 0, 2));
        two_attempts[3].seq = 4;
        assert!(history_violations("h", &two_attempts)[0].message.contains("more than one attempt"));

        assert_eq!(history_violations("h", &[])[0].message, "empty history");
    }

    #[test]
    fn a_history_must_agree_with_its_run() {
        let mut world = World::new(1, 0);
        world.snapshot.histories.insert("order-0".to_owned(), history_ending(WorkflowStatus::Terminated));
        let found = world.audit_known();
        assert_eq!(kinds(&found), [ViolationKind::History], "{:#?}", found.violations);
        world.snapshot.histories.remove("order-0");
        assert_eq!(world.audit_known().violations[0].message, "its history was not read");
    }
}
