//! `shopctl verify` against a real stack: it passes on a clean one, and it fails (exit 1,
//! naming the problem on stdout, one `shopctl:` line on stderr) when the system is corrupted
//! on purpose in ways that break the invariants of design.md section 7:
//!
//! - stock changed behind the engine's back (`PUT /stock/{id}` on the worker's admin API);
//! - an order still RUNNING (accepted only with `--allow-running`, which then accounts for
//!   the units that order holds);
//! - a reservation left held by an order an operator terminated (terminate stops without
//!   compensating, so nothing gives the units back).

use serde_json::{json, Value};
use shop_tests::process::{binary, run_to_end, Finished};
use shop_tests::{order_body, Stack, WorkerOptions, CANCELLED, CONFIRMED};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long one `shopctl verify` may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// How long the test waits for a reservation to be taken.
const RESERVE_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longer than the test: the held order's charge never gets to run while it is audited.
const PAYMENT_HANG: &str = "120s";
/// Units the stock is raised by behind the engine's back.
const SMUGGLED_UNITS: i64 = 7;
/// The products the orders use; products start with 100 units.
const PRODUCT: i64 = 1;
const OTHER_PRODUCT: i64 = 2;
const HELD_PRODUCT: i64 = 3;
const TOO_MANY: i64 = 999;
const QUANTITY: i64 = 2;

/// Runs `shopctl verify` with `args` against the stack's engine and worker.
fn verify(stack: &Stack, args: &[&str]) -> Finished {
    let mut command = Command::new(binary("shopctl"));
    command
        .env_remove("SHOP_ENGINE")
        .env_remove("SHOP_WORKER")
        .env("NO_COLOR", "1")
        .arg("--engine")
        .arg(stack.engine.url())
        .arg("--worker")
        .arg(stack.worker.url())
        .arg("verify")
        .args(args);
    run_to_end(command, COMMAND_DEADLINE)
}

#[track_caller]
fn passes(finished: &Finished, what: &str) {
    assert!(
        finished.status.success(),
        "{what} must pass ({}):\n{}{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    assert!(finished.stdout.contains("0 violation(s)"), "{what}: the summary says clean:\n{}", finished.stdout);
}

/// Exit 1; stdout has a violation line starting with `wanted`; stderr is one `shopctl:` line.
#[track_caller]
fn fails_naming(finished: &Finished, wanted: &str, what: &str) {
    assert_eq!(finished.status.code(), Some(1), "{what} must exit 1:\n{}{}", finished.stdout, finished.stderr);
    assert!(
        finished.stdout.lines().any(|line| line.starts_with(wanted)),
        "{what}: a violation line starts with {wanted:?}:\n{}",
        finished.stdout
    );
    let lines: Vec<&str> = finished.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("shopctl:") && lines[0].contains("violation"),
        "{what}: one line on stderr: {}",
        finished.stderr
    );
}

/// Writes the stack's current stock as the initial stock file `verify` reads.
async fn save_initial_stock(stack: &Stack, path: &Path) {
    let stock = stack.admin.stock().await;
    let text = serde_json::to_string(&stock).expect("products serialize");
    std::fs::write(path, text).expect("write the initial stock file");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_a_clean_system_and_catches_stock_changed_behind_its_back() {
    let stack = Stack::start().await;
    let initial = stack.dir().join("initial-stock.json");
    save_initial_stock(&stack, &initial).await;
    let initial = initial.to_str().expect("the temporary path is UTF-8");

    let orders = [
        (vec![(PRODUCT, QUANTITY)], "CREDIT_CARD", CONFIRMED),
        (vec![(PRODUCT, 1), (OTHER_PRODUCT, QUANTITY)], "CREDIT_CARD", CONFIRMED),
        (vec![(OTHER_PRODUCT, 1)], "DECLINED", CANCELLED),
        (vec![(OTHER_PRODUCT, TOO_MANY)], "CREDIT_CARD", CANCELLED),
    ];
    for (items, method, expected) in &orders {
        let id = stack.api.place_order_ok(&order_body(None, items, method)).await;
        assert_eq!(stack.api.wait_order(&id).await.status, *expected, "order {id}");
    }

    passes(&verify(&stack, &[]), "verify with a reconstructed initial stock");
    let worker = stack.worker.url();
    let split = ["--inventory", &worker, "--payment", &worker, "--notification", &worker];
    passes(&verify(&stack, &split), "verify with one admin URL per domain");
    let clean = verify(&stack, &["--initial-stock", initial, "--json"]);
    assert!(clean.status.success(), "verify --json passes: {}", clean.stderr);
    let report: Value = serde_json::from_str(&clean.stdout).expect("verify --json prints JSON");
    assert_eq!(report["orders"], json!(orders.len()), "{report}");
    assert_eq!(report["violations"], json!([]), "{report}");

    let product = stack.admin.product(PRODUCT).await;
    stack.admin.set_stock(PRODUCT, product.stock + SMUGGLED_UNITS).await;
    fails_naming(
        &verify(&stack, &["--initial-stock", initial]),
        &format!("stock: product {PRODUCT}:"),
        "verify after stock changed behind the engine's back",
    );
    let broken = verify(&stack, &["--initial-stock", initial, "--json"]);
    let report: Value = serde_json::from_str(&broken.stdout).expect("verify --json prints JSON when it fails");
    assert_eq!(report["violations"][0]["kind"], "stock", "{report}");
    assert_eq!(report["violations"][0]["subject"], format!("product {PRODUCT}"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_catches_a_running_order_and_a_reservation_left_held() {
    let options = WorkerOptions::with_args(["--payment-hang-next", "1", "--payment-hang", PAYMENT_HANG]);
    let stack = Stack::start_with(Default::default(), options).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(HELD_PRODUCT, QUANTITY)], "CREDIT_CARD")).await;
    let deadline = Instant::now() + RESERVE_DEADLINE;
    while stack.admin.product(HELD_PRODUCT).await.reserved != QUANTITY {
        assert!(Instant::now() < deadline, "order {id} did not reserve its units within {RESERVE_DEADLINE:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // The charge hangs: the order is RUNNING and holds its units.
    fails_naming(&verify(&stack, &[]), &format!("running: {id}:"), "verify with an order still running");
    passes(&verify(&stack, &["--allow-running"]), "verify --allow-running, the units held by a running order");

    // Terminating stops the run without compensating: its reservation is never released.
    let reply = stack.api.post_json(&format!("/v1/workflows/{id}/terminate"), &json!({})).await.expect("terminate");
    assert!(reply.is_success(), "terminate {id}: {}", reply.text);
    assert_eq!(stack.api.wait_order(&id).await.status, CANCELLED);
    fails_naming(
        &verify(&stack, &["--allow-running"]),
        &format!("stock: product {HELD_PRODUCT}: {QUANTITY} units reserved"),
        "verify with a reservation held by a terminated order",
    );
}
