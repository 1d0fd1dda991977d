//! The raw TOML shape of a definition, as serde reads it, before validation and resolution.
//!
//! This module owns only the field names and their serde attributes (the file format). It must
//! never validate or resolve anything: `definition.rs` and its modules do that, with file:line
//! errors.

use super::{child, circuit, for_each, language, predicate, OnFailure, StatusLabels};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    #[serde(default, with = "humantime_serde")]
    pub(super) initial_interval: Option<Duration>,
    pub(super) backoff_coefficient: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub(super) max_interval: Option<Duration>,
    pub(super) max_attempts: Option<u32>,
    pub(super) jitter: Option<f64>,
    pub(super) non_retryable: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    #[serde(default, with = "humantime_serde")]
    pub(super) schedule_to_start: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) start_to_close: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) schedule_to_close: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) heartbeat: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: toml::Spanned<String>,
    pub(super) activity: Option<String>,
    pub(super) queue: Option<toml::Spanned<String>>,
    pub(super) sleep: Option<String>,
    pub(super) sleep_until: Option<String>,
    pub(super) wait_for: Option<Vec<String>>,
    pub(super) fail_on: Option<Vec<String>>,
    pub(super) timeout: Option<String>,
    pub(super) choice: Option<Vec<language::RawCase>>,
    pub(super) parallel: Option<Vec<String>>,
    pub(super) for_each: Option<for_each::RawForEach>,
    pub(super) workflow: Option<child::RawChild>,
    pub(super) when: Option<predicate::RawPredicate>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    pub(super) on_failure: Option<OnFailure>,
    #[serde(default)]
    pub(super) pivot: bool,
    pub(super) params: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompensation {
    pub(super) step: toml::Spanned<String>,
    pub(super) activity: String,
    pub(super) queue: toml::Spanned<String>,
    #[serde(default)]
    pub(super) retry: RawRetry,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    pub(super) params: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefinition {
    pub(super) name: toml::Spanned<String>,
    pub(super) version: toml::Spanned<u32>,
    #[serde(default, with = "humantime_serde")]
    pub(super) execution_timeout: Option<Duration>,
    #[serde(default)]
    pub(super) statuses: StatusLabels,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    pub(super) steps: Vec<RawStep>,
    #[serde(default)]
    pub(super) compensations: Vec<RawCompensation>,
    #[serde(default)]
    pub(super) after_compensation: Vec<RawStep>,
    #[serde(default)]
    pub(super) signals: BTreeMap<String, language::RawSignal>,
    #[serde(default)]
    pub(super) branches: BTreeMap<String, Vec<RawStep>>,
    /// Per-activity settings, keyed by activity name (today: its circuit breaker).
    #[serde(default)]
    pub(super) activities: BTreeMap<String, circuit::RawActivity>,
}
