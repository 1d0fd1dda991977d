//! Prometheus metrics of a worker process, served at `GET /metrics` on its admin API (behind
//! the same admin check as every admin route), in the text format through
//! `prometheus-client`.
//!
//! It owns the families: activity executions by activity and outcome, their latency, and the
//! latency of the stores' flushes by domain. One set per process (a static), as the poller,
//! the domains and the admin API all report into it. It must never label a series with a run
//! id or an idempotency key: activities and domains are fixed sets, error codes are capped by
//! [`MAX_ERROR_CODE_LABELS`] (then `other`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Distinct error codes shown as labels; further codes are counted as `other`.
pub const MAX_ERROR_CODE_LABELS: usize = 64;

/// The label value past [`MAX_ERROR_CODE_LABELS`].
pub const OTHER_LABEL: &str = "other";

/// The content type of the Prometheus text format (version 0.0.4).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds: 0.5 ms doubling to about 33 s (17 buckets).
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 17))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecutionLabels {
    activity: String,
    /// `completed`, or the failure's error code.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivityLabels {
    activity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    domain: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct WorkerMetrics {
    registry: Registry,
    executions: Family<ExecutionLabels, Counter>,
    execution_seconds: HistogramFamily<ActivityLabels>,
    flush_seconds: HistogramFamily<DomainLabels>,
    error_codes: Mutex<HashSet<String>>,
}

static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(|| {
    let executions = Family::<ExecutionLabels, Counter>::default();
    let execution_seconds: HistogramFamily<ActivityLabels> = Family::new_with_constructor(seconds_histogram);
    let flush_seconds: HistogramFamily<DomainLabels> = Family::new_with_constructor(seconds_histogram);
    let mut registry = Registry::default();
    registry.register("shop_worker_activity_executions", "Activity executions by outcome", executions.clone());
    registry.register(
        "shop_worker_activity_duration_seconds",
        "Time an activity took in this worker",
        execution_seconds.clone(),
    );
    registry.register(
        "shop_worker_store_flush_duration_seconds",
        "Latency of a domain store's flush (group commit), as its callers wait for it",
        flush_seconds.clone(),
    );
    WorkerMetrics { registry, executions, execution_seconds, flush_seconds, error_codes: Mutex::new(HashSet::new()) }
});

/// One execution of `activity` that took `took`; `error` is the failure's code, if it failed.
pub fn executed(activity: &str, error: Option<&str>, took: Duration) {
    let outcome = match error {
        None => "completed".to_owned(),
        Some(code) => capped(code),
    };
    METRICS.executions.get_or_create(&ExecutionLabels { activity: activity.to_owned(), outcome }).inc();
    METRICS
        .execution_seconds
        .get_or_create(&ActivityLabels { activity: activity.to_owned() })
        .observe(took.as_secs_f64());
}

/// One flush of `domain`'s store that took `took`.
pub fn flushed(domain: &str, took: Duration) {
    METRICS.flush_seconds.get_or_create(&DomainLabels { domain: domain.to_owned() }).observe(took.as_secs_f64());
}

fn capped(code: &str) -> String {
    let mut codes = METRICS.error_codes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if codes.contains(code) || codes.len() < MAX_ERROR_CODE_LABELS {
        codes.insert(code.to_owned());
        return code.to_owned();
    }
    OTHER_LABEL.to_owned()
}

/// Every metric of this process in the text format.
pub fn encode() -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &METRICS.registry)?;
    Ok(text)
}
