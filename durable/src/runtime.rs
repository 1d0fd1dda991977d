//! The async runtime of the engine and worker binaries, with a thread count an operator can
//! set (`--async-threads`).
//!
//! By default one thread per two cores (at least one), not tokio's one per core: each
//! server keeps busy threads outside the runtime (the engine's core, syncer and log
//! applier; a worker's group-commit flusher and log applier), and the default deployment
//! runs an engine and a worker on one machine. Fewer runtime threads cost less CPU per saga
//! (fewer context switches and futex wake-ups, less work stolen between threads). On 2
//! cores, one thread each against two each, alternating: about 5% less engine CPU per saga
//! and as much or more throughput, in `shopctl bench` and in `scripts/peer-bench.sh`
//! (`docs/performance.md`, "Issue 13, part six"; in part two, before the engine's syncs and
//! sled writes were cut, one thread had lost 3-6% of throughput). `--async-threads` sets
//! any other count. This module only builds runtimes; it never spawns work on them.

use std::num::NonZeroUsize;

/// The runtime's worker threads when none are asked for: one per two cores, at least one.
pub fn default_threads() -> NonZeroUsize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    NonZeroUsize::new(cores / 2).unwrap_or(NonZeroUsize::MIN)
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
    fn the_default_is_one_thread_per_two_cores_and_at_least_one() {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(default_threads().get(), (cores / 2).max(1));
    }

    #[test]
    fn a_runtime_runs_with_the_threads_asked_for() {
        let runtime = build(NonZeroUsize::new(1)).expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 1);
        assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
    }
}
