//! `shopctl dev`'s children end with it, and it trusts only its own children: a second
//! `dev` on a data dir and ports still held by a first one fails with a one-line reason
//! naming the engine (and never prints "ready"); after the first `shopctl` is killed with
//! SIGKILL, its engine and worker exit by themselves (`--exit-with-parent`), and a new `dev`
//! on the same data dir comes up ready and stops cleanly on SIGTERM.

use shop_tests::process::{binary, free_addr, health_pid, run_to_end, workflows_dir, Proc};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long `dev` may take to print "ready", or to fail.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long an orphaned child may take to notice its parent is gone and shut down.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two looks at a log or a process.
const POLL: Duration = Duration::from_millis(50);
/// What `dev` prints once its stack is up.
const READY: &str = "ready:";

struct Ports {
    engine: SocketAddr,
    worker: SocketAddr,
}

fn dev_command(data_dir: &Path, ports: &Ports) -> Command {
    let mut command = Command::new(binary("shopctl"));
    command
        .env_remove("SHOP_TOKEN")
        .arg("dev")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(ports.engine.to_string())
        .arg("--worker-listen")
        .arg(ports.worker.to_string())
        .arg("--workflows")
        .arg(workflows_dir());
    command
}

/// Starts `shopctl dev` and waits until it says it is ready.
async fn start_dev(data_dir: &Path, ports: &Ports, log: &Path) -> Proc {
    let mut dev = Proc::spawn("shopctl dev", dev_command(data_dir, ports), log);
    let deadline = Instant::now() + READY_DEADLINE;
    while !std::fs::read_to_string(log).unwrap_or_default().contains(READY) {
        if let Some(status) = dev.exited() {
            panic!("shopctl dev exited with {status} before it was ready:\n{}", dev.log_tail());
        }
        assert!(Instant::now() < deadline, "shopctl dev was not ready within {READY_DEADLINE:?}");
        tokio::time::sleep(POLL).await;
    }
    dev
}

/// The pids that the stack's engine and worker name in their `/healthz`.
async fn stack_pids(ports: &Ports) -> [u32; 2] {
    let engine = health_pid(&format!("http://{}", ports.engine)).await.expect("the engine's pid");
    let worker = health_pid(&format!("http://{}", ports.worker)).await.expect("the worker's pid");
    [engine, worker]
}

/// Whether `pid` has ended: gone from /proc, or a zombie nobody has reaped yet (an orphan's
/// new parent may be a PID 1 that does not reap).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

async fn wait_ended(pids: &[u32], what: &str) {
    let deadline = Instant::now() + EXIT_DEADLINE;
    while !pids.iter().all(|pid| ended(*pid)) {
        assert!(Instant::now() < deadline, "{what}: {pids:?} still running after {EXIT_DEADLINE:?}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_children_end_with_it_and_a_busy_data_dir_is_never_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("shop-data");
    let ports = Ports { engine: free_addr(), worker: free_addr() };

    let mut first = start_dev(&data_dir, &ports, &dir.path().join("dev-1.log")).await;
    let pids = stack_pids(&ports).await;
    assert!(!pids.contains(&first.pid()), "the stack runs in child processes");

    // The old engine answers /healthz on the port, but it is not the new dev's child.
    let second = run_to_end(dev_command(&data_dir, &ports), READY_DEADLINE);
    assert!(!second.status.success(), "a second dev on a busy data dir must fail:\n{}", second.stderr);
    assert!(!second.stderr.contains(READY), "and never say it is ready:\n{}", second.stderr);
    let reason = second.stderr.lines().last().unwrap_or_default();
    assert!(
        reason.starts_with("shopctl:") && reason.contains("shop-engine") && reason.contains(&pids[0].to_string()),
        "one line naming the engine that failed and the process holding the port: {reason}"
    );

    first.kill9();
    wait_ended(&pids, "the engine and worker of a SIGKILLed shopctl dev").await;

    let mut third = start_dev(&data_dir, &ports, &dir.path().join("dev-3.log")).await;
    let new_pids = stack_pids(&ports).await;
    let console = format!("http://{}/console", ports.engine);
    assert!(third.log_tail().contains(&console), "dev prints the console's URL {console}:\n{}", third.log_tail());
    third.signal("TERM");
    let deadline = Instant::now() + EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = third.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "shopctl dev did not stop on SIGTERM");
        tokio::time::sleep(POLL).await;
    };
    assert!(status.success(), "SIGTERM stops dev cleanly ({status}):\n{}", third.log_tail());
    wait_ended(&new_pids, "the engine and worker of a stopped shopctl dev").await;
}
