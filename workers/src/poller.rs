//! The poll loops: each long-polls one task queue, runs the tasks it gets concurrently
//! (heartbeating those that ask for it), and reports their outcomes in one batch that also
//! asks for the next tasks.
//!
//! A loop never crashes on the engine's behalf: an unreachable or overloaded engine is
//! retried with capped exponential backoff, and a report that cannot be delivered within its
//! budget is dropped, because the engine times the attempt out and retries it, and every
//! activity is idempotent. On shutdown a loop stops polling, gives in-flight tasks a grace
//! period, reports what finished, and returns. It never touches a store.

use crate::activities::Activities;
use crate::engine_client::{EngineClient, Heartbeat};
use crate::shutdown::Shutdown;
use crate::ErrorChain;
use shop_types::api::{ActivityTask, PollRequest, ReportBatchRequest, TaskOutcome, TaskReport};
use shop_types::history::ActivityError;
use shop_types::limits::MAX_REPORTS_PER_BATCH;
use shop_types::{QueueName, TaskToken};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

/// Tasks one poll asks for; they run concurrently and are reported in one batch.
pub const TASKS_PER_POLL: u32 = 16;
/// How long one long-poll waits for a task (the engine's limit is 60 s).
pub const POLL_WAIT: Duration = Duration::from_secs(20);
/// How long the poll that rides on a report waits: short, so a loop that went idle soon
/// falls back to a plain poll and a shutdown is never held up by a report's long-poll.
pub const REPORT_POLL_WAIT: Duration = Duration::from_secs(1);
/// The engine's code for a report or heartbeat on an attempt that is no longer current.
pub const STALE_TASK: &str = "STALE_TASK";
/// The engine's codes for a report refused because its run's shard is moving between nodes
/// (nothing was recorded): sent again within the report budget.
pub const MOVING_SHARD: &[&str] = &["SHARD_MOVED", "SHARD_UNAVAILABLE", "NOT_OWNER"];
/// The error type reported for an activity that panicked.
pub const ACTIVITY_PANICKED: &str = "ACTIVITY_PANICKED";

/// First and longest pause after a failed request to the engine.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a batch of reports is retried before it is dropped.
pub(crate) const REPORT_BUDGET: Duration = Duration::from_secs(30);
/// The same budget once shutdown has begun, so a dead engine cannot hold up the exit.
pub(crate) const SHUTDOWN_REPORT_BUDGET: Duration = Duration::from_secs(3);
/// How long in-flight tasks may still run after shutdown before they are abandoned (the
/// engine times abandoned attempts out and retries them elsewhere).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Floor of the heartbeat period, so a tiny `heartbeat_ms` cannot flood the engine.
const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_millis(50);

const _: () = assert!(TASKS_PER_POLL as usize <= MAX_REPORTS_PER_BATCH);

/// Capped exponential backoff: 100 ms, 200 ms, ... 2 s, 2 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    pub(crate) failures: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: BACKOFF_INITIAL, failures: 0 }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Resets after a success; returns how many failures in a row it ends.
    pub(crate) fn reset(&mut self) -> u32 {
        self.next = BACKOFF_INITIAL;
        std::mem::take(&mut self.failures)
    }
}

/// One poll loop on one queue.
#[derive(Debug)]
pub struct Poller {
    pub client: EngineClient,
    pub activities: Arc<Activities>,
    pub queue: QueueName,
    pub worker_id: shop_types::WorkerId,
    pub shutdown: Shutdown,
    /// Records each attempt's span (off: nothing).
    pub tracer: shop_telemetry::Tracer,
}

impl Poller {
    pub async fn run(mut self) {
        let mut backoff = Backoff::new();
        // Tasks handed out with the last report: a busy loop goes execute, report-and-poll,
        // execute, ... at one request per batch.
        let mut next_tasks: Vec<ActivityTask> = Vec::new();
        while !self.shutdown.is_triggered() {
            if !next_tasks.is_empty() {
                let reports = self.execute_all(std::mem::take(&mut next_tasks)).await;
                next_tasks = self.report(reports).await;
                continue;
            }
            // Shutdown cancels a poll in flight. Should the engine have leased tasks in the
            // answer we drop, their leases expire and the engine retries them.
            let polled = tokio::select! {
                () = self.shutdown.wait() => break,
                polled = self.client.poll(&self.queue, &self.worker_id, TASKS_PER_POLL, POLL_WAIT) => polled,
            };
            match polled {
                Ok(tasks) => {
                    let failures = backoff.reset();
                    if failures > 0 {
                        tracing::info!(failures, "the engine answers polls again");
                    }
                    next_tasks = tasks;
                }
                Err(err) => {
                    // A refused poll is a bug on one side and is always worth an error line.
                    // Otherwise log the first failure of a streak loudly and the rest
                    // quietly: every loop of every queue sees the same outage.
                    if !err.is_retryable() {
                        tracing::error!(error = %ErrorChain(&err), "the engine refused a poll; is this worker compatible with it?");
                    } else if backoff.failures == 0 {
                        tracing::warn!(error = %ErrorChain(&err), "poll failed; backing off");
                    } else {
                        tracing::debug!(error = %ErrorChain(&err), "poll failed again");
                    }
                    let delay = backoff.next_delay();
                    if !self.shutdown.sleep(delay).await {
                        break;
                    }
                }
            }
        }
    }

    /// Runs every task concurrently; returns the reports of those that finished.
    async fn execute_all(&self, tasks: Vec<ActivityTask>) -> Vec<TaskReport> {
        let mut running = JoinSet::new();
        let count = tasks.len();
        // Which attempt each spawned task runs, so a panic can still be reported as that
        // attempt's failure.
        let mut tokens = std::collections::HashMap::with_capacity(count);
        for task in tasks {
            let token = task.token.clone();
            let handle = running.spawn(execute_one(
                Arc::clone(&self.activities),
                self.client.clone(),
                self.tracer.clone(),
                task,
            ));
            tokens.insert(handle.id(), token);
        }
        let mut shutdown = self.shutdown.clone();
        let grace_over = async move {
            shutdown.wait().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::pin!(grace_over);
        let mut reports = Vec::with_capacity(count);
        loop {
            tokio::select! {
                joined = running.join_next_with_id() => match joined {
                    None => break,
                    Some(Ok((_, report))) => reports.push(report),
                    Some(Err(err)) => {
                        // A panic is a bug in the activity, perhaps one that trips on this
                        // input every time: report it as a retryable failure so the step's
                        // retry policy, not a lease timeout, decides how long to keep trying.
                        tracing::error!(error = %err, "an activity task panicked");
                        if let Some(token) = tokens.remove(&err.id()) {
                            reports.push(panicked(token, err));
                        }
                    }
                },
                () = &mut grace_over => {
                    tracing::warn!(abandoned = running.len(), "shutdown grace period over; abandoning in-flight tasks");
                    running.abort_all();
                    break;
                }
            }
        }
        reports
    }

    /// Delivers the reports, retrying transient failures within a budget, and returns the
    /// next tasks the engine handed out with them (none once shutdown has begun).
    async fn report(&self, reports: Vec<TaskReport>) -> Vec<ActivityTask> {
        let chunks: Vec<&[TaskReport]> = reports.chunks(MAX_REPORTS_PER_BATCH).collect();
        let mut next_tasks = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let then_poll = (last && !self.shutdown.is_triggered()).then(|| PollRequest {
                queue: self.queue.clone(),
                worker_id: self.worker_id.clone(),
                max_tasks: TASKS_PER_POLL,
                wait_ms: u64::try_from(REPORT_POLL_WAIT.as_millis()).unwrap_or(u64::MAX),
            });
            let batch = ReportBatchRequest { reports: chunk.to_vec(), then_poll };
            next_tasks = self.report_batch(&batch).await;
        }
        next_tasks
    }

    async fn report_batch(&self, batch: &ReportBatchRequest) -> Vec<ActivityTask> {
        let mut deadline = Instant::now() + REPORT_BUDGET;
        let mut backoff = Backoff::new();
        let mut tasks = Vec::new();
        // What is left to deliver: the whole batch, then only reports refused for a shard
        // that is moving (sent again without a poll).
        let mut left = std::borrow::Cow::Borrowed(batch);
        loop {
            if self.shutdown.is_triggered() {
                deadline = deadline.min(Instant::now() + SHUTDOWN_REPORT_BUDGET);
            }
            let refused_for_now = match self.client.report(&left).await {
                Ok(answer) => {
                    let mut again = Vec::new();
                    for (report, result) in left.reports.iter().zip(answer.results) {
                        match result {
                            None => tracing::debug!(token = %report.token, "report accepted"),
                            Some(refusal) if refusal.code == STALE_TASK => {
                                tracing::debug!(token = %report.token, "report refused: the attempt is no longer current")
                            }
                            Some(refusal) if MOVING_SHARD.contains(&refusal.code.as_str()) => {
                                tracing::debug!(token = %report.token, code = %refusal.code, "report refused for now; sending it again");
                                again.push(report.clone());
                            }
                            Some(refusal) => tracing::warn!(
                                token = %report.token,
                                code = %refusal.code,
                                message = %refusal.message,
                                "report refused"
                            ),
                        }
                    }
                    tasks.extend(answer.tasks);
                    if again.is_empty() {
                        return tasks;
                    }
                    left = std::borrow::Cow::Owned(ReportBatchRequest { reports: again, then_poll: None });
                    None
                }
                Err(err) => Some(err),
            };
            let delay = backoff.next_delay();
            let retryable = refused_for_now.as_ref().is_none_or(shop_client::Error::is_retryable);
            if !retryable || Instant::now() + delay > deadline {
                tracing::warn!(
                    error = refused_for_now.as_ref().map(|err| ErrorChain(err).to_string()),
                    reports = left.reports.len(),
                    "dropping undeliverable reports; the engine will time those attempts out and retry them"
                );
                return tasks;
            }
            if let Some(err) = &refused_for_now {
                tracing::debug!(error = %ErrorChain(err), ?delay, "report failed; retrying");
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// The report of an attempt whose task panicked (or was cancelled): a retryable failure.
pub(crate) fn panicked(token: TaskToken, err: tokio::task::JoinError) -> TaskReport {
    let error =
        ActivityError { error_type: ACTIVITY_PANICKED.to_owned(), message: panic_message(err), retryable: true };
    TaskReport { token, outcome: TaskOutcome::Failed { error }, traceparent: None }
}

/// The panic's message, when it has one.
fn panic_message(err: tokio::task::JoinError) -> String {
    if !err.is_panic() {
        return "the activity was cancelled".to_owned();
    }
    let payload = err.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .map_or_else(|| "the activity panicked".to_owned(), |message| format!("the activity panicked: {message}"))
}

async fn execute_one(
    activities: Arc<Activities>,
    client: EngineClient,
    tracer: shop_telemetry::Tracer,
    task: ActivityTask,
) -> TaskReport {
    let heartbeats = task
        .heartbeat_ms
        .map(|heartbeat_ms| tokio::spawn(heartbeat_loop(client, task.token.clone(), heartbeat_period(heartbeat_ms))));
    let report = run_task(activities, tracer, task).await;
    if let Some(heartbeats) = heartbeats {
        heartbeats.abort();
    }
    report
}

/// How often a task that asks for heartbeats every `heartbeat_ms` sends one: three times
/// per period, at most every [`MIN_HEARTBEAT_PERIOD`].
pub(crate) fn heartbeat_period(heartbeat_ms: u64) -> Duration {
    (Duration::from_millis(heartbeat_ms) / 3).max(MIN_HEARTBEAT_PERIOD)
}

/// Runs one task to its report (its metrics, log line and span recorded), whichever
/// protocol brought it: the poll loops and the task stream both run tasks through it.
pub(crate) async fn run_task(
    activities: Arc<Activities>,
    tracer: shop_telemetry::Tracer,
    task: ActivityTask,
) -> TaskReport {
    // A debug span: at the default info level it costs nothing per task.
    let span = tracing::debug_span!(
        "task",
        workflow_id = %task.workflow_id,
        step = %task.step_name,
        activity = %task.activity,
        attempt = task.attempt,
    );
    async move {
        let started = std::time::Instant::now();
        let started_at = std::time::SystemTime::now();
        let outcome = activities.execute(&task).await;
        let error = match &outcome {
            TaskOutcome::Completed { .. } => None,
            TaskOutcome::Failed { error } => Some(error.error_type.as_str()),
        };
        crate::metrics::executed(task.activity.as_str(), error, started.elapsed());
        match &outcome {
            TaskOutcome::Completed { .. } => tracing::debug!("completed"),
            TaskOutcome::Failed { error } => tracing::info!(
                error_type = %error.error_type,
                retryable = error.retryable,
                message = %error.message,
                "failed"
            ),
        }
        let traceparent = crate::trace::record_attempt(&tracer, &task, started_at, &outcome);
        TaskReport { token: task.token, outcome, traceparent }
    }
    .instrument(span)
    .await
}

/// Heartbeats every `period` until aborted or told the attempt is stale.
async fn heartbeat_loop(client: EngineClient, token: TaskToken, period: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match client.heartbeat(&token).await {
            Ok(Heartbeat::Alive) => {}
            Ok(Heartbeat::Stale) => {
                tracing::debug!("heartbeat refused: the attempt is no longer current");
                return;
            }
            Err(err) => tracing::debug!(error = %ErrorChain(&err), "heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..7).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], BACKOFF_INITIAL);
        assert_eq!(delays[1], BACKOFF_INITIAL * 2);
        assert_eq!(delays[6], BACKOFF_MAX);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(backoff.reset(), 7);
        assert_eq!(backoff.next_delay(), BACKOFF_INITIAL);
    }
}
