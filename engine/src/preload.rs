//! Preloading completed runs, for measuring the engine at scale: `--preload-completed N`
//! writes N finished order sagas into the store before the engine serves, each with the
//! history the decider produces for a confirmed order, its summary and its index entries.
//!
//! It exists for benchmarks (memory and start-up time with a million stored workflows); it
//! must never touch runs that exist, and it writes nothing a real run could not have.

use crate::decider::{self, Context, Input};
use crate::definition::Definition;
use crate::state::WorkflowState;
use crate::store::{self, RunSummary, Store, WriteBatch};
use shop_types::api::WorkflowStatus;
use shop_types::{JsonText, WorkflowId};

/// Runs written per commit: large enough that syncs do not dominate, small enough that a
/// batch stays a few megabytes.
const RUNS_PER_COMMIT: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("preload: {0}")]
    Decider(String),
}

/// Writes `count` completed runs of `definition` named `preload-0000000`... that do not exist
/// yet. Returns how many it wrote.
pub fn preload_completed(store: &Store, definition: &Definition, count: u64, now_ms: u64) -> Result<u64, Error> {
    let ctx = Context::new(now_ms, shop_types::limits::DEFAULT_MAX_HISTORY_EVENTS);
    let mut written = 0;
    let mut batch = WriteBatch::default();
    let preload_worker = shop_types::WorkerId::parse("preload").map_err(|e| Error::Decider(e.to_string()))?;
    for i in 0..count {
        let id = WorkflowId::parse(format!("preload-{i:07}")).map_err(|e| Error::Decider(e.to_string()))?;
        if store.run(&id)?.is_some() {
            continue;
        }
        let input = JsonText::from_value(&serde_json::json!({
            "orderId": id.as_str(),
            "orderItems": [{"productId": 1 + i % 10, "quantity": 1}],
            "shippingAddress": "1 Preload Lane",
            "paymentMethod": "CREDIT_CARD",
        }));
        let mut state = WorkflowState::new(id.clone(), definition, input.clone(), now_ms);
        batch.append_events(&id, &decider::start_pinned(definition, &mut state, &input, ctx).events)?;
        let output = JsonText::parse(r#"{"ok":true}"#).map_err(|e| Error::Decider(e.to_string()))?;
        while let Some(current) = state.current().cloned() {
            let (step, attempt) = (current.step, current.attempt);
            for input in [
                Input::Started { step, attempt, worker: preload_worker.clone() },
                Input::Completed { step, attempt, output: output.clone() },
            ] {
                let events = decider::decide(definition, &mut state, input, ctx)
                    .map_err(|e| Error::Decider(e.to_string()))?
                    .events;
                batch.append_events(&id, &events)?;
            }
        }
        let terminal = state.terminal.as_ref().ok_or_else(|| Error::Decider(format!("{id} did not finish")))?;
        let summary = RunSummary {
            workflow_type: definition.name.clone(),
            definition_version: definition.version,
            status: WorkflowStatus::Completed,
            created_at_ms: now_ms,
            closed_at_ms: Some(terminal.at_ms),
            reason: None,
            output: terminal.output.clone(),
        };
        batch.put_run(&id, &summary, None, false)?;
        written += 1;
        if written % RUNS_PER_COMMIT == 0 {
            commit_numbered(store, std::mem::take(&mut batch))?;
            tracing::info!(written, of = count, "preloading completed runs");
        }
    }
    commit_numbered(store, batch)?;
    Ok(written)
}

/// Commits `batch` with its events numbered after the store's last position, as the core
/// numbers its own (preloading runs before the core recovers, which then numbers on).
fn commit_numbered(store: &Store, mut batch: WriteBatch) -> Result<(), Error> {
    let first = store.last_position(store::ShardId::SOLE)? + 1;
    batch.number(store::ShardId::SOLE, first)?;
    Ok(store.commit(batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, HistoryStore, ShardId, SledStore};

    #[test]
    fn preloaded_runs_are_complete_and_not_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), Durability::ProcessCrash, None).expect("opens");
        let definition =
            crate::definition::parse("order.toml", include_str!("../../workflows/order.toml")).expect("valid");
        assert_eq!(preload_completed(&store, &definition, 3, 1_000).expect("preloads"), 3);
        assert_eq!(preload_completed(&store, &definition, 3, 1_000).expect("preloads"), 0, "existing runs are kept");
        let id = WorkflowId::parse("preload-0000002").expect("valid");
        let history = store.history(&id).expect("reads");
        assert_eq!(history.len(), 15, "WorkflowStarted, DefinitionPinned, 4 steps of 3 events, the end");
        assert!(history.last().is_some_and(|e| e.kind.is_terminal()));
        assert_eq!(store.run(&id).expect("reads").map(|r| r.status), Some(WorkflowStatus::Completed));
        assert_eq!(store.in_flight(ShardId::SOLE).expect("reads").len(), 0);
        assert_eq!(store.last_position(ShardId::SOLE).expect("reads"), 3 * 15, "every event numbered");
    }
}
