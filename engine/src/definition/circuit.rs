//! A circuit breaker's declaration: `[activities."<activity>".circuit]` in a definition,
//! checked against its limits and resolved into [`CircuitConfig`].
//!
//! This module owns the format and its limits only. It must never keep a breaker's state
//! (the core's `circuit` module does) and never accept a breaker that could not close again
//! (no probes) or never open (a zero window).

use super::resolve::positive_ms;
use serde::Deserialize;
use shop_types::ActivityName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Longest `window` a breaker may declare: outcomes older than this say nothing about a
/// provider now, and the window's memory grows with it.
pub const MAX_CIRCUIT_WINDOW: Duration = Duration::from_secs(3_600);
/// Longest `open_for`: a typo must not hold an activity's tasks for days.
pub const MAX_CIRCUIT_OPEN_FOR: Duration = Duration::from_secs(3_600);
/// Highest `min_calls` (the window keeps at most `MAX_CIRCUIT_WINDOW_CALLS` outcomes).
pub const MAX_CIRCUIT_MIN_CALLS: u32 = 1_000;
/// Highest `half_open_probes`: probing is meant to be a trickle.
pub const MAX_HALF_OPEN_PROBES: u32 = 100;
/// Breakers one definition may declare at most.
pub const MAX_CIRCUITS_DECLARED: usize = 64;

const DEFAULT_FAILURE_RATIO: f64 = 0.5;
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_MIN_CALLS: u32 = 10;
const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(10);
const DEFAULT_HALF_OPEN_PROBES: u32 = 1;

/// `[activities."<name>"]`: what a definition declares about one activity.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActivity {
    pub(super) circuit: Option<RawCircuit>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCircuit {
    failure_ratio: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
    min_calls: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    open_for: Option<Duration>,
    half_open_probes: Option<u32>,
}

/// A resolved breaker: it opens when, within the last `window_ms`, at least `min_calls`
/// attempts ended and at least `failure_ratio` of them failed; it stays open `open_for_ms`,
/// then lets `half_open_probes` attempts through; a probe's success closes it, a failure
/// opens it again.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitConfig {
    pub failure_ratio: f64,
    pub window_ms: u64,
    pub min_calls: u32,
    pub open_for_ms: u64,
    pub half_open_probes: u32,
}

impl CircuitConfig {
    /// One line for `shopctl definition check` and the definitions API.
    pub fn describe(&self) -> String {
        format!(
            "opens at {}% failures of at least {} calls within {}ms; open {}ms; {} half-open probe(s)",
            self.failure_ratio * 100.0,
            self.min_calls,
            self.window_ms,
            self.open_for_ms,
            self.half_open_probes
        )
    }
}

/// Resolves every declared breaker; `used` are the activities the definition's steps name
/// (a breaker for an activity nothing runs is a typo).
pub(super) fn resolve(
    raw: &BTreeMap<String, RawActivity>,
    used: &BTreeSet<ActivityName>,
) -> Result<BTreeMap<ActivityName, CircuitConfig>, String> {
    if raw.len() > MAX_CIRCUITS_DECLARED {
        return Err(format!("at most {MAX_CIRCUITS_DECLARED} [activities] entries"));
    }
    let mut out = BTreeMap::new();
    for (name, activity) in raw {
        let prefix = format!("[activities.{name:?}]");
        let parsed = ActivityName::parse(name.as_str()).map_err(|e| format!("{prefix}: {e}"))?;
        if !used.contains(&parsed) {
            return Err(format!("{prefix}: no step of this definition runs activity {name:?}"));
        }
        let Some(circuit) = &activity.circuit else {
            return Err(format!("{prefix}: declares nothing (expected a circuit table)"));
        };
        let config = resolve_circuit(circuit).map_err(|reason| format!("{prefix}.circuit: {reason}"))?;
        out.insert(parsed, config);
    }
    Ok(out)
}

fn resolve_circuit(raw: &RawCircuit) -> Result<CircuitConfig, String> {
    let failure_ratio = raw.failure_ratio.unwrap_or(DEFAULT_FAILURE_RATIO);
    if !(failure_ratio > 0.0 && failure_ratio <= 1.0) {
        return Err(format!("failure_ratio must be a number in (0, 1], got {failure_ratio}"));
    }
    let window = raw.window.unwrap_or(DEFAULT_WINDOW);
    if window > MAX_CIRCUIT_WINDOW {
        return Err(format!("window must be at most {}s", MAX_CIRCUIT_WINDOW.as_secs()));
    }
    let open_for = raw.open_for.unwrap_or(DEFAULT_OPEN_FOR);
    if open_for > MAX_CIRCUIT_OPEN_FOR {
        return Err(format!("open_for must be at most {}s", MAX_CIRCUIT_OPEN_FOR.as_secs()));
    }
    let min_calls = raw.min_calls.unwrap_or(DEFAULT_MIN_CALLS);
    if !(1..=MAX_CIRCUIT_MIN_CALLS).contains(&min_calls) {
        return Err(format!("min_calls must be 1 to {MAX_CIRCUIT_MIN_CALLS}, got {min_calls}"));
    }
    let half_open_probes = raw.half_open_probes.unwrap_or(DEFAULT_HALF_OPEN_PROBES);
    if !(1..=MAX_HALF_OPEN_PROBES).contains(&half_open_probes) {
        return Err(format!("half_open_probes must be 1 to {MAX_HALF_OPEN_PROBES}, got {half_open_probes}"));
    }
    Ok(CircuitConfig {
        failure_ratio,
        window_ms: positive_ms(window, "window")?,
        min_calls,
        open_for_ms: positive_ms(open_for, "open_for")?,
        half_open_probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> Result<BTreeMap<ActivityName, CircuitConfig>, String> {
        let raw: BTreeMap<String, RawActivity> = toml::from_str(toml_text).map_err(|e| e.message().to_owned())?;
        let used = BTreeSet::from([ActivityName::parse("payment.charge").expect("valid")]);
        resolve(&raw, &used)
    }

    #[test]
    fn defaults_fill_an_empty_circuit() {
        let circuits = check("[\"payment.charge\".circuit]\n").expect("valid");
        let config = &circuits[&ActivityName::parse("payment.charge").expect("valid")];
        assert_eq!(
            *config,
            CircuitConfig {
                failure_ratio: 0.5,
                window_ms: 30_000,
                min_calls: 10,
                open_for_ms: 10_000,
                half_open_probes: 1
            }
        );
    }

    #[test]
    fn limits_are_checked_at_their_edges() {
        let with = |field: &str| check(&format!("[\"payment.charge\".circuit]\n{field}\n"));
        assert!(with("failure_ratio = 1.0").is_ok());
        assert!(with("failure_ratio = 0.0").expect_err("refused").contains("failure_ratio"));
        assert!(with("failure_ratio = 1.01").expect_err("refused").contains("failure_ratio"));
        assert!(with("window = \"1h\"").is_ok());
        assert!(with("window = \"3601s\"").expect_err("refused").contains("window must be at most"));
        assert!(with("window = \"0s\"").expect_err("refused").contains("window must be at least 1ms"));
        assert!(with("open_for = \"1h\"").is_ok());
        assert!(with("open_for = \"3601s\"").expect_err("refused").contains("open_for"));
        assert!(with(&format!("min_calls = {MAX_CIRCUIT_MIN_CALLS}")).is_ok());
        assert!(with(&format!("min_calls = {}", MAX_CIRCUIT_MIN_CALLS + 1))
            .expect_err("refused")
            .contains("min_calls"));
        assert!(with("min_calls = 0").expect_err("refused").contains("min_calls"));
        assert!(with(&format!("half_open_probes = {MAX_HALF_OPEN_PROBES}")).is_ok());
        assert!(with("half_open_probes = 0").expect_err("refused").contains("half_open_probes"));
        assert!(with("colour = 1").expect_err("refused").contains("unknown field"));
    }

    #[test]
    fn a_circuit_must_name_an_activity_the_definition_runs() {
        let error = check("[\"payment.refund\".circuit]\n").expect_err("refused");
        assert!(error.contains("no step of this definition runs activity \"payment.refund\""), "{error}");
        assert!(check("[\"payment.charge\"]\n").expect_err("refused").contains("declares nothing"));
    }
}
