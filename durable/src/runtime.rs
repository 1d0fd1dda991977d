//! The async runtime of the engine and worker binaries, sized for a machine they share with
//! their own dedicated threads.
//!
//! Each server keeps a thread busy outside the runtime (the engine's core and syncer, a
//! worker's group-commit flusher), so a runtime with one thread per core oversubscribes the
//! machine: threads hand work back and forth and the kernel's context switches and futex
//! wake-ups become a large share of the CPU (`docs/performance.md`, "Fewer threads"). By
//! default the runtime gets one thread fewer than the cores, at least one. This module only
//! builds runtimes; it never spawns work on them.

use std::num::NonZeroUsize;

/// The runtime's worker threads when none are asked for: the cores less one, at least one.
pub fn default_threads() -> NonZeroUsize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    NonZeroUsize::new(cores.saturating_sub(1)).unwrap_or(NonZeroUsize::MIN)
}

/// A multi-thread runtime with `threads` workers (default [`default_threads`]), I/O and time.
pub fn build(threads: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.unwrap_or_else(default_threads).get())
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_a_core_but_never_goes_below_one() {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(default_threads().get(), cores.saturating_sub(1).max(1));
    }

    #[test]
    fn a_runtime_runs_with_the_threads_asked_for() {
        let runtime = build(NonZeroUsize::new(1)).expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 1);
        assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
    }
}
