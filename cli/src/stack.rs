//! A local stack: `shop-engine` processes (one, or several nodes of one cluster on one
//! PostgreSQL database, on consecutive ports) and `shop-worker` processes (one serving every
//! domain, or one per domain), run as child processes for `shopctl dev`, `demo` and `bench`.
//! A worker is given the first node's URL and polls every live node it lists.
//!
//! Owns finding the binaries, laying out the data directory, starting the children in order
//! (the worker needs the engine up), waiting until both answer `/healthz`, noticing when one
//! dies, and stopping both: SIGTERM, a grace period, then SIGKILL. It must never leave a
//! child running behind it: every child runs `--exit-with-parent` and ends when `shopctl`
//! does, however it ends, and is killed when its handle is dropped (both are
//! [`shop_supervisor`]'s: this module only says which children, with which flags).
//!
//! The engine runs `--open` (no authentication, which it allows on loopback only) and
//! without rate limits, and so does the worker's admin API: a local stack is for
//! development, demos and measurements, whose numbers a limit would distort. The user is
//! told so at start.

use crate::client::Client;
use crate::output;
use anyhow::{anyhow, Context as _, Result};
use shop_supervisor::{connect_url, EngineSpec, Output, Process, Stopped, WorkerSpec};
use shop_types::cluster::ClusterStatus;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ENGINE_BINARY: &str = "shop-engine";
const WORKER_BINARY: &str = "shop-worker";
/// Every domain in one worker process: each domain's sled store is then owned by it alone.
/// `risk` (the stateless fraud check of order v2) rides along: it has no store of its own.
const ALL_ACTIVITIES: &str = "inventory,payment,notification,risk";
/// The shop's domains, each served by its own process in the per-domain layout.
/// (`risk` is stateless: the notification process serves it too, see `NOTIFICATION_AND_RISK`.)
pub const DOMAINS: [&str; 3] = ["inventory", "payment", "notification"];
/// The definition the stack runs when no workflows directory is given or found.
/// What the notification process of the per-domain layout serves.
const NOTIFICATION_AND_RISK: &str = "notification,risk";
/// The definitions the stack runs when no workflows directory is given or found: the order
/// saga's versions (v1 stays registered so its runs finish on it; new orders start on v2).
const EMBEDDED_DEFINITIONS: [(&str, &str); 2] = [
    ("order.toml", include_str!("../../workflows/order.toml")),
    ("order-v2.toml", include_str!("../../workflows/order-v2.toml")),
];

/// How long a child may take to answer `/healthz` after it is spawned; an engine replaying
/// a large store at start-up needs a while, a hung one must not block us for ever.
const STARTUP_TIMEOUT: Duration = shop_supervisor::STARTUP_TIMEOUT;
/// How long an engine may take to preload completed runs for a benchmark (a million takes
/// minutes).
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the nodes of a local cluster may take to register and share the shards out.
const CLUSTER_FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `died` looks at the children.
const CHILD_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a child has to finish in-flight work after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many times [`Stack::start_on_free_ports`] starts a stack before a port taken by
/// another process fails it.
const PORT_ATTEMPTS: u32 = 3;
/// Lines of a child's log shown when it fails while its output goes to a file.
const LOG_TAIL_LINES: usize = 20;
/// Bytes read from the end of a log to find those lines; a log can be large.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Most engine nodes a local stack runs: each is a process with its own connections to the
/// database, and a laptop's cluster is for trying failover, not for scale.
pub const MAX_LOCAL_NODES: u16 = 9;

/// Where the children's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildOutput {
    /// Straight to our stderr (`dev`: the user watches the logs).
    Inherit,
    /// To `engine.log` and `worker.log` in the data directory (`demo`: its report stays
    /// readable; a failing child's last lines are shown).
    LogFiles,
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub data_dir: PathBuf,
    pub engine_listen: SocketAddr,
    pub worker_listen: SocketAddr,
    /// The definitions directory; when absent, `./workflows` if it exists, else the
    /// embedded order definition written under the data directory.
    pub workflows: Option<PathBuf>,
    pub output: ChildOutput,
    pub layout: WorkerLayout,
    /// Extra flags for the engine (e.g. `--durability process-crash`).
    pub engine_args: Vec<String>,
    /// Extra flags for every worker (e.g. `--durability process-crash`).
    pub worker_args: Vec<String>,
    /// Engine nodes, 1..=[`MAX_LOCAL_NODES`]; more than one needs a shared store
    /// (`--store postgres://...` in `engine_args`). Node `i` (from 0) listens on
    /// `engine_listen`'s port + `i` and keeps its local files in `engine-<i+1>` (node 1 in
    /// `engine`, as a one-node stack does).
    pub nodes: u16,
}

impl StackOptions {
    /// Where `binary`'s output goes.
    fn output_of(&self, binary: &str) -> Output {
        self.output_named(binary.trim_start_matches("shop-"))
    }

    fn output_named(&self, name: &str) -> Output {
        match self.output {
            ChildOutput::Inherit => Output::Inherit,
            ChildOutput::LogFiles => Output::LogFile { path: self.data_dir.join(format!("{name}.log")), append: false },
        }
    }

    /// The listen addresses of the engine nodes: consecutive ports from `engine_listen`.
    pub fn node_addrs(&self) -> Result<Vec<SocketAddr>> {
        if !(1..=MAX_LOCAL_NODES).contains(&self.nodes) {
            return Err(anyhow!("--nodes must be 1 to {MAX_LOCAL_NODES}, got {}", self.nodes));
        }
        (0..self.nodes)
            .map(|i| {
                let port = self.engine_listen.port().checked_add(i).filter(|port| *port != 0 || i == 0);
                port.map(|port| SocketAddr::new(self.engine_listen.ip(), port)).ok_or_else(|| {
                    anyhow!("--listen {}: no room for {} consecutive ports", self.engine_listen, self.nodes)
                })
            })
            .collect()
    }

    /// The engine of a local stack: its data under the stack's folder, open on loopback
    /// and without rate limits, its console reading the workers' admin APIs at
    /// `worker_admins` (the caller's `engine_args` come last and win).
    fn engine(&self, binary: &Path, listen: SocketAddr, workflows: &Path, worker_admins: &[String]) -> EngineSpec {
        self.node(0, binary, listen, workflows, worker_admins)
    }

    /// Engine node `index` (from 0) of the stack; node 0 is the one-node stack's engine.
    fn node(
        &self,
        index: u16,
        binary: &Path,
        listen: SocketAddr,
        workflows: &Path,
        worker_admins: &[String],
    ) -> EngineSpec {
        let mut args: Vec<String> =
            worker_admins.iter().flat_map(|url| ["--worker-admin".to_owned(), url.clone()]).collect();
        args.extend(self.engine_args.iter().cloned());
        let (dir, log) = match index {
            0 => ("engine".to_owned(), "engine".to_owned()),
            n => (format!("engine-{}", n + 1), format!("engine-{}", n + 1)),
        };
        EngineSpec {
            binary: binary.to_owned(),
            data_dir: self.data_dir.join(dir),
            listen,
            workflows: workflows.to_owned(),
            open: true,
            args,
            output: self.output_named(&log),
        }
    }
}

/// How the shop's domains are spread over worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerLayout {
    /// One process serves inventory, payment and notification.
    Combined,
    /// One process per domain; inventory's admin API is at `worker_listen`, the others on
    /// free loopback ports.
    PerDomain,
}

/// A running engine and its workers. Stop it with [`Stack::stop`]; dropping it kills all.
pub struct Stack {
    /// Node 1 first.
    engines: Vec<Process>,
    /// The nodes' base URLs, in the same order.
    engine_urls: Vec<String>,
    /// With the admin URL each serves and the domains it serves.
    workers: Vec<(Process, String, &'static str)>,
    client: Client,
    /// From spawning the engine to its first healthy answer: its start-up time, replay of
    /// in-flight runs included.
    engine_ready_after: Duration,
}

impl Stack {
    /// Starts a stack whose ports were chosen free for it ([`free_loopback_addr`]),
    /// choosing fresh ones and starting again, up to [`PORT_ATTEMPTS`] times, when a child
    /// finds its port taken: a port is free a moment before the child binds it, and another
    /// process may take it in between (two stacks started side by side, as tests do). Not
    /// for ports a user chose.
    pub async fn start_on_free_ports(options: &mut StackOptions) -> Result<Stack> {
        let mut attempt = 1;
        loop {
            match Stack::start(options).await {
                Err(err) if attempt < PORT_ATTEMPTS && port_taken(&err) => {
                    output::note("a port chosen for the stack was taken meanwhile; starting again on fresh ports");
                    options.engine_listen = free_loopback_addr()?;
                    options.worker_listen = free_loopback_addr()?;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    pub async fn start(options: &StackOptions) -> Result<Stack> {
        let engine_binary = sibling_binary(ENGINE_BINARY)?;
        let worker_binary = sibling_binary(WORKER_BINARY)?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
        let workflows = workflows_dir(options.workflows.as_deref(), &options.data_dir)?;
        let addrs = options.node_addrs()?;
        let engine_url = connect_url(options.engine_listen);
        let worker_url = connect_url(options.worker_listen);
        let client = Client::new(&engine_url, &worker_url)?;

        let engine_urls: Vec<String> = addrs.iter().map(|addr| connect_url(*addr)).collect();
        output::note(&format!(
            "starting {ENGINE_BINARY} on {} (workflows from {})",
            engine_urls.join(", "),
            workflows.display()
        ));
        output::note("the engine and the worker admin API run open: no authentication, no rate limit, loopback only");
        // The workers' addresses are chosen first: the engine's console reads their admin APIs.
        let plan: Vec<(&'static str, SocketAddr)> = match options.layout {
            WorkerLayout::Combined => vec![(ALL_ACTIVITIES, options.worker_listen)],
            WorkerLayout::PerDomain => {
                let mut plan = vec![(DOMAINS[0], options.worker_listen)];
                for domain in &DOMAINS[1..] {
                    let activities = if *domain == "notification" { NOTIFICATION_AND_RISK } else { domain };
                    plan.push((activities, free_loopback_addr()?));
                }
                plan
            }
        };
        let worker_admins: Vec<String> = plan.iter().map(|(_, listen)| connect_url(*listen)).collect();
        let engine_spawned = tokio::time::Instant::now();
        let mut engines: Vec<Process> = Vec::with_capacity(addrs.len());
        for (index, (addr, url)) in (0u16..).zip(addrs.iter().zip(&engine_urls)) {
            let spec = options.node(index, &engine_binary, *addr, &workflows, &worker_admins).spec();
            let started = Process::spawn(ENGINE_BINARY, &mut spec.command(), &spec.output)
                .map_err(anyhow::Error::from)
                .and_then(|process| Ok((process, Client::new(url, &worker_url)?)));
            let (mut engine, node_client) = match started {
                Ok(started) => started,
                Err(err) => {
                    stop_all(&mut engines, &mut []).await;
                    return Err(err);
                }
            };
            let outcome = ready(&mut engine, node_client.engine(), STARTUP_TIMEOUT).await;
            engines.push(engine);
            if let Err(err) = outcome {
                stop_all(&mut engines, &mut []).await;
                return Err(err);
            }
        }
        if engines.len() > 1 {
            if let Err(err) = wait_formed(client.engine(), engines.len()).await {
                stop_all(&mut engines, &mut []).await;
                return Err(err);
            }
        }
        let engine_ready_after = engine_spawned.elapsed();

        let mut workers = Vec::with_capacity(plan.len());
        for (activities, listen) in plan {
            let admin_url = connect_url(listen);
            output::note(&format!("starting {WORKER_BINARY} ({activities}) on {admin_url}"));
            let data_dir = match options.layout {
                WorkerLayout::Combined => options.data_dir.join("worker"),
                WorkerLayout::PerDomain => options.data_dir.join(format!("worker-{activities}")),
            };
            let spec = WorkerSpec {
                binary: worker_binary.clone(),
                engine_url: engine_url.clone(),
                data_dir,
                listen,
                activities: activities.to_owned(),
                open: true,
                args: options.worker_args.clone(),
                env: Vec::new(),
                output: options.output_of(WORKER_BINARY),
            }
            .spec();
            let spawned = Process::spawn(WORKER_BINARY, &mut spec.command(), &spec.output)
                .map_err(anyhow::Error::from)
                .and_then(|process| Ok((process, client.with_worker(&admin_url)?)));
            let (mut worker, worker_client) = match spawned {
                Ok(spawned) => spawned,
                Err(err) => {
                    stop_all(&mut engines, &mut workers).await;
                    return Err(err);
                }
            };
            if let Err(err) = ready(&mut worker, worker_client.worker(), STARTUP_TIMEOUT).await {
                stop(&mut worker).await;
                stop_all(&mut engines, &mut workers).await;
                return Err(err);
            }
            workers.push((worker, admin_url, activities));
        }
        Ok(Stack { engines, engine_urls, workers, client, engine_ready_after })
    }

    /// The engine nodes' base URLs, node 1 first.
    pub fn engine_urls(&self) -> &[String] {
        &self.engine_urls
    }

    /// A client pointed at this stack's engine and worker.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The admin API of the worker serving `domain`.
    pub fn admin_url(&self, domain: &str) -> Option<&str> {
        self.workers
            .iter()
            .find(|(_, _, activities)| activities.split(',').any(|a| a == domain))
            .map(|(_, url, _)| url.as_str())
    }

    /// How long the engine (every node, one after the other) took from spawn to serving.
    pub fn engine_ready_after(&self) -> Duration {
        self.engine_ready_after
    }

    /// Fills the data directory with `runs` completed order runs, written by an engine of its
    /// own (`--preload-completed`) that is stopped again; returns how long that took.
    pub async fn preload(options: &StackOptions, runs: u64) -> Result<Duration> {
        let engine_binary = sibling_binary(ENGINE_BINARY)?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("cannot create {}", options.data_dir.display()))?;
        let workflows = workflows_dir(options.workflows.as_deref(), &options.data_dir)?;
        let listen = free_loopback_addr()?;
        let client = Client::new(&connect_url(listen), &connect_url(options.worker_listen))?;
        output::note(&format!("preloading {runs} completed runs"));
        let started = tokio::time::Instant::now();
        let mut spec = options.engine(&engine_binary, listen, &workflows, &[]);
        spec.args.extend(["--preload-completed".to_owned(), runs.to_string()]);
        let spec = spec.spec();
        let mut engine = Process::spawn(ENGINE_BINARY, &mut spec.command(), &spec.output)?;
        let ready = ready(&mut engine, client.engine(), PRELOAD_TIMEOUT).await;
        let took = started.elapsed();
        stop(&mut engine).await;
        ready.map(|()| took)
    }

    /// The first engine node's process ID, to read its resource use.
    pub fn engine_pid(&self) -> Option<u32> {
        self.engines.first().and_then(Process::pid)
    }

    /// Every engine node's process ID.
    pub fn engine_pids(&self) -> Vec<u32> {
        self.engines.iter().filter_map(Process::pid).collect()
    }

    /// The worker processes' IDs, to read their resource use.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|(process, _, _)| process.pid()).collect()
    }

    /// Waits until any child exits, and says which one and how. Cancel-safe: meant to sit
    /// in a `select!` beside the real work.
    pub async fn died(&mut self) -> String {
        loop {
            let processes = self.engines.iter_mut().chain(self.workers.iter_mut().map(|(p, _, _)| p));
            for process in processes {
                let exited = match process.try_exit() {
                    Ok(Some(status)) => Ok(status),
                    Ok(None) => continue,
                    Err(shop_supervisor::Error::Wait { source, .. }) => Err(source),
                    Err(err) => Err(std::io::Error::other(err.to_string())),
                };
                show_log_tail(process);
                return process.describe_exit(exited);
            }
            tokio::time::sleep(CHILD_CHECK_INTERVAL).await;
        }
    }

    /// Stops the workers first (so they can report what they are finishing), then the engines.
    pub async fn stop(mut self) {
        stop_all(&mut self.engines, &mut self.workers).await;
    }
}

/// Waits until the cluster has formed as `engine` sees it: `nodes` live nodes and every shard
/// owned by one, so work starts on the shards' final owners rather than while they move.
async fn wait_formed(engine: &shop_client::Client, nodes: usize) -> Result<()> {
    let deadline = tokio::time::Instant::now() + CLUSTER_FORM_TIMEOUT;
    loop {
        let formed = engine.get::<ClusterStatus>(&["v1", "cluster"], &[]).await.is_ok_and(|reply| {
            let status = reply.body;
            status.nodes.iter().filter(|node| node.live).count() == nodes
                && status.shards.iter().all(|shard| shard.owner.is_some())
        });
        if formed {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow!(
                "the {nodes} engine nodes did not form a cluster within {}",
                output::duration(CLUSTER_FORM_TIMEOUT)
            ));
        }
        tokio::time::sleep(CHILD_CHECK_INTERVAL).await;
    }
}

/// Waits until `process` is ready, showing the end of its log when it is not.
/// Whether a stack failed to start because a child's port was taken (see
/// [`Stack::start_on_free_ports`]).
fn port_taken(err: &anyhow::Error) -> bool {
    matches!(err.downcast_ref::<shop_supervisor::Error>(), Some(shop_supervisor::Error::AddressTaken(_)))
}

async fn ready(process: &mut Process, health: &shop_client::Client, timeout: Duration) -> Result<()> {
    let outcome = process.wait_ready(health, timeout).await;
    if outcome.is_err() {
        show_log_tail(process);
    }
    Ok(outcome?)
}

/// SIGTERM, up to [`STOP_GRACE`] for a clean exit, then SIGKILL; says so when it came to that.
async fn stop(process: &mut Process) {
    match process.stop(STOP_GRACE).await {
        Stopped::Exited(_) => {}
        Stopped::Killed => output::note(&format!(
            "{} did not stop within {} of SIGTERM; killed it",
            process.name(),
            output::duration(STOP_GRACE)
        )),
        Stopped::Failed(err) => output::note(&format!("cannot stop {}: {err}", process.name())),
    }
}

async fn stop_all(engines: &mut [Process], workers: &mut [(Process, String, &'static str)]) {
    for (worker, _, _) in workers.iter_mut() {
        stop(worker).await;
    }
    for engine in engines.iter_mut().rev() {
        stop(engine).await;
    }
}

/// Shows the last lines of a child's log on stderr, when its output went to a file.
fn show_log_tail(process: &Process) {
    let Some(log) = process.log() else { return };
    match shop_supervisor::tail_lines(log, LOG_TAIL_LINES, LOG_TAIL_BYTES) {
        Ok(tail) if !tail.is_empty() => {
            output::note(&format!("--- last lines of {} ---", log.display()));
            output::note(&tail);
        }
        Ok(_) => {}
        Err(err) => output::note(&format!("cannot read {}: {err}", log.display())),
    }
}

/// The engine and worker binaries live beside `shopctl` (cargo builds them into one
/// directory, and an install puts them side by side).
fn sibling_binary(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find where shopctl is installed")?;
    let dir = me.parent().ok_or_else(|| anyhow!("{} has no parent directory", me.display()))?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        return Err(anyhow!(
            "{name} not found in {} (next to shopctl): build the workspace with `cargo build`",
            dir.display()
        ));
    }
    Ok(path)
}

/// Picks the definitions directory: the one given, else `./workflows`, else the embedded
/// order definition written to `<data-dir>/workflows`.
fn workflows_dir(given: Option<&Path>, data_dir: &Path) -> Result<PathBuf> {
    if let Some(dir) = given {
        if !dir.is_dir() {
            return Err(anyhow!("--workflows {} is not a directory", dir.display()));
        }
        return Ok(dir.to_owned());
    }
    let local = Path::new("workflows");
    if local.is_dir() {
        return std::path::absolute(local).context("cannot resolve ./workflows");
    }
    write_embedded_definition(data_dir)
}

/// Writes the order definition built into `shopctl` to `<data-dir>/workflows/order.toml`,
/// every time, so the directory always holds the definition this build was made with.
fn write_embedded_definition(data_dir: &Path) -> Result<PathBuf> {
    let dir = data_dir.join("workflows");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in EMBEDDED_DEFINITIONS {
        let file = dir.join(name);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(dir)
}

/// A loopback address with a port that was free a moment ago. Another process may take it
/// before the child binds it; the child then fails to start and says so.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    shop_supervisor::free_loopback_addr().context("cannot pick a port")
}

/// Resolves when the user asks us to stop: Ctrl-C (SIGINT) or SIGTERM.
pub async fn interrupted() -> Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result.context("cannot listen for Ctrl-C")?;
            Ok("Ctrl-C")
        }
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_workflows_directory_must_exist() -> Result<()> {
        let data = tempfile::tempdir()?;
        let given = tempfile::tempdir()?;
        assert_eq!(workflows_dir(Some(given.path()), data.path())?, given.path());
        assert!(workflows_dir(Some(&data.path().join("missing")), data.path()).is_err());
        Ok(())
    }

    #[test]
    fn the_embedded_definition_lands_under_the_data_dir() -> Result<()> {
        let data = tempfile::tempdir()?;
        let dir = write_embedded_definition(data.path())?;
        assert_eq!(dir, data.path().join("workflows"));
        let text = std::fs::read_to_string(dir.join("order.toml"))?;
        assert!(text.contains("name = \"order\""));
        let v2 = std::fs::read_to_string(dir.join("order-v2.toml"))?;
        assert!(v2.contains("version = 2"));
        Ok(())
    }
}
