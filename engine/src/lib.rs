//! shop-engine: a durable workflow engine.
//!
//! It persists every run's history in sled, decides each next step from that history with a
//! pure decider, dispatches activity attempts to workers through long-polled task queues,
//! keeps durable timers for backoff and timeouts, and serves an HTTP API. It knows
//! workflows, steps, activities, queues and timers, and nothing about orders beyond the thin
//! seed-compatible order API in `api::orders`.
//!
//! Every request but `/healthz` and `/readyz` needs a credential (an API token or a JWT)
//! unless the engine runs `--open`, which it only does on a loopback address.
//!
//! Start-up: open the store, load and register definitions, replay in-flight runs, start the
//! core thread, serve HTTP (`server`). Shutdown: stop accepting, release waiting polls, drain
//! requests for up to the shutdown grace, close what is left, stop the core (which finishes
//! its last commit). A core thread that dies on its own ends the process (exit 70).

pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod console;
pub mod core;
pub mod decider;
pub mod definition;
pub mod disk;
pub mod log_rate;
pub mod metrics;
pub mod preload;
pub mod rate_limit;
pub mod redrive;
pub mod registry;
pub mod server;
pub mod state;
pub mod store;
pub mod stream_stats;
pub mod streams;
pub mod trace;
pub mod watch;
pub mod why;

use crate::auth::{AuthOptions, Authenticator};
use crate::core::{Core, Limits};
use crate::rate_limit::{FailureThrottle, RateLimit, RateLimiter};
use crate::registry::Registry;
use crate::store::{Durability, PostgresOptions, PostgresStore, SledStore, Store, WriteBatch};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    /// PostgreSQL to keep histories in; sled in `data_dir` when `None`.
    pub store: Option<PostgresOptions>,
    pub listen: SocketAddr,
    /// Definitions to load (every `*.toml`), if any.
    pub workflows_dir: Option<PathBuf>,
    pub durability: Durability,
    pub limits: Limits,
    pub auth: AuthOptions,
    /// Requests per caller; `None` turns limits off.
    pub rate_limit: Option<RateLimit>,
    /// Bound of sled's page cache; sled's default when `None`.
    pub cache_bytes: Option<u64>,
    /// Completed order runs to write into the store before serving (benchmarks only).
    pub preload_completed: u64,
    /// Below this much free space on the store's disk, writes are refused (503 DISK_FULL).
    pub min_free_disk_bytes: u64,
    /// Failed credentials per client address per minute before it gets 429; 0 turns it off.
    pub max_auth_failures: u32,
    /// Mark the console's session cookie `Secure` (served behind TLS).
    pub console_secure_cookie: bool,
    /// Connection limits and the shutdown deadline.
    pub server: server::ServerOptions,
    /// Event streams (SSE) open at once at most; beyond it 503 (`streams::MAX_STREAM_SUBSCRIBERS`).
    pub max_stream_subscribers: usize,
    /// Workers' task streams open at once at most (`--max-task-streams`); beyond it 503.
    pub max_task_streams: usize,
    /// Base URLs of the workers' admin APIs the console reads beside a run (`--worker-admin`).
    pub worker_admin: Vec<String>,
    /// Where spans go (OTLP/HTTP, `--otlp-endpoint`); without it nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// This node's identity and leases in a cluster (PostgreSQL).
    pub cluster: cluster::ClusterOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the data dir {dir}: {source}")]
    CreateDataDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot open the store in {dir}: {source}")]
    OpenStore { dir: PathBuf, source: store::Error },
    #[error("cannot open the PostgreSQL store: {0}")]
    OpenPostgres(store::Error),
    #[error(transparent)]
    Preload(#[from] preload::Error),
    #[error("--preload-completed works on sled only: a PostgreSQL node holds no shard before it claims one")]
    PreloadNeedsSled,
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot read workflow definitions in {dir}: {source}")]
    ReadDefinitions { dir: PathBuf, source: std::io::Error },
    #[error("invalid workflow definition {0}")]
    Definition(#[from] definition::DefinitionError),
    #[error("{file}: {source}")]
    VersionConflict { file: String, source: registry::VersionConflict },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the core thread could not start: {0}")]
    CoreThread(std::io::Error),
    #[error(
        "--open accepts every request without a credential and is refused on {0}, which is not a loopback \
         address: listen on 127.0.0.1 (or ::1), or drop --open and use tokens"
    )]
    OpenNotLoopback(SocketAddr),
    #[error("authentication setup failed: {0}")]
    Auth(#[from] auth::Error),
    #[error(transparent)]
    WorkerAdmin(#[from] console::WorkerAdminError),
    #[error("tracing: {0}")]
    Tracing(#[from] shop_telemetry::Error),
    #[error("cannot create the client that forwards requests to other nodes: {0}")]
    Forwarder(reqwest::Error),
    #[error(transparent)]
    Cluster(#[from] cluster::OptionsError),
}

/// Runs the engine until `shutdown` resolves.
pub async fn serve(
    options: EngineOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Checked before anything is opened: an engine reachable from other hosts must never
    // serve without authentication, not even for a moment.
    if options.auth.open && !options.listen.ip().is_loopback() {
        return Err(Error::OpenNotLoopback(options.listen));
    }
    options.cluster.check()?;
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|source| Error::CreateDataDir { dir: options.data_dir.clone(), source })?;
    // The one place that names a backend: everything else holds the trait.
    // On PostgreSQL the store holds no shard until the lease manager claims one.
    let (store, leases): (Arc<Store>, Option<store::PostgresLeases>) = match &options.store {
        Some(postgres) => {
            let store = Arc::new(PostgresStore::open(postgres).map_err(Error::OpenPostgres)?);
            let leases = store.leases();
            (store, Some(leases))
        }
        None => (
            Arc::new(
                SledStore::open(&options.data_dir, options.durability, options.cache_bytes)
                    .map_err(|source| Error::OpenStore { dir: options.data_dir.clone(), source })?,
            ),
            None,
        ),
    };
    let registry = Arc::new(RwLock::new(load_definitions(store.as_ref(), options.workflows_dir.as_deref())?));
    let clock: Arc<dyn clock::Clock> = Arc::new(clock::SystemClock);
    if options.preload_completed > 0 && options.store.is_some() {
        // Preloading numbers every run in one shard, as sled's one writer; a PostgreSQL node
        // holds no shard before its lease manager claims one.
        return Err(Error::PreloadNeedsSled);
    }
    if options.preload_completed > 0 {
        let order = registry.read().ok().and_then(|r| r.latest(shop_types::order::ORDER_WORKFLOW_TYPE));
        let order = order.ok_or(Error::Preload(preload::Error::Decider("no order definition is registered".into())))?;
        let written = preload::preload_completed(store.as_ref(), &order, options.preload_completed, clock.now_ms())?;
        tracing::info!(written, "preloaded completed runs");
    }
    let (mut core, handle) = Core::recover(store.clone(), registry.clone(), clock.clone(), options.limits)?;
    let auth = Arc::new(Authenticator::new(&options.auth, store.as_ref(), handle.clone(), clock.clone())?);
    if options.store.is_some() {
        // Other nodes create and revoke tokens in the same database: read them again often.
        let (auth, store) = (Arc::downgrade(&auth), Arc::downgrade(&store));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(auth::TOKEN_RELOAD_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // Weak: the task never keeps the store (and its connections) alive past shutdown.
                let (Some(auth), Some(store)) = (auth.upgrade(), store.upgrade()) else { break };
                if let Err(error) = auth.reload(store.as_ref()).await {
                    tracing::warn!(%error, "cannot read the stored tokens again; keeping the ones known");
                }
            }
        });
    }
    // The console reads the workers' admin APIs with the engine's own admin credential (its
    // admin token file's token), the one credential the workers accept for them.
    let admin_token = match (&options.auth.admin_token_file, options.worker_admin.is_empty()) {
        (Some(path), false) => Some(auth::admin_file_token(path)?),
        _ => None,
    };
    let worker_admins = Arc::new(console::WorkerAdmins::new(&options.worker_admin, admin_token.as_ref())?);
    // The stats follower subscribes before the core's first turn (overdue timers fire there), so it misses nothing.
    // It is also the one tracker of run start times: it observes run durations in `/metrics`.
    let metrics = Arc::new(metrics::Metrics::new(&handle.stats.metrics));
    let stream_stats = Arc::new(stream_stats::StreamStats::with_metrics(metrics.clone()));
    let (follower, subscription) = (stream_stats.clone(), handle.subscribe());
    tokio::spawn(async move { follower.follow(subscription).await });
    // So does the watch hub: waits are woken by what the stream says is committed.
    let watch = Arc::new(watch::WatchHub::new(options.limits.max_waits_per_caller, options.limits.max_watchers));
    let (follower, subscription) = (watch.clone(), handle.subscribe());
    tokio::spawn(async move { follower.follow(subscription).await });
    // And the metrics follower, for the same reason.
    let follower = metrics::follower::MetricsFollower::new(metrics.clone());
    let subscription = handle.subscribe();
    tokio::spawn(follower.follow(subscription));
    // And, with tracing on, the trace follower (attempt spans end when their report commits).
    let tracer = shop_telemetry::Tracer::from_endpoint(options.otlp_endpoint.as_deref(), "shop-engine")?;
    if tracer.is_on() {
        tokio::spawn(trace::follow(tracer.clone(), store.clone(), handle.subscribe()));
    }
    let streams = Arc::new(streams::StreamHub::new(options.max_stream_subscribers));
    let task_streams = Arc::new(api::task_stream::TaskStreams::new(options.max_task_streams));
    core.guard_disk(disk::DiskGuard::new(options.data_dir.clone(), options.min_free_disk_bytes));
    let lease_guard = Arc::new(cluster::lease::LeaseGuard::new(options.cluster.lease));
    if leases.is_some() {
        core.guard_leases(lease_guard.clone());
    }
    let lifecycle = Arc::new(api::Lifecycle::default());
    let core_lifecycle = lifecycle.clone();
    let core_thread = std::thread::Builder::new()
        .name("core".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.run()));
            core_lifecycle.core_stopped.store(true, Ordering::Relaxed);
            // The core returns only once every handle is gone, which happens only after a
            // shutdown; anything else leaves a server whose every command would get 503.
            if outcome.is_err() || !core_lifecycle.shutting_down.load(Ordering::Relaxed) {
                tracing::error!(panicked = outcome.is_err(), "the core thread died; exiting (70)");
                std::process::exit(70);
            }
        })
        .map_err(Error::CoreThread)?;
    // However `serve` returns from here on (an error binding the listener included), the
    // handles it drops stop the core on purpose: say so before they are dropped, which
    // happens after this guard is (locals drop in reverse order).
    let _stopping = MarkStopping(lifecycle.clone());

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Listen { addr: options.listen, source })?;
    let local = listener.local_addr().map_err(|source| Error::Listen { addr: options.listen, source })?;
    tracing::info!(listen = %local, data_dir = %options.data_dir.display(), postgres = options.store.is_some(), durability = options.durability.as_str(), "engine serving");
    if !options.auth.open && options.auth.admin_token_file.is_none() && options.auth.jwt_secret_file.is_none() {
        tracing::warn!(
            "no --admin-token-file or --jwt-secret-file: only tokens created before are accepted; \
             start with --admin-token-file PATH to get an admin token"
        );
    }
    if options.auth.open {
        tracing::warn!("**************************************************************");
        tracing::warn!("running OPEN: no authentication; loopback only ({local})");
        tracing::warn!("**************************************************************");
    }
    tracing::info!(
        max_connections = options.server.max_connections,
        head_timeout = ?options.server.head_timeout,
        body_timeout = ?options.server.body_timeout,
        "connection limits"
    );
    match options.rate_limit {
        Some(limit) => tracing::info!(%limit, "rate limit per caller (worker credentials are exempt)"),
        None => tracing::info!("rate limits are off"),
    }

    let redrives =
        redrive::Redrives::load(handle.clone(), store.clone(), clock.clone(), tracer.clone()).map_err(Error::Store)?;
    let node = options.cluster.node_id.clone().unwrap_or_else(cluster::default_node_id);
    let url = options.cluster.advertise_url.clone().unwrap_or_else(|| format!("http://{local}"));
    // One engine on sled is a cluster of one node owning its one shard; on PostgreSQL the
    // lease manager claims shards and keeps the map.
    let (cluster, leaving) = match leases {
        Some(db) => {
            let cluster = Arc::new(cluster::Cluster::leased(node.clone(), "postgres", store.shard_count()));
            let options = cluster::lease::LeaseOptions { node: node.clone(), url, lease: options.cluster.lease };
            let mut manager =
                cluster::lease::LeaseManager::new(db, handle.clone(), cluster.clone(), lease_guard, options);
            // One round before serving: a node alone (or the first of a cluster) takes its
            // shards before its first request, instead of refusing it as not owned.
            if let Err(error) = manager.tick().await {
                tracing::warn!(%error, "the first lease round failed; retrying in the background");
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(manager.run(async move {
                // A dropped sender (serve returning early) stops it too.
                let _ = stopped.await;
            }));
            tracing::info!(%node, "joined the cluster; claiming shards as placement gives them");
            (cluster, Some((stop, task)))
        }
        None => (Arc::new(cluster::Cluster::single(node, url)), None),
    };
    let forwarder = Arc::new(api::forward::http::Forwarder::new(cluster.node()).map_err(Error::Forwarder)?);
    let app = api::app(api::AppState::new(api::AppParts {
        core: handle.clone(),
        cluster,
        forwarder,
        store,
        registry,
        durability: options.durability,
        auth,
        rate_limiter: options.rate_limit.map(|limit| Arc::new(RateLimiter::new(limit))),
        auth_failures: Arc::new(FailureThrottle::new(options.max_auth_failures)),
        lifecycle: lifecycle.clone(),
        clock,
        stream_stats,
        watch: watch.clone(),
        sessions: Arc::new(console::Sessions::new(options.console_secure_cookie)),
        streams: streams.clone(),
        metrics,
        worker_admins,
        redrives,
        tracer: tracer.clone(),
        task_streams: task_streams.clone(),
    }));
    let shutdown_handle = handle.clone();
    let shutdown = async move {
        shutdown.await;
        lifecycle.shutting_down.store(true, Ordering::Relaxed);
        // Hand every shard off first (each made durable, then released), so other nodes
        // take them over at once rather than after the lease expires.
        if let Some((stop, task)) = leaving {
            let _ = stop.send(());
            let _ = task.await;
        }
        tracing::info!(grace = ?options.server.shutdown_grace, "shutting down: releasing long polls and draining requests");
        // Long polls and waits would otherwise hold the drain open for up to a minute.
        shutdown_handle.shutdown().await;
        watch.shutdown();
        streams.shutdown();
        task_streams.shutdown();
    };
    server::run(listener, app, options.server, shutdown).await;
    drop(handle);
    // Every connection, and with it every clone of the app's state (and so of the core's
    // handle), is gone once `run` returns; the core then sees its channel close, finishes its
    // turn and stops.
    tokio::task::spawn_blocking(move || core_thread.join()).await.ok();
    // The spans still queued go out before the process ends (bounded by the export timeout).
    tokio::task::spawn_blocking(move || tracer.shutdown()).await.ok();
    tracing::info!("engine stopped");
    Ok(())
}

/// Marks the engine as shutting down when dropped.
struct MarkStopping(Arc<api::Lifecycle>);

impl Drop for MarkStopping {
    fn drop(&mut self) {
        self.0.shutting_down.store(true, Ordering::Relaxed);
    }
}

/// Loads the definitions registered before, then registers every file in `dir` that is new.
/// A file whose version is registered with different content is an error: runs are pinned to
/// versions, so a version never changes.
fn load_definitions(store: &Store, dir: Option<&Path>) -> Result<Registry, Error> {
    let mut registry = Registry::default();
    for (name, version, source) in store.definitions()? {
        let definition = definition::parse(&format!("stored definition {name} v{version}"), &source)?;
        registry.insert(definition).map_err(|source| Error::VersionConflict { file: name.clone(), source })?;
    }
    let Some(dir) = dir else {
        return Ok(registry);
    };
    let read_error = |source| Error::ReadDefinitions { dir: dir.to_owned(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    let mut batch = WriteBatch::default();
    for file in files {
        let label = file.display().to_string();
        let source = std::fs::read_to_string(&file).map_err(read_error)?;
        let definition = definition::parse(&label, &source)?;
        let (name, version) = (definition.name.clone(), definition.version);
        let added =
            registry.insert(definition).map_err(|source| Error::VersionConflict { file: label.clone(), source })?;
        if added {
            batch.put_definition(name.as_str(), version, &source)?;
            tracing::info!(file = %label, %name, version, "registered definition");
        }
    }
    if !batch.is_empty() {
        store.commit(batch)?;
    }
    Ok(registry)
}
