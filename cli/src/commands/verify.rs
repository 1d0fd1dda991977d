//! `shopctl verify`: audits a running system against the invariants of design.md section 7.
//!
//! It reads every order run and its history from the engine, and the stock, the payment
//! ledger and the notification outbox from the workers' admin APIs (one worker for all
//! domains, or one per domain), then hands them to [`shop_types::audit`], the one checker
//! the tests and `bench` use too. Every violation is printed, one per line, then a summary;
//! the exit is 0 when clean and 1 otherwise. It only reads: it must never change the
//! system it audits, nor check anything itself that the shared checker should own.

use super::Context;
use crate::client::Client;
use crate::output;
use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;
use shop_client::engine::ListQuery;
use shop_types::audit::{self, Audit, InitialStock, Options, Snapshot};
use shop_types::limits::MAX_LIST_LIMIT;
use shop_types::order::ORDER_WORKFLOW_TYPE;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Histories fetched at once: enough to hide the round trips, few enough not to crowd out
/// a live system's own traffic.
const HISTORY_FETCH_CONCURRENCY: usize = 32;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The inventory worker's admin API, when the domains run in separate processes
    /// (default: --worker).
    #[arg(long)]
    inventory: Option<String>,
    /// The payment worker's admin API (default: --worker).
    #[arg(long)]
    payment: Option<String>,
    /// The notification worker's admin API (default: --worker).
    #[arg(long)]
    notification: Option<String>,
    /// The stock before the first order, as JSON `[{"productId":1,"stock":100}]` (the output
    /// of `shopctl stock list --json` taken then will do). Without it the initial stock is
    /// reconstructed as final stock + reserved + confirmed units, and only "never negative,
    /// nothing held without a running order, money consistent" can be checked.
    #[arg(long, value_name = "FILE")]
    initial_stock: Option<PathBuf>,
    /// Accept orders still PENDING (a live system); otherwise each one is a violation.
    #[arg(long)]
    allow_running: bool,
}

/// One line of the initial stock file; other fields (a product's name, price) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitialLine {
    product_id: i64,
    stock: i64,
}

/// The admin API of each domain's worker.
pub struct Domains {
    pub inventory: Client,
    pub payment: Client,
    pub notification: Client,
}

pub async fn run(args: VerifyArgs, ctx: &Context) -> Result<()> {
    // The domains' clients talk to admin APIs only, with the same credential as `ctx.client`.
    let worker = ctx.client.worker().base_str();
    let admin = |url: &Option<String>| ctx.client.with_worker(url.as_deref().unwrap_or(worker));
    let domains = Domains {
        inventory: admin(&args.inventory)?,
        payment: admin(&args.payment)?,
        notification: admin(&args.notification)?,
    };
    let initial_stock = match &args.initial_stock {
        Some(path) => InitialStock::Known(read_initial_stock(path)?),
        None => InitialStock::Reconstructed,
    };
    let snapshot = snapshot(&ctx.client, &domains, None).await?;
    let options = Options { initial_stock, expected: None, allow_running: args.allow_running };
    let found = audit::audit(&snapshot, &options);
    show(&found, ctx.json)?;
    if !found.is_clean() {
        bail!("{} violation(s) in {} order(s)", found.violations.len(), found.orders);
    }
    Ok(())
}

fn show(found: &Audit, json: bool) -> Result<()> {
    if json {
        return output::json(&serde_json::to_value(found).context("cannot encode the audit")?);
    }
    for violation in &found.violations {
        output::line(&violation.to_string())?;
    }
    output::line(&format!(
        "{} order(s): {} confirmed, {} cancelled ({} for PAYMENT_UNAVAILABLE), {} running; {} violation(s)",
        found.orders,
        found.confirmed,
        found.cancelled,
        found.payment_unavailable,
        found.running,
        found.violations.len()
    ))
}

fn read_initial_stock(path: &Path) -> Result<BTreeMap<i64, i64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<InitialLine> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected JSON [{{\"productId\":1,\"stock\":100}}]", path.display()))?;
    let mut initial = BTreeMap::new();
    for line in lines {
        if initial.insert(line.product_id, line.stock).is_some() {
            bail!("{}: product {} is listed twice", path.display(), line.product_id);
        }
    }
    Ok(initial)
}

/// Reads every order run (all pages) with its history, and each domain's data.
pub async fn snapshot(engine: &Client, domains: &Domains, id_prefix: Option<&str>) -> Result<Snapshot> {
    let mut runs = Vec::new();
    // Runs are listed in ID order, so a prefix is a range: start just before it, stop after.
    let mut cursor: Option<String> = id_prefix.map(str::to_owned);
    loop {
        let query = ListQuery {
            workflow_type: Some(ORDER_WORKFLOW_TYPE.to_owned()),
            limit: u32::try_from(MAX_LIST_LIMIT).ok(),
            cursor: cursor.take(),
            ..ListQuery::default()
        };
        let page = engine.engine().workflows(&query).await?.body;
        let past_prefix = id_prefix.is_some_and(|p| page.workflows.iter().any(|run| !run.id.as_str().starts_with(p)));
        runs.extend(page.workflows.into_iter().filter(|run| id_prefix.is_none_or(|p| run.id.as_str().starts_with(p))));
        match page.next_cursor {
            Some(next) if !past_prefix => cursor = Some(next),
            _ => break,
        }
    }
    let mut histories = HashMap::with_capacity(runs.len());
    for chunk in runs.chunks(HISTORY_FETCH_CONCURRENCY) {
        let mut fetches = tokio::task::JoinSet::new();
        for run in chunk {
            let (engine, id) = (engine.engine().clone(), run.id.to_string());
            fetches.spawn(async move {
                let reply = engine.history(&id).await;
                (id, reply)
            });
        }
        while let Some(fetched) = fetches.join_next().await {
            let (id, reply) = fetched.map_err(|err| anyhow!("a history fetch failed: {err}"))?;
            histories.insert(id, reply?.body.events);
        }
    }
    Ok(Snapshot {
        runs,
        histories,
        stock: domains.inventory.worker().stock().await?.body,
        payments: domains.payment.worker().payments().await?.body,
        notifications: domains.notification.worker().notifications().await?.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_stock_file_takes_stock_list_output_and_refuses_duplicates() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stock.json");
        std::fs::write(&path, r#"[{"productId":1,"name":"Mug","priceCents":900,"stock":5,"reserved":0}]"#)?;
        assert_eq!(read_initial_stock(&path)?, BTreeMap::from([(1, 5)]));
        std::fs::write(&path, r#"[{"productId":1,"stock":5},{"productId":1,"stock":6}]"#)?;
        assert!(read_initial_stock(&path).is_err());
        std::fs::write(&path, r#"{"productId":1}"#)?;
        assert!(read_initial_stock(&path).is_err());
        Ok(())
    }
}
