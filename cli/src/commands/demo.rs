//! `shopctl demo`: the product's showcase and its end-to-end self-check.
//!
//! It starts a private stack (a temporary data directory, free loopback ports), places
//! sample orders that cover the saga's paths — success, out of stock, declined payment,
//! transient payment failures retried with backoff, and a concurrent burst — waits for each
//! to be final, then checks what it sees against what the inputs dictate: each outcome,
//! the final stock, the payment ledger and the notification outbox. It prints the outcomes,
//! the histories and the checks, and exits 0 only when every check holds.
//!
//! The demo gathers everything while the stack runs and judges it afterwards, in pure
//! functions; it must never leave the stack running, whatever happens.

use super::{notifications, order, payments, stock, workflow, Context};
use crate::output::{self, Table};
use crate::stack::{free_loopback_addr, interrupted, ChildOutput, Stack, StackOptions, WorkerLayout};
use crate::timeline;
use anyhow::{anyhow, Context as _, Result};
use clap::Args;
use shop_types::api::HistoryEventView;
use shop_types::history::EventKind;
use shop_types::order::{
    FaultConfig, NotificationEntry, OrderItem, OrderView, PaymentEntry, PlaceOrderRequest, Product,
    DECLINED_PAYMENT_METHOD,
};
use shop_types::WorkflowId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long to wait for each order to be final; the order saga's retries finish well within.
const FINAL_WAIT: Duration = Duration::from_secs(30);
/// Orders placed at once in the burst.
const BURST_ORDERS: usize = 50;
/// The product the burst buys, one unit per order; no sample order touches it.
const BURST_PRODUCT: i64 = 5;
/// Transient charge failures injected before case (d)'s charge goes through.
const INJECTED_CHARGE_FAILURES: u32 = 2;
const PAYMENT_METHOD: &str = "CREDIT_CARD";
const ADDRESS: &str = "1 Demo Street, Springfield";

const CONFIRMED: &str = "CONFIRMED";
const CANCELLED: &str = "CANCELLED";
/// The notification kinds the order definition sends (its `params.kind`).
const NOTIFY_CONFIRMED: &str = "ORDER_CONFIRMED";
const NOTIFY_CANCELLED: &str = "ORDER_CANCELLED";
const OUT_OF_STOCK: &str = shop_types::order::errors::OUT_OF_STOCK;
const PAYMENT_DECLINED: &str = shop_types::order::errors::PAYMENT_DECLINED;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary data directory (data and the children's logs) and say where.
    #[arg(long)]
    keep: bool,
}

/// One sample order and what its inputs dictate.
struct Case {
    label: &'static str,
    title: &'static str,
    id: &'static str,
    items: &'static [(i64, i64)],
    payment_method: &'static str,
    /// Retryable charge failures to inject just before placing it.
    charge_failures: u32,
    expected: Outcome,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "a",
            title: "normal order",
            id: "demo-a-normal",
            items: &[(1, 2), (3, 1)],
            payment_method: PAYMENT_METHOD,
            charge_failures: 0,
            expected: Outcome::new(CONFIRMED, None, 0),
        },
        Case {
            label: "b",
            title: "out of stock (999 of 100 units)",
            id: "demo-b-out-of-stock",
            items: &[(2, 999)],
            payment_method: PAYMENT_METHOD,
            charge_failures: 0,
            expected: Outcome::new(CANCELLED, Some(OUT_OF_STOCK), 0),
        },
        Case {
            label: "c",
            title: "declined card, stock released",
            id: "demo-c-declined",
            items: &[(4, 3)],
            payment_method: DECLINED_PAYMENT_METHOD,
            charge_failures: 0,
            expected: Outcome::new(CANCELLED, Some(PAYMENT_DECLINED), 0),
        },
        Case {
            label: "d",
            title: "payment fails twice, retried",
            id: "demo-d-retried",
            items: &[(6, 1)],
            payment_method: PAYMENT_METHOD,
            charge_failures: INJECTED_CHARGE_FAILURES,
            expected: Outcome::new(CONFIRMED, None, INJECTED_CHARGE_FAILURES),
        },
    ]
}

/// What happened to an order, as far as the demo judges it: its final status, the error
/// that ended its forward path (if any), and how many attempts failed and were retried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: String,
    final_error: Option<String>,
    retried_failures: u32,
}

impl Outcome {
    fn new(status: &str, final_error: Option<&str>, retried_failures: u32) -> Self {
        Outcome { status: status.to_owned(), final_error: final_error.map(str::to_owned), retried_failures }
    }

    /// Reads the outcome from the order's status and its history.
    fn observe(status: &str, events: &[HistoryEventView]) -> Self {
        let mut final_error = None;
        let mut retried_failures = 0;
        for event in events {
            match &event.event {
                EventKind::StepFailed { error, will_retry, .. } => {
                    if *will_retry {
                        retried_failures += 1;
                    } else if final_error.is_none() {
                        final_error = Some(error.error_type.clone());
                    }
                }
                EventKind::StepTimedOut { timeout, will_retry, .. } => {
                    if *will_retry {
                        retried_failures += 1;
                    } else if final_error.is_none() {
                        final_error = Some(format!("{} timeout", timeout.as_str()));
                    }
                }
                _ => {}
            }
        }
        Outcome { status: status.to_owned(), final_error, retried_failures }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.status)?;
        if let Some(error) = &self.final_error {
            write!(f, " ({error})")?;
        }
        if self.retried_failures > 0 {
            write!(f, " after {} retried failures", self.retried_failures)?;
        }
        Ok(())
    }
}

/// A sample order as it ended.
struct CaseResult {
    case: Case,
    order: OrderView,
    history: Vec<HistoryEventView>,
}

/// One burst order as it ended: its final view, or why it could not be placed or read.
struct BurstResult {
    id: String,
    outcome: Result<OrderView, String>,
    latency: Duration,
}

/// Everything the demo saw, gathered while the stack ran.
struct Report {
    cases: Vec<CaseResult>,
    burst: Vec<BurstResult>,
    burst_elapsed: Duration,
    stock_before: Vec<Product>,
    stock_after: Vec<Product>,
    payments: Vec<PaymentEntry>,
    notifications: Vec<NotificationEntry>,
}

/// One comparison of what the inputs dictate against what happened.
struct Check {
    area: &'static str,
    subject: String,
    expected: String,
    actual: String,
}

impl Check {
    fn ok(&self) -> bool {
        self.expected == self.actual
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("shop-demo-").tempdir().context("cannot create a temporary directory")?;
    let options = StackOptions {
        data_dir: dir.path().to_owned(),
        engine_listen: free_loopback_addr()?,
        worker_listen: free_loopback_addr()?,
        workflows: None,
        output: ChildOutput::LogFiles,
        layout: WorkerLayout::Combined,
        engine_args: Vec::new(),
        worker_args: Vec::new(),
    };
    let gathered = run_stack(&options).await;
    if args.keep {
        let kept = dir.keep();
        output::note(&format!("kept the demo's data and logs in {}", kept.display()));
    }
    let report = gathered?;
    let checks = judge(&report);
    print_report(&report, &checks, started.elapsed())?;
    let failed: Vec<String> = checks
        .iter()
        .filter(|check| !check.ok())
        .map(|check| format!("{} {}: expected {}, got {}", check.area, check.subject, check.expected, check.actual))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        // Without --keep the logs go with the temporary directory; say how to keep them.
        let hint = if args.keep { "" } else { " (run with --keep to keep the logs)" };
        Err(anyhow!("demo: {} of {} checks failed: {}{hint}", failed.len(), checks.len(), failed.join("; ")))
    }
}

/// Starts the stack, runs the scenarios, and stops the stack whatever happened: a failed
/// scenario, a child's death, or Ctrl-C.
async fn run_stack(options: &StackOptions) -> Result<Report> {
    let mut stack = tokio::select! {
        stack = Stack::start(options) => stack?,
        signal = interrupted() => return Err(anyhow!("interrupted by {} during start-up", signal?)),
    };
    let ctx = Context { client: stack.client().clone(), json: false };
    let outcome = tokio::select! {
        report = scenarios(&ctx) => report,
        died = stack.died() => Err(anyhow!("{died}")),
        signal = interrupted() => Err(anyhow!("interrupted by {}", signal?)),
    };
    output::note("stopping the worker and the engine");
    stack.stop().await;
    outcome
}

async fn scenarios(ctx: &Context) -> Result<Report> {
    let stock_before = stock::list(ctx).await?.body;
    let mut results = Vec::new();
    for case in cases() {
        output::note(&format!("({}) {}: placing {}", case.label, case.title, case.id));
        if case.charge_failures > 0 {
            set_faults(ctx, case.charge_failures).await?;
        }
        let placed = place_and_wait(ctx, case.id, case.items, case.payment_method).await;
        if case.charge_failures > 0 {
            // Clear what was not used, so no later order meets a leftover failure.
            set_faults(ctx, 0).await?;
        }
        let order = placed.with_context(|| format!("({}) {}", case.label, case.title))?;
        let id = WorkflowId::parse(order.order_id.as_str())
            .with_context(|| format!("the engine named order ({}) oddly", case.label))?;
        let history = workflow::fetch_history(ctx, &id).await?.body.events;
        output::note(&format!("({}) {} is {}", case.label, id, order.status));
        results.push(CaseResult { case, order, history });
    }

    output::note(&format!("(e) burst: placing {BURST_ORDERS} orders at once"));
    let burst_started = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 1..=BURST_ORDERS {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let id = burst_id(n);
            let started = Instant::now();
            let outcome = place_and_wait(&ctx, &id, &[(BURST_PRODUCT, 1)], PAYMENT_METHOD)
                .await
                .map_err(|err| format!("{err:#}"));
            BurstResult { id, outcome, latency: started.elapsed() }
        });
    }
    let mut burst = Vec::with_capacity(BURST_ORDERS);
    while let Some(joined) = tasks.join_next().await {
        burst.push(joined.context("a burst order's task failed")?);
    }
    burst.sort_by(|a, b| a.id.cmp(&b.id));
    let burst_elapsed = burst_started.elapsed();

    Ok(Report {
        cases: results,
        burst,
        burst_elapsed,
        stock_before,
        stock_after: stock::list(ctx).await?.body,
        payments: payments::list(ctx).await?.body,
        notifications: notifications::list(ctx).await?.body,
    })
}

fn burst_id(n: usize) -> String {
    format!("demo-e-burst-{n:02}")
}

async fn place_and_wait(ctx: &Context, id: &str, items: &[(i64, i64)], payment_method: &str) -> Result<OrderView> {
    let request = PlaceOrderRequest {
        order_id: Some(id.to_owned()),
        order_items: order_items(items),
        shipping_address: ADDRESS.to_owned(),
        payment_method: payment_method.to_owned(),
    };
    order::place_order(ctx, &request).await?;
    let reply = ctx.client.engine().order(id, Some(FINAL_WAIT)).await?;
    Ok(reply.body)
}

async fn set_faults(ctx: &Context, charge_failures: u32) -> Result<()> {
    let faults = FaultConfig { payment_fail_next: charge_failures, ..FaultConfig::default() };
    ctx.client.worker().set_faults(&faults).await.context("cannot set the worker's faults")?;
    Ok(())
}

fn order_items(items: &[(i64, i64)]) -> Vec<OrderItem> {
    items.iter().map(|&(product_id, quantity)| OrderItem { product_id, quantity }).collect()
}

/// Every check the demo makes, in the order it prints them.
fn judge(report: &Report) -> Vec<Check> {
    let mut checks = Vec::new();
    for result in &report.cases {
        checks.push(Check {
            area: "outcome",
            subject: format!("({}) {}", result.case.label, result.case.title),
            expected: result.case.expected.to_string(),
            actual: Outcome::observe(&result.order.status, &result.history).to_string(),
        });
    }
    checks.push(Check {
        area: "outcome",
        subject: format!("(e) burst of {BURST_ORDERS}"),
        expected: format!("{BURST_ORDERS} × {CONFIRMED}"),
        actual: burst_summary(&report.burst),
    });

    // What each order should have bought, by its expected outcome: the stock, the ledger
    // and the outbox must all agree with it.
    let mut orders: Vec<(String, Vec<OrderItem>, bool)> = report
        .cases
        .iter()
        .map(|r| (r.case.id.to_owned(), order_items(r.case.items), r.case.expected.status == CONFIRMED))
        .collect();
    orders.extend((1..=BURST_ORDERS).map(|n| (burst_id(n), order_items(&[(BURST_PRODUCT, 1)]), true)));

    checks.extend(stock_checks(report, &orders));
    checks.extend(payment_checks(report, &orders));
    checks.extend(notification_checks(report, &orders));
    checks
}

fn burst_summary(burst: &[BurstResult]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for result in burst {
        let status = match &result.outcome {
            Ok(order) => order.status.as_str(),
            Err(_) => "ERROR",
        };
        *counts.entry(status).or_default() += 1;
    }
    counts.iter().map(|(status, count)| format!("{count} × {status}")).collect::<Vec<_>>().join(", ")
}

fn stock_checks(report: &Report, orders: &[(String, Vec<OrderItem>, bool)]) -> Vec<Check> {
    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    let mut touched: BTreeSet<i64> = BTreeSet::new();
    for (_, items, confirmed) in orders {
        for item in items {
            touched.insert(item.product_id);
            if *confirmed {
                *sold.entry(item.product_id).or_default() += item.quantity;
            }
        }
    }
    let find = |products: &[Product], id: i64| products.iter().find(|p| p.product_id == id).cloned();
    touched
        .iter()
        .map(|&id| {
            let expected = match find(&report.stock_before, id) {
                Some(before) => stock_text(before.stock - sold.get(&id).copied().unwrap_or(0), 0),
                None => "a product in the catalog".to_owned(),
            };
            let actual = match find(&report.stock_after, id) {
                Some(after) => stock_text(after.stock, after.reserved),
                None => "no such product".to_owned(),
            };
            Check { area: "stock", subject: format!("product {id}"), expected, actual }
        })
        .collect()
}

fn stock_text(stock: i64, reserved: i64) -> String {
    format!("{stock} in stock, {reserved} reserved")
}

/// Net charged is the order's total when it was confirmed and zero otherwise, from at most
/// one charge: the saga's money invariant.
fn payment_checks(report: &Report, orders: &[(String, Vec<OrderItem>, bool)]) -> Vec<Check> {
    let price = |id: i64| report.stock_before.iter().find(|p| p.product_id == id).map_or(0, |p| p.price_cents);
    let ledger = |order_id: &str| {
        let mut charges = 0;
        let mut net = 0;
        for entry in report.payments.iter().filter(|e| e.order_id == order_id) {
            match entry.kind.as_str() {
                "charge" => {
                    charges += 1;
                    net += entry.amount_cents;
                }
                "refund" => net -= entry.amount_cents,
                _ => {}
            }
        }
        (charges, net)
    };
    let text = |net: i64, charges: u32| match charges {
        0 | 1 => format!("net {}", output::money(net)),
        n => format!("net {} from {n} charges", output::money(net)),
    };

    let mut checks = Vec::new();
    let (mut burst_expected, mut burst_net, mut burst_charges) = (0, 0, 0);
    for (id, items, confirmed) in orders {
        let total: i64 = items.iter().map(|i| price(i.product_id) * i.quantity).sum();
        let expected = if *confirmed { total } else { 0 };
        let (charges, net) = ledger(id);
        if id.starts_with("demo-e-") {
            burst_expected += expected;
            burst_net += net;
            burst_charges = burst_charges.max(charges);
            continue;
        }
        checks.push(Check {
            area: "payment",
            subject: id.clone(),
            expected: text(expected, 1),
            actual: text(net, charges),
        });
    }
    checks.push(Check {
        area: "payment",
        subject: format!("(e) burst of {BURST_ORDERS}"),
        expected: text(burst_expected, 1),
        actual: text(burst_net, burst_charges),
    });
    checks
}

/// Exactly one notification per order, of the kind its outcome calls for.
fn notification_checks(report: &Report, orders: &[(String, Vec<OrderItem>, bool)]) -> Vec<Check> {
    let kinds = |order_id: &str| -> Vec<&str> {
        report.notifications.iter().filter(|n| n.order_id == order_id).map(|n| n.kind.as_str()).collect()
    };
    let mut checks = Vec::new();
    let mut burst_wrong = Vec::new();
    for (id, _, confirmed) in orders {
        let expected = if *confirmed { NOTIFY_CONFIRMED } else { NOTIFY_CANCELLED };
        let actual = kinds(id).join(" + ");
        if id.starts_with("demo-e-") {
            if actual != expected {
                burst_wrong.push(format!("{id}: {}", or_none(&actual)));
            }
            continue;
        }
        checks.push(Check {
            area: "notification",
            subject: id.clone(),
            expected: expected.to_owned(),
            actual: or_none(&actual),
        });
    }
    checks.push(Check {
        area: "notification",
        subject: format!("(e) burst of {BURST_ORDERS}"),
        expected: format!("one {NOTIFY_CONFIRMED} each"),
        actual: if burst_wrong.is_empty() { format!("one {NOTIFY_CONFIRMED} each") } else { burst_wrong.join(", ") },
    });
    checks
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        "none".to_owned()
    } else {
        text.to_owned()
    }
}

fn print_report(report: &Report, checks: &[Check], elapsed: Duration) -> Result<()> {
    let colour = output::colour_enabled();
    let verdict = |check: &Check| output::verdict(check.ok(), if check.ok() { "ok" } else { "MISMATCH" }, colour);

    output::line("== Sample orders")?;
    let mut table = Table::with_header(&["CASE", "ORDER", "EXPECTED", "ACTUAL", "RESULT", "REASON"]);
    for (result, check) in report.cases.iter().zip(checks) {
        table.row(vec![
            check.subject.clone(),
            result.order.order_id.clone(),
            check.expected.clone(),
            check.actual.clone(),
            verdict(check),
            output::or_dash(result.order.reason.as_deref()),
        ]);
    }
    if let Some(check) = checks.get(report.cases.len()) {
        table.row(vec![
            check.subject.clone(),
            format!("{} .. {}", burst_id(1), burst_id(BURST_ORDERS)),
            check.expected.clone(),
            check.actual.clone(),
            verdict(check),
            burst_errors(&report.burst),
        ]);
    }
    table.print()?;
    output::line(&burst_latency(&report.burst, report.burst_elapsed))?;

    for result in &report.cases {
        output::line(&format!(
            "\n== History of ({}) {}: {}",
            result.case.label, result.case.title, result.order.order_id
        ))?;
        output::line(timeline::render(&result.history).trim_end())?;
    }

    let rest: Vec<&Check> = checks.iter().skip(report.cases.len() + 1).collect();
    output::line("\n== Stock, payments and notifications")?;
    let mut table = Table::with_header(&["CHECK", "SUBJECT", "EXPECTED", "ACTUAL", "RESULT"]);
    for check in &rest {
        table.row(vec![
            check.area.to_owned(),
            check.subject.clone(),
            check.expected.clone(),
            check.actual.clone(),
            verdict(check),
        ]);
    }
    table.print()?;

    output::line("\n== Payments ledger (sample orders)")?;
    let mut table = Table::with_header(&["ORDER", "KIND", "AMOUNT", "IDEMPOTENCY KEY"]);
    for entry in report.payments.iter().filter(|e| !e.order_id.starts_with("demo-e-")) {
        table.row(vec![
            entry.order_id.clone(),
            entry.kind.clone(),
            output::money(entry.amount_cents),
            entry.idempotency_key.clone(),
        ]);
    }
    table.print()?;
    let mut totals: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for entry in &report.payments {
        let total = totals.entry(entry.kind.as_str()).or_default();
        total.0 += 1;
        total.1 += entry.amount_cents;
    }
    for (kind, (count, cents)) in &totals {
        output::line(&format!("all orders: {count} × {kind}, {} in total", output::money(*cents)))?;
    }

    output::line("\n== Notifications")?;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &report.notifications {
        *by_kind.entry(entry.kind.as_str()).or_default() += 1;
    }
    for (kind, count) in &by_kind {
        output::line(&format!("{count} × {kind}"))?;
    }

    let failed = checks.iter().filter(|check| !check.ok()).count();
    let orders = report.cases.len() + report.burst.len();
    output::line(&format!(
        "\n{orders} orders in {}; {}",
        output::duration(elapsed),
        if failed == 0 {
            output::verdict(true, &format!("all {} checks passed", checks.len()), colour)
        } else {
            output::verdict(false, &format!("{failed} of {} checks FAILED", checks.len()), colour)
        }
    ))
}

fn burst_errors(burst: &[BurstResult]) -> String {
    let errors: Vec<&str> = burst.iter().filter_map(|r| r.outcome.as_ref().err().map(String::as_str)).collect();
    match errors.first() {
        None => "-".to_owned(),
        Some(first) => format!("{} failed, first: {first}", errors.len()),
    }
}

/// How long burst orders took from placing to final: the median and the slowest.
fn burst_latency(burst: &[BurstResult], elapsed: Duration) -> String {
    let mut latencies: Vec<Duration> = burst.iter().map(|r| r.latency).collect();
    latencies.sort();
    let median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
    let slowest = latencies.last().copied().unwrap_or_default();
    format!(
        "burst: {} orders placed at once, all answered in {}; placed-to-final median {}, slowest {}",
        burst.len(),
        output::duration(elapsed),
        output::duration(median),
        output::duration(slowest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::history::ActivityError;
    use shop_types::StepRef;

    fn failed(seq: u64, error_type: &str, will_retry: bool) -> HistoryEventView {
        HistoryEventView {
            seq,
            at_ms: seq,
            step_name: Some("charge_payment".into()),
            event: EventKind::StepFailed {
                step: StepRef::forward(1),
                attempt: 1,
                error: ActivityError { error_type: error_type.into(), message: "test".into(), retryable: will_retry },
                will_retry,
            },
        }
    }

    #[test]
    fn outcomes_count_retried_failures_and_keep_the_final_error() {
        let events = vec![
            failed(1, "PAYMENT_UNAVAILABLE", true),
            failed(2, "PAYMENT_UNAVAILABLE", true),
            failed(3, PAYMENT_DECLINED, false),
        ];
        let outcome = Outcome::observe(CANCELLED, &events);
        assert_eq!(outcome, Outcome::new(CANCELLED, Some(PAYMENT_DECLINED), 2));
        assert_eq!(outcome.to_string(), "CANCELLED (PAYMENT_DECLINED) after 2 retried failures");
    }

    #[test]
    fn the_expected_outcomes_follow_from_the_inputs() {
        let cases = cases();
        let ids: Vec<&str> = cases.iter().map(|c| c.id).collect();
        for id in &ids {
            assert!(WorkflowId::parse(*id).is_ok(), "{id}");
        }
        assert!(WorkflowId::parse(burst_id(BURST_ORDERS)).is_ok());
        for case in &cases {
            assert!(
                case.items.iter().all(|&(product, _)| product != BURST_PRODUCT),
                "({}) must not share the burst's product",
                case.label
            );
        }
    }

    #[test]
    fn a_burst_summary_counts_each_status() {
        let view = |status: &str| OrderView {
            order_id: "x".into(),
            status: status.into(),
            reason: None,
            order_items: vec![],
            shipping_address: String::new(),
            payment_method: String::new(),
            created_at_ms: 0,
            closed_at_ms: None,
        };
        let result = |outcome| BurstResult { id: "x".into(), outcome, latency: Duration::ZERO };
        let burst = vec![
            result(Ok(view(CONFIRMED))),
            result(Ok(view("PENDING"))),
            result(Ok(view(CONFIRMED))),
            result(Err("503".into())),
        ];
        assert_eq!(burst_summary(&burst), "2 × CONFIRMED, 1 × ERROR, 1 × PENDING");
    }
}
