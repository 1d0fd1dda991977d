//! The event stream routes (Server-Sent Events), behind the client role like reading runs:
//!
//! - `GET /v1/events?type=&kind=&status=&after=`: every committed event of the engine,
//!   filtered; each message `id: <cursor>`, `event: <kind>`, `data: {"position",
//!   "workflowId","workflowType","seq","kind","atMs","status"}`. Without `after` it starts
//!   at "now"; `after=0` at the beginning.
//! - `GET /v1/workflows/{id}/events?after=<seq>`: the run's history, then live, then
//!   `event: end` (`{"status"}`) once it is terminal; each message `id: <seq>`,
//!   `event: <kind>`, `data:` one entry of `GET /v1/workflows/{id}/history`.
//!
//! Both resume with `Last-Event-ID` (which wins over the query, as a browser's EventSource
//! reconnects to the same URL with it), send a keep-alive comment every
//! [`KEEP_ALIVE_SECS`], and take one of `--max-stream-subscribers` places (503 past it).
//!
//! The cursor is opaque to clients: one `<shard>:<position>` per shard that has events, comma
//! separated (`0:<position>` for the one shard of sled). This module never writes.

use super::{query, ApiError, AppState};
use crate::store::ShardId;
use crate::streams::{GlobalFeed, RunFeed, RunItem, StreamEvent, StreamSlot};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde::Deserialize;
use shop_types::api::{CommittedEventView, StreamEnd, WorkflowStatus};
use shop_types::{WorkflowId, WorkflowType};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Seconds between keep-alive comments on an idle stream, so proxies and clients can tell a
/// quiet stream from a dead connection.
pub const KEEP_ALIVE_SECS: u64 = 15;

/// Longest `kind` filter accepted (the longest event kind name is far shorter).
const MAX_KIND_LEN: usize = 64;

/// A position per shard: what `/v1/events` resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor(BTreeMap<ShardId, u64>);

impl Cursor {
    /// Parses `0` (the beginning) or `<shard>:<position>[,<shard>:<position>...]`.
    pub(crate) fn parse(text: &str) -> Result<Cursor, ApiError> {
        let bad = || ApiError::bad_request("BAD_CURSOR", format!("{text:?} is not a cursor this engine gave out"));
        if text == "0" {
            return Ok(Cursor(BTreeMap::new()));
        }
        let mut positions = BTreeMap::new();
        for part in text.split(',') {
            let (shard, position) = part.split_once(':').ok_or_else(bad)?;
            let shard = ShardId(shard.parse().map_err(|_| bad())?);
            let position: u64 = position.parse().map_err(|_| bad())?;
            if positions.insert(shard, position).is_some() {
                return Err(bad());
            }
        }
        Ok(Cursor(positions))
    }

    #[cfg(test)]
    fn at(shard: ShardId, position: u64) -> Cursor {
        Cursor(BTreeMap::from([(shard, position)]))
    }

    #[cfg(test)]
    fn position(&self, shard: ShardId) -> u64 {
        self.0.get(&shard).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("0");
        }
        let parts: Vec<String> = self.0.iter().map(|(shard, position)| format!("{}:{position}", shard.0)).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    #[serde(rename = "type")]
    workflow_type: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    after: Option<String>,
}

/// What a `/v1/events` subscriber asked to see.
struct Filter {
    workflow_type: Option<WorkflowType>,
    kind: Option<String>,
    status: Option<WorkflowStatus>,
}

impl Filter {
    fn matches(&self, event: &StreamEvent) -> bool {
        self.workflow_type.as_ref().is_none_or(|t| *t == event.workflow_type)
            && self.kind.as_deref().is_none_or(|k| k == event.kind)
            && self.status.is_none_or(|s| s == event.status)
    }
}

/// The `Last-Event-ID` header, if any.
fn last_event_id(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| v.to_str().map_err(|_| ApiError::bad_request("BAD_CURSOR", "Last-Event-ID must be visible ASCII")))
        .transpose()
}

/// One of the engine's stream places, or 503 `OVERLOADED` when all are taken.
pub(super) fn take_slot(state: &AppState) -> Result<StreamSlot, ApiError> {
    state.streams.acquire().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            format!(
                "{} event streams are open, the most this engine serves; retry later",
                state.streams.max_subscribers()
            ),
        )
    })
}

pub(super) fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(KEEP_ALIVE_SECS))).into_response()
}

/// `GET /v1/events`: every committed event, filtered, from a cursor or from now.
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let filter = Filter {
        workflow_type: params.workflow_type.map(WorkflowType::parse).transpose()?,
        kind: match params.kind {
            Some(kind)
                if kind.is_empty() || kind.len() > MAX_KIND_LEN || !kind.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                return Err(ApiError::invalid(format!("kind={kind:?} is not an event kind name")));
            }
            kind => kind,
        },
        status: params.status.as_deref().map(str::parse::<WorkflowStatus>).transpose().map_err(ApiError::invalid)?,
    };
    let after = match last_event_id(&headers)?.or(params.after.as_deref()) {
        Some(text) => {
            let after = Cursor::parse(text)?.0;
            // Only a cursor this engine gave out is accepted: one past what it has made durable
            // would silently skip every event up to it.
            let shards = state.store.shard_count();
            let ahead = after
                .iter()
                .any(|(shard, position)| shard.0 >= shards || *position > state.core.durable_position_of(*shard));
            if ahead {
                return Err(ApiError::bad_request("BAD_CURSOR", format!("{text:?} is ahead of this engine's events")));
            }
            Some(after)
        }
        None => None,
    };
    let filter = Arc::new(filter);
    let slot = take_slot(&state)?;
    let feed = GlobalFeed::new(state.store.clone(), state.core.clone(), state.streams.clone(), after);
    let stopping = state.streams.stopping();
    let hub = state.streams.clone();
    let stream = futures_util::stream::unfold((feed, stopping, slot), move |(mut feed, mut stopping, slot)| {
        let (hub, filter) = (hub.clone(), filter.clone());
        async move {
            loop {
                let next = tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => return None,
                    next = feed.next() => next,
                };
                match next {
                    Ok(event) if filter.matches(&event) => {
                        hub.count_sent(1);
                        return Some((Ok(global_message(&event)), (feed, stopping, slot)));
                    }
                    Ok(_) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "an event stream ends");
                        return None;
                    }
                }
            }
        }
    });
    Ok(sse(stream))
}

fn global_message(event: &StreamEvent) -> SseEvent {
    let view = CommittedEventView {
        position: event.position,
        workflow_id: event.run.clone(),
        workflow_type: event.workflow_type.clone(),
        seq: event.seq,
        kind: event.kind.to_owned(),
        at_ms: event.at_ms,
        status: event.status,
    };
    SseEvent::default()
        .id(Cursor(event.cursor.clone()).to_string())
        .event(event.kind)
        .data(serde_json::to_string(&view).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunEventsQuery {
    after: Option<u64>,
}

/// `GET /v1/workflows/{id}/events`: the run's history after a sequence number, then live,
/// then `end` once it is terminal.
pub(crate) async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<RunEventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = WorkflowId::parse(id)?;
    let params = query(params)?;
    let after = match last_event_id(&headers)? {
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_request("BAD_CURSOR", format!("Last-Event-ID {text:?} is not a sequence number"))
        })?,
        None => params.after.unwrap_or(0),
    };
    let summary = state.store.run(&id)?.ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))?;
    let definition =
        state.registry.read().ok().and_then(|r| r.get(summary.workflow_type.as_str(), summary.definition_version));
    let slot = take_slot(&state)?;
    let feed = RunFeed::new(state.store.clone(), &state.core, state.streams.clone(), id, after);
    let stopping = state.streams.stopping();
    let hub = state.streams.clone();
    // `done` once `end` went out: the stream then closes.
    let start = (feed, stopping, slot, false);
    let stream = futures_util::stream::unfold(start, move |(mut feed, mut stopping, slot, done)| {
        let (hub, definition) = (hub.clone(), definition.clone());
        async move {
            if done {
                return None;
            }
            let next = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return None,
                next = feed.next() => next,
            };
            match next {
                Ok(RunItem::Event(event)) => {
                    hub.count_sent(1);
                    let (seq, kind) = (event.seq, event.kind.name());
                    let view = super::workflows::history_view(definition.as_deref(), event);
                    let data = serde_json::to_string(&view).unwrap_or_default();
                    let message = SseEvent::default().id(seq.to_string()).event(kind).data(data);
                    Some((Ok(message), (feed, stopping, slot, false)))
                }
                Ok(RunItem::End(status)) => {
                    let end = SseEvent::default()
                        .event("end")
                        .data(serde_json::to_string(&StreamEnd { status }).unwrap_or_default());
                    Some((Ok(end), (feed, stopping, slot, true)))
                }
                Err(error) => {
                    tracing::warn!(%error, "an event stream ends");
                    None
                }
            }
        }
    });
    Ok(sse(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        assert_eq!(Cursor::parse("0").expect("the beginning").position(ShardId::SOLE), 0);
        let one = Cursor::at(ShardId::SOLE, 1234);
        assert_eq!(one.to_string(), "0:1234");
        assert_eq!(Cursor::parse("0:1234").expect("parses"), one);
        let several = Cursor::parse("0:5,3:9").expect("one position per shard");
        assert_eq!((several.position(ShardId(3)), several.position(ShardId(7))), (9, 0));
        assert_eq!(Cursor::parse(&several.to_string()).expect("round trip"), several);
        for bad in ["", "x", "0:", ":1", "0:1,0:2", "0:-1", "1", "0:1;"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
