//! The engine's HTTP server: the accept loop, the connection cap, the connection-level
//! timeouts, and graceful shutdown with a deadline. `axum::serve` has none of these knobs,
//! so hyper's HTTP/1 connection is driven here directly (as tokio-rs/mini-redis drives its
//! own), and the API stays a plain [`axum::Router`] (`api::app`).
//!
//! It owns sockets and their lifetimes; it must never look into a request beyond what its
//! limits need (the API's own limits live in `api::edge`), and never drop a request in
//! flight before the shutdown deadline.
//!
//! What a client can hold, and for how long:
//! - a connection that sends no complete head (nothing, or half a request line) or sits idle
//!   between requests: [`ServerOptions::head_timeout`];
//! - a request whose body is not received: [`ServerOptions::body_timeout`], then 408;
//! - a request in flight (a long poll, a `?wait=` read): as long as the handler runs, which
//!   the API bounds itself (`MAX_WAIT_MS`);
//! - connections at once: [`ServerOptions::max_connections`]; a newcomer over the cap takes
//!   the place of the connection idle the longest, or is closed at once if none is idle.

mod body;
mod conn;

use axum::Router;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::log_rate::LogRate;

/// Default for `--head-timeout`: how long a connection may take to send a request head, and
/// how long it may sit idle between requests (hyper runs one timer for both). Long enough
/// for a client on a slow link and for clients that pool connections between requests;
/// short enough that a socket that says nothing does not hold a slot for minutes.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// Default for `--body-timeout`: how long a request body (at most `MAX_BODY_BYTES`, 256 KiB)
/// may take to arrive once its head has: that is 8 KiB/s at the largest size.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `--max-connections`: connections open at once. Each costs a file descriptor
/// and a few KiB; the cap is lowered to what the open-files limit allows (see
/// [`RESERVED_FDS`] and [`MAX_CLOSING`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// Default for `--shutdown-grace`: after SIGTERM, how long requests in flight may take to
/// finish before the remaining connections are closed and the process exits.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// File descriptors kept out of the connection cap for sled's files, the listener, logs and
/// the admin token file, so a full cap never makes the store fail to open a file.
pub const RESERVED_FDS: u64 = 128;
/// hyper's own bound on a request head (request line and all headers). It answers a bigger
/// head with a bare 431 before any service runs, so it is set well above the API's own head
/// limits (`api::edge`), which answer JSON 414/431.
pub const HYPER_MAX_HEAD_BYTES: usize = 128 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors), so a persistent error does
/// not spin the accept loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Evicted connections that may still be closing beyond the cap: the sockets the engine
/// holds are bounded by the cap plus this. Closing takes a moment, so this is only reached
/// by a flood of newcomers faster than the runtime can close the connections they evict.
pub const MAX_CLOSING: usize = 64;
/// How long closed connections get to drop their state after the shutdown deadline.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Connection limits, from the engine's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Where the server is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Finish what is in flight, then close.
    Draining,
    /// The deadline has passed: close now.
    Closing,
}

/// Raises the soft open-files limit to the hard one (a default soft limit of 1,024 is far
/// below what a server with thousands of connections needs) and returns the soft limit in
/// force, `None` if it is unlimited.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        match setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }) {
            Ok(()) => return limit.maximum,
            Err(error) => tracing::warn!(%error, soft = ?limit.current, "cannot raise the open-files limit"),
        }
    }
    limit.current
}

/// The connection cap in force: the one asked for, lowered so that connections can never
/// use the descriptors the store needs.
pub fn effective_max_connections(requested: usize, open_files: Option<u64>) -> usize {
    let room = open_files.map_or(usize::MAX, |limit| {
        usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX).saturating_sub(MAX_CLOSING)
    });
    // The drain waits for every task permit at once, a `u32`.
    requested.min(room).clamp(1, u32::MAX as usize - MAX_CLOSING)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish for up to `shutdown_grace`, closes whatever is left, and returns.
pub async fn run(listener: TcpListener, app: Router, options: ServerOptions, shutdown: impl Future<Output = ()>) {
    static OVER_CAP: LogRate = LogRate::new();
    static ACCEPT_ERRORS: LogRate = LogRate::new();
    let cap = options.max_connections;
    let all = cap.saturating_add(MAX_CLOSING);
    let tasks = Arc::new(Semaphore::new(all));
    let (phase, watcher) = watch::channel(Phase::Serving);
    let shared = conn::Shared { app, options, registry: Arc::default(), phase: watcher };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                        tracing::warn!(%error, suppressed, "accept failed; pausing");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // A task permit first: the hard bound on sockets, connections plus the evicted
        // ones still closing.
        let Ok(permit) = tasks.clone().try_acquire_owned() else {
            if let Some(suppressed) = OVER_CAP.allow() {
                tracing::warn!(%peer, cap, suppressed, "connection cap reached and evicted connections still closing; refused");
            }
            continue;
        };
        let Some(admitted) = shared.registry.admit(cap) else {
            if let Some(suppressed) = OVER_CAP.allow() {
                tracing::warn!(%peer, cap, suppressed, "connection cap reached, every connection busy; refused");
            }
            continue;
        };
        if admitted.evicted {
            if let Some(suppressed) = OVER_CAP.allow() {
                tracing::warn!(%peer, cap, suppressed, "connection cap reached; closed the idlest connection for this one");
            }
        }
        // No Nagle delay: an answer goes out in one write anyway, and the small frames a
        // task stream (or an SSE stream) sends back to back must not wait for the previous
        // one's ACK, which the peer may delay by 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot turn Nagle's algorithm off");
        }
        tokio::spawn(conn::serve(admitted, stream, peer, shared.clone(), permit));
    }
    drop(listener);
    drop(shared);
    let all_u32 = u32::try_from(all).unwrap_or(u32::MAX);
    let _ = phase.send(Phase::Draining);
    if tokio::time::timeout(options.shutdown_grace, tasks.acquire_many(all_u32)).await.is_err() {
        let open = all.saturating_sub(tasks.available_permits());
        tracing::warn!(open, grace = ?options.shutdown_grace, "shutdown deadline passed; closing the remaining connections");
        let _ = phase.send(Phase::Closing);
        let _ = tokio::time::timeout(CLOSE_WAIT, tasks.acquire_many(all_u32)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_store() {
        assert_eq!(effective_max_connections(4_096, Some(1_024)), 1_024 - RESERVED_FDS as usize - MAX_CLOSING);
        assert_eq!(effective_max_connections(100, Some(1_024)), 100);
        assert_eq!(effective_max_connections(4_096, None), 4_096);
        assert_eq!(effective_max_connections(4_096, Some(10)), 1, "never zero");
    }
}
