//! The core: the single writer that owns every in-flight run, its timers and the task queues.
//!
//! It runs on its own thread and takes commands from a bounded channel. Each turn it fires
//! due timers, drains up to [`MAX_COMMANDS_PER_COMMIT`] commands, lets the decider turn each
//! into events, and applies all of that turn's events in ONE atomic sled batch. A second
//! thread, the syncer, makes applied batches durable (one flush for every batch applied
//! since its last one: group commit) and only then answers the callers and hands tasks to
//! workers. So the core decides the next turn while the disk syncs the last.
//!
//! Architecture invariants: nothing is acknowledged before its write is durable; no other
//! task writes workflow state; timers and ready tasks are derived from run states, never
//! stored on their own, so a finished run cannot leave one behind. If a commit fails the
//! process exits rather than serve state that may not be on disk; restart recovers. The one
//! exception is a write a fencing store refused (a shard moved): see `shards`.
//!
//! Submodules: `recovery` (replaying in-flight runs at start, quarantine), `reconcile`
//! (repairing parent-child links once, at the first turn), `effects` (a decision's effects
//! on other runs, in the same batch), `commands`
//! (commands into events), `timers` (the timer wheel), `dispatch` (ready queues and waiting
//! polls), `circuit` (a circuit breaker per activity), `signer` (the MACs that bind a task token to its
//! hand-out), `commit` (the end of a turn: numbering, fencing, applying), `syncer` (group
//! commit), `stats` (what the core counts for the API, metrics and health), `shards` (the changing set of shards the core owns:
//! taking, dropping, the lease guard, rebuilding after a refused write).

mod circuit;
mod commands;
mod commit;
mod dispatch;
mod effects;
mod handle;
mod reconcile;
mod recovery;
mod shards;
pub mod signer;
mod stats;
pub mod stream;
mod syncer;
mod timers;

use crate::clock::Clock;
use crate::decider::{self, Context, Input, Rejection, Timer, TimerKind};
use crate::definition::Definition;
use crate::disk::DiskGuard;
use crate::registry::Registry;
use crate::state::{AttemptStatus, WorkflowState};
use crate::store::{self, RunSummary, Store};
pub use circuit::{CircuitState, CircuitView, MAX_CIRCUIT_WINDOW_CALLS};
use commit::shard_in;
use dispatch::{PollerSightings, ReadyKey, ReadyQueues, WaitingPoll, WaitingPolls};
pub use dispatch::{MAX_POLLER_SIGHTINGS, POLLER_RECENT_MS};
pub use handle::Handle;
use shop_types::api::{ActivityTask, TaskOutcome, TaskReport, WorkflowStatus};
use shop_types::history::Event;
use shop_types::{JsonText, QueueName, TaskToken, WorkflowId};
use signer::TaskSigner;
pub use stats::{QueueGauges, QueueView, Stats};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use stream::{CommittedEvent, Publisher};
use syncer::{sync_loop, AppliedTurn, FinishedRun, Suspect, Turn, SYNC_QUEUE_CAPACITY};
use tokio::sync::oneshot;

/// Commands waiting for the core at most; beyond it callers get 503 (overloaded).
pub const COMMAND_QUEUE_CAPACITY: usize = 16_384;
/// Commands handled in one turn, and so sharing one commit.
pub const MAX_COMMANDS_PER_COMMIT: usize = 1_024;
/// Longest the core sleeps with nothing to do, so it notices shutdown and clock jumps.
const IDLE_WAKE: Duration = Duration::from_millis(500);
/// Shortest sleep while the disk is full and timers are due but cannot fire.
const DISK_FULL_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_history_events: u64,
    /// Runs in flight at most; a start beyond it is refused as overloaded.
    pub max_active_workflows: usize,
    /// Workers long-polling at once at most, over all queues (waiting polls).
    pub max_waiting_polls: usize,
    /// Clients waiting for runs to finish at most (waiting reads, `?wait=`), over all callers.
    pub max_watchers: usize,
    /// Waiting reads one caller (a credential, or a client IP when open) may hold at once;
    /// beyond it the caller gets 429 `TOO_MANY_WAITS`, so no one caller can take them all.
    pub max_waits_per_caller: usize,
}

/// Default of [`Limits::max_waits_per_caller`]: 1/64 of the global cap, so it takes at least
/// 64 callers to use every slot, while a busy front end can still wait on 1,024 orders.
pub const DEFAULT_MAX_WAITS_PER_CALLER: usize = 1_024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_history_events: shop_types::limits::DEFAULT_MAX_HISTORY_EVENTS,
            max_active_workflows: 200_000,
            max_waiting_polls: 4_096,
            max_watchers: 65_536,
            max_waits_per_caller: DEFAULT_MAX_WAITS_PER_CALLER,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("unknown workflow type {0:?}")]
    UnknownWorkflowType(String),
    #[error("workflow {0} not found")]
    NotFound(WorkflowId),
    #[error("workflow {0} already exists with a different type or input")]
    AlreadyExists(WorkflowId),
    #[error("task is stale: {0}")]
    Stale(String),
    #[error("workflow has already finished")]
    Finished,
    #[error("workflow is past its pivot step and can no longer be cancelled")]
    PastPivot,
    #[error("workflow is not parked: only a parked run can be resumed")]
    NotParked,
    /// A child whose forward path completed is held by its parent until the parent's
    /// outcome: it is cancelled by cancelling the parent.
    #[error("workflow is a child held by its parent {0}: cancel the parent instead")]
    HeldByParent(WorkflowId),
    #[error("engine is overloaded: {0}")]
    Overloaded(&'static str),
    #[error("engine is shutting down")]
    ShuttingDown,
    #[error("the engine's disk is nearly full; nothing was written")]
    DiskFull,
    #[error("the workflow's definition does not declare signal {0:?}")]
    UnknownSignal(String),
    #[error("the idempotency key was already used for another signal name or payload")]
    KeyReused,
    #[error("the workflow has received its most signals ({})", decider::MAX_SIGNALS_PER_RUN)]
    TooManySignals,
    #[error("the signal's payload is {0} bytes, over the limit of {max}", max = shop_types::limits::MAX_SIGNAL_PAYLOAD_BYTES)]
    SignalTooLarge(usize),
    #[error("the run's buffered signals would pass {max} bytes; no wait has consumed them yet", max = shop_types::limits::MAX_BUFFERED_SIGNAL_BYTES)]
    SignalBufferFull,
    #[error("the workflow takes no more signals: {0}")]
    SignalsClosed(&'static str),
    #[error("no remaining step of the workflow waits for signal {0:?}")]
    SignalNotAwaited(String),
    #[error("{0}")]
    DefinitionConflict(String),
    #[error("{0}")]
    Storage(String),
    /// The run's shard is not this node's now: ask its owner (`cluster::Cluster::route`).
    #[error("shard {} of this run is not owned by this node", .0.0)]
    NotOwner(store::ShardId),
    /// The write was refused because the run's shard moved to another node while it was
    /// being made durable: nothing of it was acknowledged; retry (at the new owner).
    #[error("the run's shard moved to another node; nothing was written; retry")]
    ShardMoved,
}

/// Whether a start created the run or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Created,
    Existing,
}

/// Whether a signal was recorded now or had been already (same key, name and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalOutcome {
    Recorded,
    Duplicate,
}

/// A signal as a caller sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRequest {
    pub name: String,
    /// De-duplicates the signal for the life of the run.
    pub idempotency_key: String,
    pub payload: JsonText,
}

/// What a [`Handle`] asks of the core; private to it, so no caller builds a reply channel
/// by hand.
pub(super) enum Command {
    Start {
        id: WorkflowId,
        workflow_type: shop_types::WorkflowType,
        input: JsonText,
        /// The `traceparent` the run is traced under, recorded as `TraceLinked`.
        trace: Option<String>,
        reply: oneshot::Sender<Result<StartOutcome, CoreError>>,
    },
    /// Signal-with-start: the start and the signal recorded in the same batch.
    StartWithSignal {
        id: WorkflowId,
        workflow_type: shop_types::WorkflowType,
        input: JsonText,
        signal: SignalRequest,
        /// As for `Start`.
        trace: Option<String>,
        reply: oneshot::Sender<Result<(StartOutcome, SignalOutcome), CoreError>>,
    },
    Signal {
        id: WorkflowId,
        signal: SignalRequest,
        reply: oneshot::Sender<Result<SignalOutcome, CoreError>>,
    },
    Report {
        reports: Vec<TaskReport>,
        reply: oneshot::Sender<Vec<Result<(), CoreError>>>,
    },
    Heartbeat {
        token: TaskToken,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    Poll {
        queue: QueueName,
        worker_id: shop_types::WorkerId,
        max_tasks: usize,
        deadline_ms: u64,
        reply: oneshot::Sender<Vec<ActivityTask>>,
    },
    Cancel {
        id: WorkflowId,
        reason: String,
        /// Who asked: the caller's subject, recorded in the run's history.
        by: String,
        terminate: bool,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    /// Resumes a parked run: its failed compensation runs again.
    Resume {
        id: WorkflowId,
        reason: String,
        /// Who asked, as for `Cancel`.
        by: String,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    Register {
        /// Boxed: the largest command by far, and commands travel by value.
        definition: Box<Definition>,
        reply: oneshot::Sender<Result<bool, CoreError>>,
    },
    /// Writes a batch prepared outside the core (API tokens) in this turn's commit;
    /// answered once durable, refused with `DiskFull` like every write.
    Write {
        batch: store::WriteBatch,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    /// The last sign of life of each started attempt of run `id` (kept in memory only, so
    /// `why` asks the core for it); empty when the run is not in flight.
    Heartbeats {
        id: WorkflowId,
        reply: oneshot::Sender<Vec<(shop_types::StepRef, u32, u64)>>,
    },
    /// Answers every waiting poll and waiting read now, so the HTTP server can drain.
    Shutdown,
    /// Recovers `shard`'s in-flight runs and serves them, writing at `epoch`.
    TakeShard {
        shard: store::ShardId,
        epoch: store::Epoch,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    /// Forgets `shard`'s runs; answered once every batch applied before is durable.
    DropShard {
        shard: store::ShardId,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
}

struct Run {
    state: WorkflowState,
    /// The status its stored summary shows; rewritten when a park or resume changes it.
    summary_status: WorkflowStatus,
    definition: Arc<Definition>,
    timers: Vec<Timer>,
    /// Its entries in the ready queues, one per attempt waiting for a worker (several while
    /// a parallel step's branches run).
    ready: Vec<ReadyKey>,
}

pub struct Core {
    store: Arc<Store>,
    registry: Arc<RwLock<Registry>>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    stats: Arc<Stats>,
    runs: HashMap<WorkflowId, Run>,
    timers: BTreeSet<(u64, WorkflowId, TimerKind)>,
    ready: ReadyQueues,
    waiting_polls: WaitingPolls,
    /// Which workers polled which queue lately, for `why`.
    sightings: PollerSightings,
    /// A circuit breaker per activity that declares one (in memory; closed at start).
    circuits: circuit::Circuits,
    signer: Arc<TaskSigner>,
    shutting_down: bool,
    /// Where applied turns go to be made durable and answered; set while `run` runs.
    syncer: Option<SyncSender<AppliedTurn>>,
    /// Free space of the store's disk, when guarded.
    disk: Option<DiskGuard>,
    /// Whether this turn may write (the disk guard's last verdict).
    room_to_write: bool,
    /// The stream's publishing end: the syncer's once `run` starts it, the core's until then
    /// (a test driving turns by hand publishes inline, after the same sync).
    publisher: Option<Publisher>,
    /// The core's own channel, taken by `run`; callers reach it only through a [`Handle`].
    commands: Option<Receiver<Command>>,
    /// Set by recovery: the first turn that may write reconciles parents and children.
    reconcile_pending: bool,
    /// The cluster's shard count (1 on sled), and the shards the core owns now with the epoch
    /// its batches are fenced at.
    shard_count: u32,
    held: std::collections::BTreeMap<store::ShardId, store::Epoch>,
    /// The last event position numbered in each held shard (`store::position`): the core is
    /// its shards' one writer, so it numbers each batch's events as it applies it.
    last_position: HashMap<store::ShardId, u64>,
    /// Where the durable positions are published (raised when a shard is taken).
    durable: Arc<stream::DurablePosition>,
    /// When each leased shard stops being usable by this node's clock (none on sled).
    guard: Option<Arc<crate::cluster::lease::LeaseGuard>>,
    /// Set by the syncer when a write was refused: the core rebuilds at its next turn.
    /// How many times the core rebuilt its memory after a refused write; each turn carries
    /// it to the syncer, which drops the answers of turns decided before a rebuild.
    generation: u64,
    suspect: Arc<Suspect>,
}

impl Core {
    /// The core's loop; returns when every handle is dropped.
    pub fn run(mut self) {
        let Some(commands) = self.commands.take() else {
            return;
        };
        let (to_syncer, synced) = std::sync::mpsc::sync_channel::<AppliedTurn>(SYNC_QUEUE_CAPACITY);
        let store = self.store.clone();
        let (stats, suspect) = (self.stats.clone(), self.suspect.clone());
        let Some(mut publisher) = self.publisher.take() else {
            return;
        };
        let syncer = std::thread::Builder::new()
            .name("syncer".into())
            .spawn(move || sync_loop(store.as_ref(), &mut publisher, &synced, &stats, &suspect));
        let syncer = match syncer {
            Ok(handle) => handle,
            Err(error) => {
                tracing::error!(%error, "cannot start the syncer thread; exiting");
                std::process::exit(70);
            }
        };
        self.syncer = Some(to_syncer);
        let injected_panic_at = injected_panic_at(self.clock.now_ms());
        loop {
            if injected_panic_at.is_some_and(|at| self.clock.now_ms() >= at) {
                panic!("{INJECTED_PANIC_ENV} says the core thread dies now");
            }
            let now = self.clock.now_ms();
            let wait = self
                .next_wake_ms()
                .map_or(IDLE_WAKE, |at| Duration::from_millis(at.saturating_sub(now)).min(IDLE_WAKE));
            // With the disk full, due timers cannot fire: look again after a pause, not at once.
            let wait = if self.room_to_write { wait } else { wait.max(DISK_FULL_PAUSE) };
            let first = match commands.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // The first command and whatever else is queued, up to one commit's worth.
            let more = std::iter::from_fn(|| commands.try_recv().ok());
            let batch = first.into_iter().chain(more).take(MAX_COMMANDS_PER_COMMIT);
            self.turn(batch, self.clock.now_ms());
        }
        self.stats.stopping.store(true, Ordering::SeqCst);
        // Closing the channel lets the syncer make the last batches durable and answer them.
        self.syncer = None;
        let _ = syncer.join();
        tracing::info!("core stopped");
    }

    /// One turn at `now`: looks at the disk, fires due timers, handles `commands`, serves
    /// waiting polls, and commits. The loop calls it with what its channel holds; tests call
    /// it directly at a chosen time, on their own thread.
    fn turn(&mut self, commands: impl Iterator<Item = Command>, now: u64) {
        let mut turn = Turn::default();
        let had_room = self.room_to_write;
        self.room_to_write = self.disk.as_mut().is_none_or(|disk| disk.has_room(now));
        if self.room_to_write && !had_room {
            // Polls waited while hand-outs could not be written: serve every one whose
            // queue has tasks now, rather than leave workers idle until their deadline.
            let queues: Vec<QueueName> = self.waiting_polls.queues().cloned().collect();
            turn.queues_with_new_tasks.extend(queues);
        }
        self.stats.last_tick_ms.store(now, Ordering::Relaxed);
        self.stats.disk_full.store(!self.room_to_write, Ordering::Relaxed);
        // Before anything is dispatched or written: shards this node may no longer own go,
        // and shards are taken or dropped, so no event of the turn is for a shard dropped
        // after it was recorded (its positions would be numbered from nothing).
        self.check_shards();
        let (shard_commands, commands): (Vec<Command>, Vec<Command>) =
            commands.partition(|command| matches!(command, Command::TakeShard { .. } | Command::DropShard { .. }));
        for command in shard_commands {
            self.handle(&mut turn, command, now);
        }
        if self.room_to_write && std::mem::take(&mut self.reconcile_pending) {
            self.reconcile(&mut turn, now);
        }
        self.tick_circuits(&mut turn, now);
        if self.room_to_write {
            self.fire_due_timers(&mut turn, now);
        }
        let mut handled = 0;
        for command in commands {
            self.handle(&mut turn, command, now);
            handled += 1;
        }
        self.serve_waiting_polls(&mut turn, now);
        self.stats.commands.fetch_add(handled as u64, Ordering::Relaxed);
        self.commit(turn, now);
    }

    fn context(&self, now: u64) -> Context<'static> {
        Context::new(now, self.limits.max_history_events)
    }
}

#[cfg(test)]
mod circuit_tests;
#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod shard_tests;
#[cfg(test)]
mod signal_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timer_tests;

/// Debug builds only: a test sets this (milliseconds after start) to make the core thread
/// panic, so the end-to-end suite can see that a dead core ends the process instead of
/// leaving a server that answers 503 to everything. Release builds never read it.
pub const INJECTED_PANIC_ENV: &str = "SHOP_ENGINE_TEST_CORE_PANIC_AFTER_MS";

fn injected_panic_at(now_ms: u64) -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let after: u64 = std::env::var(INJECTED_PANIC_ENV).ok()?.parse().ok()?;
    Some(now_ms.saturating_add(after))
}
