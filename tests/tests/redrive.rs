//! Dead letters in bulk: runs parked by a failing refund are grouped by their error
//! fingerprint (`GET /v1/parked`), and one redrive job over their group, once the fault is
//! fixed, resumes them all through the core's resume path. A job stopped midway leaves the
//! rest parked; an engine restart reports a running job interrupted; past
//! `MAX_RUNNING_REDRIVES` a start is refused; an ids list skips what is unknown or not
//! parked; runs with a real charge are refunded once. `shopctl parked` and `shopctl redrive`
//! drive the same. Real engine and worker processes; every wait is bounded and no test
//! asserts a timing.

use shop_client::Client;
use shop_tests::client::net_charged;
use shop_tests::process::{binary, run_to_end, Finished};
use shop_tests::variants::{order_failing_after_charge, order_with_quick_refund};
use shop_tests::{event_labels, history_violations, order_body, EngineOptions, Stack, WorkerOptions, CANCELLED};
use shop_types::order::FaultConfig;
use shop_types::redrive::{
    FailurePhase, RedriveJob, RedriveRequest, RedriveState, TargetOutcome, MAX_RUNNING_REDRIVES,
};
use shop_types::WorkflowId;
use std::time::{Duration, Instant};

/// Runs parked by the failing refund.
const PARKED_RUNS: usize = 200;
/// Orders placed at once.
const CONCURRENT_PLACES: usize = 20;
/// Refund failures injected: more than every run's whole attempt budget.
const REFUND_FAILURES: &str = "100000";
/// The variant's version: above every version in `workflows/`, so new orders run it.
const TEST_VERSION: u32 = 99;
/// How long the test waits for the runs to park, or for a job to end.
const DEADLINE: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn request(group: &str, reason: &str) -> RedriveRequest {
    RedriveRequest { group: Some(group.to_owned()), reason: reason.to_owned(), rate: Some(100), ..Default::default() }
}

async fn wait_job(client: &Client, id: &str) -> RedriveJob {
    let until = Instant::now() + DEADLINE;
    loop {
        let job = client.redrive(id).await.expect("GET /v1/redrives/{id}").body;
        if job.state != RedriveState::Running {
            return job;
        }
        assert!(Instant::now() < until, "redrive {id} did not end within {DEADLINE:?}: {job:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// 200 runs parked by a failing refund form one group; a dry run changes nothing; once the
/// fault is fixed, one redrive of the group ends all 200 CANCELLED with one refund each and
/// `RunResumedBy` naming the job; the same Idempotency-Key returns the same job, and a
/// second redrive of the group finds nothing left.
#[tokio::test(flavor = "multi_thread")]
async fn one_redrive_of_a_group_resumes_every_run_a_failing_refund_parked() {
    let stack =
        Stack::start_with(EngineOptions::default(), WorkerOptions::with_args(["--refund-fail-next", REFUND_FAILURES]))
            .await;
    let reply = stack.api.register_definition(&order_with_quick_refund(TEST_VERSION)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let mut ids = Vec::new();
    for chunk in (0..PARKED_RUNS).collect::<Vec<_>>().chunks(CONCURRENT_PLACES) {
        let placed = chunk.iter().map(|i| {
            let body = order_body(None, &[((*i % 10) as i64 + 1, 1)], "DECLINED");
            let api = &stack.api;
            async move { api.place_order_ok(&body).await }
        });
        ids.extend(futures_util::future::join_all(placed).await);
    }
    for id in &ids {
        let order = stack.api.wait_order(id).await;
        assert_eq!(order.status, "FAILED", "{id} parks: {:?}", order.reason);
    }

    let client = stack.api.client();
    let groups = client.parked().await.expect("GET /v1/parked").body;
    assert_eq!(groups.groups.len(), 1, "one failure, one group: {groups:?}");
    let group = &groups.groups[0];
    assert_eq!(
        (group.count, group.phase, group.workflow_type.as_str()),
        (PARKED_RUNS as u64, FailurePhase::Parked, "order")
    );
    assert!(ids.contains(&group.sample.to_string()), "the sample is one of the runs");

    // A dry run lists every run as one it would resume, and changes nothing.
    let dry = RedriveRequest { dry_run: true, ..request(&group.fingerprint, "look first") };
    let dry = client.start_redrive(&dry, "dry-1").await.expect("POST /v1/redrives (dry run)");
    assert_eq!(dry.status, 201);
    assert_eq!(dry.body.count(|o| *o == TargetOutcome::WouldResume), PARKED_RUNS, "{:?}", dry.body);
    assert_eq!(client.parked().await.expect("GET /v1/parked").body.groups[0].count, PARKED_RUNS as u64);
    stack.api.get(&format!("/v1/redrives/{}", dry.body.id)).await.expect("GET").assert_error(404, "NOT_FOUND");

    // Missing key, missing reason: refused.
    let body = serde_json::json!({"group": group.fingerprint, "reason": "x"});
    stack.api.post_json("/v1/redrives", &body).await.expect("POST").assert_error(400, "BAD_IDEMPOTENCY_KEY");

    let mut faults: FaultConfig = stack.admin.get("/faults").await.expect("GET /faults");
    faults.refund_fail_next = 0;
    stack.admin.set_faults(&faults).await;
    let started = client.start_redrive(&request(&group.fingerprint, "refund provider fixed"), "fix-1").await;
    let started = started.expect("POST /v1/redrives");
    assert_eq!(started.status, 201, "{:?}", started.body);
    assert_eq!(started.body.targets.len(), PARKED_RUNS, "the targets are frozen at the start");
    let again = client.start_redrive(&request(&group.fingerprint, "refund provider fixed"), "fix-1").await;
    let again = again.expect("POST /v1/redrives again");
    assert_eq!((again.status.as_u16(), &again.body.id), (200, &started.body.id), "the same key, the same job");
    let other = client.start_redrive(&request(&group.fingerprint, "another reason"), "fix-1").await;
    assert!(other.is_err(), "the same key with another request is refused: {other:?}");

    let job = wait_job(client, &started.body.id).await;
    assert_eq!(job.state, RedriveState::Completed);
    assert_eq!(job.count(|o| *o == TargetOutcome::Resumed), PARKED_RUNS, "{job:?}");
    let by = format!("redrive:{}", job.id);
    for id in &ids {
        let order = stack.api.wait_order(id).await;
        assert_eq!(order.status, CANCELLED, "{id}: {:?}", order.reason);
        let history = stack.api.history(id).await;
        assert_eq!(history_violations(id, &history), Vec::<String>::new());
        let resumed: Vec<_> = history.iter().filter_map(|e| e.event.requested_by()).collect();
        assert_eq!(resumed, vec![by.as_str()], "{id}'s history names the job");
        let refunds = event_labels(&history)
            .iter()
            .filter(|l| l.as_str() == "StepCompleted(charge_payment.compensation)")
            .count();
        assert_eq!(refunds, 1, "{id}: one refund");
        assert_eq!(net_charged(&stack.admin.payments_of(id).await), 0, "{id}: nothing charged in the end");
    }

    // Nothing is left parked: a second redrive of the group has no targets.
    assert!(client.parked().await.expect("GET /v1/parked").body.groups.is_empty());
    let second = client.start_redrive(&request(&group.fingerprint, "again"), "fix-2").await.expect("POST");
    assert!(second.body.targets.is_empty(), "{:?}", second.body);
    assert_eq!(wait_job(client, &second.body.id).await.state, RedriveState::Completed);
}

/// Runs parked for the tests of stopping, restarting and the ids list.
const FEW_RUNS: usize = 20;
/// How long a `shopctl` command may take (a followed job included).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

fn slow(target: RedriveRequest) -> RedriveRequest {
    RedriveRequest { rate: Some(1), ..target }
}

fn group_request(group: &str, reason: &str) -> RedriveRequest {
    RedriveRequest { group: Some(group.to_owned()), reason: reason.to_owned(), ..Default::default() }
}

fn ids_request(ids: &[&str], reason: &str) -> RedriveRequest {
    let ids = ids.iter().map(|id| WorkflowId::parse(*id).expect("an id")).collect();
    RedriveRequest { ids: Some(ids), reason: reason.to_owned(), ..Default::default() }
}

/// A stack whose refunds fail until the fault is fixed, with `definition` registered.
async fn failing_refunds(definition: &str) -> Stack {
    let stack =
        Stack::start_with(EngineOptions::default(), WorkerOptions::with_args(["--refund-fail-next", REFUND_FAILURES]))
            .await;
    let reply = stack.api.register_definition(definition).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    stack
}

/// Places `count` orders paid with `method`, one after the other, and waits for each to park.
async fn park(stack: &Stack, count: usize, method: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let id = stack.api.place_order_ok(&order_body(None, &[((i % 10) as i64 + 1, 1)], method)).await;
        ids.push(id);
    }
    for id in &ids {
        let order = stack.api.wait_order(id).await;
        assert_eq!(order.status, "FAILED", "{id} parks: {:?}", order.reason);
    }
    ids
}

async fn fix_refunds(stack: &Stack) {
    let mut faults: FaultConfig = stack.admin.get("/faults").await.expect("GET /faults");
    faults.refund_fail_next = 0;
    stack.admin.set_faults(&faults).await;
}

/// The one group of parked runs, and how many it has.
async fn the_group(client: &Client) -> (String, u64) {
    let groups = client.parked().await.expect("GET /v1/parked").body;
    assert_eq!(groups.groups.len(), 1, "{groups:?}");
    (groups.groups[0].fingerprint.clone(), groups.groups[0].count)
}

/// How many runs are parked now (the one group's count, or none).
async fn parked_now(client: &Client) -> u64 {
    client.parked().await.expect("GET /v1/parked").body.groups.iter().map(|g| g.count).sum()
}

/// Polls job `id` until it has resumed at least `count` runs (or ended).
async fn wait_resumed(client: &Client, id: &str, count: usize) -> RedriveJob {
    let until = Instant::now() + DEADLINE;
    loop {
        let job = client.redrive(id).await.expect("GET /v1/redrives/{id}").body;
        if job.count(|o| *o == TargetOutcome::Resumed) >= count || job.state != RedriveState::Running {
            return job;
        }
        assert!(Instant::now() < until, "redrive {id} did not resume {count} runs within {DEADLINE:?}: {job:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn resumed_ids(job: &RedriveJob) -> Vec<String> {
    job.targets.iter().filter(|t| t.outcome == TargetOutcome::Resumed).map(|t| t.id.to_string()).collect()
}

/// One stack, 20 parked runs: an ids list skips an unknown and a finished run; past
/// `MAX_RUNNING_REDRIVES` running jobs a start is refused with 429; a job at one run a second
/// stopped after a few leaves the rest parked; a job running when the engine restarts reads
/// `interrupted`, and a new job finds exactly what is still parked and finishes them.
#[tokio::test(flavor = "multi_thread")]
async fn redrive_jobs_stop_survive_restarts_and_skip_what_is_not_parked() {
    let mut stack = failing_refunds(&order_with_quick_refund(TEST_VERSION)).await;
    let ids = park(&stack, FEW_RUNS, "DECLINED").await;
    fix_refunds(&stack).await;
    let confirmed = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    assert_eq!(stack.api.wait_order(&confirmed).await.status, "CONFIRMED");
    let client = stack.api.client().clone();

    // An ids list: the unknown and the finished run are skipped with their reason.
    let listed = ids_request(&["no-such-run", &confirmed, &ids[0]], "one by hand");
    let job = client.start_redrive(&listed, "ids-1").await.expect("POST /v1/redrives (ids)").body;
    let job = wait_job(&client, &job.id).await;
    let outcomes: Vec<_> = job.targets.iter().map(|t| t.outcome.clone()).collect();
    let skipped = |code: &str| TargetOutcome::Skipped { code: code.to_owned() };
    assert_eq!(outcomes, vec![skipped("NOT_FOUND"), skipped("ALREADY_FINISHED"), TargetOutcome::Resumed]);
    assert_eq!(stack.api.wait_order(&ids[0]).await.status, CANCELLED);

    // MAX_RUNNING_REDRIVES jobs walking unknown ids at one a second; one more is refused.
    let mut running = Vec::new();
    for n in 0..MAX_RUNNING_REDRIVES {
        let unknown: Vec<String> = (0..FEW_RUNS).map(|i| format!("unknown-{n}-{i}")).collect();
        let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
        let request = slow(ids_request(&unknown, "keep busy"));
        let job = client.start_redrive(&request, &format!("busy-{n}")).await.expect("POST /v1/redrives");
        assert_eq!(job.body.state, RedriveState::Running);
        running.push(job.body.id);
    }
    let refused = client.start_redrive(&ids_request(&["unknown-x"], "one too many"), "busy-more").await;
    let refused = refused.expect_err("one job more than MAX_RUNNING_REDRIVES");
    assert_eq!((refused.status().map(|s| s.as_u16()), refused.code()), (Some(429), Some("TOO_MANY_REDRIVES")));
    for id in &running {
        let stopped = client.stop_redrive(id).await.expect("DELETE /v1/redrives/{id}").body;
        assert_eq!(stopped.state, RedriveState::Stopped, "{stopped:?}");
    }

    // A job stopped midway: what it resumed finishes, the rest stay parked.
    let (group, count) = the_group(&client).await;
    assert_eq!(count, (FEW_RUNS - 1) as u64);
    let job = client.start_redrive(&slow(group_request(&group, "a few")), "stop-1").await.expect("POST").body;
    wait_resumed(&client, &job.id, 3).await;
    let stopped = client.stop_redrive(&job.id).await.expect("DELETE /v1/redrives/{id}").body;
    assert_eq!(stopped.state, RedriveState::Stopped, "{stopped:?}");
    let resumed = resumed_ids(&stopped);
    assert!(resumed.len() >= 3 && resumed.len() < FEW_RUNS - 1, "stopped midway: {stopped:?}");
    assert_eq!(stopped.count(|o| *o == TargetOutcome::Pending), FEW_RUNS - 1 - resumed.len());
    for id in &resumed {
        assert_eq!(stack.api.wait_order(id).await.status, CANCELLED, "{id}");
    }
    assert_eq!(parked_now(&client).await, (FEW_RUNS - 1 - resumed.len()) as u64, "the rest stay parked");
    let after_stop = client.redrive(&job.id).await.expect("GET").body;
    assert_eq!(resumed_ids(&after_stop), resumed, "a stopped job resumes nothing more");

    // An engine restart during a job: it reads interrupted; a new job finds what is parked.
    let job = client.start_redrive(&slow(group_request(&group, "before a restart")), "restart-1").await;
    let job = job.expect("POST").body;
    wait_resumed(&client, &job.id, 1).await;
    stack.engine.restart().await;
    let interrupted = client.redrive(&job.id).await.expect("GET after the restart").body;
    assert_eq!(interrupted.state, RedriveState::Interrupted, "{interrupted:?}");
    for id in resumed_ids(&interrupted) {
        assert_eq!(stack.api.wait_order(&id).await.status, CANCELLED, "{id}");
    }
    let still = parked_now(&client).await;
    let fresh = client.start_redrive(&group_request(&group, "after the restart"), "restart-2").await;
    let fresh = fresh.expect("POST").body;
    assert_eq!(fresh.targets.len() as u64, still, "the new job targets what is still parked");
    assert_eq!(wait_job(&client, &fresh.id).await.state, RedriveState::Completed);
    for id in &ids {
        assert_eq!(stack.api.wait_order(id).await.status, CANCELLED, "{id}");
    }
    assert_eq!(parked_now(&client).await, 0);
}

/// Runs whose confirm failed for good after the payment was charged, parked by a failing
/// refund: one redrive, once the refund is fixed, ends each CANCELLED with exactly one refund
/// of its charge in the payment ledger.
#[tokio::test(flavor = "multi_thread")]
async fn a_redrive_refunds_each_real_charge_once() {
    let stack = failing_refunds(&order_failing_after_charge(TEST_VERSION)).await;
    let ids = park(&stack, 5, "CREDIT_CARD").await;
    for id in &ids {
        let payments = stack.admin.payments_of(id).await;
        assert_eq!(payments.iter().filter(|p| p.kind == "charge").count(), 1, "{id} was charged: {payments:?}");
        assert!(net_charged(&payments) > 0, "{id}: the charge stands while parked");
    }
    fix_refunds(&stack).await;
    let client = stack.api.client();
    let (group, count) = the_group(client).await;
    assert_eq!(count, ids.len() as u64);
    let job = client.start_redrive(&group_request(&group, "refunds fixed"), "refund-1").await.expect("POST").body;
    let job = wait_job(client, &job.id).await;
    assert_eq!(job.count(|o| *o == TargetOutcome::Resumed), ids.len(), "{job:?}");
    for id in &ids {
        assert_eq!(stack.api.wait_order(id).await.status, CANCELLED, "{id}");
        let payments = stack.admin.payments_of(id).await;
        assert_eq!(payments.iter().filter(|p| p.kind == "refund").count(), 1, "{id}: one refund: {payments:?}");
        assert_eq!(net_charged(&payments), 0, "{id}: nothing charged in the end");
    }
}

fn shopctl(stack: &Stack, args: &[&str]) -> Finished {
    let mut command = std::process::Command::new(binary("shopctl"));
    command.args(["--engine", &stack.engine.url(), "--worker", &stack.worker.url()]).args(args);
    run_to_end(command, COMMAND_DEADLINE)
}

async fn shopctl_async(stack: &Stack, args: &[&str]) -> Finished {
    tokio::task::block_in_place(|| shopctl(stack, args))
}

fn json_of(finished: &Finished) -> serde_json::Value {
    assert!(finished.status.success(), "{finished:?}");
    serde_json::from_str(&finished.stdout).unwrap_or_else(|e| panic!("JSON on stdout ({e}): {finished:?}"))
}

/// `shopctl parked` lists the group; `shopctl redrive --dry-run` changes nothing;
/// `shopctl redrive --group` follows the job to its end (exit 0); `redrive status` shows it;
/// `redrive stop` of a finished job keeps it completed; a stopped followed job exits 3; bad
/// input exits 1 or 2 with one line.
#[tokio::test(flavor = "multi_thread")]
async fn shopctl_lists_parked_groups_and_redrives_them() {
    let stack = failing_refunds(&order_with_quick_refund(TEST_VERSION)).await;
    let ids = park(&stack, 3, "DECLINED").await;

    let groups = json_of(&shopctl_async(&stack, &["--json", "parked"]).await);
    let group = groups["groups"][0]["fingerprint"].as_str().expect("a fingerprint").to_owned();
    assert_eq!(groups["groups"][0]["count"], 3);
    let table = shopctl_async(&stack, &["parked"]).await;
    assert!(table.status.success() && table.stdout.contains(&group), "{table:?}");

    let dry = json_of(
        &shopctl_async(&stack, &["--json", "redrive", "--group", &group, "--reason", "look", "--dry-run"]).await,
    );
    assert_eq!(dry["targets"].as_array().map(Vec::len), Some(3), "{dry}");
    assert_eq!(dry["targets"][0]["outcome"], "would_resume");

    let missing = shopctl_async(&stack, &["redrive", "--group", &group]).await;
    assert_eq!(missing.status.code(), Some(1), "no reason: {missing:?}");
    assert_eq!(missing.stderr.trim().lines().count(), 1, "{missing:?}");
    let both = shopctl_async(&stack, &["redrive", "--group", &group, "--type", "order", "--reason", "x"]).await;
    assert_eq!(both.status.code(), Some(2), "two targets: {both:?}");

    fix_refunds(&stack).await;
    let args = ["--json", "redrive", "--group", &group, "--reason", "fixed", "--idempotency-key", "cli-1"];
    let followed = shopctl_async(&stack, &args).await;
    let job = json_of(&followed);
    assert_eq!(job["state"], "completed", "followed to its end: {followed:?}");
    assert!(followed.stderr.contains("started"), "the job's id is told: {followed:?}");
    let id = job["id"].as_str().expect("an id").to_owned();
    for run in &ids {
        assert_eq!(stack.api.wait_order(run).await.status, CANCELLED, "{run}");
    }
    let status = shopctl_async(&stack, &["redrive", "status", &id]).await;
    assert!(status.status.success() && status.stdout.contains("3 resumed"), "{status:?}");
    let stop = json_of(&shopctl_async(&stack, &["--json", "redrive", "stop", &id]).await);
    assert_eq!(stop["state"], "completed", "a finished job stays as it ended");
    let unknown = shopctl_async(&stack, &["redrive", "status", "rd-none"]).await;
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");

    // A followed job that is stopped meanwhile: exit 3. The job is started through the API
    // first, so the test knows its id; the CLI with the same key and request follows it.
    let unknown: Vec<String> = (0..FEW_RUNS).map(|i| format!("gone-{i}")).collect();
    let request = slow(ids_request(&unknown.iter().map(String::as_str).collect::<Vec<_>>(), "slow"));
    let client = stack.api.client();
    let job = client.start_redrive(&request, "cli-2").await.expect("POST").body;
    let mut command = std::process::Command::new(binary("shopctl"));
    command.args(["--engine", &stack.engine.url(), "redrive", "--ids", &unknown.join(","), "--reason", "slow"]);
    command.args(["--rate", "1", "--idempotency-key", "cli-2"]);
    let follower = tokio::task::spawn_blocking(move || run_to_end(command, COMMAND_DEADLINE));
    let until = Instant::now() + DEADLINE;
    while client.redrive(&job.id).await.expect("GET").body.count(|o| *o != TargetOutcome::Pending) < 2 {
        assert!(Instant::now() < until, "the job made no progress");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    client.stop_redrive(&job.id).await.expect("DELETE");
    let followed = follower.await.expect("the follower");
    assert_eq!(followed.status.code(), Some(3), "a stopped job exits 3: {followed:?}");
    assert!(followed.stderr.contains("ended stopped"), "{followed:?}");
}
