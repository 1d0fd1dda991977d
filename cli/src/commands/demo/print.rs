//! The demo's output layer: the outcomes, the histories, the checks and the burst's figures,
//! printed from a finished report. It must never judge (that is `judge`) nor touch the stack.

use super::*;

pub(super) fn print_report(report: &Report, checks: &[Check], elapsed: Duration) -> Result<()> {
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
    output::line("\n== Stock, payments, notifications and 3-D Secure waits")?;
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

pub(super) fn burst_errors(burst: &[BurstResult]) -> String {
    let errors: Vec<&str> = burst.iter().filter_map(|r| r.outcome.as_ref().err().map(String::as_str)).collect();
    match errors.first() {
        None => "-".to_owned(),
        Some(first) => format!("{} failed, first: {first}", errors.len()),
    }
}

/// How long burst orders took from placing to final: the median and the slowest.
pub(super) fn burst_latency(burst: &[BurstResult], elapsed: Duration) -> String {
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
