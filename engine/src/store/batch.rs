//! [`WriteBatch`]: the writes of one or more transitions, built by the core without naming a
//! backend, and applied together (all or nothing) by a [`super::HistoryStore`].
//!
//! Records are encoded here, with the one codec, as the batch is built: a record that cannot
//! be encoded is refused before anything is applied, and a backend only places bytes. Each
//! append carries the sequence number its events follow (the first event's minus one), which
//! the backend checks; the batch carries the epochs it was decided under. This module must
//! never read or write a store.

use super::position::IndexedAppend;
use super::{Epoch, Error, RunSummary, ShardId, TokenRecord, TOKEN_DIGEST_LEN};
use crate::codec;
use shop_types::api::WorkflowStatus;
use shop_types::history::Event;
use shop_types::WorkflowId;

/// One run's events in this batch (one transition, or several joined: see
/// [`WriteBatch::append_transition`]), encoded as one history record.
#[derive(Debug, Clone)]
pub struct Append {
    pub run: WorkflowId,
    /// The sequence number the run's history must end at for this append to apply.
    pub after: u64,
    /// The sequence number of the last event appended.
    pub last: u64,
    /// The events, encoded as one record (`codec::encode_events`).
    pub record: Vec<u8>,
    /// The run's status before these events (for the position index).
    pub status_before: WorkflowStatus,
}

/// A run's new summary, and how the indexes move with it.
#[derive(Debug, Clone)]
pub struct PutRun {
    pub run: WorkflowId,
    /// The summary, encoded.
    pub record: Vec<u8>,
    pub status: WorkflowStatus,
    /// The status the stored summary had, whose index entry goes.
    pub previous: Option<WorkflowStatus>,
    /// Whether the run stays in the in-flight index (a parked run is FAILED yet in flight).
    pub in_flight: bool,
}

#[derive(Debug, Default)]
pub struct WriteBatch {
    fences: Vec<(ShardId, Epoch)>,
    appends: Vec<Append>,
    runs: Vec<PutRun>,
    tokens: Vec<([u8; TOKEN_DIGEST_LEN], Vec<u8>)>,
    definitions: Vec<(String, u32, Vec<u8>)>,
    /// Redrive jobs by id (`crate::redrive`).
    redrives: Vec<(String, Vec<u8>)>,
    /// History events among the appends.
    events: usize,
    /// Whether a transition joined an earlier append of its run (see
    /// [`Self::append_transition`]): the batch's events are then no longer in the order
    /// they were added.
    joined: bool,
    /// The position index records, one per shard the batch writes: the shard, the position
    /// of the batch's first event in it, and the record listing its appends there (see
    /// [`super::position`]).
    index: Vec<(ShardId, u64, u64, Vec<u8>)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records written.
    pub fn len(&self) -> usize {
        self.appends.len() + self.runs.len() + self.tokens.len() + self.definitions.len() + self.redrives.len()
    }

    /// History events written.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Whether a run's transition joined an earlier one of the same run in this batch. When
    /// it did, the events are numbered in the order of the appends (each run's together),
    /// not in the order they were added.
    pub fn joined_appends(&self) -> bool {
        self.joined
    }

    /// Records that the batch was decided while owning `shard` at `epoch`. A backend that
    /// fences refuses the batch unless it still holds the shard at that epoch; sled ignores it.
    pub fn fence(&mut self, shard: ShardId, epoch: Epoch) {
        self.fences.push((shard, epoch));
    }

    pub fn fences(&self) -> &[(ShardId, Epoch)] {
        &self.fences
    }

    pub fn appends(&self) -> &[Append] {
        &self.appends
    }

    pub fn runs(&self) -> &[PutRun] {
        &self.runs
    }

    pub fn tokens(&self) -> &[([u8; TOKEN_DIGEST_LEN], Vec<u8>)] {
        &self.tokens
    }

    pub fn definitions(&self) -> &[(String, u32, Vec<u8>)] {
        &self.definitions
    }

    /// The position index records, once [`Self::number_shards`] has numbered the events: one
    /// per shard written, with the position of the batch's first event there and how many
    /// events it numbers.
    pub fn index(&self) -> impl Iterator<Item = (ShardId, u64, u64, &[u8])> {
        self.index.iter().map(|(shard, first, count, record)| (*shard, *first, *count, record.as_slice()))
    }

    /// Numbers the batch's events in `shard` from `first_position` on, in the order of its
    /// appends, as one index record; returns how many were numbered (none: no record). For a
    /// store with one shard; see [`Self::number_shards`].
    pub fn number(&mut self, shard: ShardId, first_position: u64) -> Result<u64, Error> {
        let mut last = std::collections::HashMap::from([(shard, first_position.saturating_sub(1))]);
        self.number_shards(|_| shard, &mut last)
    }

    /// Numbers the batch's events per shard (`shard_of` each append's run), in the order of
    /// its appends, each shard's after `last[shard]` (0 when absent), which moves on: one index
    /// record per shard written. Returns how many events were numbered. Call it once, when
    /// the batch is complete: the writer of each shard owns its numbering.
    pub fn number_shards(
        &mut self,
        shard_of: impl Fn(&WorkflowId) -> ShardId,
        last: &mut std::collections::HashMap<ShardId, u64>,
    ) -> Result<u64, Error> {
        self.index.clear();
        if self.events == 0 {
            return Ok(0);
        }
        // Few shards per batch (one on sled): a short list beats a map.
        let mut per_shard: Vec<(ShardId, u64, u64, Vec<IndexedAppend>)> = Vec::new();
        for append in &self.appends {
            let shard = shard_of(&append.run);
            let count = append.last - append.after;
            let index = match per_shard.iter().position(|(s, ..)| *s == shard) {
                Some(index) => index,
                None => {
                    let first = last.get(&shard).copied().unwrap_or(0) + 1;
                    per_shard.push((shard, first, 0, Vec::new()));
                    per_shard.len() - 1
                }
            };
            per_shard[index].2 += count;
            per_shard[index].3.push(IndexedAppend {
                run: append.run.clone(),
                first_seq: append.after + 1,
                count: count as u32,
                status_before: append.status_before,
            });
            *last.entry(shard).or_insert(0) += count;
        }
        for (shard, first, count, appends) in per_shard {
            let record = codec::encode(&appends).map_err(Error::Encode)?;
            self.index.push((shard, first, count, record));
        }
        Ok(self.events as u64)
    }

    /// Adds every write of `other` after this batch's own, so both apply as one.
    pub fn extend(&mut self, other: WriteBatch) {
        self.fences.extend(other.fences);
        self.appends.extend(other.appends);
        self.runs.extend(other.runs);
        self.tokens.extend(other.tokens);
        self.definitions.extend(other.definitions);
        self.redrives.extend(other.redrives);
        self.events += other.events;
        self.joined |= other.joined;
        // Numbering is done once the batch is whole; an extended batch is numbered again.
        self.index.clear();
    }

    /// Appends one transition's events of a run that is RUNNING before them (see
    /// [`Self::append_transition`]).
    pub fn append_events(&mut self, id: &WorkflowId, events: &[Event]) -> Result<(), Error> {
        self.append_transition(id, events, WorkflowStatus::Running)
    }

    /// Appends one transition's events as one record. They must be numbered one after the
    /// other; the first one's number minus one is what the run's history must end at. When
    /// the batch already appends this run's events up to right before them, they join that
    /// record instead (its status before stays the first transition's).
    /// `status_before` is the run's status before them, which the position index keeps.
    pub fn append_transition(
        &mut self,
        id: &WorkflowId,
        events: &[Event],
        status_before: WorkflowStatus,
    ) -> Result<(), Error> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        if let Some((_, event)) = events.iter().enumerate().find(|(i, e)| e.seq != first.seq + *i as u64) {
            return Err(Error::Gap { run: id.clone(), seq: event.seq });
        }
        let after = first.seq.checked_sub(1).ok_or(Error::Gap { run: id.clone(), seq: 0 })?;
        // A run's next transition in the same batch (a step completed, then the next one
        // handed out at the end of the turn) joins its record: one history key, one index
        // entry. Batches hold a few appends, so the search is short.
        if let Some(previous) = self.appends.iter_mut().rev().find(|append| append.run == *id) {
            if previous.last == after {
                codec::extend_events(&mut previous.record, events).map_err(Error::Encode)?;
                previous.last = last.seq;
                self.events += events.len();
                self.joined = true;
                return Ok(());
            }
        }
        let record = codec::encode_events(events).map_err(Error::Encode)?;
        self.appends.push(Append { run: id.clone(), after, last: last.seq, record, status_before });
        self.events += events.len();
        Ok(())
    }

    /// Writes the run's summary and keeps the by-status index in step with it, and the
    /// in-flight index with `in_flight` (a parked run is FAILED yet still in flight: it can
    /// resume).
    pub fn put_run(
        &mut self,
        id: &WorkflowId,
        summary: &RunSummary,
        previous: Option<WorkflowStatus>,
        in_flight: bool,
    ) -> Result<(), Error> {
        let record = codec::encode(summary).map_err(Error::Encode)?;
        self.runs.push(PutRun { run: id.clone(), record, status: summary.status, previous, in_flight });
        Ok(())
    }

    pub fn put_token(&mut self, digest: &[u8; TOKEN_DIGEST_LEN], record: &TokenRecord) -> Result<(), Error> {
        self.tokens.push((*digest, codec::encode(record).map_err(Error::Encode)?));
        Ok(())
    }

    /// Writes redrive job `job` whole (a later write of the same id replaces it).
    pub fn put_redrive(&mut self, job: &shop_types::redrive::RedriveJob) -> Result<(), Error> {
        self.redrives.push((job.id.clone(), codec::encode(job).map_err(Error::Encode)?));
        Ok(())
    }

    pub fn redrives(&self) -> &[(String, Vec<u8>)] {
        &self.redrives
    }

    pub fn put_definition(&mut self, name: &str, version: u32, source: &str) -> Result<(), Error> {
        self.definitions.push((name.to_owned(), version, codec::encode(source).map_err(Error::Encode)?));
        Ok(())
    }
}
