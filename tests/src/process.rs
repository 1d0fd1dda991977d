//! Real processes for the tests: finding the binaries, free loopback ports, and guards that
//! start `shop-engine` and `shop-worker`, wait for them to answer `/healthz`, kill -9 and
//! restart them on the same data dir and port, and kill them when dropped.
//!
//! A guard must never leave a child running: `Drop` kills and reaps it, also while a test
//! panics, and then prints the tail of the child's log so the failure can be understood.
//! Servers also run `--exit-with-parent` with a piped stdin whose write end the guard keeps,
//! so even a test process that is killed outright takes its engines and workers with it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to answer `/healthz` after it is spawned (an engine replays
/// its store at start-up; a hung one must not block the suite for ever).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(50);
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

/// A loopback address with a port that was free a moment ago: bind port 0, read, drop.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("a bound listener has an address")
}

/// One spawned child whose stdout and stderr go to a log file (appended, so a restarted
/// process keeps the story of the ones before it).
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `command` with its output appended to `log`, and its stdin a pipe whose write
    /// end this guard holds (it closes when the guard or the whole test process goes).
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Proc {
        let file = OpenOptions::new().create(true).append(true).open(log).expect("open the child's log file");
        let err_file = file.try_clone().expect("clone the log file handle");
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Proc { name: name.to_owned(), child, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (what `Child::kill` sends) and reap: nothing gets to flush or say goodbye.
    pub fn kill9(&mut self) {
        // An error means it has already exited, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .expect("run the kill command");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid());
    }

    /// The exit status, if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("query the child's status")
    }

    /// The last few KiB of the child's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- last lines of {} ({}) ----\n{}", self.name, self.log.display(), self.log_tail());
        }
    }
}

/// The last `LOG_TAIL_BYTES` of a file, lossily decoded; empty if it cannot be read.
pub fn tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The `pid` a `/healthz` answer names, when it answered 2xx.
pub async fn health_pid(client: &reqwest::Client, url: &str) -> Option<u32> {
    let response = client.get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    body.get("pid").and_then(serde_json::Value::as_u64).and_then(|pid| u32::try_from(pid).ok())
}

/// Polls `url` until this child answers it (its `/healthz` names the child's pid: another
/// process that holds the port does not count), the child exits, or the deadline passes.
async fn wait_healthy(proc: &mut Proc, url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        if let Some(status) = proc.exited() {
            panic!("{} exited with {status} before it was ready; its log:\n{}", proc.name, proc.log_tail());
        }
        if health_pid(&client, url).await == Some(proc.pid()) {
            return;
        }
        assert!(Instant::now() < deadline, "{} did not answer {url} within {STARTUP_DEADLINE:?}", proc.name);
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
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

/// A `shop-engine` process on a fixed address and data dir, which survive restarts.
pub struct Engine {
    proc: Option<Proc>,
    addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    options: EngineOptions,
}

impl Engine {
    /// Starts an engine with its data under `dir/engine` and waits until it is ready.
    pub async fn start(dir: &Path, options: EngineOptions) -> Engine {
        let mut engine = Engine {
            proc: None,
            addr: free_addr(),
            data_dir: dir.join("engine"),
            log: dir.join("engine.log"),
            options,
        };
        engine.launch().await;
        engine
    }

    async fn launch(&mut self) {
        let mut command = Command::new(binary("shop-engine"));
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--workflows")
            .arg(&self.options.workflows)
            .arg("--exit-with-parent");
        if let Some(max) = self.options.max_history_events {
            command.arg("--max-history-events").arg(max.to_string());
        }
        if self.options.open {
            command.args(["--open", "--rate-limit", "off"]);
        }
        command.args(&self.options.args);
        let mut proc = Proc::spawn("shop-engine", command, &self.log);
        wait_healthy(&mut proc, &format!("{}/healthz", self.url())).await;
        self.proc = Some(proc);
    }

    /// The engine's base URL, stable across restarts.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// kill -9: the engine gets no chance to flush or answer.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// Starts the engine again on the same data dir and address and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }

    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
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
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            activities: "inventory,payment,notification".to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            open: true,
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
    proc: Option<Proc>,
    engine_url: String,
    addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    options: WorkerOptions,
}

impl Worker {
    /// Starts a worker named `name` (its data under `dir/name`, its log `dir/name.log`).
    pub async fn start(dir: &Path, name: &str, engine_url: &str, options: WorkerOptions) -> Worker {
        let mut worker = Worker {
            proc: None,
            engine_url: engine_url.to_owned(),
            addr: free_addr(),
            data_dir: dir.join(name),
            log: dir.join(format!("{name}.log")),
            options,
        };
        worker.launch().await;
        worker
    }

    async fn launch(&mut self) {
        let mut command = Command::new(binary("shop-worker"));
        command
            .arg("--engine")
            .arg(&self.engine_url)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--activities")
            .arg(&self.options.activities)
            .arg("--exit-with-parent");
        if self.options.open {
            command.arg("--open");
        }
        command.args(&self.options.args).envs(self.options.env.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn("shop-worker", command, &self.log);
        wait_healthy(&mut proc, &format!("{}/healthz", self.url())).await;
        self.proc = Some(proc);
    }

    /// The admin API's base URL, stable across restarts.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// Starts the worker again on the same data dir and admin address, with the same flags
    /// (injected faults live in memory only, so the flags set them afresh).
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }

    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// Everything the worker has logged so far, over all its restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        let mut proc = self.proc.take().expect("the engine is running");
        proc.signal("TERM");
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = proc.exited() {
                return status;
            }
            // Dropping `proc` on this panic kills the engine, so nothing is left behind.
            assert!(Instant::now() < deadline, "the engine did not exit within {STOP_DEADLINE:?} of SIGTERM");
            tokio::time::sleep(EXIT_POLL_INTERVAL).await;
        }
    }
}

impl Worker {
    /// The worker's exit status if it has exited by itself (e.g. it crashed), `None` while it
    /// runs. A worker the test killed has no process left and answers `None` too.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.proc.as_mut().and_then(Proc::exited)
    }
}
