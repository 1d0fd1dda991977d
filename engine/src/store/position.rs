//! Event positions: the durable, increasing number every committed event gets in its shard,
//! so a consumer of `GET /v1/events` can resume after an engine restart.
//!
//! The core numbers the events of each batch it applies (recovery learns the last number
//! from [`super::HistoryStore::last_position`]), and the batch carries ONE index record,
//! keyed by its first position, that lists `(run, first_seq, count, status before)` per
//! append: numbering costs one small record per batch, never a write per event. An event is
//! read back by position from that index and the run's history record the append wrote
//! ([`super::HistoryStore::events_after`]).
//!
//! Positions are per [`super::ShardId`]: the sled backend has one shard; a PostgreSQL backend
//! numbers each shard on its own, and the public cursor (`api/cursor.rs`) can hold one position
//! per shard. This module must never read or write a store.

use serde::{Deserialize, Serialize};
use shop_types::api::WorkflowStatus;
use shop_types::history::Event;
use shop_types::WorkflowId;

/// One append as the position index lists it: its events are numbered one after the other,
/// in the order the batch lists its appends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedAppend {
    pub run: WorkflowId,
    /// The sequence number of the append's first event (the key of its history record).
    pub first_seq: u64,
    pub count: u32,
    /// The run's status before the append, from which each event's status follows
    /// ([`shop_types::history::EventKind::status_after`]).
    pub status_before: WorkflowStatus,
}

/// A committed event read back by its position.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionedEvent {
    pub position: u64,
    pub run: WorkflowId,
    /// The run's status once this event is applied.
    pub status: WorkflowStatus,
    pub event: Event,
}

/// Turns one index record and the events of its appends into positioned events, skipping
/// those at or before `after`. `events_of(i)` gives the events of the `i`-th append.
pub(super) fn positioned<E>(
    first_position: u64,
    appends: &[IndexedAppend],
    after: u64,
    mut events_of: impl FnMut(&IndexedAppend) -> Result<Vec<Event>, E>,
    out: &mut Vec<PositionedEvent>,
    limit: usize,
) -> Result<(), E> {
    let mut position = first_position;
    for append in appends {
        let count = u64::from(append.count);
        if count == 0 || position + count - 1 <= after {
            // Every event of this append is at or before `after`: no read needed.
            position += count;
            continue;
        }
        let mut status = append.status_before;
        for event in events_of(append)?.into_iter().take(append.count as usize) {
            status = event.kind.status_after(status);
            if position > after {
                if out.len() == limit {
                    return Ok(());
                }
                out.push(PositionedEvent { position, run: append.run.clone(), status, event });
            }
            position += 1;
        }
    }
    Ok(())
}
