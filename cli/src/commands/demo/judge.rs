//! The demo's judgement: what it gathered checked against what the inputs dictate (each
//! outcome, the final stock, the payment ledger, the notification outbox). Pure: it must
//! never talk to the stack, read a clock or print.

use super::*;

/// Every check the demo makes, in the order it prints them.
pub(super) fn judge(report: &Report) -> Vec<Check> {
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
    checks.extend(report.cases.iter().filter(|r| r.case.payment_method == shop_types::order::CARD_3DS).map(|r| {
        Check {
            area: "3-D Secure",
            subject: r.case.id.to_owned(),
            expected: three_ds::expected_wait(&r.case),
            actual: three_ds::wait_summary(&r.history),
        }
    }));
    checks
}

pub(super) fn burst_summary(burst: &[BurstResult]) -> String {
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

pub(super) fn stock_checks(report: &Report, orders: &[(String, Vec<OrderItem>, bool)]) -> Vec<Check> {
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

pub(super) fn stock_text(stock: i64, reserved: i64) -> String {
    format!("{stock} in stock, {reserved} reserved")
}

/// Net charged is the order's total when it was confirmed and zero otherwise, from at most
/// one charge: the saga's money invariant.
pub(super) fn payment_checks(report: &Report, orders: &[(String, Vec<OrderItem>, bool)]) -> Vec<Check> {
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
pub(super) fn notification_checks(report: &Report, orders: &[(String, Vec<OrderItem>, bool)]) -> Vec<Check> {
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

pub(super) fn or_none(text: &str) -> String {
    if text.is_empty() {
        "none".to_owned()
    } else {
        text.to_owned()
    }
}
