//! shop-worker: the shop's activity workers. Inventory, payment and notification each own
//! their data in their own tree of the process's one sled store under the data dir (one log,
//! one sync for all of them); risk and echo are stateless. The process
//! takes tasks from the engine on the queues of the domains it serves (one task stream per
//! engine node, or long-poll loops with `--protocol poll`), runs them, and
//! reports their outcomes; it also serves a small admin API to inspect and seed its data and
//! to inject faults, which only the engine's admins may use (see [`admin_auth`]) unless the
//! worker runs `--open` on loopback.
//!
//! Architecture invariants:
//! - nothing is reported to the engine, or answered on the admin API, before it is flushed;
//! - every activity is idempotent: a retried attempt finds its idempotency record and
//!   changes nothing;
//! - one process owns a domain's store; a second one fails to open it and exits;
//! - the engine being down never crashes the worker: it backs off and retries;
//! - the admin API answers nobody without an admin credential of the engine, unless `--open`,
//!   which is refused off loopback before anything is opened.
//!
//! `run` is the whole process minus argument parsing and logging setup, so tests can start
//! a worker in-process.

pub mod activities;
pub mod admin;
pub mod admin_auth;
pub mod credential_cache;
pub mod engine_client;
pub mod faults;
pub mod inventory;
pub mod metrics;
pub mod nodes;
pub mod notification;
pub mod notify_ws;
pub mod payment;
pub mod poller;
pub mod risk;
pub mod shutdown;
pub mod store;
pub mod stream;
pub mod trace;

use activities::{Activities, Domain};
use inventory::Inventory;
use notification::Notification;
use payment::Payment;
use shop_types::order::FaultConfig;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Most poll loops per queue: each holds up to `TASKS_PER_POLL` tasks in flight.
pub const MAX_CONCURRENCY: usize = 64;
/// Longest host name kept in the worker id: with `-{pid}` (at most 11 bytes) it stays
/// within `shop_types::limits::MAX_ID_LEN`, which the engine enforces on worker ids.
const MAX_HOST_CHARS: usize = 100;
const _: () = assert!(MAX_HOST_CHARS + 11 <= shop_types::limits::MAX_ID_LEN);
/// Poll loops per queue when not told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// How the worker takes tasks from each engine node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// One task stream (`GET /v1/tasks/stream`, a WebSocket) per node: tasks by credit,
    /// reports and heartbeats batched back ([`stream`]).
    #[default]
    Stream,
    /// `concurrency` long-poll loops per queue per node ([`poller`]): for engines without
    /// the stream, and as a fallback.
    Poll,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "stream" => Ok(Protocol::Stream),
            "poll" => Ok(Protocol::Poll),
            other => Err(format!("unknown protocol {other:?}: stream or poll")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Stream => "stream",
            Protocol::Poll => "poll",
        })
    }
}

/// What `run` needs to start a worker.
#[derive(Debug, Clone)]
pub struct Options {
    pub engine: reqwest::Url,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The domains to serve; duplicates are ignored.
    pub domains: Vec<Domain>,
    /// Poll loops per queue, 1..=`MAX_CONCURRENCY` (with the stream: its slots per queue
    /// are as many as those loops would hold).
    pub concurrency: usize,
    /// How tasks are taken from the engine.
    pub protocol: Protocol,
    pub faults: FaultConfig,
    /// What each store flush must survive before an effect is reported.
    pub durability: store::Durability,
    /// Sent to the engine as `Authorization: Bearer`; `None` for an engine running open.
    pub token: Option<shop_types::auth::BearerToken>,
    /// Serve the admin API without authentication; refused unless `listen` is loopback.
    pub open: bool,
    /// Where attempt spans go (OTLP/HTTP, `--otlp-endpoint`); without it nothing is exported.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("invalid fault settings")]
    Faults(#[from] faults::Error),
    #[error("the {domain} store failed")]
    Store {
        domain: Domain,
        #[source]
        source: store::Error,
    },
    #[error("the worker's store failed")]
    WorkerStore(#[source] store::Error),
    #[error("cannot set up the engine client")]
    Client(#[from] engine_client::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin API failed")]
    Serve(#[source] std::io::Error),
    #[error("the admin API task panicked")]
    ServePanicked(#[source] tokio::task::JoinError),
    #[error(
        "--open serves the admin API (stock, payments, faults) without a credential and is refused on {0}, \
         which is not a loopback address: listen on 127.0.0.1 (or ::1), or drop --open and use an admin \
         token of the engine"
    )]
    OpenNotLoopback(SocketAddr),
    #[error("cannot set up the admin API's authentication")]
    AdminAuth(#[from] admin_auth::Error),
    #[error("cannot set up the notification WebSocket")]
    NotifyWs(#[from] notify_ws::Error),
    #[error("cannot set up tracing")]
    Tracing(#[from] shop_telemetry::Error),
}

/// Displays an error with its whole `source()` chain on one line, for logs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// Runs the worker until `signal` completes, then shuts down gracefully: stops polling,
/// lets in-flight tasks finish (or abandons them after a grace period), stops the admin
/// API, and flushes the store.
pub async fn run(options: Options, signal: impl Future<Output = ()>) -> Result<(), Error> {
    // Checked before anything is opened: an admin API reachable from other hosts must never
    // answer without authentication, not even for a moment.
    if options.open && !options.listen.ip().is_loopback() {
        return Err(Error::OpenNotLoopback(options.listen));
    }
    if !(1..=MAX_CONCURRENCY).contains(&options.concurrency) {
        return Err(Error::Options(format!("concurrency must be 1..={MAX_CONCURRENCY}, got {}", options.concurrency)));
    }
    if options.domains.is_empty() {
        return Err(Error::Options("no activities to serve".to_owned()));
    }
    let faults = Arc::new(faults::Faults::new(options.faults.clone())?);
    let worker_store = open_store(&options)?;
    let inventory = open_domain(&options, worker_store.as_ref(), Domain::Inventory, Inventory::open)?;
    let payment = open_domain(&options, worker_store.as_ref(), Domain::Payment, Payment::open)?;
    let notification = open_domain(&options, worker_store.as_ref(), Domain::Notification, Notification::open)?;
    // Each domain holds its tree and the shared flusher; the store itself is closed when
    // the last of them is dropped.
    drop(worker_store);
    let activities = Arc::new(Activities {
        inventory,
        payment,
        notification,
        risk: options.domains.contains(&Domain::Risk),
        echo: options.domains.contains(&Domain::Echo),
        faults,
    });
    let client = engine_client::EngineClient::new(&options.engine, options.token.as_ref())?;
    let admin_auth =
        if options.open { admin_auth::AdminAuth::Open } else { admin_auth::AdminAuth::engine(&options.engine)? };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Listen { addr: options.listen, source })?;
    let admin_addr = listener.local_addr().unwrap_or(options.listen);

    let (trigger, shutdown) = shutdown::channel();
    let sockets = notify_ws::Sockets::new(
        activities.notification.clone(),
        &options.engine,
        options.token.as_ref(),
        shutdown.clone(),
    )?;
    let app = notify_ws::with_route(admin::router(Arc::clone(&activities), admin_auth), sockets);
    let mut server =
        tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().wait_owned()).into_future());

    let tracer = shop_telemetry::Tracer::from_endpoint(options.otlp_endpoint.as_deref(), "shop-worker")?;
    let worker_id = worker_id().map_err(|e| Error::Options(format!("worker id: {e}")))?;
    // One set of poll loops per live engine node (one node on sled), refreshed as nodes come
    // and go (`nodes`).
    let loops = nodes::Loops {
        activities: Arc::clone(&activities),
        queues: activities.domains().iter().map(|domain| domain.queue()).collect(),
        concurrency: options.concurrency,
        worker_id: worker_id.clone(),
        tracer: tracer.clone(),
        protocol: options.protocol,
        token: options.token.clone(),
    };
    let pollers = tokio::spawn(nodes::run(client, loops, shutdown.clone()));
    tracing::info!(
        engine = %options.engine,
        admin = %admin_addr,
        worker_id = %worker_id,
        activities = ?activities.domains(),
        concurrency = options.concurrency,
        protocol = %options.protocol,
        "shop-worker started"
    );
    if options.open {
        tracing::warn!("**************************************************************");
        tracing::warn!("admin API OPEN: no authentication; loopback only ({admin_addr})");
        tracing::warn!("**************************************************************");
    } else {
        tracing::info!("admin API: admin credentials of the engine only");
    }

    let server_result = tokio::select! {
        () = signal => {
            tracing::info!("shutting down: no new tasks; finishing in-flight ones");
            None
        }
        ended = &mut server => Some(ended),
    };
    trigger.fire();
    if let Err(err) = pollers.await {
        tracing::error!(error = %err, "the poll loops' supervisor panicked");
    }
    let server_result = match server_result {
        Some(ended) => ended,
        None => server.await,
    };
    let flushed = flush_all(&activities).await;
    // The spans still queued go out before the process ends (bounded by the export timeout).
    tokio::task::spawn_blocking(move || tracer.shutdown()).await.ok();
    match server_result {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(Error::Serve(err)),
        Err(err) => return Err(Error::ServePanicked(err)),
    }
    flushed?;
    tracing::info!("shop-worker stopped");
    Ok(())
}

/// Opens the process's one store under the data dir, when a domain with data is served
/// (risk and echo keep none).
fn open_store(options: &Options) -> Result<Option<store::WorkerStore>, Error> {
    if !options.domains.iter().any(|domain| domain.has_store()) {
        return Ok(None);
    }
    store::WorkerStore::open(&options.data_dir, options.durability).map(Some).map_err(Error::WorkerStore)
}

/// Opens `domain`'s tree of the process's store and loads it, when the domain is served.
fn open_domain<T>(
    options: &Options,
    worker_store: Option<&store::WorkerStore>,
    domain: Domain,
    load: impl FnOnce(store::DomainStore) -> Result<T, store::Error>,
) -> Result<Option<Arc<T>>, Error> {
    let Some(worker_store) = worker_store.filter(|_| options.domains.contains(&domain)) else {
        return Ok(None);
    };
    worker_store
        .domain(domain.as_str())
        .and_then(load)
        .map(|loaded| Some(Arc::new(loaded)))
        .map_err(|source| Error::Store { domain, source })
}

/// Flushes every store; reports the first failure after trying them all.
async fn flush_all(activities: &Activities) -> Result<(), Error> {
    let mut first_failure = None;
    let mut note = |domain: Domain, result: Result<(), store::Error>| {
        if let Err(source) = result {
            tracing::error!(%domain, error = %ErrorChain(&source), "final flush failed");
            first_failure.get_or_insert(Error::Store { domain, source });
        }
    };
    if let Some(inventory) = &activities.inventory {
        note(Domain::Inventory, inventory.flush().await);
    }
    if let Some(payment) = &activities.payment {
        note(Domain::Payment, payment.flush().await);
    }
    if let Some(outbox) = &activities.notification {
        note(Domain::Notification, outbox.flush().await);
    }
    first_failure.map_or(Ok(()), Err)
}

/// `{hostname}-{pid}`, or `worker-{pid}` when the host name cannot be read. The host part
/// keeps only ID characters (all one byte) and is cut so the whole id stays within the
/// engine's ID length limit.
fn worker_id() -> Result<shop_types::WorkerId, shop_types::IdError> {
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| {
            name.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
                .take(MAX_HOST_CHARS)
                .collect()
        })
        .filter(|name: &String| !name.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    shop_types::WorkerId::parse(format!("{host}-{}", std::process::id()))
}
