//! The disk guard: refuses to write when the store's file system is nearly full.
//!
//! sled cannot take back a batch it has applied when its flush then fails, so a full disk
//! must be noticed before writing, not after. Below the low-water mark the core refuses
//! every command that would write (503 `DISK_FULL`, nothing recorded), holds timers and task
//! hand-outs, and keeps serving reads; it writes again as soon as space is freed. This
//! module only measures: it never decides what to refuse.

use std::path::PathBuf;

/// How often free space is measured while there is plenty of it, in milliseconds.
const CHECK_INTERVAL_MS: u64 = 100;

pub struct DiskGuard {
    dir: PathBuf,
    min_free_bytes: u64,
    checked_at_ms: Option<u64>,
    ok: bool,
}

impl DiskGuard {
    pub fn new(dir: PathBuf, min_free_bytes: u64) -> Self {
        DiskGuard { dir, min_free_bytes, checked_at_ms: None, ok: true }
    }

    /// Whether writing is allowed now. Measured at most every [`CHECK_INTERVAL_MS`] while
    /// there is room, and at every call while there is not, so writing resumes at once.
    pub fn has_room(&mut self, now_ms: u64) -> bool {
        let due = match self.checked_at_ms {
            Some(at) => !self.ok || now_ms.saturating_sub(at) >= CHECK_INTERVAL_MS,
            None => true,
        };
        if due {
            self.checked_at_ms = Some(now_ms);
            let was_ok = self.ok;
            self.ok = match self.free_bytes() {
                Ok(free) => free >= self.min_free_bytes,
                Err(error) => {
                    // Not knowing is not a reason to stop: the commit itself still fails
                    // loudly if the disk really is full.
                    tracing::warn!(%error, "cannot measure free disk space");
                    true
                }
            };
            if was_ok != self.ok {
                if self.ok {
                    tracing::info!("disk space is back; writing again");
                } else {
                    tracing::error!(
                        min_free_mb = self.min_free_bytes / (1024 * 1024),
                        "the store's disk is nearly full: refusing writes (503 DISK_FULL) until space is freed"
                    );
                }
            }
        }
        self.ok
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    fn free_bytes(&self) -> std::io::Result<u64> {
        let stats = rustix::fs::statvfs(&self.dir)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_water_mark_above_the_free_space_refuses_and_zero_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut roomy = DiskGuard::new(dir.path().to_owned(), 0);
        assert!(roomy.has_room(0));
        let mut full = DiskGuard::new(dir.path().to_owned(), u64::MAX);
        assert!(!full.has_room(0));
        // While full it measures at every call, so it notices freed space at once.
        assert!(!full.has_room(1));
    }
}
