//! Finished runs packed into one record (sled backend): when a batch takes a run out of
//! flight, its history records and summary are rewritten, in that same batch, as one packed
//! value under the run's key (`super::super::packed`), and its history keys are removed. A
//! run touched again after that (an append the contract allows, or a summary put back in
//! flight) is unpacked in the batch that touches it, so every read sees one history.
//!
//! The readers here find a run's transitions wherever they are: history records first, then
//! the run's key. A reader that scanned the history keys before a concurrent batch packed
//! them still reads the run's key after, and trusts a packed value over its scan, so a pack
//! racing a read gives the whole history, never a cut one. This module must never decide
//! anything about workflows.

use super::super::packed::{self, Transition};
use super::super::{Append, Error, WriteBatch};
use super::{decode_events, history_key, history_prefix, key, RUN};
use crate::codec;
use shop_durable::LoggedTree;
use shop_types::WorkflowId;
use std::collections::{HashMap, HashSet};

/// What the store holds of a run the batch touches that is not in the in-flight map.
pub(super) struct Stored {
    /// The run's packed record, when it is packed.
    pub packed: Option<Vec<u8>>,
}

/// The run's packed record, if its key holds one.
pub(super) fn packed_record(tree: &LoggedTree, id: &WorkflowId) -> Result<Option<Vec<u8>>, Error> {
    Ok(tree.get(run_key(id))?.filter(|bytes| packed::is_packed(bytes)).map(|bytes| bytes.to_vec()))
}

pub(super) fn run_key(id: &WorkflowId) -> Vec<u8> {
    key(RUN, id.as_str().as_bytes(), &[])
}

fn corrupt(key: &[u8], source: codec::Error) -> Error {
    Error::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source }
}

/// The transitions of a packed record read under `id`'s run key.
pub(super) fn transitions_of(id: &WorkflowId, bytes: &[u8]) -> Result<Vec<Transition>, Error> {
    packed::transitions(bytes).map_err(|source| corrupt(&run_key(id), source))
}

/// The summary record held in a run key's value, packed or not.
pub(super) fn summary_bytes<'a>(id: &WorkflowId, bytes: &'a [u8]) -> Result<&'a [u8], Error> {
    if packed::is_packed(bytes) {
        packed::summary(bytes).map_err(|source| corrupt(&run_key(id), source))
    } else {
        Ok(bytes)
    }
}

/// The run's history records, with their keys, in sequence order (none for a packed run).
fn history_records(tree: &LoggedTree, id: &WorkflowId) -> Result<Vec<(sled::IVec, Transition)>, Error> {
    tree.scan_prefix(history_prefix(id))
        .map(|entry| {
            let (key, record) = entry?;
            let first_seq = key
                .len()
                .checked_sub(8)
                .and_then(|at| <[u8; 8]>::try_from(&key[at..]).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(&key, codec::Error::Empty))?;
            Ok((key, Transition { first_seq, record: record.to_vec() }))
        })
        .collect()
}

/// The run's transitions wherever they are stored: its history records, or, when its key
/// holds a packed record (read after the scan, so a pack racing the scan is seen), that.
pub(super) fn transitions(tree: &LoggedTree, id: &WorkflowId) -> Result<Vec<Transition>, Error> {
    let scanned = history_records(tree, id)?;
    match packed_record(tree, id)? {
        Some(bytes) => transitions_of(id, &bytes),
        None => Ok(scanned.into_iter().map(|(_, transition)| transition).collect()),
    }
}

/// One transition of the run by its first sequence number: its history record, or from the
/// run's packed record (kept in `cache` for the other transitions of the same read).
pub(super) fn transition_record(
    tree: &LoggedTree,
    id: &WorkflowId,
    first_seq: u64,
    cache: &mut HashMap<WorkflowId, Vec<Transition>>,
) -> Result<Option<Vec<u8>>, Error> {
    if let Some(record) = tree.get(history_key(id, first_seq))? {
        return Ok(Some(record.to_vec()));
    }
    if !cache.contains_key(id) {
        let Some(bytes) = packed_record(tree, id)? else {
            return Ok(None);
        };
        cache.insert(id.clone(), transitions_of(id, &bytes)?);
    }
    Ok(cache.get(id).and_then(|all| all.iter().find(|t| t.first_seq == first_seq)).map(|t| t.record.clone()))
}

/// The last sequence number of a packed run's history.
pub(super) fn last_seq_of_packed(id: &WorkflowId, bytes: &[u8]) -> Result<u64, Error> {
    let transitions = transitions_of(id, bytes)?;
    match transitions.last() {
        Some(last) => Ok(decode_events(&run_key(id), &last.record)?.last().map_or(0, |event| event.seq)),
        None => Ok(0),
    }
}

/// Adds to `out` (built from `batch` already) what packing and unpacking need: every run the
/// batch takes out of flight is packed with its stored transitions and the batch's; every
/// packed run the batch touches without finishing it again is unpacked.
pub(super) fn pack_and_unpack(
    tree: &LoggedTree,
    batch: &WriteBatch,
    stored: &HashMap<&WorkflowId, Stored>,
    out: &mut shop_durable::LogBatch,
) -> Result<(), Error> {
    // A run's last summary in the batch decides whether it ends the batch finished.
    let mut last_put = HashMap::new();
    for put in batch.runs() {
        last_put.insert(&put.run, put);
    }
    // Each run's appends in batch order (a batch may hold several transitions of a run).
    let mut appends: HashMap<&WorkflowId, Vec<&Append>> = HashMap::new();
    for append in batch.appends() {
        appends.entry(&append.run).or_default().push(append);
    }
    let mut touched: Vec<&WorkflowId> = Vec::new();
    let mut seen = HashSet::new();
    for run in batch.appends().iter().map(|a| &a.run).chain(batch.runs().iter().map(|p| &p.run)) {
        if seen.insert(run) {
            touched.push(run);
        }
    }
    for run in touched {
        let was_packed = stored.get(run).and_then(|s| s.packed.as_deref());
        let finishing = last_put.get(run).filter(|put| !put.in_flight);
        match (finishing, was_packed) {
            (Some(put), _) => {
                let mut all = match was_packed {
                    Some(bytes) => transitions_of(run, bytes)?,
                    None => history_records(tree, run)?
                        .into_iter()
                        .map(|(key, transition)| {
                            out.remove(key);
                            transition
                        })
                        .collect(),
                };
                for append in appends.get(run).into_iter().flatten() {
                    // Written by `sled_batch` as a history record: packed instead.
                    out.remove(history_key(run, append.after + 1));
                    all.push(Transition { first_seq: append.after + 1, record: append.record.clone() });
                }
                out.insert(run_key(run), packed::pack(&put.record, &all));
            }
            (None, Some(bytes)) => {
                for transition in transitions_of(run, bytes)? {
                    out.insert(history_key(run, transition.first_seq), transition.record);
                }
                if !last_put.contains_key(run) {
                    out.insert(run_key(run), summary_bytes(run, bytes)?);
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::HistoryStore;
    use super::super::SledStore;
    use super::*;
    use crate::store::contract::{events, summary};
    use shop_durable::Durability;
    use shop_types::api::WorkflowStatus;

    /// Every key that names `id`, by its prefix byte.
    fn keys_of(store: &SledStore, id: &WorkflowId) -> Vec<u8> {
        store
            .log
            .scan_prefix([])
            .map(|entry| entry.expect("reads").0)
            .filter(|key| key.windows(id.as_str().len()).any(|w| w == id.as_str().as_bytes()))
            .map(|key| key[0])
            .collect()
    }

    #[test]
    fn a_finished_run_is_one_packed_record_and_its_status_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), Durability::ProcessCrash, None).expect("opens");
        let id = WorkflowId::parse("packed-1").expect("valid");
        let mut start = WriteBatch::default();
        start.append_events(&id, &events(1, 2, "r")).expect("encodes");
        start.put_run(&id, &summary(WorkflowStatus::Running), None, true).expect("encodes");
        store.commit(start).expect("commits");
        for seq in [3, 5] {
            let mut step = WriteBatch::default();
            step.append_events(&id, &events(seq, seq + 1, "r")).expect("encodes");
            store.commit(step).expect("commits");
        }
        assert_eq!(keys_of(&store, &id), b"ahhhrs".to_vec(), "in flight: a record per transition");
        let mut end = WriteBatch::default();
        end.append_events(&id, &events(7, 7, "r")).expect("encodes");
        end.put_run(&id, &summary(WorkflowStatus::Completed), Some(WorkflowStatus::Running), false).expect("encodes");
        store.commit(end).expect("commits");
        assert_eq!(keys_of(&store, &id), b"rs".to_vec(), "finished: the packed record and the status index");
        let packed = packed_record(&store.log, &id).expect("reads").expect("packed");
        assert_eq!(transitions_of(&id, &packed).expect("decodes").len(), 4);
        assert_eq!(store.history(&id).expect("reads"), events(1, 7, "r"));
        assert_eq!(store.start_events(&id).expect("reads"), events(1, 2, "r"));
    }

    #[test]
    fn an_order_saga_packs_smaller_compressed_than_raw() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), Durability::ProcessCrash, None).expect("opens");
        let definition =
            crate::definition::parse("order.toml", include_str!("../../../../workflows/order.toml")).expect("valid");
        crate::preload::preload_completed(&store, &definition, 1, 1_000).expect("preloads");
        let id = WorkflowId::parse("preload-0000000").expect("valid");
        let packed = packed_record(&store.log, &id).expect("reads").expect("a completed run is packed");
        let transitions = transitions_of(&id, &packed).expect("decodes");
        let summary = summary_bytes(&id, &packed).expect("decodes").len();
        let raw: usize = summary + transitions.iter().map(|t| t.record.len()).sum::<usize>();
        // What the figures in docs/performance.md were read from (`--nocapture`).
        eprintln!("order saga: {} transitions, {raw} bytes raw, {} bytes packed", transitions.len(), packed.len());
        assert!(packed.len() < raw, "LZ4 pays on an order saga: {} >= {raw}", packed.len());
    }
}
