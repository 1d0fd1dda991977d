//! The engine's event streams (Server-Sent Events): `GET /v1/events` and
//! `GET /v1/workflows/{id}/events`, read message by message, and resumed transparently with
//! `Last-Event-ID` when the connection drops or the engine restarts.
//!
//! It owns the SSE framing (`id:`, `event:`, `data:` lines, a blank line ends a message,
//! `:` lines are keep-alives) and the reconnect loop, bounded by [`MAX_RECONNECTS`] attempts
//! in a row without a message. It must never interpret a message beyond its framing: what an
//! `end` means is the caller's business. It never prints.

use crate::{build_url, Client, Error};
use reqwest::{header, Method, Url};
use shop_types::api::{CommittedEventView, HistoryEventView, StreamEnd};
use std::collections::VecDeque;
use std::time::Duration;

/// Longest silence on a stream before it is taken for dead and reconnected: three of the
/// engine's keep-alive intervals (15 s).
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Attempts in a row to (re)connect without getting a message before giving up.
pub const MAX_RECONNECTS: u32 = 30;
/// The first pause before reconnecting; it doubles up to [`MAX_RECONNECT_DELAY`].
pub const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// Longest SSE message accepted (a history entry holds at most a 256 KiB payload).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// One SSE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    pub data: String,
}

/// What `/v1/events` takes: filters and where to start (`None`: from now; `"0"`: from the
/// beginning; else a cursor a message gave as its id).
#[derive(Debug, Clone, Default)]
pub struct EventsQuery {
    pub workflow_type: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub after: Option<String>,
}

/// A stream of messages that reconnects by itself, resuming after the last id it saw.
pub struct EventStream {
    client: Client,
    url: Url,
    last_id: Option<String>,
    response: Option<reqwest::Response>,
    buffer: Vec<u8>,
    ready: VecDeque<Message>,
    /// Attempts since the last message.
    failures: u32,
    reconnects: u64,
}

impl Client {
    /// `GET /v1/events` with `query`.
    pub fn events(&self, query: &EventsQuery) -> Result<EventStream, Error> {
        let mut pairs = Vec::new();
        for (name, value) in
            [("type", &query.workflow_type), ("kind", &query.kind), ("status", &query.status), ("after", &query.after)]
        {
            if let Some(value) = value {
                pairs.push((name, value.clone()));
            }
        }
        let url = build_url(&self.base, &["v1", "events"], &pairs)?;
        Ok(EventStream::new(self.clone(), url))
    }

    /// `GET /v1/workflows/{id}/events`, after event `after` (0: the whole history).
    pub fn workflow_events(&self, id: &str, after: u64) -> Result<EventStream, Error> {
        let url = build_url(&self.base, &["v1", "workflows", id, "events"], &[("after", after.to_string())])?;
        Ok(EventStream::new(self.clone(), url))
    }
}

impl EventStream {
    fn new(client: Client, url: Url) -> EventStream {
        EventStream {
            client,
            url,
            last_id: None,
            response: None,
            buffer: Vec::new(),
            ready: VecDeque::new(),
            failures: 0,
            reconnects: 0,
        }
    }

    /// Times the stream reconnected after a drop.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The id of the last message returned: where a reconnect resumes.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The next message, reconnecting (with `Last-Event-ID`) as often as it takes, up to
    /// [`MAX_RECONNECTS`] attempts in a row. An answer other than 2xx that is not worth
    /// retrying (400, 401, 404, ...) is returned as the error it is.
    pub async fn next(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                self.failures = 0;
                if let Some(id) = &message.id {
                    self.last_id = Some(id.clone());
                }
                return Ok(message);
            }
            let Some(response) = self.response.as_mut() else {
                self.connect().await?;
                continue;
            };
            match tokio::time::timeout(STREAM_IDLE_TIMEOUT, response.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    self.buffer.extend_from_slice(&bytes);
                    self.parse()?;
                }
                // The server closed the stream, the connection broke, or it fell silent:
                // reconnect after the last message returned.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    self.response = None;
                    self.buffer.clear();
                    self.reconnects += 1;
                }
            }
        }
    }

    /// Opens the stream, retrying transport failures and 429/503 with a growing pause.
    async fn connect(&mut self) -> Result<(), Error> {
        loop {
            if self.failures > 0 {
                let shift = self.failures.min(8) - 1;
                let delay = FIRST_RECONNECT_DELAY.saturating_mul(1 << shift).min(MAX_RECONNECT_DELAY);
                tokio::time::sleep(delay).await;
            }
            self.failures += 1;
            let mut request = self.client.stream_request(self.url.clone()).header(header::ACCEPT, "text/event-stream");
            if let Some(id) = &self.last_id {
                request = request.header("Last-Event-ID", id.as_str());
            }
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.response = Some(response);
                    return Ok(());
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok());
                    let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    crate::error::from_status(
                        self.client.service,
                        &Method::GET,
                        self.url.path(),
                        status,
                        &body,
                        retry_after,
                    )
                }
                Err(err) => self.client.transport(&Method::GET, &self.url, &err),
            };
            if !outcome.is_retryable() || self.failures >= MAX_RECONNECTS {
                return Err(outcome);
            }
            tracing::debug!(error = %outcome, "event stream: reconnecting");
        }
    }

    /// Moves every complete message out of the buffer.
    fn parse(&mut self) -> Result<(), Error> {
        while let Some(end) = message_end(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end.0).collect();
            self.buffer.drain(..end.1);
            if let Some(message) = parse_message(&String::from_utf8_lossy(&raw)) {
                self.ready.push_back(message);
            }
        }
        if self.buffer.len() > MAX_MESSAGE_BYTES {
            return Err(Error::BadResponse {
                service: self.client.service,
                method: Method::GET,
                path: self.url.path().to_owned(),
                reason: format!("with an event longer than {MAX_MESSAGE_BYTES} bytes"),
            });
        }
        Ok(())
    }
}

/// Where the first message in `buffer` ends: its length and the separator's.
fn message_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// One message's fields; `None` for a block of comments only (a keep-alive).
fn parse_message(raw: &str) -> Option<Message> {
    let mut message = Message { event: "message".into(), ..Message::default() };
    let mut data: Vec<&str> = Vec::new();
    let mut any = false;
    for line in raw.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => message.id = Some(value.to_owned()),
            "event" => message.event = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    message.data = data.join("\n");
    any.then_some(message)
}

impl Message {
    /// The data of a `/v1/events` message.
    pub fn committed_event(&self) -> Result<CommittedEventView, serde_json::Error> {
        serde_json::from_str(&self.data)
    }

    /// The data of a `/v1/workflows/{id}/events` message other than `end`.
    pub fn history_event(&self) -> Result<HistoryEventView, serde_json::Error> {
        serde_json::from_str(&self.data)
    }

    /// The data of the `end` message of `/v1/workflows/{id}/events`.
    pub fn end(&self) -> Result<StreamEnd, serde_json::Error> {
        serde_json::from_str(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_by_blank_lines_and_keep_alives_are_skipped() {
        let raw = ": keep-alive\n\nid: 0:7\nevent: StepCompleted\ndata: {\"a\":\ndata: 1}\n\nid: 8\r\nevent: end\r\ndata: x\r\n\r\n";
        let mut buffer = raw.as_bytes().to_vec();
        let mut out = Vec::new();
        while let Some((len, sep)) = message_end(&buffer) {
            let block: Vec<u8> = buffer.drain(..len).collect();
            buffer.drain(..sep);
            out.extend(parse_message(&String::from_utf8_lossy(&block)));
        }
        assert_eq!(
            out,
            vec![
                Message { id: Some("0:7".into()), event: "StepCompleted".into(), data: "{\"a\":\n1}".into() },
                Message { id: Some("8".into()), event: "end".into(), data: "x".into() },
            ]
        );
        assert!(buffer.is_empty());
    }
}
