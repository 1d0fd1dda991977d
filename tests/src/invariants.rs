//! The invariants of design.md section 7, checked from outside through the public APIs:
//! this module only gathers what the engine and the workers show into a
//! [`shop_types::audit::Snapshot`]; the checking itself is [`shop_types::audit`], the one
//! checker that `shopctl verify` and `shopctl bench` use too.
//!
//! [`check_invariants`] is for a stack whose every order the caller placed and knows (the
//! crash tests); [`audit_stack`] takes the audit's options directly (the torture test);
//! [`history_violations`] checks one history on its own and suits every test. All return
//! every violation found, in words, rather than stopping at the first.

use crate::client::{Admin, Api, CONFIRMED};
use shop_types::api::HistoryEventView;
use shop_types::audit::{self, Audit, Expected, InitialStock, Options, Snapshot};
use shop_types::order::{Product, ORDER_WORKFLOW_TYPE};
use std::collections::HashMap;

pub use shop_types::audit::{ORDER_CANCELLED, ORDER_CONFIRMED};

/// Histories fetched at once while checking.
const HISTORY_FETCH_CONCURRENCY: usize = 32;
/// Violations printed when an invariant check fails.
const VIOLATIONS_SHOWN: usize = 40;

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

/// The worker admin APIs serving each domain: one process for all, or one per domain.
#[derive(Clone)]
pub struct Admins {
    pub inventory: Admin,
    pub payment: Admin,
    pub notification: Admin,
}

impl Admins {
    /// One worker serving every domain.
    pub fn combined(admin: &Admin) -> Admins {
        Admins { inventory: admin.clone(), payment: admin.clone(), notification: admin.clone() }
    }
}

/// Everything wrong with one finished run's history, in words (see
/// [`shop_types::audit::history_violations`]).
pub fn history_violations(id: &str, events: &[HistoryEventView]) -> Vec<String> {
    audit::history_violations(id, events).iter().map(ToString::to_string).collect()
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

/// Reads every order run with its history, the stock, the ledger and the outbox.
pub async fn snapshot(api: &Api, admins: &Admins) -> anyhow::Result<Snapshot> {
    let runs: Vec<_> =
        api.all_workflows().await?.into_iter().filter(|r| r.workflow_type == ORDER_WORKFLOW_TYPE).collect();
    let mut histories = HashMap::with_capacity(runs.len());
    for chunk in runs.chunks(HISTORY_FETCH_CONCURRENCY) {
        let mut fetches = tokio::task::JoinSet::new();
        for run in chunk {
            let (api, id) = (api.clone(), run.id.to_string());
            fetches.spawn(async move {
                let events = api.try_history(&id).await;
                (id, events)
            });
        }
        while let Some(fetched) = fetches.join_next().await {
            let (id, events) = fetched?;
            histories.insert(id, events?);
        }
    }
    Ok(Snapshot {
        runs,
        histories,
        stock: admins.inventory.get("/stock").await?,
        payments: admins.payment.get("/payments").await?,
        notifications: admins.notification.get("/notifications").await?,
    })
}

/// Audits a stack with the caller's options; an unreadable stack is one violation.
pub async fn audit_stack(api: &Api, admins: &Admins, options: &Options) -> Result<Audit, String> {
    let snapshot = snapshot(api, admins).await.map_err(|e| format!("cannot read the stack: {e:#}"))?;
    Ok(audit::audit(&snapshot, options))
}

/// Checks invariants 1-6 of design.md section 7 for a drained stack that ran exactly
/// `orders` (every one acknowledged), starting from `initial_stock`. Returns every violation.
pub async fn check_invariants(
    api: &Api,
    admin: &Admin,
    initial_stock: &[Product],
    orders: &[PlacedOrder],
) -> Vec<String> {
    check_invariants_with(api, &Admins::combined(admin), initial_stock, orders).await
}

/// [`check_invariants`] for workers spread over processes (one per domain).
pub async fn check_invariants_with(
    api: &Api,
    admins: &Admins,
    initial_stock: &[Product],
    orders: &[PlacedOrder],
) -> Vec<String> {
    let mut expected = HashMap::with_capacity(orders.len());
    let mut violations = Vec::new();
    for order in orders {
        let outcome = if order.expected_status == CONFIRMED { Expected::Confirmed } else { Expected::Cancelled };
        if expected.insert(order.order_id.clone(), outcome).is_some() {
            violations.push(format!("{}: the test placed this order id twice", order.order_id));
        }
    }
    let options = Options {
        initial_stock: InitialStock::Known(initial_stock.iter().map(|p| (p.product_id, p.stock)).collect()),
        expected: Some(expected),
        allow_running: false,
    };
    match audit_stack(api, admins, &options).await {
        Ok(found) => violations.extend(found.violations.iter().map(ToString::to_string)),
        Err(unreadable) => violations.push(unreadable),
    }
    violations
}

/// [`check_invariants`], panicking with the violations.
pub async fn assert_invariants(api: &Api, admin: &Admin, initial_stock: &[Product], orders: &[PlacedOrder]) {
    let violations = check_invariants(api, admin, initial_stock, orders).await;
    assert_no_violations("invariants of design.md section 7", &violations);
}
