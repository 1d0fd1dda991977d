//! Reading FAILED runs by their summaries: the groups `GET /v1/parked` lists and the
//! targets a redrive job freezes. Reads only, bounded by [`MAX_PARKED_SCANNED`]; it must
//! never read a history.

use super::fingerprint::{self, Failure};
use crate::store::{Error, Store};
use shop_types::api::WorkflowStatus;
use shop_types::redrive::{ParkedGroup, ParkedGroups, MAX_PARKED_GROUPS, MAX_PARKED_SCANNED};
use shop_types::WorkflowId;
use std::collections::BTreeMap;

/// Run ids read from the status index at a time.
const SCAN_PAGE: usize = 1_000;

/// Calls `visit` with every FAILED run (up to [`MAX_PARKED_SCANNED`]) and its failure, in
/// id order, until it returns `false`; returns how many were read and whether runs were left.
fn each_failed(
    store: &Store,
    mut visit: impl FnMut(&WorkflowId, &crate::store::RunSummary, Failure) -> bool,
) -> Result<(u64, bool), Error> {
    let mut cursor: Option<WorkflowId> = None;
    let mut scanned = 0u64;
    loop {
        let (ids, more) = store.list_ids(Some(WorkflowStatus::Failed), cursor.as_ref(), SCAN_PAGE)?;
        for id in &ids {
            if scanned as usize >= MAX_PARKED_SCANNED {
                return Ok((scanned, true));
            }
            scanned += 1;
            let Some(summary) = store.run(id)? else { continue };
            if let Some(failure) = fingerprint::of_summary(&summary) {
                if !visit(id, &summary, failure) {
                    return Ok((scanned, more));
                }
            }
        }
        match (more, ids.last()) {
            (true, Some(last)) => cursor = Some(last.clone()),
            _ => return Ok((scanned, false)),
        }
    }
}

/// The groups of FAILED runs by fingerprint, the largest first, at most [`MAX_PARKED_GROUPS`].
pub fn groups(store: &Store) -> Result<ParkedGroups, Error> {
    let mut by_fingerprint: BTreeMap<String, ParkedGroup> = BTreeMap::new();
    let (scanned, mut truncated) = each_failed(store, |id, summary, failure| {
        let group = by_fingerprint.entry(failure.fingerprint.clone()).or_insert_with(|| ParkedGroup {
            fingerprint: failure.fingerprint.clone(),
            workflow_type: summary.workflow_type.to_string(),
            phase: failure.phase,
            pattern: failure.pattern.clone(),
            count: 0,
            first_seen_ms: failure.seen_ms,
            last_seen_ms: failure.seen_ms,
            sample: id.clone(),
            sample_reason: summary.reason.clone().unwrap_or_default(),
        });
        group.count += 1;
        group.first_seen_ms = group.first_seen_ms.min(failure.seen_ms);
        group.last_seen_ms = group.last_seen_ms.max(failure.seen_ms);
        true
    })?;
    let mut groups: Vec<ParkedGroup> = by_fingerprint.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
    if groups.len() > MAX_PARKED_GROUPS {
        groups.truncate(MAX_PARKED_GROUPS);
        truncated = true;
    }
    Ok(ParkedGroups { groups, scanned, truncated })
}

/// Up to `limit` parked runs, in id order, whose failure `keep` accepts.
pub fn parked(
    store: &Store,
    limit: usize,
    keep: impl Fn(&crate::store::RunSummary, &Failure) -> bool,
) -> Result<Vec<WorkflowId>, Error> {
    let mut out = Vec::new();
    each_failed(store, |id, summary, failure| {
        if failure.phase == shop_types::redrive::FailurePhase::Parked && keep(summary, &failure) {
            out.push(id.clone());
        }
        out.len() < limit
    })?;
    Ok(out)
}
