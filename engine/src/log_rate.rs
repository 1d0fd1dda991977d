//! A bound on how often one kind of log line is written, for events a hostile client can
//! cause at will (refused credentials, rate-limited requests, connections over the cap,
//! accept errors).
//!
//! It owns a one-second window and a count of what it suppressed; it must never block or
//! allocate per event, and never drop the fact that lines were suppressed: the next line
//! written says how many were not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Lines of one kind written per second at most: enough to see what is happening, too few
/// for a flood of bad requests to fill the disk or drown the other lines.
pub const LINES_PER_SECOND: u64 = 5;

/// The window of one kind of log line.
pub struct LogRate {
    window: Mutex<Window>,
    suppressed: AtomicU64,
}

struct Window {
    started: Option<Instant>,
    written: u64,
}

impl Default for LogRate {
    fn default() -> Self {
        LogRate::new()
    }
}

impl LogRate {
    pub const fn new() -> LogRate {
        LogRate { window: Mutex::new(Window { started: None, written: 0 }), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` when a line may be written now, `n` being the lines suppressed since the last
    /// one written; `None` when this one must be suppressed.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        // A poisoned lock holds two plain numbers; carry on with them.
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = window.started.is_none_or(|started| now.saturating_duration_since(started).as_secs() >= 1);
        if fresh {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written >= LINES_PER_SECOND {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        window.written += 1;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn at_most_the_limit_per_second_and_the_suppressed_are_counted() {
        let rate = LogRate::new();
        let start = Instant::now();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(rate.allow_at(start), Some(0));
        }
        assert_eq!(rate.allow_at(start), None);
        assert_eq!(rate.allow_at(start + Duration::from_millis(999)), None);
        assert_eq!(rate.allow_at(start + Duration::from_secs(1)), Some(2), "the next line says 2 were suppressed");
    }
}
