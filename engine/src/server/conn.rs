//! One HTTP/1 connection: hyper's connection with the engine's limits, the request wrapper
//! that applies the body timeout and tells the client when the connection will close, and
//! the registry of open connections from which the idlest one is evicted when the
//! connection cap is reached.
//!
//! It owns the per-connection state and nothing else; it must never drop a connection that
//! has a request in flight, except when the shutdown deadline has passed.

use super::body::{BodyState, GuardedBody, TimedBody};
use super::{Phase, ServerOptions, HYPER_MAX_HEAD_BYTES};
use crate::api::ApiError;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tower::ServiceExt;

/// How long an evicted connection may take to finish writing a refusal and close before it
/// is dropped: it holds no request in flight, so this only bounds a client that is slow to
/// read a short answer or is halfway through sending a head.
const EVICTION_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a connection has a request in flight, and whether it was chosen for eviction.
struct Activity {
    in_flight: u32,
    evicted: bool,
    idle_since: Instant,
}

/// One open connection as the registry sees it.
pub(super) struct Conn {
    activity: Mutex<Activity>,
    evict: Notify,
}

impl Conn {
    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        // Two counters and a flag: still meaningful after a panic elsewhere.
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a request in flight, unless the connection was evicted.
    fn begin(self: &Arc<Self>) -> Option<InFlight> {
        let mut activity = self.activity();
        if activity.evicted {
            return None;
        }
        activity.in_flight += 1;
        Some(InFlight(self.clone()))
    }
}

/// A request in flight on its connection, until its response body has been written.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut activity = self.0.activity();
        activity.in_flight = activity.in_flight.saturating_sub(1);
        activity.idle_since = Instant::now();
    }
}

/// Every open connection, so that a newcomer over the cap can take the place of the one that
/// has been idle longest (no request in flight: between requests, or still sending a head).
#[derive(Default)]
pub(super) struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Admits a connection as it is accepted, before its task runs, so the next newcomer
    /// already counts it. At `cap`, the connection idle the longest (no request in flight:
    /// between requests, or still sending a head) is told to close and gives up its place
    /// at once; if every connection has a request in flight, `None`: the newcomer is refused.
    /// A scan of at most `cap` entries, and only at the cap.
    pub(super) fn admit(&self, cap: usize) -> Option<Admitted> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let mut evicted = false;
        if conns.len() >= cap {
            let mut idle: Vec<(Instant, u64)> = conns
                .iter()
                .filter_map(|(id, conn)| {
                    let activity = conn.activity();
                    (activity.in_flight == 0).then_some((activity.idle_since, *id))
                })
                .collect();
            idle.sort_unstable();
            // A request may begin on a candidate between the scan and now: the choice is
            // made again under the lock `begin` takes, so a connection is marked evicted only
            // while it has nothing in flight, and a request that starts after that is refused
            // (503, `Connection: close`) rather than cut off.
            let chosen = idle.into_iter().find_map(|(_, id)| {
                let conn = conns.get(&id)?;
                let mut activity = conn.activity();
                if activity.in_flight > 0 {
                    return None;
                }
                activity.evicted = true;
                Some(id)
            })?;
            if let Some(conn) = conns.remove(&chosen) {
                // The permit stored by `notify_one` wakes the connection's task even if it is
                // not waiting yet.
                conn.evict.notify_one();
            }
            evicted = true;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            activity: Mutex::new(Activity { in_flight: 0, evicted: false, idle_since: Instant::now() }),
            evict: Notify::new(),
        });
        conns.insert(id, conn.clone());
        Some(Admitted { id, conn, evicted })
    }

    fn remove(&self, id: u64) {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }
}

/// A connection given a place in the registry.
pub(super) struct Admitted {
    id: u64,
    conn: Arc<Conn>,
    /// Another connection was closed to make room.
    pub(super) evicted: bool,
}

/// What every connection task shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) app: Router,
    pub(super) options: ServerOptions,
    pub(super) registry: Arc<Registry>,
    pub(super) phase: watch::Receiver<Phase>,
}

/// Serves one accepted connection until the client closes it, hyper's head timeout closes
/// it, it is evicted, or shutdown closes it (gracefully, then by force at the deadline).
pub(super) async fn serve(
    admitted: Admitted,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    permit: OwnedSemaphorePermit,
) {
    let Shared { app, options, registry, mut phase } = shared;
    let Admitted { id, conn, .. } = admitted;
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request| handle(request, peer, app.clone(), options, conn.clone()))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper starts this timer when it begins reading a head, which it does as soon as the
        // connection opens and again as soon as a response is written: it bounds a slow head
        // and an idle keep-alive gap alike (hyper 1.x, `Conn::poll_read_head`).
        .header_read_timeout(options.head_timeout)
        .max_header_size(HYPER_MAX_HEAD_BYTES)
        .keep_alive(true);
    // With upgrades: a task stream (`GET /v1/tasks/stream`) takes the connection over; its
    // session then lives on its own task (`api::task_stream`, which ends it at shutdown).
    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    // Set once the connection is evicted: it closes gracefully (an answer being written is
    // finished), and by force when this passes.
    let mut eviction_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    // Timeouts, resets and malformed heads: the client's doing, not an incident.
                    tracing::debug!(%peer, %error, "connection ended");
                }
                break;
            }
            () = conn.evict.notified(), if eviction_deadline.is_none() => {
                tracing::debug!(%peer, "idle connection evicted to admit a new one over the cap");
                connection.as_mut().graceful_shutdown();
                eviction_deadline = Some(Box::pin(tokio::time::sleep(EVICTION_GRACE)));
            }
            () = async { if let Some(deadline) = eviction_deadline.as_mut() { deadline.await } }, if eviction_deadline.is_some() => {
                break;
            }
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                // A lost sender means the server is gone: stop as well.
                if changed.is_err() || now >= Phase::Closing {
                    break;
                }
                if now >= Phase::Draining && !draining {
                    draining = true;
                    // Finishes the request in flight, if any, then closes; an idle
                    // connection closes at once.
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
    registry.remove(id);
    drop(permit);
}

/// One request: refused at once if its connection was just evicted; otherwise handed to the
/// app with the peer address and a timed body, and answered with `Connection: close` if its
/// body was not read to its end (hyper will close such a connection, and the client must
/// know that its next request on it was not seen).
async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    app: Router,
    options: ServerOptions,
    conn: Arc<Conn>,
) -> Result<Response<Body>, Infallible> {
    let Some(in_flight) = conn.begin() else {
        return Ok(closing(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "CONNECTION_CLOSING",
            "this connection is being closed to admit another; retry on a new one",
        )));
    };
    let state = Arc::new(BodyState::default());
    let (parts, body) = request.into_parts();
    let body = if body.is_end_stream() {
        state.done.store(true, Ordering::Relaxed);
        Body::new(body)
    } else {
        Body::new(TimedBody::new(body, options.body_timeout, state.clone()))
    };
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let response = if state.timed_out.load(Ordering::Relaxed) {
        closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "BODY_TIMEOUT",
            format!("the request body was not received within {}s", options.body_timeout.as_secs_f64()),
        ))
    } else if state.done.load(Ordering::Relaxed) {
        response
    } else {
        with_close(response)
    };
    Ok(response.map(|body| Body::new(GuardedBody::new(body, in_flight))))
}

fn closing(error: ApiError) -> Response<Body> {
    with_close(error.into_response())
}

fn with_close(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
