//! The `shop-worker` binary: parses flags, sets up logging to stderr, and runs the worker
//! until Ctrl-C or SIGTERM. All behaviour lives in the library; this file only translates
//! the command line and turns a failure into a one-line reason and a non-zero exit.

use anyhow::Context;
use clap::Parser;
use shop_types::order::FaultConfig;
use shop_worker::activities::Domain;
use shop_worker::{Options, Protocol, DEFAULT_CONCURRENCY, MAX_CONCURRENCY};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Every activity writes sled (which copies B-tree nodes) and parses JSON; mimalloc serves
/// these many small, short-lived allocations with less CPU than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shop's activity worker: inventory, payment and notification, each owning its data.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The engine's base URL.
    #[arg(long, env = "SHOP_ENGINE", default_value = "http://127.0.0.1:8080")]
    engine: reqwest::Url,
    /// The engine credential: a worker token (or JWT) naming the queues this worker serves.
    /// Not needed when the engine runs `--open`.
    #[arg(long, env = "SHOP_WORKER_TOKEN", hide_env_values = true)]
    token: Option<shop_types::auth::BearerToken>,
    /// Where each domain keeps its store (DIR/inventory, DIR/payment, DIR/notification).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of this worker's admin API. Every route but `/healthz` needs an admin
    /// credential of the engine (checked by asking the engine), unless `--open`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Serve the admin API without authentication. Only on a loopback `--listen`; for
    /// `shopctl dev`, `demo`, `bench` and tests.
    #[arg(long)]
    open: bool,
    /// Shut down gracefully (as on SIGTERM) when stdin reaches EOF: for supervisors that
    /// spawn the worker with a piped stdin, so it ends with them however they end.
    #[arg(long)]
    exit_with_parent: bool,
    /// Comma-separated activity groups to serve: inventory, payment, notification, risk, echo.
    #[arg(long, value_delimiter = ',', default_value = "inventory,payment,notification,risk")]
    activities: Vec<Domain>,
    /// Threads of the async runtime that runs activities and the admin API (default: one per
    /// two cores, at least one; the store's flusher and log applier run on threads of their
    /// own).
    #[arg(long, env = "SHOP_ASYNC_THREADS")]
    async_threads: Option<std::num::NonZeroUsize>,
    /// Poll loops per queue; each runs up to 16 tasks at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=MAX_CONCURRENCY as i64))]
    concurrency: u16,
    /// How tasks are taken from each engine node: `stream` (one WebSocket per node, tasks
    /// by credit, batched reports) or `poll` (`--concurrency` long-poll loops per queue).
    #[arg(long, default_value_t = Protocol::Stream)]
    protocol: Protocol,
    /// What each flush of a domain's store must survive before its effect is reported.
    #[arg(long, value_enum, default_value_t = shop_worker::store::Durability::PowerSafe)]
    durability: shop_worker::store::Durability,
    /// Fail the next N payment.charge calls with a retryable error.
    #[arg(long, default_value_t = 0)]
    payment_fail_next: u32,
    /// Probability (0..=1) that a payment.charge call fails with a retryable error.
    #[arg(long, default_value_t = 0.0)]
    payment_failure_rate: f64,
    /// Latency added to every activity, e.g. "50ms".
    #[arg(long)]
    latency: Option<humantime::Duration>,
    /// Make the next N payment.charge calls hang for --payment-hang before doing the work.
    #[arg(long, default_value_t = 0, requires = "payment_hang")]
    payment_hang_next: u32,
    /// How long a hanging payment.charge call sleeps, e.g. "15s".
    #[arg(long)]
    payment_hang: Option<humantime::Duration>,
    /// Make the next N payment.charge calls hang for --payment-hang after charging, before
    /// reporting.
    #[arg(long, default_value_t = 0, requires = "payment_hang")]
    payment_hang_after_next: u32,
    /// Fail the next N payment.refund calls with a retryable error.
    #[arg(long, default_value_t = 0)]
    refund_fail_next: u32,
    /// Make inventory.reserve panic for orders shipped to this address (a poison pill).
    #[arg(long)]
    poison_address: Option<String>,
    /// Export each attempt's span over OTLP/HTTP (protobuf) to this collector, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is appended when missing). Without it no span
    /// is exported.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

fn millis(duration: Option<humantime::Duration>) -> anyhow::Result<u64> {
    let duration: Duration = duration.map_or(Duration::ZERO, Into::into);
    u64::try_from(duration.as_millis()).context("duration too long")
}

impl Args {
    fn into_options(self) -> anyhow::Result<Options> {
        let faults = FaultConfig {
            payment_fail_next: self.payment_fail_next,
            payment_failure_rate: self.payment_failure_rate,
            latency_ms: millis(self.latency).context("--latency")?,
            payment_hang_next: self.payment_hang_next,
            payment_hang_ms: millis(self.payment_hang).context("--payment-hang")?,
            payment_hang_after_next: self.payment_hang_after_next,
            refund_fail_next: self.refund_fail_next,
            poison_address: self.poison_address,
        };
        Ok(Options {
            engine: self.engine,
            data_dir: self.data_dir,
            listen: self.listen,
            domains: self.activities,
            concurrency: usize::from(self.concurrency),
            protocol: self.protocol,
            durability: self.durability,
            faults,
            token: self.token,
            open: self.open,
            otlp_endpoint: self.otlp_endpoint,
        })
    }
}

/// Completes on Ctrl-C or SIGTERM. If a handler cannot be installed, the other one still
/// works, so that failure is logged rather than fatal.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Completes on Ctrl-C or SIGTERM or, when `exit_with_parent`, when stdin reaches EOF (the
/// supervisor holding its write end is gone): all three take the same graceful path.
async fn stop_requested(exit_with_parent: bool) {
    if !exit_with_parent {
        return shutdown_signal().await;
    }
    let (gone, parent_gone) = tokio::sync::oneshot::channel::<()>();
    if let Err(err) = shop_types::parent::on_eof(std::io::stdin(), move || {
        // The receiver is gone only when the worker is already shutting down.
        let _ = gone.send(());
    }) {
        tracing::error!(error = %err, "cannot watch stdin for --exit-with-parent; only signals stop the worker");
        return shutdown_signal().await;
    }
    tokio::select! {
        () = shutdown_signal() => {}
        _ = parent_gone => tracing::info!("stdin closed: the parent process is gone; shutting down (--exit-with-parent)"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let exit_with_parent = args.exit_with_parent;
    let options = args.into_options()?;
    let data_dir = options.data_dir.display().to_string();
    shop_worker::run(options, stop_requested(exit_with_parent))
        .await
        .with_context(|| format!("shop-worker (data dir {data_dir})"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = shop_durable::runtime::build(args.async_threads)
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The one line a script or a person reads: every cause, outermost first.
            eprintln!("shop-worker: {err:#}");
            ExitCode::FAILURE
        }
    }
}
