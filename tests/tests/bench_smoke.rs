//! `shopctl bench` at a tiny size: it starts its own stack, drives the standard mix, audits
//! every order and prints its JSON report. CI checks that it completes and verifies; the
//! figures themselves are never asserted (benchmarks measure, tests check behaviour).

use shop_tests::process::binary;
use std::process::Command;

/// Small enough for CI, large enough to cover all three outcomes of the mix many times.
const ORDERS: &str = "200";
const CONCURRENCY: &str = "8";

#[test]
fn a_tiny_bench_completes_and_finds_no_violation() {
    let output = Command::new(binary("shopctl"))
        .args(["bench", "--orders", ORDERS, "--concurrency", CONCURRENCY])
        .output()
        .expect("run shopctl bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "shopctl bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!(report["violations"], 0, "{report}");
    assert_eq!(report["orders"], 200);
    assert_eq!(
        report["confirmed"].as_u64().unwrap_or_default() + report["cancelled"].as_u64().unwrap_or_default(),
        200
    );
    for field in [
        "sagas_per_sec",
        "start_p50_ms",
        "start_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "engine_peak_rss_mb",
        "disk_bytes_per_saga",
        "events_per_sec",
        "mean_commit_batch",
        "concurrency",
        "durability",
    ] {
        assert!(!report[field].is_null(), "the report has {field}: {report}");
    }
}

/// The default deployment's shape (one worker process for every domain) driven through the
/// start-and-wait (`POST /api/orders?wait=`): every order still ends audited and whole.
#[test]
fn a_tiny_bench_with_start_and_wait_on_one_worker_process_finds_no_violation() {
    let output = Command::new(binary("shopctl"))
        .args(["bench", "--orders", ORDERS, "--concurrency", CONCURRENCY, "--start-wait", "--workers", "combined"])
        .output()
        .expect("run shopctl bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "shopctl bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!((report["violations"].as_u64(), report["start_wait"].as_bool()), (Some(0), Some(true)), "{report}");
    assert_eq!(report["workers"], "Combined");
}
