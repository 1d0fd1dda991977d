//! The async runtime of the engine and worker binaries, with a thread count an operator can
//! set (`--async-threads`).
//!
//! By default one thread per core, as tokio's own default. Each server also keeps threads
//! outside the runtime (the engine's core and syncer, a worker's group-commit flusher), so on
//! a small machine shared by an engine and a worker, fewer runtime threads cost less CPU per
//! saga (fewer context switches and futex wake-ups) but lengthen each saga, and at a fixed
//! number in flight throughput follows latency: on 2 cores one thread saved about 6% of the
//! engine's CPU and lost 3-6% of throughput (`docs/performance.md`, "Issue 13, part two").
//! This module only builds runtimes; it never spawns work on them.

use std::num::NonZeroUsize;

/// The runtime's worker threads when none are asked for: one per core.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
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
    fn the_default_is_one_thread_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(default_threads().get(), cores);
    }

    #[test]
    fn a_runtime_runs_with_the_threads_asked_for() {
        let runtime = build(NonZeroUsize::new(1)).expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 1);
        assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
    }
}
