//! A full disk: the engine's data dir on a small tmpfs. Below its low-water mark
//! (`--min-free-disk-mb`) the engine answers every write 503 `DISK_FULL` with a reason and
//! records nothing, keeps serving reads, and writes again as soon as space is freed; nothing
//! acknowledged before is lost. A worker poll that waited while hand-outs could not be
//! written gets its task as soon as space is freed, not at the end of its wait.
//!
//! Mounting a tmpfs needs root (as on CI's machine); without it the test says so and checks
//! nothing else.

use shop_tests::{order_body, Admin, Api, Engine, EngineOptions, Worker, WorkerOptions, CONFIRMED};
use shop_types::api::PollResponse;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of the tmpfs holding the engine's store.
const TMPFS_MB: u64 = 48;
/// The engine's low-water mark.
const MIN_FREE_MB: u64 = 16;
/// Free space left once the disk is "full": below the mark.
const LEFT_FREE_MB: u64 = 6;
const MIB: u64 = 1024 * 1024;
/// Comfortably longer than the engine's free-space check interval.
const GUARD_NOTICES: std::time::Duration = std::time::Duration::from_millis(500);

/// A tmpfs mounted for the test, unmounted (lazily, so a still-open store cannot block it)
/// when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mb: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).expect("create the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let output = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().expect("run df");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().nth(1).and_then(|line| line.trim().parse().ok()).expect("df prints the free bytes")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_with_503_loses_nothing_and_recovers() {
    let root = tempfile::tempdir().expect("a temporary dir");
    let Some(_tmpfs) = Tmpfs::mount(&root.path().join("engine"), TMPFS_MB) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let options =
        EngineOptions { args: vec!["--min-free-disk-mb".into(), MIN_FREE_MB.to_string()], ..EngineOptions::default() };
    let mut engine = Engine::start(root.path(), options).await;
    let workers = tempfile::tempdir().expect("a temporary dir for the worker");
    let worker = Worker::start(workers.path(), "worker", &engine.url(), WorkerOptions::default()).await;
    let (api, admin) = (Api::new(&engine.url()), Admin::new(&worker.url()));

    let before = api.place_order_ok(&order_body(Some("before-full"), &[(1, 2)], "CREDIT_CARD")).await;
    assert_eq!(api.wait_order(&before).await.status, CONFIRMED);
    let runs_before = api.workflow_count().await;

    // Fill the disk to below the low-water mark.
    let filler = root.path().join("engine").join("filler");
    let fill = free_bytes(&filler.with_file_name("")).saturating_sub(LEFT_FREE_MB * MIB);
    std::fs::write(&filler, vec![0u8; usize::try_from(fill).expect("fits in memory")]).expect("fill the tmpfs");
    // The engine measures free space every 100 ms while there is room (engine/src/disk.rs).
    tokio::time::sleep(GUARD_NOTICES).await;

    let refused = api.place_order(&order_body(Some("while-full"), &[(1, 1)], "CREDIT_CARD")).await.expect("POST");
    refused.assert_error(503, "DISK_FULL");
    assert!(refused.message().contains("disk"), "the reason names the disk: {}", refused.message());
    assert_eq!(api.workflow_count().await, runs_before, "nothing was recorded");
    assert_eq!(api.order(&before).await.status, CONFIRMED, "reads are still served");
    // Token writes take the same commit path, guard included (they once bypassed it).
    let token = serde_json::json!({"name": "while-full", "role": "client"});
    let refused = api.post_json("/v1/tokens", &token).await.expect("POST /v1/tokens");
    refused.assert_error(503, "DISK_FULL");
    let tokens = api.get("/v1/tokens").await.expect("GET /v1/tokens");
    assert!(!tokens.text.contains("while-full"), "no token was recorded: {}", tokens.text);

    // Free the space: the same order goes through, and everything adds up.
    std::fs::remove_file(&filler).expect("free the tmpfs");
    let placed = api.place_order(&order_body(Some("while-full"), &[(1, 1)], "CREDIT_CARD")).await.expect("POST");
    assert_eq!(placed.status, 202, "writes resume once space is freed: {}", placed.text);
    assert_eq!(api.wait_order("while-full").await.status, CONFIRMED);
    let created = api.post_json("/v1/tokens", &token).await.expect("POST /v1/tokens");
    assert_eq!(created.status, 201, "token writes resume too: {}", created.text);
    assert_eq!(admin.product(1).await.reserved, 0);
    assert_eq!(admin.payments_of(&before).await.len(), 1);
    assert_eq!(admin.payments_of("while-full").await.len(), 1);

    // And what was acknowledged survives a restart.
    engine.kill9();
    engine.restart().await;
    assert_eq!(api.order(&before).await.status, CONFIRMED);
    assert_eq!(api.order("while-full").await.status, CONFIRMED);
}

/// A waiting poll's `wait_ms`: far longer than the test, so an answer with a task shows
/// it was served when space came back, not at its deadline.
const LONG_POLL_MS: u64 = 30_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_that_waited_through_a_full_disk_gets_its_task_when_space_is_freed() {
    let root = tempfile::tempdir().expect("a temporary dir");
    let Some(_tmpfs) = Tmpfs::mount(&root.path().join("engine"), TMPFS_MB) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let options =
        EngineOptions { args: vec!["--min-free-disk-mb".into(), MIN_FREE_MB.to_string()], ..EngineOptions::default() };
    let engine = Engine::start(root.path(), options).await;
    let api = Api::new(&engine.url());
    // No worker: the order's first task waits in the inventory queue.
    let id = api.place_order_ok(&order_body(Some("ready-while-full"), &[(1, 1)], "CREDIT_CARD")).await;

    let filler = root.path().join("engine").join("filler");
    let fill = free_bytes(&filler.with_file_name("")).saturating_sub(LEFT_FREE_MB * MIB);
    std::fs::write(&filler, vec![0u8; usize::try_from(fill).expect("fits in memory")]).expect("fill the tmpfs");
    tokio::time::sleep(GUARD_NOTICES).await;
    let refused = api.place_order(&order_body(Some("while-full"), &[(1, 1)], "CREDIT_CARD")).await.expect("POST");
    refused.assert_error(503, "DISK_FULL");

    // A worker polls: a task is ready, but its start cannot be written, so the poll waits.
    let poll = tokio::spawn({
        let api = Api::new(&engine.url());
        let body = serde_json::json!({"queue": "inventory", "worker_id": "w", "max_tasks": 1, "wait_ms": LONG_POLL_MS});
        async move { api.post_json("/v1/tasks/poll", &body).await.expect("poll") }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = api.get("/v1/stats").await.expect("GET /v1/stats");
        if stats.body["waitingPolls"] == serde_json::json!(1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the poll never waited: {}", stats.text);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!poll.is_finished(), "nothing is handed out while the disk is full");

    // Space is freed: the waiting poll is answered with the task, well before its deadline.
    std::fs::remove_file(&filler).expect("free the tmpfs");
    let reply = poll.await.expect("the poll task ran");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let tasks = reply.parse::<PollResponse>().tasks;
    assert_eq!(tasks.len(), 1, "the waiting poll got the ready task: {}", reply.text);
    assert_eq!(tasks[0].workflow_id.as_str(), id);
}
