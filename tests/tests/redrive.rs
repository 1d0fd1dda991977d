//! Dead letters in bulk: runs parked by a failing refund are grouped by their error
//! fingerprint (`GET /v1/parked`), and one redrive job over their group, once the fault is
//! fixed, resumes them all through the core's resume path. Real engine and worker processes;
//! every wait is bounded and no test asserts a timing.

use shop_client::Client;
use shop_tests::client::net_charged;
use shop_tests::variants::order_with_quick_refund;
use shop_tests::{event_labels, history_violations, order_body, EngineOptions, Stack, WorkerOptions, CANCELLED};
use shop_types::order::FaultConfig;
use shop_types::redrive::{FailurePhase, RedriveJob, RedriveRequest, RedriveState, TargetOutcome};
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
