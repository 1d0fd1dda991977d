//! A corrupt record quarantines its run at start-up.
//! Like every test here it starts its own stack and must never leave a process running.

use super::*;

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
