//! The `why` of `GET /v1/workflows/{id}`: gathers what [`crate::why::explain`] needs for one
//! run (its replayed history, the core's queue gauges and heartbeats, the statuses of the
//! runs it names) and attaches the answer to the view.
//!
//! It reads one run's history and asks the core one question; it must never scan other runs
//! nor change anything.

use super::AppState;
use shop_types::api::WorkflowView;

/// `view` with its `why`, from the run's `replay`. Left without one when the run could not be replayed (its definition
/// is not registered, its history does not read): the rest of the view still answers.
pub(crate) async fn with_why(state: &AppState, mut view: WorkflowView, replay: Option<super::Replay>) -> WorkflowView {
    let Some((definition, events, run)) = replay else {
        return view;
    };
    // Only a run in flight has heartbeats; a core that does not answer leaves the replayed
    // start times (a heartbeat timeout then shows as if no beat came since the start).
    let heartbeats = if run.terminal.is_none() && run.parked.is_none() {
        state.core.heartbeats(view.id.clone()).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let queues = state.core.stats.queues.lock().map(|q| q.clone()).unwrap_or_default();
    let store = state.store.clone();
    let status_of = move |id: &shop_types::WorkflowId| store.run(id).ok().flatten().map(|summary| summary.status);
    let circuits = state.core.stats.circuits.lock().map(|c| c.clone()).unwrap_or_default();
    let live = crate::why::Live {
        circuits: &circuits,
        now_ms: state.clock.now_ms(),
        queues: &queues,
        heartbeats: &heartbeats,
        status_of: &status_of,
    };
    view.why = Some(Box::new(crate::why::explain(&definition, run, &events, &live)));
    view
}
