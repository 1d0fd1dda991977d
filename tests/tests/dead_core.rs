//! A core thread that dies ends the engine process (exit 70, logged), rather than leaving a
//! server whose `/healthz` says ok while every command gets 503. The engine's debug build
//! reads a test-only variable that makes the core thread panic a moment after start.

use shop_tests::process::{binary, free_addr, run_to_end, workflows_dir};
use std::process::Command;
use std::time::Duration;

/// How long after start the core thread panics.
const PANIC_AFTER_MS: &str = "1500";
/// How long the engine may take to notice and exit.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn a_dead_core_ends_the_engine_with_exit_code_70() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let mut command = Command::new(binary("shop-engine"));
    command
        .arg("--data-dir")
        .arg(dir.path().join("engine"))
        .arg("--listen")
        .arg(free_addr().to_string())
        .arg("--workflows")
        .arg(workflows_dir())
        .arg("--open")
        .env("SHOP_ENGINE_TEST_CORE_PANIC_AFTER_MS", PANIC_AFTER_MS)
        .env("RUST_BACKTRACE", "0");
    let finished = run_to_end(command, EXIT_DEADLINE);
    assert_eq!(finished.status.code(), Some(70), "exit code; stderr:\n{}", finished.stderr);
    assert!(finished.stderr.contains("the core thread died"), "the reason is logged:\n{}", finished.stderr);
}
