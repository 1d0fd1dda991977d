//! `shop-supervisor`: the one supervisor of `shop-engine` and `shop-worker` processes, used
//! by `shopctl dev`, `demo` and `bench` and by the end-to-end harness.
//!
//! It owns spawning a server with its flags ([`spec`]), readiness (the child's own
//! `/healthz` names its pid: another process answering on the port never counts), noticing a
//! child that exits during start-up (reported in one line, naming any impostor on its port),
//! signals (SIGKILL, SIGTERM, SIGSTOP, SIGCONT), stopping with a grace period, restarting on
//! the same data dir and address ([`Supervised`]), and log files and their tails.
//!
//! Every child runs `--exit-with-parent` with a piped stdin whose write end the [`Process`]
//! keeps: when the supervising process ends for any reason, SIGKILL included, the kernel
//! closes it and the child shuts down gracefully. Each child has its own process group, so
//! a Ctrl-C at the terminal reaches only the supervisor, which stops children in order. A
//! [`Process`] kills and reaps its child when dropped. This crate must never leave a child
//! running behind it, never call a child ready on the word of another process, and never
//! print: what to show of a log tail is the caller's choice.
//!
//! It is a crate of its own, not a module of `shop-client`, because the workers depend on
//! the client and must not compile process supervision (nor `rustix`) they never use.

mod process;
pub mod spec;

pub use process::{tail_bytes, tail_lines, Output, Process, Signal, Stopped};
pub use spec::{connect_url, free_loopback_addr, EngineSpec, Spec, WorkerSpec};

use shop_client::{Client, Options, Service};
use std::time::Duration;

/// Pause between two readiness probes of a starting child.
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a child may take to answer `/healthz` after it is spawned, unless the caller
/// says otherwise: an engine replays its store at start-up; a hung one must not block us.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The child exited, or did not become ready in time; the message is one line.
    #[error("{0}")]
    NotReady(String),
    /// The child exited during start-up while another process answered on its address:
    /// the port was taken between being chosen and the child binding it, or an earlier
    /// server still runs there. The message is one line.
    #[error("{0}")]
    AddressTaken(String),
    #[error("cannot send {signal:?} to {name}: {reason}")]
    Signal { name: String, signal: Signal, reason: String },
    #[error("{name} did not exit within {} of SIGTERM", human(*waited))]
    StillRunning { name: String, waited: Duration },
    #[error("cannot check on {name}: {source}")]
    Wait {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Client(#[from] shop_client::Error),
    #[error("{0} is not running")]
    NotRunning(String),
}

/// A server that can be killed and started again on the same data dir and address.
pub struct Supervised {
    spec: Spec,
    health: Client,
    process: Option<Process>,
}

impl Supervised {
    /// Spawns `spec` and waits (up to `timeout`) until it is ready.
    pub async fn start(spec: Spec, timeout: Duration) -> Result<Supervised, Error> {
        let service = if spec.name.contains("engine") { Service::Engine } else { Service::Worker };
        let health = Client::new(service, &spec.url, Options::default())?;
        let mut supervised = Supervised { spec, health, process: None };
        supervised.launch(timeout).await?;
        Ok(supervised)
    }

    async fn launch(&mut self, timeout: Duration) -> Result<(), Error> {
        let mut process = Process::spawn(&self.spec.name, &mut self.spec.command(), &self.spec.output)?;
        match process.wait_ready(&self.health, timeout).await {
            Ok(()) => {
                self.process = Some(process);
                Ok(())
            }
            Err(err) => {
                // Kept for its log tail and exit status; dropping it kills a hung child.
                self.process = Some(process);
                Err(err)
            }
        }
    }

    /// The base URL, stable across restarts.
    pub fn url(&self) -> &str {
        &self.spec.url
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    pub fn process_mut(&mut self) -> Option<&mut Process> {
        self.process.as_mut()
    }

    /// kill -9 and reap: the child gets no chance to flush or answer.
    pub fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill9();
        }
    }

    /// Kills the child (if any) and starts it again on the same data dir and address, with
    /// the same flags, appending to the same log.
    pub async fn restart(&mut self, timeout: Duration) -> Result<(), Error> {
        self.kill9();
        self.spec.output = self.spec.output.appending();
        self.launch(timeout).await
    }

    /// SIGTERM, then waits up to `deadline` for the child to exit by itself (its store is
    /// then closed); the child is gone afterwards either way (killed past the deadline).
    pub async fn terminate(&mut self, deadline: Duration) -> Result<std::process::ExitStatus, Error> {
        let mut process = self.process.take().ok_or_else(|| Error::NotRunning(self.spec.name.clone()))?;
        process.terminate(deadline).await
    }

    /// SIGTERM, up to `grace` for a clean exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Option<Stopped> {
        let mut process = self.process.take()?;
        Some(process.stop(grace).await)
    }
}

/// `30s`, `1.5s` or `200ms`: how the supervisor's messages show a duration.
pub fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if duration.subsec_millis() == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}
