//! Faults a real deployment meets, injected into real processes:
//! - a worker killed after its effect (the charge) and before reporting it: the retry hits
//!   the idempotency record, so the order confirms with one charge;
//! - a poison pill (an activity that panics on one input) fails only its own order, which
//!   compensates, while the worker keeps serving every other order;
//! - a compensation that keeps failing parks its run (FAILED, needs an operator) until the
//!   operator resumes it, after which the saga finishes compensating;
//! - with no worker on a queue, the backlog is visible in `/v1/stats` and drains once a
//!   worker arrives;
//! - a run whose stored history holds an unreadable record is quarantined at start-up and
//!   the engine serves every other run.
//!
//! Every wait is bounded and no test asserts a timing.

use serde_json::json;
use shop_tests::client::net_charged;
use shop_tests::invariants::ORDER_CANCELLED;
use shop_tests::process::{binary, run_to_end, Finished};
use shop_tests::{
    assert_in_order, assert_invariants, event_labels, history_violations, order_body, Admin, Api, Engine,
    EngineOptions, PlacedOrder, Stack, Worker, WorkerOptions, CANCELLED, CONFIRMED, PENDING,
};
use shop_types::api::{HistoryEventView, WorkflowList, WorkflowStatus};
use shop_types::history::EventKind;
use shop_types::order::FaultConfig;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Pause between two looks at a condition the test waits for.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a test waits for something the system does within a second or two when healthy
/// (an effect reaching a ledger, a backlog showing in the stats).
const CONDITION_DEADLINE: Duration = Duration::from_secs(30);
/// The name the harness's [`Stack`] gives its worker (its data dir and log file).
const STACK_WORKER: &str = "worker";
/// How long one `shopctl` command may take.
const SHOPCTL_DEADLINE: Duration = Duration::from_secs(30);

/// Waits for a condition with a bound: `while !cond { deadline.tick().await }`.
struct Deadline {
    until: Instant,
    what: &'static str,
}

impl Deadline {
    fn new(what: &'static str) -> Deadline {
        Deadline { until: Instant::now() + CONDITION_DEADLINE, what }
    }

    /// Panics once the deadline has passed, else pauses before the next look.
    #[track_caller]
    fn check(&self) {
        assert!(Instant::now() < self.until, "{} did not happen within {CONDITION_DEADLINE:?}", self.what);
    }

    async fn tick(&self) {
        self.check();
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `shopctl --engine URL args...`.
fn shopctl(engine_url: &str, args: &[&str]) -> Finished {
    let mut command = Command::new(binary("shopctl"));
    command.env_remove("SHOP_ENGINE").env_remove("SHOP_WORKER").env("NO_COLOR", "1").arg("--engine").arg(engine_url);
    command.args(args);
    run_to_end(command, SHOPCTL_DEADLINE)
}

/// The events of one step (or compensation, `<step>.compensation`), in history order.
fn step_events<'a>(history: &'a [HistoryEventView], step: &str) -> Vec<&'a HistoryEventView> {
    history.iter().filter(|e| e.step_name.as_deref() == Some(step)).collect()
}

/// `(attempt, error type, will_retry)` of every failure of one step, in history order.
fn failures(events: &[&HistoryEventView]) -> Vec<(u32, String, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::StepFailed { attempt, error, will_retry, .. } => {
                Some((*attempt, error.error_type.clone(), *will_retry))
            }
            _ => None,
        })
        .collect()
}

/// `GET /v1/stats` as JSON.
async fn stats(api: &Api) -> serde_json::Value {
    let reply = api.get("/v1/stats").await.expect("the engine answers GET /v1/stats");
    assert_eq!(reply.status, 200, "GET /v1/stats: {}", reply.text);
    reply.body
}

mod backlog;
mod killed;
mod parked;
mod poison;
mod quarantine;
