//! The invariants of design.md section 7, checked from outside through the public APIs:
//! the engine's workflows and histories, and the worker's stock, ledger and outbox.
//!
//! [`check_invariants`] is for a stack whose every order the caller placed and knows (the
//! crash tests, later a torture test and `shopctl verify`); [`history_violations`] checks
//! one history on its own and suits every test. Both return every violation found, in
//! words, rather than stopping at the first, so one run shows the whole damage.

use crate::client::{net_charged, Admin, Api, CANCELLED, CONFIRMED};
use shop_types::api::HistoryEventView;
use shop_types::history::EventKind;
use shop_types::order::{Product, ORDER_WORKFLOW_TYPE};
use shop_types::StepRef;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Histories fetched at once while checking.
const HISTORY_FETCH_CONCURRENCY: usize = 32;
/// Violations printed when an invariant check fails.
const VIOLATIONS_SHOWN: usize = 40;

/// The notification kinds the order saga sends (see `workflows/order.toml`).
pub const ORDER_CONFIRMED: &str = "ORDER_CONFIRMED";
pub const ORDER_CANCELLED: &str = "ORDER_CANCELLED";

/// An order the test placed, and the outcome its input dictates.
#[derive(Debug, Clone)]
pub struct PlacedOrder {
    pub order_id: String,
    /// `(productId, quantity)` lines.
    pub items: Vec<(i64, i64)>,
    pub payment_method: String,
    /// `CONFIRMED` or `CANCELLED`.
    pub expected_status: &'static str,
}

/// Everything wrong with one run's history: numbering, framing by a start and exactly one
/// terminal event, and duplicate completions.
pub fn history_violations(id: &str, events: &[HistoryEventView]) -> Vec<String> {
    let mut violations = Vec::new();
    if events.is_empty() {
        return vec![format!("{id}: empty history")];
    }
    for (i, event) in events.iter().enumerate() {
        let expected = i as u64 + 1;
        if event.seq != expected {
            violations.push(format!("{id}: event #{expected} has seq {}", event.seq));
            break;
        }
    }
    if !matches!(events[0].event, EventKind::WorkflowStarted { .. }) {
        violations.push(format!("{id}: first event is {} not WorkflowStarted", events[0].event.name()));
    }
    let terminals: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| e.event.is_terminal()).map(|(i, _)| i).collect();
    match terminals.as_slice() {
        [only] if *only == events.len() - 1 => {}
        [] => violations.push(format!("{id}: no terminal event")),
        [only] => violations.push(format!("{id}: terminal event at #{} is not the last", only + 1)),
        many => violations.push(format!("{id}: {} terminal events", many.len())),
    }
    let mut completed_attempts: HashSet<(StepRef, u32)> = HashSet::new();
    let mut completed_steps: HashSet<StepRef> = HashSet::new();
    for event in events {
        if let EventKind::StepCompleted { step, attempt, .. } = &event.event {
            if !completed_attempts.insert((*step, *attempt)) {
                violations.push(format!("{id}: step {step:?} attempt {attempt} completed twice"));
            }
            if !completed_steps.insert(*step) {
                violations.push(format!("{id}: step {step:?} completed by more than one attempt"));
            }
        }
    }
    violations
}

/// Panics listing the violations, if there are any.
#[track_caller]
pub fn assert_no_violations(what: &str, violations: &[String]) {
    if violations.is_empty() {
        return;
    }
    let shown: Vec<&str> = violations.iter().take(VIOLATIONS_SHOWN).map(String::as_str).collect();
    panic!("{what}: {} violation(s):\n  {}", violations.len(), shown.join("\n  "));
}

/// Checks invariants 1-6 of design.md section 7 for a drained stack that ran exactly
/// `orders` (every one acknowledged), starting from `initial_stock`. Returns every violation.
pub async fn check_invariants(
    api: &Api,
    admin: &Admin,
    initial_stock: &[Product],
    orders: &[PlacedOrder],
) -> Vec<String> {
    let mut violations = Vec::new();
    let prices: HashMap<i64, i64> = initial_stock.iter().map(|p| (p.product_id, p.price_cents)).collect();

    // 1 and 2: every acknowledged order exists once, is final, and has the outcome its input
    // dictates; the engine holds no order we did not place.
    let runs = match api.all_workflows().await {
        Ok(runs) => runs,
        Err(e) => return vec![format!("cannot list the workflows: {e:#}")],
    };
    let runs: HashMap<String, _> =
        runs.into_iter().filter(|r| r.workflow_type == ORDER_WORKFLOW_TYPE).map(|r| (r.id.to_string(), r)).collect();
    let ours: HashSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    if ours.len() != orders.len() {
        violations.push("the test placed the same order id twice".to_owned());
    }
    for id in runs.keys().filter(|id| !ours.contains(id.as_str())) {
        violations.push(format!("{id}: the engine holds an order nobody placed"));
    }
    let mut outcome: HashMap<&str, &str> = HashMap::new();
    for order in orders {
        let id = order.order_id.as_str();
        let Some(run) = runs.get(id) else {
            violations.push(format!("{id}: acknowledged but the engine does not have it"));
            continue;
        };
        if !run.status.is_terminal() {
            violations.push(format!("{id}: still {:?}", run.status));
            continue;
        }
        let status = run.domain_status.as_deref().unwrap_or("(no label)");
        if status != order.expected_status {
            violations.push(format!(
                "{id}: is {status} ({:?}, reason {:?}) but its input dictates {}",
                run.status, run.reason, order.expected_status
            ));
        }
        outcome.insert(id, status);
    }

    // 3: at most one charge per order; net charged = total if confirmed, else 0.
    let mut ledger: HashMap<String, Vec<_>> = HashMap::new();
    for entry in admin.payments().await {
        ledger.entry(entry.order_id.clone()).or_default().push(entry);
    }
    for id in ledger.keys().filter(|id| !ours.contains(id.as_str())) {
        violations.push(format!("{id}: payment ledger entries for an order nobody placed"));
    }
    for order in orders {
        let id = order.order_id.as_str();
        let entries = ledger.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let charges = entries.iter().filter(|e| e.kind == "charge").count();
        let refunds = entries.iter().filter(|e| e.kind == "refund").count();
        if charges > 1 || refunds > 1 {
            violations.push(format!("{id}: {charges} charges and {refunds} refunds"));
        }
        let total: i64 = order.items.iter().map(|(p, q)| prices.get(p).copied().unwrap_or(0) * q).sum();
        let expected_net = if outcome.get(id) == Some(&CONFIRMED) { total } else { 0 };
        let net = net_charged(entries);
        if net != expected_net {
            violations.push(format!("{id}: net charged {net} cents, expected {expected_net}"));
        }
    }

    // 4: stock never negative; final = initial - confirmed quantities; nothing reserved.
    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    for order in orders.iter().filter(|o| outcome.get(o.order_id.as_str()) == Some(&CONFIRMED)) {
        for (product, quantity) in &order.items {
            *sold.entry(*product).or_default() += quantity;
        }
    }
    let final_stock: HashMap<i64, Product> = admin.stock().await.into_iter().map(|p| (p.product_id, p)).collect();
    for initial in initial_stock {
        let id = initial.product_id;
        let Some(now) = final_stock.get(&id) else {
            violations.push(format!("product {id} disappeared"));
            continue;
        };
        let expected = initial.stock - sold.get(&id).copied().unwrap_or(0);
        if now.stock < 0 || now.reserved != 0 || now.stock != expected {
            violations.push(format!(
                "product {id}: stock {} reserved {}, expected stock {expected} reserved 0",
                now.stock, now.reserved
            ));
        }
    }

    // 5: exactly one outcome notification per order, of the right kind.
    let mut outbox: HashMap<String, Vec<String>> = HashMap::new();
    for entry in admin.notifications().await {
        outbox.entry(entry.order_id).or_default().push(entry.kind);
    }
    for order in orders {
        let id = order.order_id.as_str();
        let expected = match outcome.get(id) {
            Some(&CONFIRMED) => ORDER_CONFIRMED,
            Some(&CANCELLED) => ORDER_CANCELLED,
            _ => continue,
        };
        let kinds = outbox.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if kinds != [expected] {
            violations.push(format!("{id}: notifications {kinds:?}, expected exactly one {expected}"));
        }
    }

    // 6: every history is well formed.
    for chunk in orders.chunks(HISTORY_FETCH_CONCURRENCY) {
        let mut fetches = tokio::task::JoinSet::new();
        for order in chunk {
            let api = api.clone();
            let id = order.order_id.clone();
            fetches.spawn(async move {
                match api.try_history(&id).await {
                    Ok(events) => history_violations(&id, &events),
                    Err(e) => vec![format!("{id}: cannot read its history: {e:#}")],
                }
            });
        }
        while let Some(found) = fetches.join_next().await {
            violations.extend(found.expect("a history check does not panic"));
        }
    }
    violations
}

/// [`check_invariants`], panicking with the violations.
pub async fn assert_invariants(api: &Api, admin: &Admin, initial_stock: &[Product], orders: &[PlacedOrder]) {
    let violations = check_invariants(api, admin, initial_stock, orders).await;
    assert_no_violations("invariants of design.md section 7", &violations);
}
