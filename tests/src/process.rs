//! Real processes for the tests: finding the binaries, free loopback ports, and the engines
//! and workers of a test, supervised by [`shop_supervisor`] (spawned `--exit-with-parent`
//! with a piped stdin, ready when `/healthz` names their pid, kill -9, signals, restart on
//! the same data dir and port, killed and reaped when dropped).
//!
//! What is the harness's own: it panics with the reason (and the child's log) instead of
//! returning errors, and prints the tail of a child's log when a test panics with it alive.

use shop_supervisor::{EngineSpec, Output, Spec, Supervised, WorkerSpec};
pub use shop_supervisor::{Process, Signal};
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to answer `/healthz` after it is spawned (an engine replays
/// its store at start-up; a hung one must not block the suite for ever).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two checks whether a short-lived process has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Bytes read from the end of a log when a test fails.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// The directory holding the workspace's binaries: `target/debug` when the test runs as
/// `target/debug/deps/<test>-<hash>`.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own executable path");
    let deps = exe.parent().expect("the test executable lives in a directory");
    let dir = if deps.ends_with("deps") { deps.parent().expect("deps has a parent") } else { deps };
    dir.to_path_buf()
}

/// Path of one of the workspace's binaries; panics with the fix when it is not built.
pub fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// The repository's `workflows/` folder (the order saga).
pub fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("workflows")
}

/// A workflows folder holding only the order saga v1 (`workflows/order.toml`), for tests of a
/// mechanism (timeouts, tokens, limits) whose expectations name v1's steps, events and step
/// references; the latest order version is tested on its own. Keep the folder alive as long
/// as the engine may restart.
pub fn order_v1_only() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary workflows dir");
    std::fs::copy(workflows_dir().join("order.toml"), dir.path().join("order.toml"))
        .expect("copy workflows/order.toml");
    dir
}

/// A loopback address with a port that was free a moment ago: bind port 0, read, drop.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("a bound listener has an address")
}

/// A child the test supervises by hand (e.g. `shopctl dev`), its output appended to a log:
/// a [`Process`] that panics with the reason instead of returning errors, and prints the
/// tail of its log when dropped while a test panics.
pub struct Proc {
    process: Process,
    pid: u32,
}

impl Proc {
    /// Spawns `command` with its output appended to `log`, and its stdin a pipe whose write
    /// end this guard holds (it closes when the guard or the whole test process goes).
    pub fn spawn(name: &str, command: Command, log: &Path) -> Proc {
        let output = Output::LogFile { path: log.to_path_buf(), append: true };
        let process = Process::spawn(name, &mut tokio::process::Command::from(command), &output)
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        let pid = process.pid().expect("a child just spawned has a pid");
        Proc { process, pid }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL and reap: nothing gets to flush or say goodbye.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, `KILL`).
    pub fn signal(&self, signal: &str) {
        send(&self.process, signal);
    }

    /// The exit status, if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_exit().expect("query the child's status")
    }

    /// The last few KiB of the child's log.
    pub fn log_tail(&self) -> String {
        self.process.log().map(tail).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.process.kill9();
        if std::thread::panicking() {
            eprintln!("---- last lines of {} ----\n{}", self.process.name(), self.log_tail());
        }
    }
}

/// Sends the signal named `name` (`STOP`, `CONT`, `TERM`, `KILL`) to `process`.
#[track_caller]
pub fn send(process: &Process, name: &str) {
    let signal = match name {
        "STOP" => Signal::Stop,
        "CONT" => Signal::Cont,
        "TERM" => Signal::Term,
        "KILL" => Signal::Kill,
        other => panic!("no signal {other:?} here"),
    };
    process.signal(signal).unwrap_or_else(|e| panic!("{e}"));
}

/// The last `LOG_TAIL_BYTES` of a file, lossily decoded; empty if it cannot be read.
pub fn tail(path: &Path) -> String {
    shop_supervisor::tail_bytes(path, LOG_TAIL_BYTES)
}

/// The `pid` that the `/healthz` of the service at `base` names, when it answers 2xx.
pub async fn health_pid(base: &str) -> Option<u32> {
    let client = shop_client::Client::new(shop_client::Service::Engine, base, shop_client::Options::default()).ok()?;
    client.health_pid().await.flatten()
}

/// Starts `spec` and waits until it is ready, panicking with its log when it is not.
async fn start(spec: Spec) -> Supervised {
    let name = spec.name.clone();
    let log = match &spec.output {
        Output::LogFile { path, .. } => Some(path.clone()),
        Output::Inherit => None,
    };
    Supervised::start(spec, STARTUP_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}; its log:\n{}", log.as_deref().map(tail).unwrap_or_default()))
}

/// Restarts `server` on its data dir and address, panicking with its log when it fails.
async fn restart(server: &mut Supervised) {
    if let Err(e) = server.restart(STARTUP_DEADLINE).await {
        let log = server.process().and_then(Process::log).map(tail).unwrap_or_default();
        panic!("{}: {e}; its log:\n{log}", server.spec().name);
    }
}

/// Prints the tail of a server's log when a test panics with it running.
fn show_log_on_panic(server: &Supervised) {
    if std::thread::panicking() {
        if let Some(log) = server.process().and_then(Process::log) {
            eprintln!("---- last lines of {} ({}) ----\n{}", server.spec().name, log.display(), tail(log));
        }
    }
}

/// What an engine is started with, beyond its data dir and address.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub workflows: PathBuf,
    pub max_history_events: Option<u64>,
    /// `--open --rate-limit off` (the default): no credentials needed and no rate limit, as
    /// the suite drives one engine from one address faster than any client would. Auth
    /// tests turn it off and pass their credential flags in `args`.
    pub open: bool,
    /// More flags, e.g. `["--admin-token-file", path]`; they come last, so they win.
    pub args: Vec<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { workflows: workflows_dir(), max_history_events: None, open: true, args: Vec::new() }
    }
}

/// An engine without `--open`: an admin token file it creates, JWTs signed with `jwt_key`,
/// rate limits off, then `extra` flags. Returns it and its admin token.
pub async fn secured_engine(dir: &Path, jwt_key: &str, extra: &[&str]) -> (Engine, String) {
    let key_file = dir.join("jwt.key");
    std::fs::write(&key_file, jwt_key).expect("write the JWT key");
    let admin_file = dir.join("admin-token");
    let mut args: Vec<String> = vec![
        "--admin-token-file".into(),
        admin_file.display().to_string(),
        "--jwt-secret-file".into(),
        key_file.display().to_string(),
        "--rate-limit".into(),
        "off".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let engine = Engine::start(dir, EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let admin_token = std::fs::read_to_string(&admin_file).expect("the engine created the admin token file");
    (engine, admin_token.trim().to_owned())
}

/// A `shop-engine` process on a fixed address and data dir, which survive restarts.
pub struct Engine {
    server: Supervised,
}

impl Engine {
    /// Starts an engine with its data under `dir/engine` and waits until it is ready.
    pub async fn start(dir: &Path, options: EngineOptions) -> Engine {
        let mut args = Vec::new();
        if let Some(max) = options.max_history_events {
            args.extend(["--max-history-events".to_owned(), max.to_string()]);
        }
        args.extend(options.args);
        let spec = EngineSpec {
            binary: binary("shop-engine"),
            data_dir: dir.join("engine"),
            listen: free_addr(),
            workflows: options.workflows,
            open: options.open,
            args,
            output: Output::LogFile { path: dir.join("engine.log"), append: true },
        };
        Engine { server: start(spec.spec()).await }
    }

    /// The engine's base URL, stable across restarts.
    pub fn url(&self) -> String {
        self.server.url().to_owned()
    }

    /// kill -9: the engine gets no chance to flush or answer.
    pub fn kill9(&mut self) {
        self.server.kill9();
    }

    /// Starts the engine again on the same data dir and address and waits until it is ready.
    pub async fn restart(&mut self) {
        restart(&mut self.server).await;
    }

    pub fn proc(&self) -> Option<&Process> {
        self.server.process()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        show_log_on_panic(&self.server);
    }
}

/// What a worker is started with, beyond the engine URL, its data dir and its address.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// `--activities`, e.g. `inventory,payment,notification` or `echo`.
    pub activities: String,
    /// More flags, e.g. `["--payment-fail-next", "2"]`.
    pub args: Vec<String>,
    /// Extra environment, e.g. `RUST_LOG`.
    pub env: Vec<(String, String)>,
    /// `--open` (the default): the admin API needs no credential. Tests of its
    /// authentication turn it off.
    pub open: bool,
    /// Its admin API's address; a free loopback port when `None`. Chosen up front when the
    /// engine must know it (`--worker-admin`).
    pub listen: Option<SocketAddr>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            activities: "inventory,payment,notification".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            open: true,
            listen: None,
        }
    }
}

impl WorkerOptions {
    /// The shop's domains with extra flags.
    pub fn with_args<const N: usize>(args: [&str; N]) -> Self {
        WorkerOptions { args: args.iter().map(|a| (*a).to_owned()).collect(), ..WorkerOptions::default() }
    }
}

/// A `shop-worker` process on a fixed admin address and data dir, which survive restarts.
pub struct Worker {
    server: Supervised,
    log: PathBuf,
}

impl Worker {
    /// Starts a worker named `name` (its data under `dir/name`, its log `dir/name.log`).
    pub async fn start(dir: &Path, name: &str, engine_url: &str, options: WorkerOptions) -> Worker {
        let log = dir.join(format!("{name}.log"));
        let spec = WorkerSpec {
            binary: binary("shop-worker"),
            engine_url: engine_url.to_owned(),
            data_dir: dir.join(name),
            listen: options.listen.unwrap_or_else(free_addr),
            activities: options.activities,
            open: options.open,
            args: options.args,
            env: options.env,
            output: Output::LogFile { path: log.clone(), append: true },
        };
        Worker { server: start(spec.spec()).await, log }
    }

    /// The admin API's base URL, stable across restarts.
    pub fn url(&self) -> String {
        self.server.url().to_owned()
    }

    pub fn kill9(&mut self) {
        self.server.kill9();
    }

    /// Starts the worker again on the same data dir and admin address, with the same flags
    /// (injected faults live in memory only, so the flags set them afresh).
    pub async fn restart(&mut self) {
        restart(&mut self.server).await;
    }

    pub fn proc(&self) -> Option<&Process> {
        self.server.process()
    }

    /// Everything the worker has logged so far, over all its restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        show_log_on_panic(&self.server);
    }
}

/// The output of a short-lived process run to its end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end with its output in files (so a chatty child cannot block on
/// a full pipe), killing it if it outlives `deadline`.
pub fn run_to_end(mut command: Command, deadline: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("a temporary dir for the child's output");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let out = File::create(&out_path).expect("create the stdout file");
    let err = File::create(&err_path).expect("create the stderr file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn the command");
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("query the child's status") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not exit within {deadline:?}; stderr:\n{}", tail(&err_path));
        }
        std::thread::sleep(EXIT_POLL_INTERVAL);
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// How long a process asked to stop (SIGTERM) may take to exit before the test fails.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

impl Engine {
    /// SIGTERM, then waits (bounded by [`STOP_DEADLINE`]) for the engine to exit by itself, so
    /// that its store is closed and another process (a test that edits it) may open it.
    /// Returns the exit status; [`Engine::restart`] starts it again on the same dir and address.
    pub async fn stop(&mut self) -> ExitStatus {
        self.server.terminate(STOP_DEADLINE).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Engine {
    /// The engine's exit status if it has exited by itself (e.g. fenced), `None` while it
    /// runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.server.process_mut().and_then(|process| process.try_exit().ok().flatten())
    }
}

impl Worker {
    /// The worker's exit status if it has exited by itself (e.g. it crashed), `None` while it
    /// runs. A worker the test killed has no process left and answers `None` too.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.server.process_mut().and_then(|process| process.try_exit().ok().flatten())
    }
}
