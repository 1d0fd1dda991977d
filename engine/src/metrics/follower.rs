//! The metrics follower: turns the stream of committed events into the run and task metrics
//! (runs started, ended, parked, compensating; attempts scheduled, their wait and run time,
//! failures by error code), from one subscription, on its own task.
//!
//! It counts only what is durable (the stream publishes after the sync). To time attempts it
//! remembers, per run in flight, when each attempt was scheduled and started: at most
//! [`MAX_TRACKED_RUNS`] runs, forgotten when a run settles. Runs' durations are not its
//! business: the stats follower (`crate::stream_stats`), the engine's one tracker of run
//! start times, observes them. A lag
//! (`RecvError::Lagged`) drops the lost commits' events from the counts and says so in
//! `shop_metrics_lagged_commits_total`; it never re-reads the store. It must never block the
//! core, hold a lock across an await, or label anything with a run id.

use super::{FailureLabels, Metrics, OutcomeLabels, ParkedLabels, TaskLabels, TypeLabels};
use crate::core::stream::{Commit, CommittedEvent, Subscription, TaskEvent};
use shop_types::{StepRef, WorkflowId};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Runs in flight whose start and attempts the follower remembers at most: bounds its memory
/// (a few hundred bytes each). Runs past it are still counted, just not timed.
pub const MAX_TRACKED_RUNS: usize = 200_000;

/// What the follower remembers of one run in flight.
#[derive(Default)]
struct Tracked {
    /// The error code of its last failed attempt: why it parks, when it does.
    last_error: Option<String>,
    /// Per step: the attempt, when it was scheduled and when it started.
    steps: HashMap<StepRef, (u32, u64, Option<u64>)>,
}

/// Follows the stream and fills [`Metrics`].
pub struct MetricsFollower {
    metrics: Arc<Metrics>,
    runs: HashMap<WorkflowId, Tracked>,
}

impl MetricsFollower {
    pub fn new(metrics: Arc<Metrics>) -> MetricsFollower {
        MetricsFollower { metrics, runs: HashMap::new() }
    }

    /// Follows `subscription` until the stream closes.
    pub async fn follow(mut self, mut subscription: Subscription) {
        loop {
            match subscription.recv().await {
                Ok(commit) => self.count(&commit),
                Err(RecvError::Lagged(missed)) => {
                    self.metrics.follower_lagged_commits.inc_by(missed);
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn count(&mut self, commit: &Commit) {
        for event in &commit.events {
            self.event(event);
        }
    }

    fn event(&mut self, event: &CommittedEvent) {
        let m = &self.metrics;
        let workflow_type = event.workflow_type.to_string();
        match event.kind {
            "WorkflowStarted" => {
                m.runs_started.get_or_create(&TypeLabels { workflow_type }).inc();
                if self.runs.len() < MAX_TRACKED_RUNS {
                    self.runs.insert(event.run.clone(), Tracked::default());
                } else {
                    m.follower_untracked_runs.inc();
                }
                return;
            }
            "CompensationStarted" => {
                m.compensations.get_or_create(&TypeLabels { workflow_type }).inc();
                return;
            }
            "RunParked" => {
                let code = self.runs.get(&event.run).and_then(|run| run.last_error.as_deref()).unwrap_or("unknown");
                let error_code = m.error_code(code);
                m.runs_parked.get_or_create(&ParkedLabels { workflow_type, error_code }).inc();
                return;
            }
            _ => {}
        }
        if event.settles {
            let outcome = event.status.as_str().to_ascii_lowercase();
            let labels = OutcomeLabels { workflow_type, outcome };
            m.runs_finished.get_or_create(&labels).inc();
            self.runs.remove(&event.run);
            return;
        }
        if let Some(task) = &event.task {
            self.task(event, task);
        }
    }

    fn task(&mut self, event: &CommittedEvent, task: &TaskEvent) {
        let m = &self.metrics;
        let labels = TaskLabels { queue: task.queue.to_string(), activity: task.activity.to_string() };
        let tracked = self.runs.get_mut(&event.run);
        match event.kind {
            "StepScheduled" => {
                m.tasks_scheduled.get_or_create(&labels).inc();
                if let Some(run) = tracked {
                    run.steps.insert(task.step, (task.attempt, event.at_ms, None));
                }
            }
            "StepStarted" => {
                let step = tracked.and_then(|run| run.steps.get_mut(&task.step)).filter(|s| s.0 == task.attempt);
                if let Some((_, scheduled, started)) = step {
                    m.schedule_to_start.get_or_create(&labels).observe(seconds(event.at_ms, *scheduled));
                    *started = Some(event.at_ms);
                }
            }
            _ => {
                let Some(run) = tracked else {
                    self.failure(&labels, task);
                    return;
                };
                if let Some((_, _, Some(started))) = run.steps.remove(&task.step).filter(|s| s.0 == task.attempt) {
                    m.execution.get_or_create(&labels).observe(seconds(event.at_ms, started));
                }
                if let Some(code) = &task.error {
                    run.last_error = Some(code.clone());
                }
                self.failure(&labels, task);
            }
        }
    }

    fn failure(&self, labels: &TaskLabels, task: &TaskEvent) {
        if let Some(code) = &task.error {
            let labels = FailureLabels {
                queue: labels.queue.clone(),
                activity: labels.activity.clone(),
                error_code: self.metrics.error_code(code),
            };
            self.metrics.failed_attempts.get_or_create(&labels).inc();
        }
    }
}

fn seconds(at_ms: u64, since_ms: u64) -> f64 {
    at_ms.saturating_sub(since_ms) as f64 / 1_000.0
}
