//! The per-invariant checks of the order audit (items 1-5): each order's outcome against
//! what its input dictates, money against the confirmed orders, stock against sales and
//! reservations, notifications against outcomes. Each check only adds violations to the
//! [`Audit`] it is given; it must never fetch, print or stop at the first violation.

use super::*;

/// Where a run stands, in the order saga's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
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
pub(super) struct Order<'a> {
    pub(super) view: &'a WorkflowView,
    pub(super) input: Option<OrderInput>,
    pub(super) outcome: Outcome,
}

impl Order<'_> {
    /// `(productId, quantity)` summed per product, as the inventory reserves them.
    pub(super) fn quantities(&self) -> BTreeMap<i64, i64> {
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
/// card, an unknown product, more units than the product had before any order, or (on the
/// current definition, order v2, which screens some payment methods) the fraud rule.
pub fn must_cancel(input: &OrderInput, initial_stock: &BTreeMap<i64, i64>) -> Option<String> {
    must_cancel_on(input, initial_stock, FIRST_SCREENING_VERSION)
}

/// The first version of the order definition with the fraud check (`workflows/order-v2.toml`).
pub const FIRST_SCREENING_VERSION: u32 = 2;

/// [`must_cancel`] for a run of `definition_version`: version 1 has no fraud check.
pub(super) fn must_cancel_on(
    input: &OrderInput,
    initial_stock: &BTreeMap<i64, i64>,
    definition_version: u32,
) -> Option<String> {
    if input.payment_method == DECLINED_PAYMENT_METHOD {
        return Some("its card is declined".to_owned());
    }
    let screened = FRAUD_SCREENED_PAYMENT_METHODS.contains(&input.payment_method.as_str());
    if let Some((total, word)) =
        fraud_rule_hit(input).filter(|_| screened && definition_version >= FIRST_SCREENING_VERSION)
    {
        return Some(format!("the fraud check refuses {total} units to an address containing {word:?}"));
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
/// The order runs by id, flagging a second run for one id and inputs that are not orders.
pub(super) fn index_orders<'a>(snapshot: &'a Snapshot, audit: &mut Audit) -> BTreeMap<&'a str, Order<'a>> {
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
pub(super) fn check_outcome(
    audit: &mut Audit,
    id: &str,
    order: &Order<'_>,
    initial: &BTreeMap<i64, i64>,
    options: &Options,
) {
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
            let version = order.view.definition_version;
            let must = order.input.as_ref().and_then(|input| must_cancel_on(input, initial, version));
            if let (Some(why), Outcome::Confirmed) = (must, outcome) {
                audit.flag(ViolationKind::Outcome, id, format!("is CONFIRMED but {why}"));
            }
        }
    }
}

/// 3: at most one charge and one refund per order; net charged = total iff CONFIRMED.
pub(super) fn check_money(
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
        // A bank transfer's money never passes the payment worker: a confirmed one has no
        // charge in the ledger (and must have none).
        let in_ledger = order.input.as_ref().is_none_or(|input| charges_in_ledger(&input.payment_method));
        let expected_net = match order.outcome {
            Outcome::Confirmed if !in_ledger => 0,
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
pub(super) fn check_stock(
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
pub(super) fn check_notifications(audit: &mut Audit, orders: &BTreeMap<&str, Order<'_>>, outbox: &[NotificationEntry]) {
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
