//! `shopctl` against a running stack, as a script would use it: placing an order and waiting
//! for it prints CONFIRMED; `--json` read commands print JSON that parses; the history
//! timeline shows the run's events; and an error (an unreachable engine, an unknown order)
//! exits non-zero with exactly one line on stderr starting `shopctl:`.

use serde_json::Value;
use shop_tests::process::{binary, run_to_end, Finished};
use shop_tests::{Stack, CONFIRMED};
use std::process::Command;
use std::time::Duration;

/// How long one `shopctl` command may take (its `--wait` included).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// An address nothing listens on.
const UNREACHABLE_ENGINE: &str = "http://127.0.0.1:1";
/// Units the CLI's order takes of product 1.
const QUANTITY: i64 = 2;

/// Runs `shopctl` with `args` against the stack's engine and worker.
fn shopctl(stack: &Stack, args: &[&str]) -> Finished {
    shopctl_at(&stack.engine.url(), &stack.worker.url(), args)
}

fn shopctl_at(engine: &str, worker: &str, args: &[&str]) -> Finished {
    let mut command = Command::new(binary("shopctl"));
    command
        .env_remove("SHOP_ENGINE")
        .env_remove("SHOP_WORKER")
        .env("NO_COLOR", "1")
        .arg("--engine")
        .arg(engine)
        .arg("--worker")
        .arg(worker)
        .args(args);
    run_to_end(command, COMMAND_DEADLINE)
}

#[track_caller]
fn succeeded(finished: &Finished, what: &str) {
    assert!(finished.status.success(), "{what} failed ({}): {}", finished.status, finished.stderr);
}

#[track_caller]
fn json_of(finished: &Finished, what: &str) -> Value {
    succeeded(finished, what);
    serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|e| panic!("{what} --json is not JSON ({e}):\n{}", finished.stdout))
}

/// A failure: non-zero exit, and stderr is one line starting `shopctl:`.
#[track_caller]
fn failed_with_one_line(finished: &Finished, what: &str) {
    assert!(!finished.status.success(), "{what} must fail; stdout:\n{}", finished.stdout);
    let lines: Vec<&str> = finished.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr, got:\n{}", finished.stderr);
    assert!(lines[0].starts_with("shopctl:"), "{what}: the line starts with `shopctl:`: {}", lines[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn shopctl_places_and_inspects_orders() {
    let stack = Stack::start().await;
    let before = stack.admin.product(1).await;
    let item = format!("1:{QUANTITY}");

    let placed = shopctl(&stack, &["order", "place", "--item", &item, "--id", "cli-1", "--wait", "30s"]);
    succeeded(&placed, "order place");
    assert!(placed.stdout.contains(CONFIRMED), "order place --wait prints CONFIRMED:\n{}", placed.stdout);

    let order = json_of(&shopctl(&stack, &["order", "get", "cli-1", "--json"]), "order get");
    assert_eq!(order["status"], CONFIRMED, "{order}");
    assert_eq!(order["orderId"], "cli-1");

    let history = shopctl(&stack, &["workflow", "history", "cli-1"]);
    succeeded(&history, "workflow history");
    for event in ["WorkflowStarted", "StepCompleted", "WorkflowCompleted"] {
        assert!(history.stdout.contains(event), "the timeline shows {event}:\n{}", history.stdout);
    }

    let stock = json_of(&shopctl(&stack, &["stock", "list", "--json"]), "stock list");
    let products = stock.as_array().expect("stock list --json is an array");
    let product_1 = products.iter().find(|p| p["productId"] == 1).expect("product 1 is listed");
    assert_eq!(product_1["stock"], before.stock - QUANTITY, "{product_1}");
    assert_eq!(product_1["reserved"], 0);

    let payments = json_of(&shopctl(&stack, &["payments", "list", "--json"]), "payments list");
    let charges: Vec<&Value> = payments
        .as_array()
        .expect("payments list --json is an array")
        .iter()
        .filter(|p| p["orderId"] == "cli-1")
        .collect();
    assert_eq!(charges.len(), 1, "{payments}");
    assert_eq!(charges[0]["amountCents"], before.price_cents * QUANTITY);

    let notes = json_of(&shopctl(&stack, &["notifications", "list", "--json"]), "notifications list");
    let kinds: Vec<&Value> = notes
        .as_array()
        .expect("notifications list --json is an array")
        .iter()
        .filter(|n| n["orderId"] == "cli-1")
        .map(|n| &n["kind"])
        .collect();
    assert_eq!(kinds, ["ORDER_CONFIRMED"]);

    failed_with_one_line(&shopctl(&stack, &["order", "get", "no-such-order"]), "order get of an unknown order");
}

#[test]
fn unreachable_engine_is_one_line_and_a_non_zero_exit() {
    let unreachable = shopctl_at(UNREACHABLE_ENGINE, UNREACHABLE_ENGINE, &["order", "get", "some-order"]);
    failed_with_one_line(&unreachable, "order get against an unreachable engine");
    let unreachable = shopctl_at(UNREACHABLE_ENGINE, UNREACHABLE_ENGINE, &["workflow", "list", "--json"]);
    failed_with_one_line(&unreachable, "workflow list against an unreachable engine");
    assert!(unreachable.stdout.is_empty(), "no data on stdout: {}", unreachable.stdout);
}

/// `shopctl order confirm-payment` answers a 3-D Secure order's open wait, and again changes
/// nothing (one key per order); `fail-payment` cancels another.
#[tokio::test(flavor = "multi_thread")]
async fn shopctl_confirms_and_fails_3ds_payments() {
    let stack = Stack::start().await;
    let confirmed = stack.api.place_order_ok(&shop_tests::order_body(None, &[(1, 1)], "CARD_3DS")).await;
    let failed = stack.api.place_order_ok(&shop_tests::order_body(None, &[(1, 1)], "CARD_3DS")).await;
    for id in [&confirmed, &failed] {
        let deadline = std::time::Instant::now() + COMMAND_DEADLINE;
        while !stack
            .api
            .workflow(id)
            .await
            .waiting_for
            .iter()
            .any(|w| matches!(w, shop_types::api::InFlightView::Wait { .. }))
        {
            assert!(std::time::Instant::now() < deadline, "{id} never opened its 3-D Secure wait");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    succeeded(&shopctl(&stack, &["order", "confirm-payment", &confirmed]), "order confirm-payment");
    succeeded(&shopctl(&stack, &["order", "confirm-payment", &confirmed]), "order confirm-payment again");
    succeeded(&shopctl(&stack, &["order", "fail-payment", &failed]), "order fail-payment");
    assert_eq!(stack.api.wait_order(&confirmed).await.status, CONFIRMED);
    assert_eq!(stack.api.wait_order(&failed).await.status, shop_tests::CANCELLED);
    let signals = stack.api.history(&confirmed).await.iter().filter(|e| e.event.name() == "SignalReceived").count();
    assert_eq!(signals, 1, "the repeated confirmation changed nothing");
}

/// Longest wait for `events tail` to print a line the test waits for.
const TAIL_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn shopctl_watches_a_run_to_its_end_and_tails_events() {
    let stack = Stack::start().await;
    // Watched while it runs: its history first, then each event live, then exit 0.
    succeeded(&shopctl(&stack, &["order", "place", "--item", "1:1", "--id", "watch-ok"]), "order place");
    let watched = shopctl(&stack, &["workflow", "watch", "watch-ok"]);
    succeeded(&watched, "workflow watch");
    for event in ["WorkflowStarted", "StepCompleted", "WorkflowCompleted"] {
        assert!(watched.stdout.contains(event), "watch prints {event}:\n{}", watched.stdout);
    }
    // A declined card compensates: exit 3 and one line saying how it ended.
    let placed =
        ["order", "place", "--item", "1:1", "--id", "watch-no", "--payment-method", "DECLINED", "--wait", "30s"];
    succeeded(&shopctl(&stack, &placed), "order place");
    let declined = shopctl(&stack, &["workflow", "watch", "watch-no", "--json"]);
    assert_eq!(declined.status.code(), Some(3), "{}", declined.stderr);
    failed_with_one_line(&declined, "workflow watch of a compensated run");
    assert!(declined.stderr.contains("ended COMPENSATED"), "{}", declined.stderr);
    for line in declined.stdout.lines() {
        let entry: Value = serde_json::from_str(line).expect("--json prints one history entry per line");
        assert!(entry["seq"].is_u64(), "{entry}");
    }
    failed_with_one_line(&shopctl(&stack, &["workflow", "watch", "nobody"]), "workflow watch of an unknown run");

    // `events tail` from the beginning: every event, with its cursor, until it is stopped.
    let mut command = Command::new(binary("shopctl"));
    command
        .env_remove("SHOP_ENGINE")
        .args(["--engine", &stack.engine.url(), "events", "tail", "--after", "0", "--kind", "WorkflowCompleted"])
        .arg("--json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("spawn shopctl events tail");
    let stdout = child.stdout.take().expect("piped");
    let (lines, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let line = got.recv_timeout(TAIL_DEADLINE).expect("events tail prints the completed run");
    let _ = child.kill();
    let _ = child.wait();
    let event: Value = serde_json::from_str(&line).expect("--json prints one event per line");
    assert_eq!((event["workflowId"].as_str(), event["kind"].as_str()), (Some("watch-ok"), Some("WorkflowCompleted")));
    assert_eq!(event["status"], "COMPLETED");
    assert!(event["cursor"].as_str().is_some_and(|c| c.starts_with("0:")), "{event}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shopctl_cluster_status_shows_one_node_owning_sleds_one_shard() {
    let stack = Stack::start().await;
    let status = json_of(&shopctl(&stack, &["--json", "cluster", "status"]), "cluster status --json");
    assert_eq!(status["store"], "sled");
    assert_eq!(status["shardCount"], 1);
    assert_eq!(status["nodes"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(status["nodes"][0]["shardsOwned"], 1);
    assert_eq!(status["shards"][0]["owner"], status["node"], "{status}");
    let table = shopctl(&stack, &["cluster", "status"]);
    succeeded(&table, "cluster status");
    assert!(table.stdout.contains("NODE") && table.stdout.contains("SHARD"), "{}", table.stdout);
    assert!(table.stdout.contains(&stack.engine.url()), "the node's URL: {}", table.stdout);
    failed_with_one_line(&shopctl_at(UNREACHABLE_ENGINE, UNREACHABLE_ENGINE, &["cluster", "status"]), "unreachable");
}
