//! [`Handle`]: the cheap-to-clone way to talk to the core, one typed async method per thing
//! the core does.
//!
//! It owns nothing but the sending end of the core's bounded channel and shared read-only
//! parts (counters, the token signer). It must never block: a full channel is refused at
//! once as overloaded (503), never waited on, and a core that has stopped is "shutting down".

use super::signer::TaskSigner;
use super::stream::{Commit, DurablePosition, Subscription};
use super::{Command, CoreError, SignalOutcome, SignalRequest, StartOutcome, Stats};
use crate::definition::Definition;
use shop_types::api::{ActivityTask, TaskReport};
use shop_types::{JsonText, QueueName, TaskToken, WorkflowId};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use tokio::sync::{broadcast, oneshot};

/// How often a shutdown command is offered again while the core's queue is full.
const SHUTDOWN_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// A cheap-to-clone way to talk to the core.
#[derive(Clone)]
pub struct Handle {
    tx: SyncSender<Command>,
    pub stats: Arc<Stats>,
    /// Checks the MACs of task tokens before a report reaches the core.
    pub signer: Arc<TaskSigner>,
    /// Kept only to hand out subscriptions; the syncer publishes on its own clone.
    stream: broadcast::Sender<Arc<Commit>>,
    durable: Arc<DurablePosition>,
}

impl Handle {
    pub(super) fn new(
        tx: SyncSender<Command>,
        stats: Arc<Stats>,
        signer: Arc<TaskSigner>,
        stream: broadcast::Sender<Arc<Commit>>,
        durable: Arc<DurablePosition>,
    ) -> Handle {
        Handle { tx, stats, signer, stream, durable }
    }

    /// Follows the stream of committed events from now on (see [`super::stream`]).
    pub fn subscribe(&self) -> Subscription {
        self.stream.subscribe()
    }

    /// The last event position that is durable and published (see [`DurablePosition`]) in
    /// the first shard (sled's only one): subscribe first, then read the store up to this.
    pub fn durable_position(&self) -> u64 {
        self.durable.get()
    }

    /// The same, in `shard`.
    pub fn durable_position_of(&self, shard: crate::store::ShardId) -> u64 {
        self.durable.of(shard)
    }

    /// Queues the recovery of `shard`'s in-flight runs, to be served with its writes fenced
    /// at `epoch` (the lease manager, once it claimed the shard); the answer says when the
    /// core has done it. Queued at once, so a later [`Handle::drop_shard`] comes after it.
    pub fn take_shard(
        &self,
        shard: crate::store::ShardId,
        epoch: crate::store::Epoch,
    ) -> Result<oneshot::Receiver<Result<(), CoreError>>, CoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::TakeShard { shard, epoch, reply })?;
        Ok(answer)
    }

    /// Forgets `shard`'s runs; returns once every batch applied before is settled (durable
    /// or refused), so its lease can be released.
    pub async fn drop_shard(&self, shard: crate::store::ShardId) -> Result<(), CoreError> {
        self.call(|reply| Command::DropShard { shard, reply }).await?
    }

    /// Starts run `id` of the latest version of `workflow_type`, or finds it already there.
    pub async fn start(
        &self,
        id: WorkflowId,
        workflow_type: shop_types::WorkflowType,
        input: JsonText,
        trace: Option<String>,
    ) -> Result<StartOutcome, CoreError> {
        self.call(|reply| Command::Start { id, workflow_type, input, trace, reply }).await?
    }

    /// Signal-with-start: starts run `id` (or finds it there) and records `signal` for it in
    /// the same batch. A signal the definition does not declare starts nothing.
    pub async fn start_with_signal(
        &self,
        id: WorkflowId,
        workflow_type: shop_types::WorkflowType,
        input: JsonText,
        signal: SignalRequest,
    ) -> Result<(StartOutcome, SignalOutcome), CoreError> {
        self.call(|reply| Command::StartWithSignal { id, workflow_type, input, signal, reply }).await?
    }

    /// Records a signal for run `id`: `Recorded`, or `Duplicate` when its key was already
    /// recorded with the same name and payload.
    pub async fn signal(&self, id: WorkflowId, signal: SignalRequest) -> Result<SignalOutcome, CoreError> {
        self.call(|reply| Command::Signal { id, signal, reply }).await?
    }

    /// Records task reports; one verdict per report, in order.
    pub async fn report(&self, reports: Vec<TaskReport>) -> Result<Vec<Result<(), CoreError>>, CoreError> {
        self.call(|reply| Command::Report { reports, reply }).await
    }

    /// Extends the lease of the attempt `token` names.
    pub async fn heartbeat(&self, token: TaskToken) -> Result<(), CoreError> {
        self.call(|reply| Command::Heartbeat { token, reply }).await?
    }

    /// Up to `max_tasks` tasks of `queue`, waiting until `deadline_ms` (clock ms) for one.
    pub async fn poll(
        &self,
        queue: QueueName,
        worker_id: shop_types::WorkerId,
        max_tasks: usize,
        deadline_ms: u64,
    ) -> Result<Vec<ActivityTask>, CoreError> {
        self.call(|reply| Command::Poll { queue, worker_id, max_tasks, deadline_ms, reply }).await
    }

    /// Asks run `id` to cancel (compensating what it did), unless it is past its pivot. `by`
    /// (who asked: a credential's subject, never a secret) is recorded in the run's history.
    pub async fn cancel(&self, id: WorkflowId, reason: String, by: String) -> Result<(), CoreError> {
        self.call(|reply| Command::Cancel { id, reason, by, terminate: false, reply }).await?
    }

    /// Ends run `id` at once, compensating nothing; `by` as for [`Handle::cancel`].
    pub async fn terminate(&self, id: WorkflowId, reason: String, by: String) -> Result<(), CoreError> {
        self.call(|reply| Command::Cancel { id, reason, by, terminate: true, reply }).await?
    }

    /// Resumes a parked run: its failed compensation runs again; `by` as for [`Handle::cancel`].
    pub async fn resume(&self, id: WorkflowId, reason: String, by: String) -> Result<(), CoreError> {
        self.call(|reply| Command::Resume { id, reason, by, reply }).await?
    }

    /// The last sign of life of each started attempt of run `id`, as (step, attempt, clock
    /// ms): heartbeats live in the core's memory only. Empty when the run is not in flight.
    pub async fn heartbeats(&self, id: WorkflowId) -> Result<Vec<(shop_types::StepRef, u32, u64)>, CoreError> {
        self.call(|reply| Command::Heartbeats { id, reply }).await
    }

    /// Registers a definition; `false` when that exact version was registered already.
    pub async fn register(&self, definition: Definition) -> Result<bool, CoreError> {
        self.call(|reply| Command::Register { definition: Box::new(definition), reply }).await?
    }

    /// Writes a batch prepared outside the core (API tokens) with the next turn's commit;
    /// returns once it is durable.
    pub async fn write(&self, batch: crate::store::WriteBatch) -> Result<(), CoreError> {
        self.call(|reply| Command::Write { batch, reply }).await?
    }

    /// Answers every waiting poll now, so the HTTP server can drain. Unlike every other
    /// command it is never refused for a full queue (that is exactly when it matters): it is
    /// offered again every [`SHUTDOWN_RETRY`] until the core takes it or has stopped.
    pub async fn shutdown(&self) {
        loop {
            match self.tx.try_send(Command::Shutdown) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(_)) => tokio::time::sleep(SHUTDOWN_RETRY).await,
            }
        }
    }

    /// Sends a command built around a fresh reply channel and waits for the answer. An
    /// answer dropped unsent means the core stopped, or (while it runs) that the write it
    /// rested on was refused because its shard moved (`core::syncer`).
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, CoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| {
            if self.stats.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                CoreError::ShuttingDown
            } else {
                CoreError::ShardMoved
            }
        })
    }

    fn send(&self, command: Command) -> Result<(), CoreError> {
        self.tx.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => CoreError::Overloaded("the command queue is full"),
            TrySendError::Disconnected(_) => CoreError::ShuttingDown,
        })
    }
}
