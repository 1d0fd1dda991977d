//! `shop-engine`: the engine's binary. Parses flags, sets up logging and signal handling, and
//! runs [`shop_engine::serve`]. All engine logic lives in the library.

use anyhow::Context;
use clap::Parser;
use shop_engine::auth::AuthOptions;
use shop_engine::core::Limits;
use shop_engine::rate_limit::{RateLimit, RateSetting};
use shop_engine::server;
use shop_engine::store::{Durability, PostgresOptions};
use shop_engine::EngineOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod parent;

/// sled copies B-tree nodes on every write and the HTTP path allocates per request; mimalloc
/// serves these many small, short-lived allocations with less CPU than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shop-engine",
    version,
    about = "Durable workflow engine: histories in sled, task queues, timers, HTTP API",
    // A flag given twice takes its last value, so a wrapper's defaults can be overridden.
    args_override_self = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where the history store lives (created if missing), with the engine's local files
    /// (such as the admin token) when `--store` names PostgreSQL.
    #[arg(long, default_value = "./shop-data/engine")]
    data_dir: PathBuf,
    /// Keep histories in PostgreSQL (`postgres://user@host:port/db`) instead of sled in
    /// `--data-dir`. The schema is migrated at start; this engine joins the cluster of every
    /// engine on that database and owns the shards placement gives it, under leases.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The cluster's shard count, fixed when the first engine creates it (default 16); a
    /// count other than the stored one is refused. PostgreSQL only.
    #[arg(long, requires = "store")]
    shards: Option<u32>,
    /// This node's id in the cluster (letters, digits, `-_.`; default
    /// `<hostname>-<pid>-<random>`). PostgreSQL only.
    #[arg(long, requires = "store")]
    node_id: Option<String>,
    /// Where other nodes and workers reach this node's API (default `http://<--listen>`).
    #[arg(long, requires = "store")]
    advertise_url: Option<String>,
    /// How long a shard lease lasts without renewal (renewed every second): a dead node's
    /// shards move after about this long. PostgreSQL only.
    #[arg(long, requires = "store", default_value_t = shop_engine::cluster::lease::DEFAULT_LEASE_DURATION.as_millis() as u64)]
    lease_ms: u64,
    /// Address of the HTTP API. Binds to loopback unless told otherwise; any other address
    /// requires authentication (`--open` is refused there).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder of workflow definitions (`*.toml`) to load and register at start.
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// What a commit must survive before it is acknowledged.
    #[arg(long, value_enum, default_value_t = Durability::PowerSafe)]
    durability: Durability,
    /// Events one run's history may hold; the run fails rather than exceed it.
    #[arg(long, default_value_t = shop_types::limits::DEFAULT_MAX_HISTORY_EVENTS)]
    max_history_events: u64,
    /// Runs in flight at most; starts beyond it get 503.
    #[arg(long, default_value_t = Limits::default().max_active_workflows)]
    max_active_workflows: usize,
    /// Waiting reads (`?wait=`) at once at most, over all callers; beyond it 503.
    #[arg(long, default_value_t = Limits::default().max_watchers)]
    max_watchers: usize,
    /// Waiting reads one caller (credential, or client IP when open) may hold at once;
    /// beyond it 429 TOO_MANY_WAITS.
    #[arg(long, default_value_t = Limits::default().max_waits_per_caller)]
    max_waits_per_caller: usize,
    /// Event streams (SSE: `/v1/events`, `/v1/workflows/{id}/events`) open at once at most;
    /// beyond it 503.
    #[arg(long, default_value_t = shop_engine::streams::MAX_STREAM_SUBSCRIBERS)]
    max_stream_subscribers: usize,
    /// Workers' task streams (`GET /v1/tasks/stream`, one per worker process) open at once
    /// at most; beyond it the upgrade is refused with 503 OVERLOADED.
    #[arg(long, default_value_t = shop_engine::api::task_stream::MAX_TASK_STREAMS)]
    max_task_streams: usize,
    /// Accept every request without a credential. Only on a loopback `--listen`; for
    /// `shopctl dev`, `demo`, `bench` and tests.
    #[arg(long)]
    open: bool,
    /// An admin token: read from this file, or created in it (mode 0600) if it does not
    /// exist, so the first admin can create the other tokens.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// A file holding the HS256 key of accepted JWTs (claims: `role`, `queues`, `exp`).
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,
    /// Mark the console's session cookie `Secure`: set it when the engine is served behind TLS
    /// (a proxy that terminates https), so the browser never sends the session in clear.
    #[arg(long)]
    console_secure_cookie: bool,
    /// A worker's admin API (its base URL), read by the console to show an order's stock,
    /// payments and notifications beside its run, with the engine's admin token. Repeatable.
    #[arg(long, value_name = "URL")]
    worker_admin: Vec<String>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g. `http://127.0.0.1:4318`
    /// (`/v1/traces` is appended when missing). Without it no span is exported.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Requests per credential (per client IP when open): `N/s`, `N/m`, `N/h` or `off`.
    /// Worker credentials are exempt.
    #[arg(long, default_value = "1000/s")]
    rate_limit: RateSetting,
    /// Requests a caller may make at once above the rate; default: one period's worth.
    #[arg(long)]
    rate_burst: Option<u32>,
    /// Bound of sled's page cache in MiB. In-flight runs are the working set, so a small
    /// cache keeps memory flat however many finished runs the store holds.
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
    /// Below this much free space (MiB) on the store's disk, writes are refused with 503
    /// DISK_FULL and nothing is recorded, until space is freed.
    #[arg(long, default_value_t = 64)]
    min_free_disk_mb: u64,
    /// Failed credentials a client address may present per minute; past it, each further
    /// failed one gets 429 (valid credentials still pass). 0 turns the throttle off.
    #[arg(long, default_value_t = shop_engine::rate_limit::DEFAULT_MAX_AUTH_FAILURES)]
    max_auth_failures: u32,
    /// How long a connection may take to send a request head, and may sit idle between
    /// requests (one timer in hyper), before it is closed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    head_timeout: Duration,
    /// How long a request body may take to arrive once its head has; then 408.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    body_timeout: Duration,
    /// Connections open at once; lowered to fit the open-files limit. Over it, the
    /// connection idle the longest is closed for the newcomer, or the newcomer is closed.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// After SIGTERM, how long requests in flight may take to finish before the remaining
    /// connections are closed and the engine exits.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// Threads of the async runtime that serves HTTP (default: one per two cores, at least
    /// one): the core, the syncer and the log's applier run on threads of their own, and the
    /// default deployment shares the machine with a worker.
    #[arg(long, env = "SHOP_ASYNC_THREADS")]
    async_threads: Option<std::num::NonZeroUsize>,
    /// Benchmarks only: write this many completed order runs into the store before serving.
    #[arg(long, default_value_t = 0)]
    preload_completed: u64,
    /// Shut down gracefully (as on SIGTERM) when stdin reaches EOF: for supervisors that
    /// spawn the engine with a piped stdin, so it ends with them however they end.
    #[arg(long)]
    exit_with_parent: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Apply the PostgreSQL schema's migrations and exit (the engine also does at start).
    Migrate {
        /// The database: `postgres://user@host:port/db`.
        #[arg(long, value_name = "URL")]
        store: String,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = shop_durable::runtime::build(args.async_threads)
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The one line a script or a person reads (every cause, outermost first), not a
            // backtrace: a failed start is an answer, not a crash.
            eprintln!("shop-engine: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Some(Command::Migrate { store }) = &args.command {
        let version = shop_engine::store::postgres::migrate(store).context("migrate")?;
        println!("schema at version {version}");
        return Ok(());
    }
    let open_files = server::raise_open_files_limit();
    let max_connections = server::effective_max_connections(args.max_connections, open_files);
    if max_connections < args.max_connections {
        tracing::warn!(
            requested = args.max_connections,
            max_connections,
            open_files,
            "--max-connections lowered to fit the open-files limit"
        );
    }
    let workflows = args.workflows.or_else(|| {
        let default = PathBuf::from("workflows");
        default.is_dir().then_some(default)
    });
    let options = EngineOptions {
        data_dir: args.data_dir,
        store: args.store.map(|url| PostgresOptions { url, shards: args.shards }),
        listen: args.listen,
        workflows_dir: workflows,
        durability: args.durability,
        limits: Limits {
            max_history_events: args.max_history_events,
            max_active_workflows: args.max_active_workflows,
            max_watchers: args.max_watchers,
            max_waits_per_caller: args.max_waits_per_caller,
            ..Limits::default()
        },
        auth: AuthOptions {
            open: args.open,
            admin_token_file: args.admin_token_file,
            jwt_secret_file: args.jwt_secret_file,
        },
        rate_limit: match args.rate_limit {
            RateSetting::Off => None,
            RateSetting::Every { count, period } => {
                Some(RateLimit::new(count, period, args.rate_burst.unwrap_or(count)))
            }
        },
        cache_bytes: Some(args.cache_mb.saturating_mul(1024 * 1024)),
        preload_completed: args.preload_completed,
        min_free_disk_bytes: args.min_free_disk_mb.saturating_mul(1024 * 1024),
        max_auth_failures: args.max_auth_failures,
        console_secure_cookie: args.console_secure_cookie,
        max_stream_subscribers: args.max_stream_subscribers,
        max_task_streams: args.max_task_streams,
        worker_admin: args.worker_admin,
        otlp_endpoint: args.otlp_endpoint,
        cluster: shop_engine::cluster::ClusterOptions {
            node_id: args.node_id,
            advertise_url: args.advertise_url,
            lease: Duration::from_millis(args.lease_ms),
        },
        server: server::ServerOptions {
            head_timeout: args.head_timeout,
            body_timeout: args.body_timeout,
            max_connections,
            shutdown_grace: args.shutdown_grace,
        },
    };
    let shutdown = parent::or_parent_gone(args.exit_with_parent, shutdown_signal());
    shop_engine::serve(options, shutdown).await.context("shop-engine stopped")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_flag_defaults_are_the_named_limits() {
        let args = Args::parse_from(["shop-engine"]);
        assert_eq!(args.head_timeout, server::DEFAULT_HEAD_TIMEOUT);
        assert_eq!(args.body_timeout, server::DEFAULT_BODY_TIMEOUT);
        assert_eq!(args.max_connections, server::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(args.shutdown_grace, server::DEFAULT_SHUTDOWN_GRACE);
    }
}
