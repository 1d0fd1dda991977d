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
    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            activity: Mutex::new(Activity { in_flight: 0, evicted: false, idle_since: Instant::now() }),
            evict: Notify::new(),
        });
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Closes the connection idle the longest; false if every one has a request in flight.
    /// A scan of at most the cap's worth of entries, and only when the cap is reached.
    pub(super) fn evict_idlest(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let mut idlest: Option<(Instant, &Arc<Conn>)> = None;
        for conn in conns.values() {
            let activity = conn.activity();
            if activity.in_flight == 0
                && !activity.evicted
                && idlest.is_none_or(|(since, _)| activity.idle_since < since)
            {
                idlest = Some((activity.idle_since, conn));
            }
        }
        let Some((_, conn)) = idlest else {
            return false;
        };
        let mut activity = conn.activity();
        // Re-checked under the same lock `begin` takes: a request that started since the scan
        // keeps its connection.
        if activity.in_flight > 0 {
            return false;
        }
        activity.evicted = true;
        // A stored permit wakes the connection's task even if it is not waiting yet.
        conn.evict.notify_one();
        true
    }
}

/// Serves one accepted connection until the client closes it, hyper's head timeout closes
/// it, it is evicted, or shutdown closes it (gracefully, then by force at the deadline).
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    options: ServerOptions,
    registry: Arc<Registry>,
    mut phase: watch::Receiver<Phase>,
    permit: OwnedSemaphorePermit,
) {
    if *phase.borrow_and_update() >= Phase::Draining {
        return;
    }
    let (id, conn) = registry.add();
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
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    // Timeouts, resets and malformed heads: the client's doing, not an incident.
                    tracing::debug!(%peer, %error, "connection ended");
                }
                break;
            }
            () = conn.evict.notified() => {
                tracing::debug!(%peer, "idle connection evicted to admit a new one over the cap");
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
