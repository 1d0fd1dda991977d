//! The one stream of committed events: after the sync that makes a group of turns durable,
//! the syncer publishes that group's events, once, on a bounded `tokio::sync::broadcast`
//! channel that any number of subscribers follow (the watch hub, the stats follower).
//!
//! Architecture invariants: an event is published only after the sync that makes it durable;
//! publishing never blocks the core or the syncer (a broadcast send only overwrites the
//! oldest message: a subscriber that falls more than [`EVENT_STREAM_CAPACITY`] commits behind
//! gets `RecvError::Lagged(n)` and must re-read what it needs from the store). This module
//! must never decide anything or wait on a subscriber.

use crate::store::ShardId;
use shop_types::api::WorkflowStatus;
use shop_types::history::{Event, EventKind};
use shop_types::{ActivityName, QueueName, StepName, StepRef, WorkflowId, WorkflowType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Commits (sync groups) the stream holds for its slowest subscriber; one further behind is
/// told it lagged. Each commit holds at most the events of a few turns, so this bounds the
/// stream's memory to about this many groups' events.
pub const EVENT_STREAM_CAPACITY: usize = 1_024;

/// One committed event, as the stream carries it (not its payload: read the store for that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEvent {
    /// The shard of its run: its position counts in that shard.
    pub shard: ShardId,
    /// Its durable position in its shard (see `store::position`), set when the batch is
    /// numbered at commit.
    pub position: u64,
    pub run: WorkflowId,
    pub workflow_type: WorkflowType,
    /// The run's status once this event is applied.
    pub status: WorkflowStatus,
    pub seq: u64,
    /// The kind's name (`StepCompleted`, ...).
    pub kind: &'static str,
    pub at_ms: u64,
    /// Whether the event settles its run: terminal, or parked (waiting for an operator).
    pub settles: bool,
    /// Whether the event ends its run for good (completed, failed, cancelled, terminated).
    pub terminal: bool,
    /// For an activity attempt's event: its queue, activity and outcome (what the metrics
    /// follower counts by, without reading the store).
    pub task: Option<TaskEvent>,
}

/// What an activity attempt's event says, for the followers that count by queue and activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub step: StepRef,
    pub attempt: u32,
    pub queue: QueueName,
    pub activity: ActivityName,
    /// The step's name in its definition (a compensation's own name).
    pub step_name: StepName,
    /// A failure's error type, or `timeout_<kind>` for a timeout; `None` otherwise.
    pub error: Option<String>,
}

impl TaskEvent {
    /// The attempt the event names, when it is one of an activity's (scheduled, started,
    /// completed, failed, timed out); `labels` finds the step's queue and activity.
    pub(super) fn of(
        kind: &EventKind,
        labels: impl FnOnce(StepRef) -> Option<(QueueName, ActivityName, StepName)>,
    ) -> Option<TaskEvent> {
        let (step, attempt, error) = match kind {
            EventKind::StepScheduled { step, attempt }
            | EventKind::StepStarted { step, attempt, .. }
            | EventKind::StepCompleted { step, attempt, .. } => (*step, *attempt, None),
            EventKind::StepFailed { step, attempt, error, .. } => (*step, *attempt, Some(error.error_type.clone())),
            EventKind::StepTimedOut { step, attempt, timeout, .. } => {
                (*step, *attempt, Some(format!("timeout_{}", timeout.as_str())))
            }
            _ => return None,
        };
        let (queue, activity, step_name) = labels(step)?;
        Some(TaskEvent { step, attempt, queue, activity, step_name, error })
    }
}

impl CommittedEvent {
    pub(super) fn new(
        shard: ShardId,
        run: &WorkflowId,
        workflow_type: &WorkflowType,
        status: WorkflowStatus,
        event: &Event,
        task: Option<TaskEvent>,
    ) -> CommittedEvent {
        let terminal = event.kind.is_terminal();
        let settles = terminal || matches!(event.kind, EventKind::RunParked { .. });
        CommittedEvent {
            shard,
            position: 0,
            run: run.clone(),
            workflow_type: workflow_type.clone(),
            status,
            seq: event.seq,
            kind: event.kind.name(),
            at_ms: event.at_ms,
            settles,
            terminal,
            task,
        }
    }
}

/// One sync's worth of committed events: the stream's message.
#[derive(Debug)]
pub struct Commit {
    /// 1 for the first sync since the engine started, then one more per sync that wrote.
    pub number: u64,
    /// Events committed since the engine started, these included: a subscriber that lagged
    /// still knows the totals from the next message it gets.
    pub events_total: u64,
    pub events: Vec<CommittedEvent>,
}

/// A subscription to the stream.
pub type Subscription = broadcast::Receiver<Arc<Commit>>;

/// The last event position known durable, per shard: set by the publisher BEFORE it sends
/// the commit that makes it so (and by the core when it takes a shard, to the store's last).
/// A reader that subscribes first and then loads it may read the store up to it, and gets
/// every later event from its subscription (never an event a crash could still take back).
#[derive(Debug, Default)]
pub struct DurablePosition(Vec<AtomicU64>);

impl DurablePosition {
    /// Of the first shard (the only one of a store with one owner).
    pub fn get(&self) -> u64 {
        self.of(ShardId::SOLE)
    }

    pub fn of(&self, shard: ShardId) -> u64 {
        self.0.get(shard.0 as usize).map_or(0, |position| position.load(Ordering::SeqCst))
    }

    pub(super) fn raise(&self, shard: ShardId, position: u64) {
        if let Some(durable) = self.0.get(shard.0 as usize) {
            durable.fetch_max(position, Ordering::SeqCst);
        }
    }
}

/// The publishing end, owned by the syncer (or by the core when turns are driven by hand).
pub(super) struct Publisher {
    stream: broadcast::Sender<Arc<Commit>>,
    durable: Arc<DurablePosition>,
    commits: u64,
    events: u64,
}

impl Publisher {
    /// A publisher of `shards` shards whose store holds events up to `durable` in each (its
    /// last positions at start-up; a shard taken later is raised when it is taken).
    pub(super) fn new(shards: u32, durable_at: &[(ShardId, u64)]) -> (Publisher, broadcast::Sender<Arc<Commit>>) {
        let (stream, _) = broadcast::channel(EVENT_STREAM_CAPACITY);
        let durable = Arc::new(DurablePosition((0..shards.max(1)).map(|_| AtomicU64::new(0)).collect()));
        for (shard, position) in durable_at {
            durable.raise(*shard, *position);
        }
        (Publisher { stream: stream.clone(), durable, commits: 0, events: 0 }, stream)
    }

    pub(super) fn durable(&self) -> Arc<DurablePosition> {
        self.durable.clone()
    }

    #[cfg(test)]
    pub(super) fn subscribe(&self) -> Subscription {
        self.stream.subscribe()
    }

    /// Publishes one synced group; call only after the sync that made it durable.
    pub(super) fn publish(&mut self, events: Vec<CommittedEvent>) {
        self.commits += 1;
        self.events += events.len() as u64;
        for event in &events {
            self.durable.raise(event.shard, event.position);
        }
        // An error only means nobody subscribes right now: nothing to do.
        let _ = self.stream.send(Arc::new(Commit { number: self.commits, events_total: self.events, events }));
    }
}

#[cfg(test)]
impl CommittedEvent {
    /// Event `seq` of run `run` (type `w`, RUNNING, at position `seq`), for followers' tests.
    pub(crate) fn sample(run: &str, seq: u64, kind: &'static str, settles: bool) -> CommittedEvent {
        CommittedEvent {
            shard: ShardId::SOLE,
            position: seq,
            run: WorkflowId::parse(run).expect("valid id"),
            workflow_type: WorkflowType::parse("w").expect("valid type"),
            status: WorkflowStatus::Running,
            seq,
            kind,
            at_ms: 0,
            settles,
            terminal: settles,
            task: None,
        }
    }
}
