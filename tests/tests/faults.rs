//! Faults a real deployment meets, injected into real processes:
//! - a worker killed after its effect (the charge) and before reporting it: the retry hits
//!   the idempotency record, so the order confirms with one charge;
//! - a poison pill (an activity that panics on one input) fails only its own order, which
//!   compensates, while the worker keeps serving every other order;
//! - a compensation that keeps failing parks its run (FAILED, needs an operator) until the
//!   operator resumes it, after which the saga finishes compensating;
//! - with no worker on a queue, the backlog is visible in `/v1/stats` and drains once a
//!   worker arrives;
//! - a run whose stored history holds an unreadable record is quarantined at start-up and
//!   the engine serves every other run.
//!
//! Every wait is bounded and no test asserts a timing.

use serde_json::json;
use shop_tests::client::net_charged;
use shop_tests::invariants::ORDER_CANCELLED;
use shop_tests::process::{binary, run_to_end, Finished};
use shop_tests::{
    assert_in_order, assert_invariants, event_labels, history_violations, order_body, Admin, Api, Engine,
    EngineOptions, PlacedOrder, Stack, Worker, WorkerOptions, CANCELLED, CONFIRMED, PENDING,
};
use shop_types::api::{HistoryEventView, WorkflowList, WorkflowStatus};
use shop_types::history::EventKind;
use shop_types::order::FaultConfig;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Pause between two looks at a condition the test waits for.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a test waits for something the system does within a second or two when healthy
/// (an effect reaching a ledger, a backlog showing in the stats).
const CONDITION_DEADLINE: Duration = Duration::from_secs(30);
/// The name the harness's [`Stack`] gives its worker (its data dir and log file).
const STACK_WORKER: &str = "worker";
/// How long one `shopctl` command may take.
const SHOPCTL_DEADLINE: Duration = Duration::from_secs(30);

/// Waits for a condition with a bound: `while !cond { deadline.tick().await }`.
struct Deadline {
    until: Instant,
    what: &'static str,
}

impl Deadline {
    fn new(what: &'static str) -> Deadline {
        Deadline { until: Instant::now() + CONDITION_DEADLINE, what }
    }

    /// Panics once the deadline has passed, else pauses before the next look.
    #[track_caller]
    fn check(&self) {
        assert!(Instant::now() < self.until, "{} did not happen within {CONDITION_DEADLINE:?}", self.what);
    }

    async fn tick(&self) {
        self.check();
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `shopctl --engine URL args...`.
fn shopctl(engine_url: &str, args: &[&str]) -> Finished {
    let mut command = Command::new(binary("shopctl"));
    command.env_remove("SHOP_ENGINE").env_remove("SHOP_WORKER").env("NO_COLOR", "1").arg("--engine").arg(engine_url);
    command.args(args);
    run_to_end(command, SHOPCTL_DEADLINE)
}

/// The events of one step (or compensation, `<step>.compensation`), in history order.
fn step_events<'a>(history: &'a [HistoryEventView], step: &str) -> Vec<&'a HistoryEventView> {
    history.iter().filter(|e| e.step_name.as_deref() == Some(step)).collect()
}

/// `(attempt, error type, will_retry)` of every failure of one step, in history order.
fn failures(events: &[&HistoryEventView]) -> Vec<(u32, String, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::StepFailed { attempt, error, will_retry, .. } => {
                Some((*attempt, error.error_type.clone(), *will_retry))
            }
            _ => None,
        })
        .collect()
}

/// `GET /v1/stats` as JSON.
async fn stats(api: &Api) -> serde_json::Value {
    let reply = api.get("/v1/stats").await.expect("the engine answers GET /v1/stats");
    assert_eq!(reply.status, 200, "GET /v1/stats: {}", reply.text);
    reply.body
}

// ---- 1. killed after the effect, before reporting ----------------------------------------

/// How long the charge hangs after charging: far longer than the test needs to kill the
/// worker, and longer than `start_to_close` (10s), so only a lease timeout can end attempt 1.
const HANG_AFTER_CHARGE: &str = "30s";

/// A worker that charged the card and died before reporting it leaves the engine with an
/// attempt it knows nothing about: the lease times out (`start_to_close`), attempt 2 runs on
/// the restarted worker (same data dir, no fault), hits the idempotency record of attempt 1
/// and reports its result, so the order confirms with exactly one charge.
#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_after_charging_before_reporting_charges_once() {
    let hang = WorkerOptions::with_args(["--payment-hang-after-next", "1", "--payment-hang", HANG_AFTER_CHARGE]);
    let mut stack = Stack::start_with(EngineOptions::default(), hang).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;

    // The kill must land after the effect: wait until the ledger holds the charge.
    let deadline = Deadline::new("the charge reaching the ledger");
    while !stack.admin.payments_of(&id).await.iter().any(|e| e.kind == "charge") {
        deadline.tick().await;
    }
    assert_eq!(stack.api.order(&id).await.status, PENDING, "the worker has not reported the charge yet");
    stack.worker.kill9();

    // Restart on the same data dir without the fault flags (`restart` would set them again).
    let engine_url = stack.engine.url();
    stack.worker = Worker::start(stack.dir(), STACK_WORKER, &engine_url, WorkerOptions::default()).await;
    stack.admin = Admin::new(&stack.worker.url());

    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CONFIRMED, "reason: {:?}", order.reason);
    let ledger = stack.admin.payments_of(&id).await;
    assert_eq!(ledger.len(), 1, "exactly one ledger entry, the charge of attempt 1: {ledger:?}");
    assert_eq!(ledger[0].kind, "charge");

    let history = stack.api.history(&id).await;
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let charge: Vec<String> = step_events(&history, "charge_payment")
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::StepTimedOut { attempt, timeout, .. } => {
                Some(format!("timed out {attempt} {}", timeout.as_str()))
            }
            EventKind::StepCompleted { attempt, .. } => Some(format!("completed {attempt}")),
            EventKind::StepFailed { attempt, .. } => Some(format!("failed {attempt}")),
            _ => None,
        })
        .collect();
    assert_eq!(charge, ["timed out 1 start_to_close", "completed 2"], "attempt 1 was lost with the worker");
}

// ---- 2. poison pill ----------------------------------------------------------------------

/// The shipping address that makes `inventory.reserve` panic.
const POISON_ADDRESS: &str = "POISON";
/// Healthy orders placed behind the poison pill.
const NORMAL_ORDERS: usize = 10;
/// Products the healthy orders draw from (the default catalog has 100 units of each).
const NORMAL_PRODUCTS: [i64; 5] = [1, 2, 3, 4, 5];
/// Most units per healthy order.
const MAX_NORMAL_QUANTITY: i64 = 3;
/// The product the poison order asks for; none of the healthy orders touch it.
const POISON_PRODUCT: i64 = 9;
/// `max_attempts` of `reserve_stock` (the workflow default) in `workflows/order.toml`.
const RESERVE_MAX_ATTEMPTS: u32 = 6;
/// How the worker reports an activity that panicked.
const ACTIVITY_PANICKED: &str = "ACTIVITY_PANICKED";

/// An activity that panics on one input (a poison pill) fails its step through the normal
/// retry policy (ACTIVITY_PANICKED, retryable, up to `max_attempts`), so that one order
/// compensates and is cancelled; the worker survives every panic and confirms every other
/// order, with stock, money and notifications adding up.
#[tokio::test(flavor = "multi_thread")]
async fn poison_pill_cancels_its_own_order_and_the_worker_serves_the_rest() {
    let mut stack =
        Stack::start_with(EngineOptions::default(), WorkerOptions::with_args(["--poison-address", POISON_ADDRESS]))
            .await;
    let initial_stock = stack.admin.stock().await;

    let poison = PlacedOrder {
        order_id: "poison-pill".to_owned(),
        items: vec![(POISON_PRODUCT, 1)],
        payment_method: "CREDIT_CARD".to_owned(),
        expected_status: CANCELLED,
    };
    let mut body = order_body(Some(&poison.order_id), &poison.items, &poison.payment_method);
    body["shippingAddress"] = json!(POISON_ADDRESS);
    stack.api.place_order_ok(&body).await;

    let normal: Vec<PlacedOrder> = (0..NORMAL_ORDERS)
        .map(|i| PlacedOrder {
            order_id: format!("poison-normal-{i:02}"),
            items: vec![(NORMAL_PRODUCTS[i % NORMAL_PRODUCTS.len()], 1 + i as i64 % MAX_NORMAL_QUANTITY)],
            payment_method: "CREDIT_CARD".to_owned(),
            expected_status: CONFIRMED,
        })
        .collect();
    for order in &normal {
        stack.api.place_order_ok(&order_body(Some(&order.order_id), &order.items, &order.payment_method)).await;
    }

    for order in &normal {
        let view = stack.api.wait_order(&order.order_id).await;
        assert_eq!(view.status, CONFIRMED, "{}: reason {:?}", order.order_id, view.reason);
    }
    let view = stack.api.wait_order(&poison.order_id).await;
    assert_eq!(view.status, CANCELLED, "the poison pill's order compensates");

    let history = stack.api.history(&poison.order_id).await;
    assert_eq!(history_violations(&poison.order_id, &history), Vec::<String>::new());
    let expected: Vec<(u32, String, bool)> = (1..=RESERVE_MAX_ATTEMPTS)
        .map(|attempt| (attempt, ACTIVITY_PANICKED.to_owned(), attempt < RESERVE_MAX_ATTEMPTS))
        .collect();
    assert_eq!(
        failures(&step_events(&history, "reserve_stock")),
        expected,
        "every attempt panicked; the last failure is final"
    );
    assert_in_order(
        &event_labels(&history),
        &["StepFailed(reserve_stock)", "CompensationStarted", "StepCompleted(notify_cancelled)", "WorkflowCompensated"],
    );
    assert!(step_events(&history, "charge_payment").is_empty(), "nothing was charged for the poison pill");

    // The healthy orders took exactly their units; the poison product is untouched.
    let mut taken: HashMap<i64, i64> = HashMap::new();
    for order in &normal {
        for (product, quantity) in &order.items {
            *taken.entry(*product).or_default() += quantity;
        }
    }
    let now: HashMap<i64, (i64, i64)> =
        stack.admin.stock().await.into_iter().map(|p| (p.product_id, (p.stock, p.reserved))).collect();
    for before in &initial_stock {
        let expected = (before.stock - taken.get(&before.product_id).copied().unwrap_or(0), 0);
        assert_eq!(now.get(&before.product_id), Some(&expected), "product {}", before.product_id);
    }
    let mut all = normal;
    all.push(poison);
    assert_invariants(&stack.api, &stack.admin, &initial_stock, &all).await;

    // Six panics later the worker is the same process, still serving.
    assert_eq!(stack.worker.exit_status(), None, "the worker survived the panics");
    let health = stack.admin.get::<serde_json::Value>("/healthz").await;
    assert!(health.is_ok(), "the worker still answers: {health:?}");
}

// ---- 3. a compensation that keeps failing parks the run ----------------------------------

/// `max_attempts` of the refund compensation in the version-2 definition.
const REFUND_MAX_ATTEMPTS: u32 = 3;
/// Refund failures injected at first: far more than any attempt budget.
const REFUND_FAILURES: &str = "1000";
/// Refund failures left when the operator resumes the run: one less than a whole attempt budget, so
/// the resumed compensation succeeds only if its budget really starts afresh.
const REFUND_FAILURES_AFTER_RESUME: u32 = REFUND_MAX_ATTEMPTS - 1;
/// The order's product and quantity.
const PARKED_PRODUCT: i64 = 3;
const PARKED_QUANTITY: i64 = 2;
/// The refund compensation as `workflows/order.toml` declares it, and as version 2 does.
const REFUND_COMPENSATION_V1: &str =
    "activity = \"payment.refund\"\nqueue = \"payment\"\nretry = { max_attempts = 20, max_interval = \"10s\" }";
const REFUND_COMPENSATION_V2: &str = "activity = \"payment.refund\"\nqueue = \"payment\"\nretry = { max_attempts = 3, initial_interval = \"10ms\", max_interval = \"20ms\" }";

/// The repository's order saga as version 2, with a refund that gives up after
/// [`REFUND_MAX_ATTEMPTS`] quick attempts; everything else as in version 1.
fn order_definition_v2() -> String {
    let path = shop_tests::process::workflows_dir().join("order.toml");
    let v1 = std::fs::read_to_string(&path).expect("read workflows/order.toml");
    assert!(v1.contains("\nversion = 1\n"), "workflows/order.toml declares version 1");
    assert!(v1.contains(REFUND_COMPENSATION_V1), "workflows/order.toml declares the refund as this test expects");
    v1.replacen("\nversion = 1\n", "\nversion = 2\n", 1).replacen(REFUND_COMPENSATION_V1, REFUND_COMPENSATION_V2, 1)
}

/// A compensation that fails past its `max_attempts` parks the run: status FAILED (in the
/// order API, the `status=FAILED` list and `shopctl workflow list`), history ending with
/// RunParked, and the compensations after it not run. Once the cause is fixed, `shopctl
/// workflow resume` resumes it: the refund runs again with a fresh attempt budget, then the
/// release, the cancellation notice, and the run ends compensated with stock and money back
/// where they were. Resuming a run that is not parked is refused with 409 NOT_PARKED.
#[tokio::test(flavor = "multi_thread")]
async fn compensation_failing_for_good_parks_the_run_until_an_operator_resumes_it() {
    let stack =
        Stack::start_with(EngineOptions::default(), WorkerOptions::with_args(["--refund-fail-next", REFUND_FAILURES]))
            .await;
    let reply = stack.api.register_definition(&order_definition_v2()).await;
    assert_eq!(reply.status, 201, "version 2 is registered: {}", reply.text);
    let before = stack.admin.product(PARKED_PRODUCT).await;

    let id = stack.api.place_order_ok(&order_body(None, &[(PARKED_PRODUCT, PARKED_QUANTITY)], "DECLINED")).await;
    assert_eq!(stack.api.workflow(&id).await.definition_version, 2, "a new order runs the newest definition");

    // Parked: FAILED everywhere an operator would look.
    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, "FAILED", "reason: {:?}", order.reason);
    let run = stack.api.workflow(&id).await;
    assert_eq!(run.status, WorkflowStatus::Failed);
    let listed = stack.api.get("/v1/workflows?status=FAILED").await.expect("GET /v1/workflows?status=FAILED");
    assert_eq!(listed.status, 200, "{}", listed.text);
    let listed: WorkflowList = listed.parse();
    assert!(listed.workflows.iter().any(|w| w.id.as_str() == id), "the FAILED list holds {id}: {listed:?}");
    let cli = shopctl(stack.engine.url().as_str(), &["workflow", "list", "--status", "failed"]);
    assert!(cli.status.success(), "shopctl workflow list: {}", cli.stderr);
    assert!(cli.stdout.contains(&id), "shopctl lists the parked run {id}:\n{}", cli.stdout);

    let history = stack.api.history(&id).await;
    assert_eq!(event_labels(&history).last().map(String::as_str), Some("RunParked"), "{:?}", event_labels(&history));
    let refund_failures = failures(&step_events(&history, "charge_payment.compensation"));
    let expected: Vec<bool> = (1..=REFUND_MAX_ATTEMPTS).map(|a| a < REFUND_MAX_ATTEMPTS).collect();
    assert_eq!(refund_failures.iter().map(|f| f.2).collect::<Vec<_>>(), expected, "{refund_failures:?}");
    // Compensations run in reverse order, one after the other: the release waits its turn.
    assert!(step_events(&history, "reserve_stock.compensation").is_empty(), "the release has not run yet");

    // The operator fixes the cause (nearly: the refund still fails a few times) and resumes the run.
    let mut faults: FaultConfig = stack.admin.get("/faults").await.expect("GET /faults");
    faults.refund_fail_next = REFUND_FAILURES_AFTER_RESUME;
    stack.admin.set_faults(&faults).await;
    let resumed = shopctl(stack.engine.url().as_str(), &["workflow", "resume", &id]);
    assert!(resumed.status.success(), "shopctl workflow resume: {}", resumed.stderr);

    let order = stack.api.wait_order(&id).await;
    assert_eq!(order.status, CANCELLED, "reason: {:?}", order.reason);
    let history = stack.api.history(&id).await;
    assert_eq!(history_violations(&id, &history), Vec::<String>::new());
    let labels = event_labels(&history);
    assert_in_order(
        &labels,
        &[
            "RunParked",
            "RunResumed",
            "StepCompleted(charge_payment.compensation)",
            "StepCompleted(reserve_stock.compensation)",
            "StepCompleted(notify_cancelled)",
            "WorkflowCompensated",
        ],
    );
    let resumed_at = labels.iter().position(|l| l == "RunResumed").expect("the history holds RunResumed");
    let refund_after_resume = failures(&step_events(&history[resumed_at..], "charge_payment.compensation"));
    assert_eq!(
        refund_after_resume.len(),
        REFUND_FAILURES_AFTER_RESUME as usize,
        "the resumed refund failed as injected and still had attempts left: {refund_after_resume:?}"
    );

    let after = stack.admin.product(PARKED_PRODUCT).await;
    assert_eq!((after.stock, after.reserved), (before.stock, 0), "the reservation was released");
    let cancelled: Vec<_> =
        stack.admin.notifications_of(&id).await.into_iter().filter(|n| n.kind == ORDER_CANCELLED).collect();
    assert_eq!(cancelled.len(), 1, "one cancellation notice: {cancelled:?}");
    assert_eq!(net_charged(&stack.admin.payments_of(&id).await), 0, "nothing charged in the end");

    // Only a parked run can be resumed: a finished one is refused as finished, one still
    // running (its only step waits on a queue nobody serves) as not parked.
    let again = stack.api.post_json(&format!("/v1/workflows/{id}/resume"), &json!({})).await.expect("POST resume");
    again.assert_error(409, "ALREADY_FINISHED");
    // One name for the action: the route's old name is gone.
    let old_name = stack.api.post_json(&format!("/v1/workflows/{id}/retry"), &json!({})).await.expect("POST retry");
    assert_eq!(old_name.status, 404, "{}", old_name.text);
    let reply = stack.api.register_definition(UNSERVED_DEFINITION).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let reply = stack.api.start_workflow("unserved", Some(UNSERVED_RUN), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let running = stack.api.post_json(&format!("/v1/workflows/{UNSERVED_RUN}/resume"), &json!({})).await;
    running.expect("POST resume").assert_error(409, "NOT_PARKED");
    assert_eq!(stack.api.workflow(UNSERVED_RUN).await.status, WorkflowStatus::Running, "the refusal changed nothing");
}

/// A run that stays running for the whole test: its one step waits on a queue nobody polls,
/// for far longer than the test lasts.
const UNSERVED_DEFINITION: &str = r#"
name = "unserved"
version = 1

[[steps]]
name = "wait_for_nobody"
activity = "nobody.work"
queue = "nobody"
timeouts = { schedule_to_start = "10m" }
"#;
const UNSERVED_RUN: &str = "unserved-1";

// ---- 4. backlog with no worker -----------------------------------------------------------

/// Orders placed while no worker runs.
const BACKLOG_ORDERS: usize = 3;
/// The queue of the orders' first step.
const FIRST_QUEUE: &str = "inventory";

/// With no worker polling, tasks wait in their queue and `/v1/stats` shows the backlog per
/// queue; a worker that arrives later (well within `schedule_to_start`) drains it.
#[tokio::test(flavor = "multi_thread")]
async fn backlog_without_a_worker_shows_in_stats_and_drains_when_one_arrives() {
    let dir = tempfile::tempdir().expect("a temporary dir for the stack");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());
    let mut ids = Vec::with_capacity(BACKLOG_ORDERS);
    for _ in 0..BACKLOG_ORDERS {
        ids.push(api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await);
    }

    let deadline = Deadline::new("the backlog showing in /v1/stats");
    loop {
        let backlog = stats(&api).await.pointer(&format!("/queues/{FIRST_QUEUE}")).and_then(serde_json::Value::as_u64);
        if backlog == Some(BACKLOG_ORDERS as u64) {
            break;
        }
        deadline.tick().await;
    }
    for id in &ids {
        assert_eq!(api.order(id).await.status, PENDING, "nobody served {id} yet");
    }

    let _worker = Worker::start(dir.path(), "worker", &engine.url(), WorkerOptions::default()).await;
    for id in &ids {
        let order = api.wait_order(id).await;
        assert_eq!(order.status, CONFIRMED, "{id}: reason {:?}", order.reason);
    }
    let drained = stats(&api).await;
    assert_eq!(drained.pointer(&format!("/queues/{FIRST_QUEUE}")).and_then(serde_json::Value::as_u64).unwrap_or(0), 0);
}

// ---- 5. a corrupt record quarantines its run ---------------------------------------------

/// The engine's sled tree (engine/src/store.rs).
const ENGINE_TREE: &str = "engine";
/// Prefix of history keys: `h` id 0x00 seq (u64, big-endian), where seq is the number of the
/// first event of the transition the record holds.
const HISTORY_PREFIX: u8 = b'h';
/// The record the test corrupts: the run's first transition (WorkflowStarted and the first
/// StepScheduled).
const CORRUPT_SEQ: u64 = 1;
/// A format byte the engine knows followed by bytes no bincode event decodes from.
const GARBAGE: [u8; 5] = [1, 0xff, 0xff, 0xff, 0xff];
const CORRUPT_RUN: &str = "quarantine-a";
const HEALTHY_RUN: &str = "quarantine-b";

/// Overwrites history record `seq` of run `id` in a stopped engine's store with garbage.
fn corrupt_history_record(store_dir: &Path, id: &str, seq: u64) {
    let db = sled::open(store_dir).expect("open the stopped engine's store");
    let tree = db.open_tree(ENGINE_TREE).expect("open the engine tree");
    let mut key = vec![HISTORY_PREFIX];
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    let old = tree.insert(key, GARBAGE.to_vec()).expect("overwrite the record");
    assert!(old.is_some(), "record {seq} of {id} existed before it was corrupted (is the key layout still this?)");
    db.flush().expect("flush the corrupted store");
}

/// Places the orders `ids` with no worker running, so they stay in flight (which is what
/// start-up replays), stops the engine, corrupts [`CORRUPT_RUN`]'s first record and starts
/// the engine again. A placed order's first record is durable once its POST is answered.
async fn restart_with_a_corrupt_run(dir: &Path, engine: &mut Engine, api: &Api, ids: &[&str]) {
    for id in ids {
        api.place_order_ok(&order_body(Some(id), &[(1, 1)], "CREDIT_CARD")).await;
    }
    let status = engine.stop().await;
    assert!(status.success(), "the engine stops cleanly on SIGTERM: {status}");
    corrupt_history_record(&dir.join("engine"), CORRUPT_RUN, CORRUPT_SEQ);
    engine.restart().await;
}

/// A run whose history holds an unreadable record cannot be replayed at start-up: it is
/// quarantined (listed with a reason in `/v1/stats`, its history answering 500
/// CORRUPT_RECORD) while the engine serves every other in-flight run to its end and its
/// list endpoint keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn corrupt_record_quarantines_its_run_and_the_engine_serves_the_rest() {
    let dir = tempfile::tempdir().expect("a temporary dir for the stack");
    let mut engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());
    restart_with_a_corrupt_run(dir.path(), &mut engine, &api, &[CORRUPT_RUN, HEALTHY_RUN]).await;
    let _worker = Worker::start(dir.path(), "worker", &engine.url(), WorkerOptions::default()).await;

    let order = api.wait_order(HEALTHY_RUN).await;
    assert_eq!(order.status, CONFIRMED, "the healthy run is served: {:?}", order.reason);

    let quarantined = stats(&api).await["quarantined"].clone();
    let entries = quarantined.as_array().expect("`quarantined` is a list");
    let entry = entries.iter().find(|q| q["id"] == CORRUPT_RUN);
    let entry = entry.unwrap_or_else(|| panic!("{CORRUPT_RUN} is quarantined: {quarantined}"));
    assert!(entry["reason"].as_str().is_some_and(|r| !r.is_empty()), "with a reason: {entry}");
    assert_eq!(entries.len(), 1, "only the corrupt run is quarantined: {quarantined}");

    let reply = api.get(&format!("/v1/workflows/{CORRUPT_RUN}/history")).await.expect("GET its history");
    reply.assert_error(500, "CORRUPT_RECORD");

    let listed = api.get("/v1/workflows").await.expect("GET /v1/workflows");
    assert_eq!(listed.status, 200, "the list still answers: {}", listed.text);
    let listed: WorkflowList = listed.parse();
    assert!(listed.workflows.iter().any(|w| w.id.as_str() == HEALTHY_RUN), "{HEALTHY_RUN} is listed: {listed:?}");
}

/// Quarantined runs are left out of list endpoints (`GET /v1/workflows`,
/// `GET /api/orders`), as the quarantine promises, so that nobody waits on a run that will
/// never move.
#[tokio::test(flavor = "multi_thread")]
async fn quarantined_run_is_left_out_of_lists() {
    let dir = tempfile::tempdir().expect("a temporary dir for the stack");
    let mut engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());
    restart_with_a_corrupt_run(dir.path(), &mut engine, &api, &[CORRUPT_RUN]).await;
    assert!(stats(&api).await["quarantined"].to_string().contains(CORRUPT_RUN), "the run is quarantined");

    // Every list is checked before failing, so the report names all that show the run.
    let mut listing_it = Vec::new();
    for path in ["/v1/workflows", "/v1/workflows?status=RUNNING", "/api/orders"] {
        let reply = api.get(path).await.expect("GET a list");
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        if reply.text.contains(CORRUPT_RUN) {
            listing_it.push(format!("{path}: {}", reply.text));
        }
    }
    assert!(listing_it.is_empty(), "lists that show the quarantined run:\n{}", listing_it.join("\n"));
}
