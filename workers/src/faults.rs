//! Fault injection for tests and demos: extra latency on every activity, and transient
//! failures or hangs of `payment.charge`.
//!
//! The settings live in memory only (a restart clears them) and change at run time through
//! the admin API. Every decision that consumes a counter is taken under one lock, so N
//! concurrent charges consume exactly N. This module decides; it never sleeps or fails
//! anything itself, and never touches a store.

use rand::Rng;
use shop_types::order::FaultConfig;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Longest injected latency or hang: long enough to outlast any lease, short enough that a
/// typo cannot wedge a worker for days.
pub const MAX_INJECTED_DELAY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("payment_failure_rate must be a number in 0..=1, got {0}")]
    FailureRate(f64),
    #[error("{field} must be at most {} ms, got {value_ms}", MAX_INJECTED_DELAY.as_millis())]
    DelayTooLong { field: &'static str, value_ms: u64 },
}

/// What to do to one `payment.charge` call, decided before it does anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeFault {
    /// Sleep this long before doing the work.
    pub hang: Option<Duration>,
    /// Fail with a retryable error (after any hang) instead of doing the work.
    pub fail: bool,
    /// Sleep this long after doing the work, before reporting it.
    pub hang_after: Option<Duration>,
}

#[derive(Debug)]
pub struct Faults {
    config: Mutex<FaultConfig>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Result<Self, Error> {
        validate(&config)?;
        Ok(Faults { config: Mutex::new(config) })
    }

    pub fn get(&self) -> FaultConfig {
        self.lock().clone()
    }

    pub fn set(&self, config: FaultConfig) -> Result<(), Error> {
        validate(&config)?;
        *self.lock() = config;
        Ok(())
    }

    /// Latency added to every activity.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().latency_ms)
    }

    /// Decides the fate of one charge attempt, consuming the hang and fail counters.
    pub fn on_charge(&self) -> ChargeFault {
        let mut config = self.lock();
        let hang = (config.payment_hang_next > 0).then(|| {
            config.payment_hang_next -= 1;
            Duration::from_millis(config.payment_hang_ms)
        });
        let hang_after = (config.payment_hang_after_next > 0).then(|| {
            config.payment_hang_after_next -= 1;
            Duration::from_millis(config.payment_hang_ms)
        });
        let fail = if config.payment_fail_next > 0 {
            config.payment_fail_next -= 1;
            true
        } else {
            config.payment_failure_rate > 0.0 && rand::thread_rng().gen::<f64>() < config.payment_failure_rate
        };
        ChargeFault { hang, fail, hang_after }
    }

    /// Whether this refund attempt fails, consuming the counter.
    pub fn on_refund(&self) -> bool {
        let mut config = self.lock();
        let fail = config.refund_fail_next > 0;
        config.refund_fail_next = config.refund_fail_next.saturating_sub(1);
        fail
    }

    /// Whether an order shipped to `address` is the configured poison pill.
    pub fn is_poison(&self, address: &str) -> bool {
        self.lock().poison_address.as_deref() == Some(address)
    }

    fn lock(&self) -> MutexGuard<'_, FaultConfig> {
        self.config.lock().expect("no code panics while holding the fault settings lock")
    }
}

fn validate(config: &FaultConfig) -> Result<(), Error> {
    if !(0.0..=1.0).contains(&config.payment_failure_rate) {
        return Err(Error::FailureRate(config.payment_failure_rate));
    }
    let max_ms = u64::try_from(MAX_INJECTED_DELAY.as_millis()).expect("ten minutes of ms fit in u64");
    for (field, value_ms) in [("latency_ms", config.latency_ms), ("payment_hang_ms", config.payment_hang_ms)] {
        if value_ms > max_ms {
            return Err(Error::DelayTooLong { field, value_ms });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_counts_down_then_lets_charges_through() {
        let faults = Faults::new(FaultConfig { payment_fail_next: 2, ..FaultConfig::default() }).expect("valid");
        assert!(faults.on_charge().fail);
        assert!(faults.on_charge().fail);
        assert!(!faults.on_charge().fail);
        assert_eq!(faults.get().payment_fail_next, 0);
    }

    #[test]
    fn hang_next_applies_to_that_many_charges() {
        let faults = Faults::new(FaultConfig { payment_hang_next: 1, payment_hang_ms: 250, ..FaultConfig::default() })
            .expect("valid");
        assert_eq!(
            faults.on_charge(),
            ChargeFault { hang: Some(Duration::from_millis(250)), fail: false, hang_after: None }
        );
        assert_eq!(faults.on_charge().hang, None);
    }

    #[test]
    fn a_certain_failure_rate_always_fails() {
        let faults = Faults::new(FaultConfig { payment_failure_rate: 1.0, ..FaultConfig::default() }).expect("valid");
        assert!((0..20).all(|_| faults.on_charge().fail));
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        for rate in [-0.1, 1.1, f64::NAN] {
            let bad = FaultConfig { payment_failure_rate: rate, ..FaultConfig::default() };
            assert!(Faults::new(bad).is_err(), "{rate}");
        }
        let faults = Faults::new(FaultConfig::default()).expect("valid");
        let too_slow = FaultConfig { latency_ms: 600_001, ..FaultConfig::default() };
        assert!(faults.set(too_slow).is_err());
        assert_eq!(faults.get(), FaultConfig::default());
    }
}
