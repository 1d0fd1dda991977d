//! Resolving one declared step's policies: its retry policy and timeouts filled in from the
//! workflow's defaults and checked against their limits, and its params as JSON.
//!
//! It must never accept a policy the engine cannot honour (zero durations, out-of-range
//! attempts, jitter or backoff), and it knows nothing of the TOML document around a step.

use super::{
    Construct, OnFailure, RawDefaults, RawRetry, RawTimeouts, RetryPolicy, StepDef, Timeouts,
    DEFAULT_BACKOFF_COEFFICIENT, DEFAULT_INITIAL_INTERVAL, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_INTERVAL_FACTOR,
    DEFAULT_START_TO_CLOSE, MAX_ATTEMPTS_LIMIT,
};
use shop_types::{JsonText, StepName};
use std::time::Duration;

pub(super) struct ResolveInput<'a> {
    pub name: StepName,
    pub construct: Construct,
    pub retry: &'a RawRetry,
    pub timeouts: &'a RawTimeouts,
    pub params: Option<&'a toml::Table>,
}

pub(super) fn resolve_step(input: ResolveInput<'_>, defaults: &RawDefaults) -> Result<StepDef, String> {
    let name = input.name;
    let (retry, timeouts) = (input.retry, input.timeouts);
    let (d_retry, d_timeouts) = (&defaults.retry, &defaults.timeouts);

    let initial = retry.initial_interval.or(d_retry.initial_interval).unwrap_or(DEFAULT_INITIAL_INTERVAL);
    let initial_interval_ms = positive_ms(initial, "initial_interval").map_err(|r| format!("step {name:?}: {r}"))?;
    let max_interval_ms = match retry.max_interval.or(d_retry.max_interval) {
        Some(d) => positive_ms(d, "max_interval").map_err(|r| format!("step {name:?}: {r}"))?,
        None => initial_interval_ms.saturating_mul(u64::from(DEFAULT_MAX_INTERVAL_FACTOR)),
    };
    if max_interval_ms < initial_interval_ms {
        return Err(format!("step {name:?}: max_interval is shorter than initial_interval"));
    }
    let backoff_coefficient =
        retry.backoff_coefficient.or(d_retry.backoff_coefficient).unwrap_or(DEFAULT_BACKOFF_COEFFICIENT);
    if !(1.0..=100.0).contains(&backoff_coefficient) {
        return Err(format!("step {name:?}: backoff_coefficient must be between 1.0 and 100.0"));
    }
    let max_attempts = retry.max_attempts.or(d_retry.max_attempts).unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        return Err(format!("step {name:?}: max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}"));
    }
    let jitter = retry.jitter.or(d_retry.jitter).unwrap_or(0.0);
    if !(0.0..=1.0).contains(&jitter) {
        return Err(format!("step {name:?}: jitter must be between 0.0 and 1.0"));
    }
    let non_retryable = retry.non_retryable.clone().or_else(|| d_retry.non_retryable.clone()).unwrap_or_default();

    let optional_ms = |own: Option<Duration>, default: Option<Duration>, what: &str| {
        own.or(default).map(|d| positive_ms(d, what)).transpose().map_err(|r| format!("step {name:?}: {r}"))
    };
    let start_to_close_ms = optional_ms(timeouts.start_to_close, d_timeouts.start_to_close, "start_to_close")?
        .unwrap_or(DEFAULT_START_TO_CLOSE.as_millis() as u64);
    let timeouts = Timeouts {
        schedule_to_start_ms: optional_ms(
            timeouts.schedule_to_start,
            d_timeouts.schedule_to_start,
            "schedule_to_start",
        )?,
        start_to_close_ms,
        schedule_to_close_ms: optional_ms(
            timeouts.schedule_to_close,
            d_timeouts.schedule_to_close,
            "schedule_to_close",
        )?,
        heartbeat_ms: optional_ms(timeouts.heartbeat, d_timeouts.heartbeat, "heartbeat")?,
    };
    let params = match input.params {
        Some(table) => {
            let value = serde_json::to_value(table).map_err(|e| format!("step {name:?}: params: {e}"))?;
            // Parsed, not just built, so params obey the payload limits (nesting depth)
            // that every other payload a worker receives obeys.
            JsonText::parse(value.to_string()).map_err(|e| format!("step {name:?}: params: {e}"))?
        }
        None => JsonText::parse("{}").map_err(|e| e.to_string())?,
    };
    Ok(StepDef {
        name,
        construct: input.construct,
        when: None,
        for_each: None,
        retry: RetryPolicy {
            initial_interval_ms,
            backoff_coefficient,
            max_interval_ms,
            max_attempts,
            jitter,
            non_retryable,
        },
        timeouts,
        on_failure: OnFailure::Compensate,
        pivot: false,
        params,
    })
}

pub(super) fn positive_ms(duration: Duration, what: &str) -> Result<u64, String> {
    let ms = u64::try_from(duration.as_millis()).map_err(|_| format!("{what} is too long"))?;
    if ms == 0 {
        return Err(format!("{what} must be at least 1ms"));
    }
    Ok(ms)
}
