//! `shopctl demo`: the product's showcase and its end-to-end self-check.
//!
//! It starts a private stack (a temporary data directory, free loopback ports), places
//! sample orders that cover the saga's paths — success, out of stock, declined payment,
//! transient payment failures retried with backoff, a concurrent burst, and (on a
//! short-timeout variant of order v2 it registers, see `three_ds`) a 3-D Secure order
//! confirmed by a signal and one cancelled by its wait's timeout — waits for each
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

mod judge;
mod print;
mod three_ds;

use judge::*;
use print::*;

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
/// The final error [`Outcome::observe`] reads from a wait that timed out.
const WAIT_TIMEOUT: &str = "wait timeout";
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
    /// The signal to send once its wait is open (3-D Secure cases); `None` lets a wait time
    /// out.
    signal: Option<&'static str>,
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
            signal: None,
            expected: Outcome::new(CONFIRMED, None, 0),
        },
        Case {
            label: "b",
            title: "out of stock (999 of 100 units)",
            id: "demo-b-out-of-stock",
            items: &[(2, 999)],
            payment_method: PAYMENT_METHOD,
            charge_failures: 0,
            signal: None,
            expected: Outcome::new(CANCELLED, Some(OUT_OF_STOCK), 0),
        },
        Case {
            label: "c",
            title: "declined card, stock released",
            id: "demo-c-declined",
            items: &[(4, 3)],
            payment_method: DECLINED_PAYMENT_METHOD,
            charge_failures: 0,
            signal: None,
            expected: Outcome::new(CANCELLED, Some(PAYMENT_DECLINED), 0),
        },
        Case {
            label: "d",
            title: "payment fails twice, retried",
            id: "demo-d-retried",
            items: &[(6, 1)],
            payment_method: PAYMENT_METHOD,
            charge_failures: INJECTED_CHARGE_FAILURES,
            signal: None,
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
                EventKind::WaitTimedOut { .. } if final_error.is_none() => {
                    final_error = Some(WAIT_TIMEOUT.to_owned());
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
    let mut options = StackOptions {
        data_dir: dir.path().to_owned(),
        engine_listen: free_loopback_addr()?,
        worker_listen: free_loopback_addr()?,
        workflows: None,
        output: ChildOutput::LogFiles,
        layout: WorkerLayout::Combined,
        engine_args: Vec::new(),
        worker_args: Vec::new(),
        nodes: 1,
    };
    let gathered = run_stack(&mut options).await;
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
async fn run_stack(options: &mut StackOptions) -> Result<Report> {
    let mut stack = tokio::select! {
        stack = Stack::start_on_free_ports(options) => stack?,
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

    // Last, so that no other order runs on the variant.
    let version = three_ds::register_variant(ctx).await?;
    output::note(&format!("registered order v{version}: order v2 with a short 3-D Secure timeout"));
    for case in three_ds::cases() {
        output::note(&format!("({}) {}: placing {}", case.label, case.title, case.id));
        let order = three_ds::run_case(ctx, &case).await.with_context(|| format!("({}) {}", case.label, case.title))?;
        let id = WorkflowId::parse(order.order_id.as_str())
            .with_context(|| format!("the engine named order ({}) oddly", case.label))?;
        let history = workflow::fetch_history(ctx, &id).await?.body.events;
        output::note(&format!("({}) {} is {}", case.label, id, order.status));
        results.push(CaseResult { case, order, history });
    }

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
        customer_id: None,
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

#[cfg(test)]
mod tests;
