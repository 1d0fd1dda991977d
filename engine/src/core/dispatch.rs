//! Dispatch bookkeeping: the ready queues (attempts waiting for a worker) and the waiting
//! polls (workers long-polling a queue that had nothing for them).
//!
//! The ready queues are exact: each run remembers the [`ReadyKey`] of its one entry, and the
//! core removes that entry the moment the attempt is started, times out, or its run moves
//! on, finishes or is cancelled. So a queue never holds a stale entry, its length is the
//! backlog `/v1/stats` shows, and it is bounded by the runs in flight. Entries are served in
//! the order they were queued (a sequence number per entry), except that a task whose
//! activity's circuit breaker holds it (`circuit`) is passed over and stays where it is.
//!
//! This module only keeps order and counts; it must never decide anything about a run (the
//! core asks the decider) and never answer a caller itself (the core answers after commit).

use super::signer::TaskSigner;
use super::{Core, Run, Turn};
use crate::decider::Input;
use crate::definition::{INDEX_PARAM, ITEM_PARAM};
use crate::state::AttemptStatus;
use shop_types::api::ActivityTask;
use shop_types::{ActivityName, JsonText, QueueName, StepRef, TaskToken, WorkflowId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use tokio::sync::oneshot;

/// One attempt waiting for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadyTask {
    pub(super) id: WorkflowId,
    pub(super) step: StepRef,
    pub(super) attempt: u32,
    /// Its step's activity, for the circuit breakers.
    pub(super) activity: ActivityName,
}

/// Where a run's ready entry sits, so it can be removed in O(log n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadyKey {
    pub(super) queue: QueueName,
    seq: u64,
    pub(super) step: StepRef,
    pub(super) attempt: u32,
}

/// Every queue's ready attempts, oldest first.
#[derive(Default)]
pub(super) struct ReadyQueues {
    queues: HashMap<QueueName, BTreeMap<u64, ReadyTask>>,
    next_seq: u64,
}

impl ReadyQueues {
    /// Queues `task` last on `queue`; the key removes it again.
    pub(super) fn push(&mut self, queue: QueueName, task: ReadyTask) -> ReadyKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = ReadyKey { queue: queue.clone(), seq, step: task.step, attempt: task.attempt };
        self.queues.entry(queue).or_default().insert(seq, task);
        key
    }

    pub(super) fn remove(&mut self, key: &ReadyKey) {
        if let Some(tasks) = self.queues.get_mut(&key.queue) {
            tasks.remove(&key.seq);
        }
    }

    /// The oldest ready attempt of `queue` that `allowed` lets through, removed. Held tasks
    /// are passed over: a scan, bounded by the queue's backlog, paid only while a breaker
    /// holds some of its tasks.
    pub(super) fn pop(&mut self, queue: &QueueName, allowed: impl Fn(&ReadyTask) -> bool) -> Option<ReadyTask> {
        let tasks = self.queues.get_mut(queue)?;
        let seq = tasks.iter().find(|(_, task)| allowed(task)).map(|(seq, _)| *seq)?;
        tasks.remove(&seq)
    }

    /// Whether `queue` has a ready attempt that `allowed` lets through.
    pub(super) fn has_ready(&self, queue: &QueueName, allowed: impl Fn(&ReadyTask) -> bool) -> bool {
        self.queues.get(queue).is_some_and(|tasks| tasks.values().any(allowed))
    }

    /// The backlog of every queue that ever had a task (an empty one shows 0).
    pub(super) fn depths(&self) -> impl Iterator<Item = (&QueueName, usize)> {
        self.queues.iter().map(|(queue, tasks)| (queue, tasks.len()))
    }

    /// Every queue that ever had a task, with its oldest waiting task (if any).
    fn fronts(&self) -> impl Iterator<Item = (&QueueName, Option<&ReadyTask>)> {
        self.queues.iter().map(|(queue, tasks)| (queue, tasks.first_key_value().map(|(_, task)| task)))
    }
}

/// How long a worker counts as serving a queue after its last poll of it. Three times the
/// workers' long-poll wait (20 s), so an idle worker never drops out between two polls,
/// while one that is gone (or busy with one task for this long) stops counting.
pub const POLLER_RECENT_MS: u64 = 60_000;
/// Workers remembered over all queues at most: a poll names any queue its credential allows,
/// so the map is bounded; beyond it the least recently seen worker is forgotten first.
pub const MAX_POLLER_SIGHTINGS: usize = 4_096;

/// When each worker last polled each queue, for `why`'s "how many workers poll it".
#[derive(Default)]
pub(super) struct PollerSightings {
    last_seen: HashMap<(QueueName, shop_types::WorkerId), u64>,
}

impl PollerSightings {
    /// Records that `worker` polled `queue` at `now_ms`.
    pub(super) fn saw(&mut self, queue: &QueueName, worker: &shop_types::WorkerId, now_ms: u64) {
        let key = (queue.clone(), worker.clone());
        if !self.last_seen.contains_key(&key) && self.last_seen.len() >= MAX_POLLER_SIGHTINGS {
            self.forget_before(now_ms.saturating_sub(POLLER_RECENT_MS));
            if self.last_seen.len() >= MAX_POLLER_SIGHTINGS {
                let oldest = self.last_seen.iter().min_by_key(|(_, at)| **at).map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    self.last_seen.remove(&oldest);
                }
            }
        }
        self.last_seen.insert(key, now_ms);
    }

    fn forget_before(&mut self, cutoff_ms: u64) {
        self.last_seen.retain(|_, at| *at >= cutoff_ms);
    }

    /// Distinct workers per queue seen within [`POLLER_RECENT_MS`] of `now_ms`; older
    /// sightings are forgotten.
    fn recent(&mut self, now_ms: u64) -> HashMap<QueueName, usize> {
        self.forget_before(now_ms.saturating_sub(POLLER_RECENT_MS));
        let mut counts = HashMap::new();
        for (queue, _) in self.last_seen.keys() {
            *counts.entry(queue.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// A worker's long poll that found nothing and waits for a task (until `deadline_ms`).
pub(super) struct WaitingPoll {
    pub(super) worker_id: shop_types::WorkerId,
    pub(super) max_tasks: usize,
    pub(super) deadline_ms: u64,
    pub(super) reply: oneshot::Sender<Vec<ActivityTask>>,
}

/// Waiting polls per queue, in arrival order, with their count.
#[derive(Default)]
pub(super) struct WaitingPolls {
    by_queue: HashMap<QueueName, VecDeque<WaitingPoll>>,
    count: usize,
}

impl WaitingPolls {
    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn push(&mut self, queue: QueueName, poll: WaitingPoll) {
        self.count += 1;
        self.by_queue.entry(queue).or_default().push_back(poll);
    }

    /// The longest-waiting poll of `queue`, removed.
    pub(super) fn pop(&mut self, queue: &QueueName) -> Option<WaitingPoll> {
        let poll = self.by_queue.get_mut(queue)?.pop_front()?;
        self.count -= 1;
        Some(poll)
    }

    /// Polls waiting on `queue` now.
    fn on(&self, queue: &QueueName) -> usize {
        self.by_queue.get(queue).map_or(0, VecDeque::len)
    }

    /// Queues with at least one waiting poll.
    pub(super) fn queues(&self) -> impl Iterator<Item = &QueueName> {
        self.by_queue.iter().filter(|(_, polls)| !polls.is_empty()).map(|(queue, _)| queue)
    }

    /// The soonest deadline of any waiting poll.
    pub(super) fn next_deadline_ms(&self) -> Option<u64> {
        self.by_queue.values().flatten().map(|poll| poll.deadline_ms).min()
    }

    /// Removes the polls past their deadline or whose worker has hung up.
    pub(super) fn take_expired(&mut self, now_ms: u64) -> Vec<WaitingPoll> {
        let mut expired = Vec::new();
        for polls in self.by_queue.values_mut() {
            let mut kept = VecDeque::with_capacity(polls.len());
            for poll in polls.drain(..) {
                if poll.deadline_ms <= now_ms || poll.reply.is_closed() {
                    expired.push(poll);
                } else {
                    kept.push_back(poll);
                }
            }
            *polls = kept;
        }
        self.by_queue.retain(|_, polls| !polls.is_empty());
        self.count -= expired.len();
        expired
    }

    /// Removes every poll (at shutdown).
    pub(super) fn take_all(&mut self) -> Vec<WaitingPoll> {
        self.count = 0;
        self.by_queue.drain().flat_map(|(_, polls)| polls).collect()
    }
}

/// The core's side of dispatch: keeping each run's ready entry in line with its state,
/// handing attempts out, and serving waiting polls.
impl Core {
    /// Brings the run's ready entries in line with its state: each attempt waiting for a
    /// worker has exactly one entry, anything else (started, backing off, timed out, moved
    /// on, parked) none. Returns the queues where entries were added.
    pub(super) fn sync_ready(&mut self, id: &WorkflowId) -> Vec<QueueName> {
        let Some(run) = self.runs.get_mut(id) else {
            return Vec::new();
        };
        let waiting: Vec<(StepRef, u32)> = run
            .state
            .attempts
            .values()
            .filter(|current| matches!(current.status, AttemptStatus::Scheduled { .. }))
            .map(|current| (current.step, current.attempt))
            .collect();
        let ready = &mut self.ready;
        run.ready.retain(|key| {
            let keep = waiting.contains(&(key.step, key.attempt));
            if !keep {
                ready.remove(key);
            }
            keep
        });
        let mut queues = Vec::new();
        for (step, attempt) in waiting {
            if run.ready.iter().any(|key| (key.step, key.attempt) == (step, attempt)) {
                continue;
            }
            let Some((queue, activity)) =
                run.definition.step(step).and_then(|d| Some((d.queue()?.clone(), d.activity()?.clone())))
            else {
                continue;
            };
            run.ready.push(ready.push(queue.clone(), ReadyTask { id: id.clone(), step, attempt, activity }));
            queues.push(queue);
        }
        queues
    }

    /// Publishes each queue's pollers (waiting now, and seen lately) and the schedule time of
    /// its oldest task for `/metrics` and `why`. A queue stays once it is known (a drained one
    /// shows no task, not nothing).
    pub(super) fn publish_queue_gauges(&mut self, now: u64) {
        let recent = self.sightings.recent(now);
        let Ok(mut gauges) = self.stats.queues.lock() else {
            return;
        };
        for gauge in gauges.values_mut() {
            *gauge = super::QueueGauges::default();
        }
        for queue in self.waiting_polls.queues() {
            gauges.entry(queue.to_string()).or_default().pollers = self.waiting_polls.on(queue);
        }
        for (queue, workers) in recent {
            gauges.entry(queue.to_string()).or_default().recent_pollers = workers;
        }
        for (queue, front) in self.ready.fronts() {
            let scheduled = front.and_then(|task| {
                let attempt = self.runs.get(&task.id)?.state.attempts.values().find(|a| a.step == task.step)?;
                match attempt.status {
                    AttemptStatus::Scheduled { at_ms } => Some(at_ms),
                    _ => None,
                }
            });
            gauges.entry(queue.to_string()).or_default().oldest_scheduled_ms = scheduled;
        }
    }

    /// Hands up to `max_tasks` ready attempts of `queue` to a worker, recording their start;
    /// a task whose activity's circuit does not let it through stays queued.
    pub(super) fn take_ready(
        &mut self,
        turn: &mut Turn,
        queue: &QueueName,
        worker_id: &shop_types::WorkerId,
        max_tasks: usize,
        now: u64,
    ) -> Vec<ActivityTask> {
        let mut tasks = Vec::new();
        while tasks.len() < max_tasks {
            let circuits = &self.circuits;
            let Some(ReadyTask { id, step, attempt, activity }) =
                self.ready.pop(queue, |t| circuits.allows(&t.activity))
            else {
                break;
            };
            if let Some(run) = self.runs.get_mut(&id) {
                run.ready.retain(|key| (key.step, key.attempt) != (step, attempt));
            }
            let input = Input::Started { step, attempt, worker: worker_id.clone() };
            // Entries leave their queue with their attempt, so this cannot fail; if it ever
            // did, the entry is dropped rather than handed out for an attempt not current.
            if let Err(error) = self.apply_to_run(turn, &id, input, now) {
                tracing::warn!(workflow_id = %id, %error, "a ready entry could not be started; dropped");
                continue;
            }
            if let Some(breaker) = self.circuits.get_mut(&activity) {
                breaker.handed_out((id.clone(), step, attempt));
            }
            if let Some(task) = self.runs.get(&id).and_then(|run| activity_task(run, &self.signer, step, attempt)) {
                tasks.push(task);
            }
        }
        tasks
    }

    /// Hands the tasks that became ready this turn to the polls waiting for them, and
    /// answers the polls past their deadline (or whose worker hung up) empty.
    pub(super) fn serve_waiting_polls(&mut self, turn: &mut Turn, now: u64) {
        let queues: Vec<QueueName> = turn.queues_with_new_tasks.drain().collect();
        // A hand-out writes its start: with the disk full, polls keep waiting.
        let queues = if self.room_to_write { queues } else { Vec::new() };
        for queue in queues {
            while self.ready.has_ready(&queue, |t| self.circuits.allows(&t.activity)) {
                let Some(poll) = self.waiting_polls.pop(&queue) else {
                    break;
                };
                // A worker that gave up waiting must not be handed a task it will never see.
                if poll.reply.is_closed() {
                    continue;
                }
                let tasks = self.take_ready(turn, &queue, &poll.worker_id, poll.max_tasks, now);
                turn.after_commit(move || {
                    let _ = poll.reply.send(tasks);
                });
            }
        }
        for poll in self.waiting_polls.take_expired(now) {
            turn.after_commit(move || {
                let _ = poll.reply.send(Vec::new());
            });
        }
    }
}

/// What a worker gets for one hand-out, with a token signed so only it can report.
///
/// A `for_each` instance (or its compensation) is a task of its step like any other, with
/// two more params, `item` (the item, as JSON) and `index` (its position from 0), and an
/// idempotency key ending in `#<index>`, so each instance is its own effect for a worker.
fn activity_task(run: &Run, signer: &TaskSigner, step: StepRef, attempt: u32) -> Option<ActivityTask> {
    let step_def = run.definition.step(step)?;
    let id = &run.state.id;
    let instance = run.definition.node_id(step).and_then(|node| run.state.instance_item(&run.definition, node));
    let (params, idempotency_key) = match instance {
        Some((index, item)) => {
            let mut params = match step_def.params.to_value() {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            params.insert(ITEM_PARAM.to_owned(), item.to_value());
            params.insert(INDEX_PARAM.to_owned(), serde_json::Value::from(index));
            (JsonText::from_value(&serde_json::Value::Object(params)), format!("{id}:{}#{index}", step_def.name))
        }
        None => (step_def.params.clone(), format!("{id}:{}", step_def.name)),
    };
    Some(ActivityTask {
        token: signer.sign(TaskToken { workflow_id: id.clone(), step, attempt, mac: None }),
        workflow_id: id.clone(),
        workflow_type: run.definition.name.clone(),
        step_name: step_def.name.clone(),
        activity: step_def.activity()?.clone(),
        attempt,
        idempotency_key,
        input: run.state.input.clone(),
        results: run.state.results_json(),
        params,
        start_to_close_ms: step_def.timeouts.start_to_close_ms,
        heartbeat_ms: step_def.timeouts.heartbeat_ms,
        traceparent: crate::trace::task_traceparent(run.state.trace.as_deref(), id, step, attempt),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> ReadyTask {
        let activity = ActivityName::parse("payment.charge").expect("valid");
        ReadyTask { id: WorkflowId::parse(id).expect("valid"), step: StepRef::forward(0), attempt: 1, activity }
    }

    #[test]
    fn ready_queues_serve_in_order_and_remove_by_key() {
        let mut ready = ReadyQueues::default();
        let queue = QueueName::parse("q").expect("valid");
        let a = ready.push(queue.clone(), task("a"));
        ready.push(queue.clone(), task("b"));
        ready.push(queue.clone(), task("c"));
        ready.remove(&a);
        ready.remove(&a);
        assert_eq!(ready.depths().collect::<Vec<_>>(), vec![(&queue, 2)]);
        assert_eq!(ready.pop(&queue, |t| t.id.as_str() != "b"), Some(task("c")), "a held task is passed over");
        assert!(!ready.has_ready(&queue, |t| t.id.as_str() != "b"));
        assert_eq!(ready.pop(&queue, |_| true), Some(task("b")), "and served once let through");
        assert_eq!(ready.pop(&queue, |_| true), None);
        assert!(!ready.has_ready(&queue, |_| true));
        assert_eq!(ready.depths().collect::<Vec<_>>(), vec![(&queue, 0)], "an emptied queue shows 0");
    }

    #[test]
    fn sightings_count_distinct_recent_workers_and_stay_bounded() {
        let queue = QueueName::parse("payment").expect("valid");
        let worker = |n: usize| shop_types::WorkerId::parse(format!("w{n}")).expect("valid");
        let mut sightings = PollerSightings::default();
        sightings.saw(&queue, &worker(1), 1_000);
        sightings.saw(&queue, &worker(1), 2_000);
        sightings.saw(&queue, &worker(2), 2_000);
        assert_eq!(sightings.recent(2_000).get(&queue), Some(&2), "one worker polling twice counts once");
        assert_eq!(sightings.recent(2_000 + POLLER_RECENT_MS).get(&queue), Some(&2), "at the edge: still recent");
        assert_eq!(sightings.recent(2_001 + POLLER_RECENT_MS).get(&queue), None, "past it: forgotten");
        for n in 0..=MAX_POLLER_SIGHTINGS {
            sightings.saw(&queue, &worker(n), 10_000 + n as u64);
        }
        assert_eq!(sightings.last_seen.len(), MAX_POLLER_SIGHTINGS, "one past the bound evicts one");
        assert!(!sightings.last_seen.contains_key(&(queue.clone(), worker(0))), "the least recent goes first");
    }
}
