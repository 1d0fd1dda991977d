//! `shopctl` on an engine with a tiny rate limit: commands that make more requests than the
//! limit allows still succeed, because the CLI waits for `Retry-After` on 429 (and says so on
//! stderr) instead of failing; `shopctl verify` right after a burst is clean.

use shop_tests::process::{binary, run_to_end, Finished};
use shop_tests::{EngineOptions, Stack, WorkerOptions};
use std::process::Command;
use std::time::Duration;

/// How long one `shopctl` command may take, its waits for the rate limit included.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// Two requests a second per client (the engine runs open, so per client address): far
/// fewer than the commands below make.
const RATE_LIMIT: &str = "2/s";
/// Orders placed before the audit, each one request more than the limit allows at once.
const ORDERS: usize = 2;
/// `order list` runs in a row; each is one request, several within one second.
const LISTS: usize = 5;

fn shopctl(stack: &Stack, args: &[&str]) -> Finished {
    let mut command = Command::new(binary("shopctl"));
    command
        .env_remove("SHOP_TOKEN")
        .arg("--engine")
        .arg(stack.engine.url())
        .arg("--worker")
        .arg(stack.worker.url())
        .args(args);
    let finished = run_to_end(command, COMMAND_DEADLINE);
    assert!(finished.status.success(), "shopctl {args:?} failed ({}): {}", finished.status, finished.stderr);
    finished
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_wait_out_a_rate_limit_and_succeed() {
    let args = vec!["--rate-limit".to_owned(), RATE_LIMIT.to_owned()];
    let stack = Stack::start_with(EngineOptions { args, ..EngineOptions::default() }, WorkerOptions::default()).await;
    let mut stderr = String::new();
    for _ in 0..ORDERS {
        stderr += &shopctl(&stack, &["order", "place", "--item", "1:1", "--wait", "30s"]).stderr;
    }
    for _ in 0..LISTS {
        stderr += &shopctl(&stack, &["order", "list"]).stderr;
    }
    // One list and a history per order, fetched at once: a burst over the limit.
    let verified = shopctl(&stack, &["verify"]);
    stderr += &verified.stderr;
    assert!(verified.stdout.contains(&format!("{ORDERS} order(s): {ORDERS} confirmed")), "{}", verified.stdout);
    assert!(
        stderr.contains("429 RATE_LIMITED") && stderr.contains("before retry 1 of"),
        "the limit was hit and the CLI said it was waiting:\n{stderr}"
    );
}
