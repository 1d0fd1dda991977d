//! The end-to-end test harness: real `shop-engine` and `shop-worker` processes on free
//! loopback ports, each stack in its own temporary directory with real sled stores, driven
//! over real HTTP.
//!
//! - [`browser`]: headless Chromium over WebDriver, for the console's tests;
//! - [`process`]: finding the binaries, process guards that kill on drop, kill -9 and restart;
//! - [`client`]: the engine API and the worker admin API, typed with `shop-types`;
//! - [`invariants`]: the checks of design.md section 7, reusable by any test.
//!
//! The harness never sleeps to let something happen: it polls for a condition with a
//! bounded deadline, and tests assert behaviour, never timings. Binaries come from the
//! cargo target dir; `cargo build --workspace` must have run first.

pub mod browser;
pub mod client;
pub mod cluster;
pub mod invariants;
pub mod process;
pub mod variants;

pub use client::{order_body, Admin, Api, Reply, CANCELLED, CONFIRMED, PENDING};
pub use invariants::{
    assert_invariants, assert_no_violations, audit_stack, check_invariants, check_invariants_with, history_violations,
    Admins, PlacedOrder,
};
pub use process::{Engine, EngineOptions, Worker, WorkerOptions};

use shop_types::api::HistoryEventView;
use std::path::Path;
use tempfile::TempDir;

/// One engine and one worker serving inventory, payment and notification, in a tempdir.
pub struct Stack {
    pub engine: Engine,
    pub worker: Worker,
    pub api: Api,
    pub admin: Admin,
    /// Declared last so it is removed only after both processes have been killed.
    dir: TempDir,
}

impl Stack {
    /// The standard stack: the repository's workflows, a worker with no faults.
    pub async fn start() -> Stack {
        Stack::start_with(EngineOptions::default(), WorkerOptions::default()).await
    }

    pub async fn start_with(engine: EngineOptions, worker: WorkerOptions) -> Stack {
        let dir = tempfile::tempdir().expect("create the stack's temporary dir");
        let engine = Engine::start(dir.path(), engine).await;
        let worker = Worker::start(dir.path(), "worker", &engine.url(), worker).await;
        let api = Api::new(&engine.url());
        let admin = Admin::new(&worker.url());
        Stack { engine, worker, api, admin, dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// An event as `Name` or `Name(step_name)`, for comparing histories with expectations.
pub fn event_label(event: &HistoryEventView) -> String {
    match &event.step_name {
        Some(step) => format!("{}({step})", event.event.name()),
        None => event.event.name().to_owned(),
    }
}

pub fn event_labels(events: &[HistoryEventView]) -> Vec<String> {
    events.iter().map(event_label).collect()
}

/// The three events of one step attempt that succeeds.
pub fn step_ok(step: &str) -> [String; 3] {
    [format!("StepScheduled({step})"), format!("StepStarted({step})"), format!("StepCompleted({step})")]
}

/// Asserts `expected` occurs in `actual` in order (other events may come between).
#[track_caller]
pub fn assert_in_order(actual: &[String], expected: &[&str]) {
    let mut rest = actual.iter();
    for wanted in expected {
        assert!(
            rest.any(|label| label == wanted),
            "history lacks {wanted} (in order {expected:?}); it is:\n  {}",
            actual.join("\n  ")
        );
    }
}
