//! Unit tests of the audit, on hand-built snapshots.

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
        customer_id: None,
    }
}

fn event(seq: u64, kind: EventKind) -> HistoryEventView {
    HistoryEventView { seq, at_ms: seq, step_name: None, lane: None, event: kind }
}

fn completed(seq: u64, index: u16, attempt: u32) -> HistoryEventView {
    event(seq, EventKind::StepCompleted { step: StepRef::forward(index), attempt, output: JsonText::null() })
}

fn history_ending(status: WorkflowStatus) -> Vec<HistoryEventView> {
    let start = EventKind::WorkflowStarted {
        workflow_type: crate::order::order_workflow_type(),
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
            workflow_type: crate::order::order_workflow_type(),
            definition_version: 1,
            status,
            domain_status: None,
            created_at_ms: 1,
            closed_at_ms: None,
            reason,
            input: JsonText::from_value(&input),
            output: None,
            waiting_for: Vec::new(),
            definition_hash: None,
            why: None,
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
    NotificationEntry {
        order_id: order_id.to_owned(),
        kind: kind.to_owned(),
        message: String::new(),
        customer_id: None,
        customer_seq: None,
    }
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
    assert_eq!(expected_outcome(&input("b", &[(PRODUCT, 1)], DECLINED_PAYMENT_METHOD), &initial), Expected::Cancelled);
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

/// Order v2: a bank transfer confirmed with nothing in the ledger is clean, and one with a
/// charge is not; a fraud-refused order is must-cancel on v2 only; a 3-D Secure order
/// cancelled after a charge and its refund nets zero.
#[test]
fn order_v2_outcomes_are_understood() {
    let mut world = World::new(0, 0);
    let transfer = input("transfer", &[(PRODUCT, QUANTITY)], crate::order::BANK_TRANSFER);
    World::add_run(&mut world.snapshot, "transfer", transfer, WorkflowStatus::Completed);
    world.snapshot.notifications.push(notification("transfer", ORDER_CONFIRMED));
    let three_ds = input("3ds", &[(PRODUCT, QUANTITY)], crate::order::CARD_3DS);
    World::add_run(&mut world.snapshot, "3ds", three_ds, WorkflowStatus::Compensated);
    world.snapshot.payments.push(payment("3ds", CHARGE, QUANTITY * PRICE));
    world.snapshot.payments.push(payment("3ds", REFUND, QUANTITY * PRICE));
    world.snapshot.notifications.push(notification("3ds", ORDER_CANCELLED));
    world.snapshot.stock = vec![product(PRODUCT, UNITS - QUANTITY, 0), product(SOLD_OUT, 0, 0)];
    let clean = world.audit_reconstructed(false);
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);

    world.snapshot.payments.push(payment("transfer", CHARGE, QUANTITY * PRICE));
    let charged = world.audit_reconstructed(false);
    assert!(charged.violations.iter().any(|v| v.kind == ViolationKind::Money), "{:?}", charged.violations);

    let mut fraud = input("f", &[(PRODUCT, crate::order::FRAUD_QUANTITY_THRESHOLD + 1)], "PAYPAL");
    fraud.shipping_address = "PO Box 9".into();
    let initial = BTreeMap::from([(PRODUCT, UNITS)]);
    assert!(must_cancel(&fraud, &initial).is_some(), "the current definition refuses it");
    assert!(checks::must_cancel_on(&fraud, &initial, 1).is_none(), "v1 has no fraud check");
    fraud.payment_method = "CREDIT_CARD".into();
    assert!(must_cancel(&fraud, &initial).is_none(), "a card order is not screened");
}
