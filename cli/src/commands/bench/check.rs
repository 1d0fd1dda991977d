//! The benchmark's correctness check: every order's outcome and the shop's invariants,
//! through the shared audit, against the engine and the workers' own ledgers. It must
//! never measure anything or retry an order.

use super::*;

/// Checks every order's outcome and the shop's invariants (design.md section 7, items 1-6)
/// with the shared checker, against the engine's runs and histories and the workers' own
/// data. Returns how many violations it found, printing them.
/// The ID prefix of every order of a run with this seed.
pub(super) fn id_prefix(seed: u64) -> String {
    format!("bench-{seed}-")
}

/// The prefix of an order ID made by [`id_prefix`].
pub(super) fn order_prefix(id: &str) -> String {
    id.rsplit_once('-').map_or_else(|| id.to_owned(), |(head, _)| format!("{head}-"))
}

pub(super) async fn verify(
    planned: &[PlannedOrder],
    samples: &[Sample],
    engine: &Client,
    domains: &Domains,
) -> Result<usize> {
    let mut violations = Vec::new();
    if samples.len() != planned.len() {
        violations.push(format!("{} orders planned, {} finished", planned.len(), samples.len()));
    }
    let expected = planned
        .iter()
        .map(|order| {
            let outcome = match order.expected {
                Expected::Confirmed => audit::Expected::Confirmed,
                Expected::OutOfStock | Expected::Declined => audit::Expected::Cancelled,
            };
            (order.id.clone(), outcome)
        })
        .collect();
    let initial = (1..=EMPTY_PRODUCT)
        .map(|product_id| (product_id, if product_id == EMPTY_PRODUCT { 0 } else { CATALOG_UNITS }))
        .collect();
    let options =
        Options { initial_stock: InitialStock::Known(initial), expected: Some(expected), allow_running: false };
    // Only this run's orders: a store preloaded with finished runs is not audited again.
    let prefix = planned.first().map(|order| order_prefix(&order.id));
    let found = audit::audit(&verify::snapshot(engine, domains, prefix.as_deref()).await?, &options);
    violations.extend(found.violations.iter().map(ToString::to_string));

    for violation in violations.iter().take(VIOLATIONS_SHOWN) {
        output::note(&format!("violation: {violation}"));
    }
    if violations.len() > VIOLATIONS_SHOWN {
        output::note(&format!("... and {} more violations", violations.len() - VIOLATIONS_SHOWN));
    }
    Ok(violations.len())
}
