//! `GET /v1/tasks/stream`: the streaming worker protocol, one WebSocket per worker process
//! and engine node carrying every queue it serves (frames: `shop_types::task_stream`).
//!
//! It owns the stream's session: the credit of each queue, a few outstanding core polls per
//! queue sharing its credit (each asks for the credit it reserved, so the tasks sent never
//! exceed the credit; several, so a hand-out waiting for its commit does not hold up the
//! next), the reports received and not yet recorded (a few batches in flight; the frames that
//! arrive meanwhile wait and then go as one core call), heartbeats, pings and the limits below.
//! The upgrade is authenticated like every `/v1/tasks` route (worker role, deny by default);
//! the queues of the `Hello` are checked with `check_queue`, reports with `check_reports`
//! and `route_reports`, the same functions as `POST /v1/tasks/report`.
//!
//! It must never send a queue more tasks than its credit, never record a report the HTTP
//! path would refuse, and never outlive the engine's shutdown (it holds the core's handle).

use super::auth::check_queue;
use super::tasks::{check_reports, poll_tasks};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::core::CoreError;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use shop_types::api::{ActivityTask, ErrorDetail, PollRequest, TaskReport};
use shop_types::limits::{
    MAX_REPORTS_PER_BATCH, MAX_STREAM_CREDIT, MAX_STREAM_FRAME_BYTES, MAX_STREAM_QUEUES, MAX_TASKS_PER_POLL,
    MAX_WAIT_MS, STREAM_IDLE_TIMEOUT_MS, STREAM_PING_INTERVAL_MS,
};
use shop_types::task_stream::{EngineFrame, QueueCredit, WorkerFrame};
use shop_types::{QueueName, WorkerId};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

mod reports;
use reports::{answer_recorded, heartbeat};

/// Default for `--max-task-streams`: task streams open at once on this engine. A worker
/// process opens one per node, so this is the number of worker processes an engine serves
/// (each long-polling worker held `concurrency` × queues connections instead). Beyond it the
/// upgrade is refused with 503 `OVERLOADED`, before anything is upgraded.
pub const MAX_TASK_STREAMS: usize = 1024;
/// How long a new stream may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame may take to be written: a worker that does not read is dropped, so
/// it cannot hold the session (and the tasks it was sent are timed out and retried).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Reports received and not yet recorded, at most: beyond it the socket is not read until
/// the batch being recorded is answered (backpressure instead of an unbounded queue).
const MAX_PENDING_REPORTS: usize = 4 * MAX_REPORTS_PER_BATCH;
/// Heartbeat frames being answered at once, at most (the socket waits beyond it).
const MAX_PENDING_HEARTBEATS: usize = 16;
/// Core polls outstanding per queue at most. A poll's tasks are sent after the commit that
/// starts them, so with one poll the tasks that become ready meanwhile would wait for the
/// next commit after it; a few polls keep hand-outs flowing across commits, as the
/// `concurrency` loops of a long-polling worker do. They share the queue's credit.
const POLLS_PER_QUEUE: u32 = 4;
/// Report batches being recorded at once at most: a few, so a batch need not wait for the
/// commit of the one before (the core groups them into its turns anyway); the frames that
/// arrive while all are busy are recorded together as the next one.
const MAX_RECORDING: usize = 4;
/// Pause before a queue's poll is armed again after the core refused one (not a shutdown).
const POLL_RETRY: Duration = Duration::from_secs(1);
/// WebSocket close codes (RFC 6455): going away (shutdown), policy violation, unsupported
/// data (a binary frame), message too big (over [`MAX_STREAM_FRAME_BYTES`]).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

/// The task streams open on this engine: their cap, and the signal that ends them all at
/// shutdown (an upgraded connection is no longer the HTTP server's to drain).
pub struct TaskStreams {
    slots: Arc<Semaphore>,
    max: usize,
    shutdown: watch::Sender<bool>,
}

impl TaskStreams {
    pub fn new(max: usize) -> TaskStreams {
        TaskStreams { slots: Arc::new(Semaphore::new(max)), max, shutdown: watch::channel(false).0 }
    }

    /// Ends every stream: each answers the batch it is recording, says `SHUTTING_DOWN` and
    /// closes; its worker opens another once the engine is back.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }
}

/// The upgrade: 503 `OVERLOADED` at the cap, 400 for a request that is not a WebSocket one.
pub(crate) async fn open(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(rejection.status(), "NOT_A_WEBSOCKET", rejection.body_text()).into_response()
        }
    };
    let Ok(slot) = state.task_streams.slots.clone().try_acquire_owned() else {
        return ApiError::from(CoreError::Overloaded("too many task streams are open")).into_response();
    };
    // Reports forwarded to another node carry the caller's credential and trace context.
    let mut kept = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::HeaderName::from_static(crate::trace::TRACEPARENT_HEADER)] {
        if let Some(value) = headers.get(&name) {
            kept.insert(name, value.clone());
        }
    }
    upgrade
        .max_message_size(MAX_STREAM_FRAME_BYTES)
        .max_frame_size(MAX_STREAM_FRAME_BYTES)
        .on_upgrade(move |socket| serve(state, principal, kept, socket, slot))
}

/// Why a session ended.
enum End {
    /// The worker closed or vanished: nothing to send.
    Gone,
    /// Closed by the engine: an `Error` frame, then a close frame with the code in JSON.
    Close(u16, ApiError),
}

fn violation(message: impl Into<String>) -> End {
    End::Close(CLOSE_POLICY, ApiError::invalid(message))
}

/// A poll's answer: its queue, the credit it reserved, and its tasks.
type PollDone = (QueueName, u32, Result<Vec<ActivityTask>, ApiError>);

/// One queue's credit: free, and reserved by the polls outstanding.
#[derive(Debug, Default)]
struct Credit {
    free: u32,
    reserved: u32,
    polls: u32,
}
/// Reports being recorded: each frame's id, its first verdicts, and the verdicts of all.
type Recorded = (Vec<(u64, Vec<Option<ErrorDetail>>)>, Result<Vec<Option<ErrorDetail>>, ApiError>);

/// One stream after its `Hello`.
struct Session {
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    worker_id: WorkerId,
    credit: HashMap<QueueName, Credit>,
    polls: FuturesUnordered<BoxFuture<'static, PollDone>>,
    /// Checked `Report` frames waiting to be recorded: id, reports, first verdicts.
    pending: VecDeque<(u64, Vec<TaskReport>, Vec<Option<ErrorDetail>>)>,
    pending_reports: usize,
    /// The batches being recorded (at most [`MAX_RECORDING`], so the frames behind them
    /// coalesce).
    recording: FuturesUnordered<BoxFuture<'static, Recorded>>,
    heartbeats: FuturesUnordered<BoxFuture<'static, Result<EngineFrame, ApiError>>>,
    draining: bool,
}

async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    mut socket: WebSocket,
    _slot: OwnedSemaphorePermit,
) {
    let mut shutdown = state.task_streams.shutdown.subscribe();
    let end = match hello(&mut socket).await {
        Ok((worker_id, queues)) => {
            let mut session = Session {
                state,
                principal,
                headers,
                worker_id,
                credit: HashMap::new(),
                polls: FuturesUnordered::new(),
                pending: VecDeque::new(),
                pending_reports: 0,
                recording: FuturesUnordered::new(),
                heartbeats: FuturesUnordered::new(),
                draining: false,
            };
            match session.greet(queues) {
                Ok(()) => session.run(&mut socket, &mut shutdown).await,
                Err(end) => end,
            }
        }
        Err(end) => end,
    };
    if let End::Close(code, error) = end {
        tracing::debug!(code, error = %error.code, message = %error.message, "closing a task stream");
        let frame = EngineFrame::Error(ErrorDetail { code: error.code.to_owned(), message: error.message });
        if let Ok(text) = serde_json::to_string(&frame) {
            let _ = send(&mut socket, Message::Text(text)).await;
        }
        // A close reason is at most 123 bytes: the code only (the message went in the frame).
        let reason = serde_json::json!({ "code": error.code }).to_string();
        let _ = send(&mut socket, Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }
}

/// The first frame, which must be a `Hello` (pings and pongs before it are skipped).
async fn hello(socket: &mut WebSocket) -> Result<(WorkerId, Vec<QueueCredit>), End> {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| violation(format!("no hello within {}s", HELLO_TIMEOUT.as_secs())))?;
        match read(received)? {
            None => continue,
            Some(WorkerFrame::Hello { worker_id, queues }) => return Ok((worker_id, queues)),
            Some(_) => return Err(violation("the first frame must be a hello")),
        }
    }
}

/// One received message as a frame (`None`: a ping or a pong, which are not frames of the
/// protocol); a close, a broken read, a binary or malformed frame ends the session.
fn read(received: Option<Result<Message, axum::Error>>) -> Result<Option<WorkerFrame>, End> {
    match received {
        None | Some(Ok(Message::Close(_))) => Err(End::Gone),
        Some(Err(error)) => Err(read_error(error)),
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).map(Some).map_err(|error| {
            End::Close(CLOSE_POLICY, ApiError::bad_request("BAD_FRAME", format!("not a worker frame: {error}")))
        }),
        Some(Ok(Message::Binary(_))) => {
            Err(End::Close(CLOSE_UNSUPPORTED, ApiError::bad_request("BAD_FRAME", "frames are JSON text")))
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
    }
}

/// A frame over [`MAX_STREAM_FRAME_BYTES`] is answered 1009; any other broken read ends quietly.
fn read_error(error: axum::Error) -> End {
    let inner = error.into_inner();
    match inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(capacity)) => End::Close(
            CLOSE_TOO_BIG,
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "FRAME_TOO_LARGE",
                format!("{capacity}; a frame may take at most {MAX_STREAM_FRAME_BYTES} bytes"),
            ),
        ),
        _ => End::Gone,
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(End::Gone),
    }
}

/// Queues a frame without flushing: the session flushes when it has nothing else ready, so
/// frames that are ready together go out in one write.
async fn feed_frame(socket: &mut WebSocket, frame: &EngineFrame) -> Result<(), End> {
    let text = serde_json::to_string(frame)
        .map_err(|error| End::Close(CLOSE_GOING_AWAY, ApiError::invalid(format!("cannot encode a frame: {error}"))))?;
    match tokio::time::timeout(SEND_TIMEOUT, socket.feed(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(End::Gone),
    }
}

async fn flush(socket: &mut WebSocket) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(End::Gone),
    }
}

impl Session {
    /// Checks the `Hello`'s queues (each one the credential may serve, at most
    /// [`MAX_STREAM_QUEUES`], none twice) and arms a poll on each with credit.
    fn greet(&mut self, queues: Vec<QueueCredit>) -> Result<(), End> {
        if queues.is_empty() || queues.len() > MAX_STREAM_QUEUES {
            return Err(violation(format!("a hello names 1 to {MAX_STREAM_QUEUES} queues")));
        }
        for QueueCredit { queue, credit } in queues {
            check_queue(&self.principal, &queue).map_err(|error| End::Close(CLOSE_POLICY, error))?;
            if self.credit.contains_key(&queue) {
                return Err(violation(format!("queue {queue} is named twice")));
            }
            self.credit.insert(queue.clone(), Credit::default());
            self.add_credit(&queue, credit)?;
        }
        tracing::debug!(worker_id = %self.worker_id, queues = self.credit.len(), "task stream opened");
        Ok(())
    }

    async fn run(&mut self, socket: &mut WebSocket, shutdown: &mut watch::Receiver<bool>) -> End {
        let ping_every = Duration::from_millis(STREAM_PING_INTERVAL_MS);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut heard = Instant::now();
        // Frames fed since the last flush.
        let mut unflushed = false;
        let end = loop {
            self.record_next();
            let readable = self.pending_reports < MAX_PENDING_REPORTS && self.heartbeats.len() < MAX_PENDING_HEARTBEATS;
            let flushing = unflushed;
            unflushed = true;
            // Biased: whatever is ready is handled first, and the frames it fed are flushed
            // in one write once nothing is (the last branch). Polls, batches and heartbeats
            // are bounded in number, so they cannot keep the socket from being read.
            let step = tokio::select! {
                biased;
                Some((queue, asked, polled)) = self.polls.next(), if !self.polls.is_empty() => {
                    self.on_polled(socket, queue, asked, polled).await
                }
                Some(recorded) = self.recording.next(), if !self.recording.is_empty() => {
                    answer_recorded(socket, recorded).await
                }
                Some(answer) = self.heartbeats.next(), if !self.heartbeats.is_empty() => match answer {
                    Ok(frame) => feed_frame(socket, &frame).await,
                    Err(error) => Err(End::Close(CLOSE_POLICY, error)),
                },
                received = socket.recv(), if readable => {
                    heard = Instant::now();
                    match read(received) {
                        Ok(Some(frame)) => self.on_frame(frame),
                        Ok(None) => Ok(()),
                        Err(end) => Err(end),
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= Duration::from_millis(STREAM_IDLE_TIMEOUT_MS) {
                        Err(violation("the worker has been silent too long"))
                    } else {
                        send(socket, Message::Ping(Vec::new())).await
                    }
                }
                () = stopping(shutdown) => {
                    Err(End::Close(CLOSE_GOING_AWAY, ApiError::from(CoreError::ShuttingDown)))
                }
                () = std::future::ready(()), if flushing => {
                    unflushed = false;
                    flush(socket).await
                }
            };
            if let Err(end) = step {
                break end;
            }
        };
        // The batches being recorded are answered (they commit whatever happens to the
        // socket), so the worker need not send them again.
        while let Some(recorded) = self.recording.next().await {
            let _ = answer_recorded(socket, recorded).await;
        }
        end
    }

    fn on_frame(&mut self, frame: WorkerFrame) -> Result<(), End> {
        match frame {
            WorkerFrame::Hello { .. } => Err(violation("a stream says hello once")),
            WorkerFrame::Credit(QueueCredit { queue, credit }) => self.add_credit(&queue, credit),
            WorkerFrame::Report { id, reports, credits } => {
                if reports.len() > MAX_REPORTS_PER_BATCH {
                    return Err(violation(format!("at most {MAX_REPORTS_PER_BATCH} reports per frame")));
                }
                for QueueCredit { queue, credit } in credits {
                    self.add_credit(&queue, credit)?;
                }
                // A credential that may not report one of them closes the stream, as the
                // HTTP path refuses its whole batch: nothing of it is recorded.
                let verdicts =
                    check_reports(&self.state, &self.principal, &reports).map_err(|e| End::Close(CLOSE_POLICY, e))?;
                self.pending_reports += reports.len();
                self.pending.push_back((id, reports, verdicts));
                Ok(())
            }
            WorkerFrame::Heartbeat { id, tokens } => {
                if tokens.len() > MAX_REPORTS_PER_BATCH {
                    return Err(violation(format!("at most {MAX_REPORTS_PER_BATCH} tokens per heartbeat")));
                }
                let (state, principal) = (self.state.clone(), self.principal.clone());
                self.heartbeats.push(Box::pin(async move { heartbeat(state, principal, id, tokens).await }));
                Ok(())
            }
            WorkerFrame::Drain => {
                self.draining = true;
                // A poll dropped is skipped by the core (its answer channel is closed).
                self.polls = FuturesUnordered::new();
                self.credit.values_mut().for_each(|credit| *credit = Credit::default());
                Ok(())
            }
        }
    }

    /// Adds credit to a queue of the `Hello` (at most [`MAX_STREAM_CREDIT`] held, reserved
    /// included) and arms its polls.
    fn add_credit(&mut self, queue: &QueueName, more: u32) -> Result<(), End> {
        if self.draining {
            return Ok(());
        }
        let Some(credit) = self.credit.get_mut(queue) else {
            return Err(violation(format!("queue {queue} is not one of this stream's")));
        };
        credit.free = credit.free.saturating_add(more);
        if credit.free.saturating_add(credit.reserved) > MAX_STREAM_CREDIT {
            return Err(violation(format!("a queue's credit may reach at most {MAX_STREAM_CREDIT}")));
        }
        self.arm(queue, Duration::ZERO);
        Ok(())
    }

    /// Polls `queue` (after `after`) until [`POLLS_PER_QUEUE`] are outstanding or its free
    /// credit is all reserved, each for its share of the free credit.
    fn arm(&mut self, queue: &QueueName, after: Duration) {
        let Some(credit) = self.credit.get_mut(queue).filter(|_| !self.draining) else {
            return;
        };
        while credit.free > 0 && credit.polls < POLLS_PER_QUEUE {
            let asked = credit.free.div_ceil(POLLS_PER_QUEUE - credit.polls).min(MAX_TASKS_PER_POLL);
            credit.free -= asked;
            credit.reserved += asked;
            credit.polls += 1;
            let request = PollRequest {
                queue: queue.clone(),
                worker_id: self.worker_id.clone(),
                max_tasks: asked,
                wait_ms: MAX_WAIT_MS,
            };
            let state = self.state.clone();
            self.polls.push(Box::pin(async move {
                tokio::time::sleep(after).await;
                let queue = request.queue.clone();
                (queue, asked, poll_tasks(&state, request).await)
            }));
        }
    }

    /// Sends the tasks a poll got (at most the credit it reserved; the rest is free again)
    /// and arms the next.
    async fn on_polled(
        &mut self,
        socket: &mut WebSocket,
        queue: QueueName,
        asked: u32,
        polled: Result<Vec<ActivityTask>, ApiError>,
    ) -> Result<(), End> {
        let delivered = polled.as_ref().map_or(0, |tasks| u32::try_from(tasks.len()).unwrap_or(u32::MAX));
        if let Some(credit) = self.credit.get_mut(&queue) {
            credit.polls = credit.polls.saturating_sub(1);
            credit.reserved = credit.reserved.saturating_sub(asked);
            if !self.draining {
                credit.free = credit.free.saturating_add(asked.saturating_sub(delivered));
            }
        }
        match polled {
            Ok(tasks) if tasks.is_empty() => self.arm(&queue, Duration::ZERO),
            Ok(tasks) => {
                feed_frame(socket, &EngineFrame::Tasks { queue: queue.clone(), tasks }).await?;
                self.arm(&queue, Duration::ZERO);
            }
            Err(error) if error.code == "SHUTTING_DOWN" => return Err(End::Close(CLOSE_GOING_AWAY, error)),
            Err(error) => {
                tracing::debug!(%queue, code = error.code, message = %error.message, "a stream's poll was refused");
                self.arm(&queue, POLL_RETRY);
            }
        }
        Ok(())
    }
}

/// Resolves once the engine shuts down (at once if it already does).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            // The hub is gone with the engine's state; the session ends by other means.
            return std::future::pending().await;
        }
    }
}
