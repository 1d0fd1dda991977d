//! Prometheus metrics of the engine, served at `GET /metrics` (admin credentials) in the
//! Prometheus text format through `prometheus-client` (never formatted by hand).
//!
//! It owns the metric families and their names, the bounds on their labels, the HTTP layer
//! that counts requests by route template, and the scrape that reads the core's gauges. Most
//! counters come from [`follower::MetricsFollower`], which follows the stream of committed
//! events like `stream_stats`; the core's own histograms (commit batch size, sync latency)
//! live in [`CoreMetrics`], which the core fills as it commits.
//!
//! It must never label a series with a run id or a raw path, never block the core, and never
//! create a series per unbounded value: workflow types, queues and activities are bounded by
//! the registered definitions, error codes by [`MAX_ERROR_CODE_LABELS`] (then `other`).

pub mod follower;

use crate::api::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Distinct error codes a metric shows as labels; further codes are counted as `other`, so a
/// worker inventing codes cannot grow the scrape without bound.
pub const MAX_ERROR_CODE_LABELS: usize = 64;

/// The label value of error codes past [`MAX_ERROR_CODE_LABELS`].
pub const OTHER_LABEL: &str = "other";

/// The content type of the Prometheus text format (version 0.0.4).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds: 0.5 ms doubling to about 33 s (17 buckets), wide enough for a
/// sync (sub-millisecond) and a long activity alike.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_5, 2.0, 17)
}

/// Run duration buckets in seconds: 10 ms doubling to about 23 hours (24 buckets).
fn run_seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.01, 2.0, 24)
}

/// Events per commit: 1 doubling to 8,192 (14 buckets; a commit holds at most
/// `MAX_COMMANDS_PER_COMMIT` commands' events).
fn batch_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 2.0, 14)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    Histogram::new(seconds_buckets())
}

fn run_seconds_histogram() -> Histogram {
    Histogram::new(run_seconds_buckets())
}

/// The core's histograms: it observes them as it commits and syncs.
#[derive(Clone)]
pub struct CoreMetrics {
    /// Events per applied batch.
    pub commit_batch_events: Histogram,
    /// Latency of each sync (group commit).
    pub sync_seconds: Histogram,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics { commit_batch_events: Histogram::new(batch_buckets()), sync_seconds: seconds_histogram() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub workflow_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub workflow_type: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParkedLabels {
    pub workflow_type: String,
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub queue: String,
    pub activity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub queue: String,
    pub activity: String,
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActivityLabels {
    pub activity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    pub activity: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

/// Every family the engine exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pub runs_started: Family<TypeLabels, Counter>,
    pub runs_finished: Family<OutcomeLabels, Counter>,
    pub run_duration: HistogramFamily<OutcomeLabels>,
    pub runs_parked: Family<ParkedLabels, Counter>,
    pub compensations: Family<TypeLabels, Counter>,
    pub tasks_scheduled: Family<TaskLabels, Counter>,
    pub schedule_to_start: HistogramFamily<TaskLabels>,
    pub execution: HistogramFamily<TaskLabels>,
    pub failed_attempts: Family<FailureLabels, Counter>,
    pub follower_lagged_commits: Counter,
    pub follower_untracked_runs: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    backlog: Family<QueueLabels, Gauge>,
    oldest_age: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    pollers: Family<QueueLabels, Gauge>,
    circuit_state: Family<ActivityLabels, Gauge>,
    circuit_transitions: Family<CircuitLabels, Counter>,
    circuit_handed_out: Family<CircuitLabels, Counter>,
    runs_active: Gauge,
    waiting_reads: Gauge,
    stream_subscribers: Gauge,
    stream_events_sent: Counter,
    stream_catch_ups: Counter,
    fence_rejections: Counter,
    error_codes: Mutex<HashSet<String>>,
}

impl Metrics {
    /// Observes the duration of a run that settled with `status` (ended, or parked): called
    /// by the stats follower, which remembers when runs started.
    pub fn observe_run_duration(&self, workflow_type: &str, status: shop_types::api::WorkflowStatus, seconds: f64) {
        let labels =
            OutcomeLabels { workflow_type: workflow_type.to_owned(), outcome: status.as_str().to_ascii_lowercase() };
        self.run_duration.get_or_create(&labels).observe(seconds);
    }

    /// The families, registered; `core` holds the core's histograms.
    pub fn new(core: &CoreMetrics) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            runs_started: Family::default(),
            runs_finished: Family::default(),
            run_duration: Family::new_with_constructor(run_seconds_histogram),
            runs_parked: Family::default(),
            compensations: Family::default(),
            tasks_scheduled: Family::default(),
            schedule_to_start: Family::new_with_constructor(seconds_histogram),
            execution: Family::new_with_constructor(seconds_histogram),
            failed_attempts: Family::default(),
            follower_lagged_commits: Counter::default(),
            follower_untracked_runs: Counter::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(seconds_histogram),
            backlog: Family::default(),
            oldest_age: Family::default(),
            pollers: Family::default(),
            circuit_state: Family::default(),
            circuit_transitions: Family::default(),
            circuit_handed_out: Family::default(),
            runs_active: Gauge::default(),
            waiting_reads: Gauge::default(),
            stream_subscribers: Gauge::default(),
            fence_rejections: Counter::default(),
            stream_events_sent: Counter::default(),
            stream_catch_ups: Counter::default(),
            error_codes: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("shop_runs_started", "Runs started, by workflow type", m.runs_started.clone());
        r.register("shop_runs_finished", "Runs ended, by workflow type and outcome", m.runs_finished.clone());
        r.register("shop_run_duration_seconds", "Start to end of runs that ended", m.run_duration.clone());
        r.register(
            "shop_runs_parked",
            "Runs parked (compensation failed for good), by error code",
            m.runs_parked.clone(),
        );
        r.register("shop_compensations", "Runs that started compensating", m.compensations.clone());
        r.register("shop_tasks_scheduled", "Activity attempts scheduled", m.tasks_scheduled.clone());
        r.register(
            "shop_task_schedule_to_start_seconds",
            "Time an attempt waited in its queue for a worker",
            m.schedule_to_start.clone(),
        );
        r.register(
            "shop_task_execution_seconds",
            "Start to completion or failure of an attempt, as the engine saw it",
            m.execution.clone(),
        );
        r.register(
            "shop_task_failed_attempts",
            "Attempts that failed or timed out, by error code",
            m.failed_attempts.clone(),
        );
        r.register(
            "shop_metrics_lagged_commits",
            "Commits the metrics follower missed by lagging (their events are not counted)",
            m.follower_lagged_commits.clone(),
        );
        r.register(
            "shop_metrics_untracked_runs",
            "Runs started while the follower tracked its most runs (no durations for them)",
            m.follower_untracked_runs.clone(),
        );
        r.register("shop_http_requests", "HTTP requests by route template, method and status", m.http_requests.clone());
        r.register("shop_http_request_duration_seconds", "HTTP request latency by route", m.http_duration.clone());
        r.register("shop_queue_backlog_tasks", "Tasks waiting for a worker, per queue", m.backlog.clone());
        r.register(
            "shop_queue_oldest_task_age_seconds",
            "Age of the oldest task waiting for a worker (0 when none)",
            m.oldest_age.clone(),
        );
        r.register("shop_queue_pollers", "Worker polls waiting on the queue now", m.pollers.clone());
        r.register(
            "shop_circuit_state",
            "An activity's circuit breaker: 0 closed, 1 open (its tasks wait), 2 half-open (probing)",
            m.circuit_state.clone(),
        );
        r.register(
            "shop_circuit_transitions",
            "State changes of an activity's circuit breaker, by the state entered",
            m.circuit_transitions.clone(),
        );
        r.register(
            "shop_circuit_handed_out",
            "Attempts of an activity with a breaker handed out, by the breaker's state then (never open)",
            m.circuit_handed_out.clone(),
        );
        r.register("shop_runs_active", "Runs in flight (parked ones included)", m.runs_active.clone());
        r.register("shop_waiting_reads", "Clients waiting for runs to finish", m.waiting_reads.clone());
        r.register("shop_stream_subscribers", "Event streams (SSE) open now", m.stream_subscribers.clone());
        r.register("shop_stream_events_sent", "Events sent on event streams", m.stream_events_sent.clone());
        r.register(
            "shop_stream_catch_ups",
            "Times an event stream lagged or saw a gap and re-read the store",
            m.stream_catch_ups.clone(),
        );
        r.register(
            "shop_fence_rejections",
            "Write transactions refused because this node no longer held a shard's epoch",
            m.fence_rejections.clone(),
        );
        r.register("shop_commit_batch_events", "Events per applied batch", core.commit_batch_events.clone());
        r.register("shop_sync_duration_seconds", "Latency of each group-commit sync", core.sync_seconds.clone());
        Metrics { registry, ..m }
    }

    /// `code` if it is one of the first [`MAX_ERROR_CODE_LABELS`] codes seen, else `other`.
    pub fn error_code(&self, code: &str) -> String {
        let mut codes = self.error_codes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if codes.contains(code) {
            return code.to_owned();
        }
        if codes.len() < MAX_ERROR_CODE_LABELS {
            codes.insert(code.to_owned());
            return code.to_owned();
        }
        OTHER_LABEL.to_owned()
    }

    /// Reads the gauges of the moment (queues, pollers, runs, streams) and encodes everything.
    fn scrape(&self, state: &AppState) -> Result<String, std::fmt::Error> {
        let stats = &state.core.stats;
        let now_ms = state.clock.now_ms();
        let depths = stats.queue_depths.lock().map(|d| d.clone()).unwrap_or_default();
        let queues = stats.queues.lock().map(|q| q.clone()).unwrap_or_default();
        for (queue, tasks) in &depths {
            let labels = QueueLabels { queue: queue.clone() };
            self.backlog.get_or_create(&labels).set(i64::try_from(*tasks).unwrap_or(i64::MAX));
        }
        for (queue, gauges) in &queues {
            let labels = QueueLabels { queue: queue.clone() };
            self.pollers.get_or_create(&labels).set(i64::try_from(gauges.pollers).unwrap_or(i64::MAX));
            let age_ms = gauges.oldest_scheduled_ms.map_or(0, |at| now_ms.saturating_sub(at));
            self.oldest_age.get_or_create(&labels).set(age_ms as f64 / 1_000.0);
            let _ = self.backlog.get_or_create(&labels);
        }
        let circuits = stats.circuits.lock().map(|c| c.clone()).unwrap_or_default();
        for (activity, view) in &circuits {
            let labels = ActivityLabels { activity: activity.clone() };
            self.circuit_state.get_or_create(&labels).set(view.state.gauge());
            let by_state = |state: &crate::core::CircuitState| CircuitLabels {
                activity: activity.clone(),
                state: state.as_str().to_owned(),
            };
            for (state, count) in &view.transitions {
                catch_up(&self.circuit_transitions.get_or_create(&by_state(state)), *count);
            }
            for (state, count) in &view.handed_out {
                catch_up(&self.circuit_handed_out.get_or_create(&by_state(state)), *count);
            }
        }
        self.runs_active.set(i64::try_from(stats.active.load(Relaxed)).unwrap_or(i64::MAX));
        self.waiting_reads.set(i64::try_from(state.watch.slots().in_use()).unwrap_or(i64::MAX));
        self.stream_subscribers.set(i64::try_from(state.streams.subscribers()).unwrap_or(i64::MAX));
        catch_up(&self.stream_events_sent, state.streams.events_sent());
        catch_up(&self.stream_catch_ups, state.streams.catch_ups());
        catch_up(&self.fence_rejections, stats.fence_rejections.load(Relaxed));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Moves `counter` up to `total`, a count kept elsewhere (counters only go up).
fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub async fn serve(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.scrape(&state).map_err(|_| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "could not encode the metrics")
    })?;
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], text).into_response())
}

/// The HTTP layer: counts each request by its route template (never the raw path: an id
/// in a path would be a series per run) and its method and status, and times it.
pub async fn track_http(State(metrics): State<Arc<Metrics>>, request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => OTHER_LABEL,
    }
    .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { route: route.clone(), method: method.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics.http_requests.get_or_create(&HttpLabels { route, method, status }).inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_past_the_cap_are_counted_as_other() {
        let metrics = Metrics::new(&CoreMetrics::default());
        for i in 0..MAX_ERROR_CODE_LABELS {
            assert_eq!(metrics.error_code(&format!("E{i}")), format!("E{i}"));
        }
        assert_eq!(metrics.error_code("ONE_TOO_MANY"), OTHER_LABEL);
        assert_eq!(metrics.error_code("E0"), "E0", "a code seen before keeps its label");
    }
}
