//! The task stream client: one WebSocket (`GET /v1/tasks/stream`) to one engine node,
//! carrying every queue this worker serves. Tasks arrive as the credit given allows and run
//! concurrently at once; each finished task's report goes back with the slot it frees, all
//! the reports ready at that moment in one `Report` frame (no timer delay); heartbeats of the
//! tasks that ask for them go over the stream, batched.
//!
//! Nothing is lost across a reconnect: reports not yet acknowledged (`Reported`) are kept
//! and sent again on the next connection (within the poller's report budget, then dropped
//! with a warning, as the engine times those attempts out), running tasks keep running, and
//! the new `Hello` announces the free slots only. Reports refused for a moving shard are sent
//! again. On shutdown it takes no more tasks (`Drain`), gives the running ones the grace
//! period, reports what finished and closes. It never touches a store.

use crate::activities::Activities;
use crate::engine_client::EngineClient;
use crate::poller::{heartbeat_period, run_task, Backoff, SHUTDOWN_GRACE, SHUTDOWN_REPORT_BUDGET, TASKS_PER_POLL};
use crate::shutdown::Shutdown;
use crate::ErrorChain;
use futures_util::{SinkExt, StreamExt};
use shop_types::api::{ActivityTask, ErrorDetail, TaskReport};
use shop_types::auth::BearerToken;
use shop_types::limits::STREAM_IDLE_TIMEOUT_MS;
use shop_types::task_stream::{EngineFrame, QueueCredit, WorkerFrame, TASK_STREAM_PATH};
use shop_types::{QueueName, TaskToken, WorkerId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod reports;

/// Largest frame accepted from the engine: a `Tasks` frame of up to 256 tasks, each with a
/// run's input and the outputs of its steps so far.
pub const MAX_TASKS_FRAME_BYTES: usize = 64 << 20;
/// How long opening the stream (TCP, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame may take to be written before the connection is taken for dead.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a stream needs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub activities: Arc<Activities>,
    pub queues: Vec<QueueName>,
    /// Free slots per queue when nothing runs.
    pub slots: u32,
    pub worker_id: WorkerId,
    pub tracer: shop_telemetry::Tracer,
    /// Sent as `Authorization: Bearer` on the upgrade; `None` for an engine running open.
    pub token: Option<BearerToken>,
}

/// The slots a worker of `concurrency` poll loops would hold per queue: the same capacity
/// whichever protocol it speaks.
pub fn slots(concurrency: usize) -> u32 {
    u32::try_from(concurrency).unwrap_or(u32::MAX).saturating_mul(TASKS_PER_POLL)
}

/// A report on its way, with the time after which it is dropped.
#[derive(Debug)]
struct Outgoing {
    report: TaskReport,
    deadline: Instant,
}

/// One running task, by its tokio task id.
struct Running {
    queue: QueueName,
    token: TaskToken,
}

/// A task's heartbeat schedule.
struct Beat {
    period: Duration,
    due: Instant,
}

/// How a connection ended.
enum Ended {
    /// Everything is reported (or given up) after shutdown: stop.
    Done,
    /// The connection broke or was closed by the engine: open another.
    Lost,
}

/// The stream to one engine node, across its connections.
pub struct TaskStream {
    client: EngineClient,
    options: StreamOptions,
    shutdown: Shutdown,
    running: JoinSet<TaskReport>,
    tasks: HashMap<tokio::task::Id, Running>,
    busy: HashMap<QueueName, u32>,
    beats: HashMap<TaskToken, Beat>,
    /// Finished, not yet sent on the current connection.
    ready: Vec<Outgoing>,
    /// Sent, waiting for their `Reported`, by frame id.
    unacked: HashMap<u64, Vec<Outgoing>>,
    /// Slots freed since the last frame that returned some.
    freed: HashMap<QueueName, u32>,
    next_id: u64,
    /// Reports refused for now are not sent again before this.
    hold_until: Instant,
    resend_backoff: Backoff,
    /// When shutdown began.
    stopping: Option<Instant>,
    /// The running tasks were abandoned at the end of the grace period.
    abandoned: bool,
    /// The engine sent tasks, verdicts or acks on the current connection (it is not one
    /// the engine closes at once, which is reopened only after a backoff).
    healthy: bool,
}

impl TaskStream {
    pub fn new(client: EngineClient, options: StreamOptions, shutdown: Shutdown) -> TaskStream {
        TaskStream {
            client,
            options,
            shutdown,
            running: JoinSet::new(),
            tasks: HashMap::new(),
            busy: HashMap::new(),
            beats: HashMap::new(),
            ready: Vec::new(),
            unacked: HashMap::new(),
            freed: HashMap::new(),
            next_id: 0,
            hold_until: Instant::now(),
            resend_backoff: Backoff::new(),
            stopping: None,
            abandoned: false,
            healthy: false,
        }
    }

    /// Streams until shutdown, then finishes as described in the module's doc.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new();
        loop {
            self.note_shutdown();
            if self.stopping.is_some() && self.settled() {
                break;
            }
            if self.past_shutdown_budget() {
                self.give_up();
                break;
            }
            match self.connect().await {
                Ok(socket) => {
                    self.healthy = false;
                    match self.session(socket).await {
                        Ended::Done => break,
                        Ended::Lost if self.healthy => {
                            let failures = backoff.reset();
                            if failures > 0 {
                                tracing::info!(url = self.client.url(), failures, "the task stream worked again");
                            }
                        }
                        // Closed before it served anything (refused, or the engine is going
                        // away): not at once again.
                        Ended::Lost => {
                            let delay = backoff.next_delay();
                            self.offline(delay).await;
                        }
                    }
                }
                Err(error) => {
                    if backoff.failures == 0 {
                        tracing::warn!(url = self.client.url(), %error, "cannot open the task stream; backing off");
                    } else {
                        tracing::debug!(url = self.client.url(), %error, "cannot open the task stream");
                    }
                    let delay = backoff.next_delay();
                    self.offline(delay).await;
                }
            }
        }
        tracing::debug!(url = self.client.url(), "task stream stopped");
    }

    fn note_shutdown(&mut self) {
        if self.stopping.is_none() && self.shutdown.is_triggered() {
            self.stopping = Some(Instant::now());
        }
    }

    /// Nothing running, nothing left to report.
    fn settled(&self) -> bool {
        self.running.is_empty() && self.ready.is_empty() && self.unacked.is_empty()
    }

    fn past_shutdown_budget(&self) -> bool {
        self.stopping.is_some_and(|at| at.elapsed() > SHUTDOWN_GRACE + SHUTDOWN_REPORT_BUDGET)
    }

    fn give_up(&mut self) {
        let left = self.ready.len() + self.unacked.values().map(Vec::len).sum::<usize>();
        if left > 0 || !self.running.is_empty() {
            tracing::warn!(
                reports = left,
                abandoned = self.running.len(),
                "shutdown budget spent; dropping what is left (the engine times those attempts out and retries them)"
            );
        }
        self.running.abort_all();
    }

    async fn connect(&self) -> Result<Socket, String> {
        let url = stream_url(self.client.url())?;
        let mut request = url.as_str().into_client_request().map_err(|e| e.to_string())?;
        if let Some(token) = &self.options.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| "the token cannot be a header".to_owned())?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let config = WebSocketConfig {
            max_message_size: Some(MAX_TASKS_FRAME_BYTES),
            max_frame_size: Some(MAX_TASKS_FRAME_BYTES),
            ..WebSocketConfig::default()
        };
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                Err(format!("the engine refused the upgrade: {}", response.status()))
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
        }
    }

    /// While no connection is open: tasks go on and their reports wait.
    async fn offline(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => self.finished(joined),
                () = self.shutdown.wait(), if self.stopping.is_none() => self.note_shutdown(),
                () = grace_over(self.stopping), if !self.running.is_empty() && !self.abandoned => self.abandon(),
            }
        }
    }

    /// One connection: `Hello`, the reports left from before, then the exchange.
    async fn session(&mut self, mut socket: Socket) -> Ended {
        // Reports sent on a connection that broke may or may not have been recorded: send
        // them again (a recorded one is refused as stale, which changes nothing).
        let now = Instant::now();
        let mut again: Vec<Outgoing> = std::mem::take(&mut self.unacked).into_values().flatten().collect();
        again.append(&mut self.ready);
        let (kept, dropped): (Vec<_>, Vec<_>) = again.into_iter().partition(|out| out.deadline > now);
        if !dropped.is_empty() {
            tracing::warn!(
                reports = dropped.len(),
                "dropping reports past their budget; the engine will time those attempts out and retry them"
            );
        }
        self.ready = kept;
        self.freed.clear();
        let queues = self
            .options
            .queues
            .iter()
            .map(|queue| {
                let busy = self.busy.get(queue).copied().unwrap_or(0);
                let credit = if self.stopping.is_some() { 0 } else { self.options.slots.saturating_sub(busy) };
                QueueCredit { queue: queue.clone(), credit }
            })
            .collect();
        let hello = WorkerFrame::Hello { worker_id: self.options.worker_id.clone(), queues };
        if send(&mut socket, &hello).await.is_err() {
            return Ended::Lost;
        }
        let idle = Duration::from_millis(STREAM_IDLE_TIMEOUT_MS);
        let mut heard = Instant::now();
        let mut drained = self.stopping.is_some();
        // Frames fed since the last flush (the hello was sent, flushed).
        let mut unflushed = false;
        loop {
            self.note_shutdown();
            if self.stopping.is_some() && !drained {
                drained = true;
                if send(&mut socket, &WorkerFrame::Drain).await.is_err() {
                    return Ended::Lost;
                }
            }
            if self.flush(&mut socket).await.is_err() {
                return Ended::Lost;
            }
            if self.stopping.is_some() && self.settled() {
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close(None)).await;
                return Ended::Done;
            }
            if self.past_shutdown_budget() {
                self.give_up();
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close(None)).await;
                return Ended::Done;
            }
            let next_beat = self.beats.values().map(|beat| beat.due).min();
            let held = !self.ready.is_empty() && self.hold_until > Instant::now();
            let flushing = unflushed;
            unflushed = true;
            // Biased: finished tasks first (all of them go in one frame), then the engine's
            // frames; the frames fed meanwhile are flushed in one write once nothing else is
            // ready (the last branch).
            tokio::select! {
                biased;
                Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.finished(joined);
                    // Every report ready now goes in the same frame.
                    while let Some(joined) = self.running.try_join_next_with_id() {
                        self.finished(joined);
                    }
                }
                received = socket.next() => {
                    heard = Instant::now();
                    if !self.on_message(received) {
                        return Ended::Lost;
                    }
                }
                () = sleep_until(next_beat), if next_beat.is_some() => {
                    if self.heartbeat(&mut socket).await.is_err() {
                        return Ended::Lost;
                    }
                }
                () = tokio::time::sleep_until(self.hold_until), if held => {}
                () = tokio::time::sleep_until(heard + idle) => {
                    tracing::warn!(url = self.client.url(), "the engine has been silent too long; reconnecting");
                    return Ended::Lost;
                }
                () = self.shutdown.wait(), if self.stopping.is_none() => self.note_shutdown(),
                () = grace_over(self.stopping), if !self.running.is_empty() && !self.abandoned => self.abandon(),
                () = shutdown_budget_over(self.stopping) => {}
                () = std::future::ready(()), if flushing => {
                    unflushed = false;
                    if flush_socket(&mut socket).await.is_err() {
                        return Ended::Lost;
                    }
                }
            }
        }
    }

    /// Handles one message; `false` when the connection is over.
    fn on_message(&mut self, received: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> bool {
        let text = match received {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_))) => {
                self.healthy = true;
                return true;
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => return true,
            Some(Ok(Message::Binary(_))) => {
                tracing::warn!("the engine sent a binary frame; reconnecting");
                return false;
            }
            Some(Ok(Message::Close(frame))) => {
                tracing::info!(url = self.client.url(), reason = ?frame.map(|f| f.reason.into_owned()), "the engine closed the task stream");
                return false;
            }
            Some(Err(error)) => {
                tracing::info!(url = self.client.url(), %error, "the task stream broke");
                return false;
            }
            None => return false,
        };
        let frame = serde_json::from_str::<EngineFrame>(&text);
        self.healthy |= !matches!(frame, Ok(EngineFrame::Error(_)) | Err(_));
        match frame {
            Ok(EngineFrame::Tasks { queue, tasks }) => self.start(queue, tasks),
            Ok(EngineFrame::Reported { id, results }) => self.reported(id, results),
            Ok(EngineFrame::HeartbeatAck { stale, .. }) => {
                for token in stale {
                    tracing::debug!(%token, "heartbeat refused: the attempt is no longer current");
                    self.beats.remove(&token);
                }
            }
            Ok(EngineFrame::Error(ErrorDetail { code, message })) => {
                tracing::warn!(url = self.client.url(), %code, %message, "the engine ends the task stream");
            }
            Err(error) => {
                tracing::error!(%error, "the engine sent a frame this worker does not know; is it compatible?");
                return false;
            }
        }
        true
    }

    fn start(&mut self, queue: QueueName, tasks: Vec<ActivityTask>) {
        for task in tasks {
            if let Some(heartbeat_ms) = task.heartbeat_ms {
                let period = heartbeat_period(heartbeat_ms);
                self.beats.insert(task.token.clone(), Beat { period, due: Instant::now() + period });
            }
            let token = task.token.clone();
            let work = run_task(Arc::clone(&self.options.activities), self.options.tracer.clone(), task);
            let handle = self.running.spawn(work);
            *self.busy.entry(queue.clone()).or_default() += 1;
            self.tasks.insert(handle.id(), Running { queue: queue.clone(), token });
        }
    }

    fn abandon(&mut self) {
        self.abandoned = true;
        tracing::warn!(abandoned = self.running.len(), "shutdown grace period over; abandoning in-flight tasks");
        self.running.abort_all();
    }
}

/// The stream's URL at an engine's base URL: `http` becomes `ws`, `https` becomes `wss`.
pub fn stream_url(base: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("{base}: {e}"))?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => return Err(format!("{base}: the engine URL must be http or https, not {other}")),
    };
    url.set_scheme(scheme).map_err(|()| format!("{base}: cannot become a WebSocket URL"))?;
    let path = format!("{}{TASK_STREAM_PATH}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

async fn send(socket: &mut Socket, frame: &WorkerFrame) -> Result<(), ()> {
    let text = serde_json::to_string(frame).map_err(|error| tracing::error!(%error, "cannot encode a frame"))?;
    send_text(socket, text).await
}

/// Queues a frame; the session flushes when nothing else is ready (or a send flushes it).
async fn feed_text(socket: &mut Socket, text: String) -> Result<(), ()> {
    written(tokio::time::timeout(SEND_TIMEOUT, socket.feed(Message::Text(text))).await)
}

async fn flush_socket(socket: &mut Socket) -> Result<(), ()> {
    written(tokio::time::timeout(SEND_TIMEOUT, socket.flush()).await)
}

async fn send_text(socket: &mut Socket, text: String) -> Result<(), ()> {
    written(tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await)
}

/// A write's outcome, logged when it failed (the connection is then taken for lost).
fn written(
    outcome: Result<Result<(), tokio_tungstenite::tungstenite::Error>, tokio::time::error::Elapsed>,
) -> Result<(), ()> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::info!(error = %ErrorChain(&error), "the task stream broke while sending");
            Err(())
        }
        Err(_) => {
            tracing::info!("the engine did not take a frame in time");
            Err(())
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the grace period after shutdown is over (never before shutdown).
async fn grace_over(stopping: Option<Instant>) {
    sleep_until(stopping.map(|at| at + SHUTDOWN_GRACE)).await;
}

/// Resolves when the whole shutdown budget is spent, so the session loop checks it.
async fn shutdown_budget_over(stopping: Option<Instant>) {
    sleep_until(stopping.map(|at| at + SHUTDOWN_GRACE + SHUTDOWN_REPORT_BUDGET)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_url_follows_the_engine_url() {
        let url = |base: &str| stream_url(base).map(|url| url.to_string());
        assert_eq!(url("http://127.0.0.1:8080").as_deref(), Ok("ws://127.0.0.1:8080/v1/tasks/stream"));
        assert_eq!(url("http://127.0.0.1:8080/").as_deref(), Ok("ws://127.0.0.1:8080/v1/tasks/stream"));
        assert_eq!(url("https://engine.example/prefix/").as_deref(), Ok("wss://engine.example/prefix/v1/tasks/stream"));
        assert!(url("ftp://engine.example").is_err());
    }

    #[test]
    fn a_stream_holds_what_the_poll_loops_held() {
        assert_eq!(slots(8), 8 * TASKS_PER_POLL);
        assert_eq!(slots(1), TASKS_PER_POLL);
    }
}
