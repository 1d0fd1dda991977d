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
//! process exits rather than serve state that may not be on disk; restart recovers.
//!
//! Submodules: `dispatch` (ready queues and waiting polls), `watchers` (waiting reads),
//! `signer` (the MACs that bind a task token to its hand-out), `syncer` (group commit).

mod dispatch;
pub mod signer;
mod syncer;
pub mod watchers;

use crate::clock::Clock;
use crate::decider::{self, Context, Input, Rejection, Timer, TimerKind};
use crate::definition::Definition;
use crate::disk::DiskGuard;
use crate::registry::Registry;
use crate::state::{AttemptStatus, WorkflowState};
use crate::store::{self, RunSummary, Store};
use dispatch::{ReadyKey, ReadyQueues, WaitingPoll, WaitingPolls};
use shop_types::api::{ActivityTask, TaskOutcome, TaskReport, WorkflowStatus};
use shop_types::history::Event;
use shop_types::{JsonText, QueueName, TaskToken, WorkflowId};
use signer::TaskSigner;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use syncer::{sync_loop, AppliedTurn, Turn, SYNC_QUEUE_CAPACITY};
use tokio::sync::oneshot;
use watchers::{WaitSlots, Watchers};

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
    #[error("workflow is not parked: only a run whose compensation failed can be retried")]
    NotParked,
    #[error("engine is overloaded: {0}")]
    Overloaded(&'static str),
    #[error("engine is shutting down")]
    ShuttingDown,
    #[error("the engine's disk is nearly full; nothing was written")]
    DiskFull,
    #[error("{0}")]
    DefinitionConflict(String),
    #[error("{0}")]
    Storage(String),
}

/// Whether a start created the run or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Created,
    Existing,
}

pub enum Command {
    Start {
        id: WorkflowId,
        workflow_type: String,
        input: JsonText,
        reply: oneshot::Sender<Result<StartOutcome, CoreError>>,
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
        worker_id: String,
        max_tasks: usize,
        deadline_ms: u64,
        reply: oneshot::Sender<Vec<ActivityTask>>,
    },
    Cancel {
        id: WorkflowId,
        reason: String,
        terminate: bool,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    /// Retries a parked run's failed compensation.
    Resume {
        id: WorkflowId,
        reason: String,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    /// Answered once the run is terminal (at once if it is not in flight).
    Watch {
        id: WorkflowId,
        reply: oneshot::Sender<()>,
    },
    Register {
        definition: Definition,
        reply: oneshot::Sender<Result<bool, CoreError>>,
    },
    /// Writes a batch prepared outside the core (API tokens) in this turn's commit;
    /// answered once durable, refused with `DiskFull` like every write.
    Write {
        batch: store::WriteBatch,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    /// Answers every waiting poll and waiting read now, so the HTTP server can drain.
    Shutdown,
}

/// Counters the core keeps for `/v1/stats` and benchmarks.
#[derive(Default)]
pub struct Stats {
    pub commits: AtomicU64,
    pub commands: AtomicU64,
    pub events: AtomicU64,
    pub active: AtomicU64,
    /// Worker polls waiting for a task.
    pub waiting_polls: AtomicU64,
    /// Tasks waiting for a worker, per queue: the backlog an operator watches. Exact: an
    /// entry leaves when its attempt starts, times out, or its run moves on or ends.
    pub queue_depths: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    /// Runs whose history could not be replayed at start-up, with why: left on disk as they
    /// are and not served, while every other run is.
    pub quarantined: std::sync::Mutex<std::collections::BTreeMap<WorkflowId, String>>,
    /// When the core's loop last came round (clock ms): `/healthz` calls the core dead when
    /// this is stale. The loop comes round at least every `IDLE_WAKE`.
    pub last_tick_ms: AtomicU64,
    /// The disk guard refuses writes: `/readyz` answers 503.
    pub disk_full: std::sync::atomic::AtomicBool,
}

/// A cheap-to-clone way to talk to the core.
#[derive(Clone)]
pub struct Handle {
    tx: SyncSender<Command>,
    pub stats: Arc<Stats>,
    /// Checks the MACs of task tokens before a report reaches the core.
    pub signer: Arc<TaskSigner>,
    /// Slots of waiting reads, per caller and in total.
    pub waits: Arc<WaitSlots>,
}

impl Handle {
    /// Sends a command built around a fresh reply channel and waits for the answer.
    pub async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, CoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| CoreError::ShuttingDown)
    }

    pub fn send(&self, command: Command) -> Result<(), CoreError> {
        self.tx.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => CoreError::Overloaded("the command queue is full"),
            TrySendError::Disconnected(_) => CoreError::ShuttingDown,
        })
    }
}

struct Run {
    state: WorkflowState,
    /// The status its stored summary shows; rewritten when a park or resume changes it.
    summary_status: WorkflowStatus,
    definition: Arc<Definition>,
    timers: Vec<Timer>,
    /// Its entry in a ready queue, while its current attempt waits for a worker.
    ready: Option<ReadyKey>,
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
    watchers: Watchers,
    signer: Arc<TaskSigner>,
    shutting_down: bool,
    /// Where applied turns go to be made durable and answered; set while `run` runs.
    syncer: Option<SyncSender<AppliedTurn>>,
    /// Free space of the store's disk, when guarded.
    disk: Option<DiskGuard>,
    /// Whether this turn may write (the disk guard's last verdict).
    room_to_write: bool,
}

impl Core {
    /// Rebuilds every in-flight run from its history (only those: the `a` index names them)
    /// and returns the core with a handle to it. Overdue timers fire on the first turn.
    pub fn recover(
        store: Arc<Store>,
        registry: Arc<RwLock<Registry>>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Result<(Core, Handle, Receiver<Command>), store::Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE_CAPACITY);
        let stats = Arc::new(Stats::default());
        let signer = Arc::new(TaskSigner::new(store.task_token_key()?));
        let waits = Arc::new(WaitSlots::new(limits.max_waits_per_caller, limits.max_watchers));
        let mut core = Core {
            store,
            registry,
            clock,
            limits,
            stats: stats.clone(),
            runs: HashMap::new(),
            timers: BTreeSet::new(),
            ready: ReadyQueues::default(),
            waiting_polls: WaitingPolls::default(),
            watchers: Watchers::new(limits.max_watchers),
            signer: signer.clone(),
            shutting_down: false,
            syncer: None,
            disk: None,
            room_to_write: true,
        };
        let now = core.clock.now_ms();
        let ids: Vec<WorkflowId> = core.store.in_flight(store::ShardId::SOLE)?;
        for id in ids {
            match core.replay(&id, now) {
                Ok(run) => {
                    core.runs.insert(id.clone(), run);
                    core.refresh_timers(&id);
                    core.sync_ready(&id);
                }
                Err(reason) => {
                    tracing::error!(workflow_id = %id, %reason, "run quarantined: it cannot be recovered; it is left as it is on disk and not served");
                    if let Ok(mut quarantined) = core.stats.quarantined.lock() {
                        quarantined.insert(id, reason);
                    }
                }
            }
        }
        core.stats.active.store(core.runs.len() as u64, Ordering::Relaxed);
        tracing::info!(in_flight = core.runs.len(), "recovered in-flight runs");
        Ok((core, Handle { tx, stats, signer, waits }, rx))
    }

    /// Refuses writes while the store's disk is below the guard's low-water mark.
    pub fn guard_disk(&mut self, guard: DiskGuard) {
        self.disk = Some(guard);
    }

    fn replay(&self, id: &WorkflowId, now: u64) -> Result<Run, String> {
        let events = self.store.history(id).map_err(|e| e.to_string())?;
        let first = events.first().ok_or("history is empty")?;
        let shop_types::history::EventKind::WorkflowStarted { workflow_type, definition_version, .. } = &first.kind
        else {
            return Err("history does not begin with WorkflowStarted".into());
        };
        let definition = self
            .registry
            .read()
            .map_err(|_| "registry lock poisoned")?
            .get(workflow_type, *definition_version)
            .ok_or_else(|| format!("definition {workflow_type} v{definition_version} is not registered"))?;
        let mut state = WorkflowState::replay(id.clone(), &definition, &events).map_err(|e| e.to_string())?;
        // Heartbeats are not history: give a running attempt a fresh heartbeat window rather
        // than time it out for the engine's own downtime.
        if let Some(current) = state.current_mut() {
            if let AttemptStatus::Started { last_heartbeat_ms, .. } = &mut current.status {
                *last_heartbeat_ms = (*last_heartbeat_ms).max(now);
            }
        }
        Ok(Run { summary_status: state.status(), state, definition, timers: Vec::new(), ready: None })
    }

    /// The core's loop; returns when every handle is dropped.
    pub fn run(mut self, commands: Receiver<Command>) {
        let (to_syncer, synced) = std::sync::mpsc::sync_channel::<AppliedTurn>(SYNC_QUEUE_CAPACITY);
        let store = self.store.clone();
        let stats = self.stats.clone();
        let syncer =
            std::thread::Builder::new().name("syncer".into()).spawn(move || sync_loop(&store, &stats, &synced));
        let syncer = match syncer {
            Ok(handle) => handle,
            Err(error) => {
                tracing::error!(%error, "cannot start the syncer thread; exiting");
                std::process::exit(70);
            }
        };
        self.syncer = Some(to_syncer);
        loop {
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
            let now = self.clock.now_ms();
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
            if self.room_to_write {
                self.fire_due_timers(&mut turn, now);
            }
            let mut handled = 0;
            if let Some(command) = first {
                self.handle(&mut turn, command, now);
                handled += 1;
            }
            while handled < MAX_COMMANDS_PER_COMMIT {
                match commands.try_recv() {
                    Ok(command) => {
                        self.handle(&mut turn, command, now);
                        handled += 1;
                    }
                    Err(_) => break,
                }
            }
            self.serve_waiting_polls(&mut turn, now);
            self.stats.commands.fetch_add(handled as u64, Ordering::Relaxed);
            self.commit(turn);
        }
        // Closing the channel lets the syncer make the last batches durable and answer them.
        self.syncer = None;
        let _ = syncer.join();
        tracing::info!("core stopped");
    }

    fn next_wake_ms(&self) -> Option<u64> {
        let timer = self.timers.first().map(|(due, _, _)| *due);
        let poll = self.waiting_polls.next_deadline_ms();
        match (timer, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn commit(&mut self, turn: Turn) {
        let wrote = !turn.batch.is_empty();
        if wrote {
            let events = turn.batch.events() as u64;
            if let Err(error) = self.store.apply(turn.batch) {
                // The in-memory state is ahead of what the store holds; serving it would
                // break "nothing acknowledged is lost". Exit without answering: restart
                // recovers from what is on disk.
                tracing::error!(%error, "applying a batch failed; exiting so recovery starts from the durable state");
                std::process::exit(70);
            }
            self.stats.events.fetch_add(events, Ordering::Relaxed);
        }
        self.stats.active.store(self.runs.len() as u64, Ordering::Relaxed);
        self.stats.waiting_polls.store(self.waiting_polls.count() as u64, Ordering::Relaxed);
        if let Ok(mut depths) = self.stats.queue_depths.lock() {
            for (queue, tasks) in self.ready.depths() {
                depths.insert(queue.to_string(), tasks);
            }
        }
        // A turn that wrote goes to the syncer even with nobody to answer, so its write is
        // synced at once; a turn that only answers waits its turn there, as its answers may
        // rest on state an earlier turn applied and has not yet made durable.
        if !wrote && turn.replies.is_empty() {
            return;
        }
        let Some(syncer) = &self.syncer else {
            return;
        };
        if syncer.send(AppliedTurn { wrote, replies: turn.replies }).is_err() {
            tracing::error!("the syncer has stopped; exiting so recovery starts from the durable state");
            std::process::exit(70);
        }
    }

    fn context(&self, now: u64) -> Context {
        Context { now_ms: now, max_history_events: self.limits.max_history_events }
    }

    fn handle(&mut self, turn: &mut Turn, command: Command, now: u64) {
        let command = if self.room_to_write { Some(command) } else { self.refuse_writes(turn, command) };
        let Some(command) = command else {
            return;
        };
        match command {
            Command::Start { id, workflow_type, input, reply } => {
                let result = self.start(turn, id, &workflow_type, input, now);
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Report { reports, reply } => {
                let results: Vec<_> = reports.into_iter().map(|r| self.report(turn, r, now)).collect();
                turn.after_commit(move || {
                    let _ = reply.send(results);
                });
            }
            Command::Heartbeat { token, reply } => {
                let result = self.heartbeat(&token, now);
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Poll { queue, worker_id, max_tasks, deadline_ms, reply } => {
                // Handing a task out writes its start: with the disk full the poll waits.
                let tasks = if self.room_to_write {
                    self.take_ready(turn, &queue, &worker_id, max_tasks, now)
                } else {
                    Vec::new()
                };
                if !tasks.is_empty() || deadline_ms <= now || self.shutting_down {
                    turn.after_commit(move || {
                        let _ = reply.send(tasks);
                    });
                } else if self.waiting_polls.count() >= self.limits.max_waiting_polls {
                    // Over the cap a poll is answered empty at once; the worker polls again.
                    turn.after_commit(move || {
                        let _ = reply.send(Vec::new());
                    });
                } else {
                    self.waiting_polls.push(queue, WaitingPoll { worker_id, max_tasks, deadline_ms, reply });
                }
            }
            Command::Cancel { id, reason, terminate, reply } => {
                let input = if terminate { Input::Terminate { reason } } else { Input::Cancel { reason } };
                let result = self.apply_to_run(turn, &id, input, now).map(|_| ());
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Resume { id, reason, reply } => {
                let result = self.apply_to_run(turn, &id, Input::Resume { reason }, now).map(|_| ());
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Watch { id, reply } => {
                let waits = self.runs.get(&id).is_some_and(|run| run.state.parked.is_none()) && !self.shutting_down;
                // Not in flight, parked, or every slot held by a live wait: answered at once.
                let refused = if waits { self.watchers.add(&id, reply).err() } else { Some(reply) };
                if let Some(reply) = refused {
                    turn.after_commit(move || {
                        let _ = reply.send(());
                    });
                }
            }
            Command::Register { definition, reply } => {
                let result = self.register(turn, definition);
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Write { batch, reply } => {
                turn.batch.extend(batch);
                turn.after_commit(move || {
                    let _ = reply.send(Ok(()));
                });
            }
            Command::Shutdown => {
                self.shutting_down = true;
                for poll in self.waiting_polls.take_all() {
                    turn.after_commit(move || {
                        let _ = poll.reply.send(Vec::new());
                    });
                }
                for waiter in self.watchers.take_all() {
                    turn.after_commit(move || {
                        let _ = waiter.send(());
                    });
                }
            }
        }
    }

    /// With the disk nearly full, answers every command that would write with `DiskFull`
    /// (nothing is recorded) and hands back the others.
    fn refuse_writes(&mut self, turn: &mut Turn, command: Command) -> Option<Command> {
        fn refuse<T: Send + 'static>(turn: &mut Turn, reply: oneshot::Sender<Result<T, CoreError>>) {
            turn.after_commit(move || {
                let _ = reply.send(Err(CoreError::DiskFull));
            });
        }
        match command {
            Command::Start { reply, .. } => refuse(turn, reply),
            Command::Cancel { reply, .. } | Command::Resume { reply, .. } => refuse(turn, reply),
            Command::Register { reply, .. } => refuse(turn, reply),
            Command::Write { reply, .. } => refuse(turn, reply),
            Command::Report { reports, reply } => {
                let refused = reports.iter().map(|_| Err(CoreError::DiskFull)).collect();
                turn.after_commit(move || {
                    let _ = reply.send(refused);
                });
            }
            other => return Some(other),
        }
        None
    }

    fn start(
        &mut self,
        turn: &mut Turn,
        id: WorkflowId,
        workflow_type: &str,
        input: JsonText,
        now: u64,
    ) -> Result<StartOutcome, CoreError> {
        if let Some(run) = self.runs.get(&id) {
            return if run.state.workflow_type == workflow_type && same_json(&run.state.input, &input) {
                Ok(StartOutcome::Existing)
            } else {
                Err(CoreError::AlreadyExists(id))
            };
        }
        let storage = |e: store::Error| CoreError::Storage(e.to_string());
        if let Some(summary) = self.store.run(&id).map_err(storage)? {
            let same_input = match self.store.first_event(&id).map_err(storage)?.map(|e| e.kind) {
                Some(shop_types::history::EventKind::WorkflowStarted { input: stored, .. }) => {
                    same_json(&stored, &input)
                }
                _ => false,
            };
            return if summary.workflow_type == workflow_type && same_input {
                Ok(StartOutcome::Existing)
            } else {
                Err(CoreError::AlreadyExists(id))
            };
        }
        if self.runs.len() >= self.limits.max_active_workflows {
            return Err(CoreError::Overloaded("too many workflows in flight"));
        }
        let definition = self
            .registry
            .read()
            .map_err(|_| CoreError::Storage("registry lock poisoned".into()))?
            .latest(workflow_type)
            .ok_or_else(|| CoreError::UnknownWorkflowType(workflow_type.to_owned()))?;
        let mut state = WorkflowState::new(id.clone(), &definition, input.clone(), now);
        let decision = decider::start(&definition, &mut state, &input, self.context(now));
        let summary = RunSummary {
            workflow_type: definition.name.clone(),
            definition_version: definition.version,
            status: WorkflowStatus::Running,
            created_at_ms: now,
            closed_at_ms: None,
            reason: None,
            output: None,
        };
        turn.batch.put_run(&id, &summary, None, true).map_err(storage)?;
        let run = Run { state, summary_status: WorkflowStatus::Running, definition, timers: Vec::new(), ready: None };
        self.runs.insert(id.clone(), run);
        self.record(turn, &id, decision.events).map_err(storage)?;
        self.apply_effects(turn, &id, decision.effects);
        Ok(StartOutcome::Created)
    }

    fn report(&mut self, turn: &mut Turn, report: TaskReport, now: u64) -> Result<(), CoreError> {
        // The MAC was checked at the door (`api::tasks`); the core trusts what reaches it.
        let TaskToken { workflow_id, step, attempt, .. } = report.token;
        let input = match report.outcome {
            TaskOutcome::Completed { output } => Input::Completed { step, attempt, output },
            TaskOutcome::Failed { error } => Input::Failed { step, attempt, error },
        };
        self.apply_to_run(turn, &workflow_id, input, now).map(|_| ())
    }

    fn heartbeat(&mut self, token: &TaskToken, now: u64) -> Result<(), CoreError> {
        let stale = || CoreError::Stale("the attempt is no longer current".into());
        let run = self.runs.get_mut(&token.workflow_id).ok_or_else(stale)?;
        match run.state.current_mut() {
            Some(current) if current.step == token.step && current.attempt == token.attempt => {
                match &mut current.status {
                    AttemptStatus::Started { last_heartbeat_ms, .. } => *last_heartbeat_ms = now,
                    _ => return Err(stale()),
                }
            }
            _ => return Err(stale()),
        }
        self.refresh_timers(&token.workflow_id);
        Ok(())
    }

    /// Runs the decider on one input for one in-flight run and records what it emits.
    fn apply_to_run(&mut self, turn: &mut Turn, id: &WorkflowId, input: Input, now: u64) -> Result<usize, CoreError> {
        let is_task_report = matches!(input, Input::Completed { .. } | Input::Failed { .. } | Input::Started { .. });
        let context = self.context(now);
        let Some(run) = self.runs.get_mut(id) else {
            if is_task_report {
                return Err(CoreError::Stale("the workflow is not in flight".into()));
            }
            return match self.store.run(id) {
                Ok(Some(_)) => Err(CoreError::Finished),
                Ok(None) => Err(CoreError::NotFound(id.clone())),
                Err(e) => Err(CoreError::Storage(e.to_string())),
            };
        };
        let decision = decider::decide(&run.definition, &mut run.state, input, context).map_err(|r| match r {
            Rejection::Stale => CoreError::Stale(r.to_string()),
            Rejection::Finished => CoreError::Finished,
            Rejection::PastPivot => CoreError::PastPivot,
            Rejection::NotParked => CoreError::NotParked,
        })?;
        let count = decision.events.len();
        self.record(turn, id, decision.events).map_err(|e| CoreError::Storage(e.to_string()))?;
        self.apply_effects(turn, id, decision.effects);
        Ok(count)
    }

    /// Applies what a decision asks of other runs, in the same turn's batch as the deciding
    /// run's events (see `decider::Effect`). No construct emits one yet.
    fn apply_effects(&mut self, _turn: &mut Turn, id: &WorkflowId, effects: Vec<decider::Effect>) {
        debug_assert!(effects.is_empty(), "no construct emits effects yet");
        for effect in effects {
            tracing::error!(workflow_id = %id, ?effect, "effect ignored: this build applies none");
        }
    }

    /// Adds a transition's events to the turn's batch and brings timers, task queues, the
    /// run summary and waiters in line with the run's new state.
    fn record(&mut self, turn: &mut Turn, id: &WorkflowId, events: Vec<Event>) -> Result<(), store::Error> {
        if events.is_empty() {
            return Ok(());
        }
        turn.batch.append_events(id, &events)?;
        let terminal = match self.runs.get(id) {
            Some(run) => run.state.terminal.clone(),
            None => return Ok(()),
        };
        if let Some(terminal) = terminal {
            let Some(run) = self.runs.remove(id) else {
                return Ok(());
            };
            for timer in &run.timers {
                self.timers.remove(&(timer.due_ms, id.clone(), timer.kind));
            }
            if let Some(key) = &run.ready {
                self.ready.remove(key);
            }
            let summary = RunSummary {
                workflow_type: run.definition.name.clone(),
                definition_version: run.definition.version,
                status: terminal.status,
                created_at_ms: run.state.created_at_ms,
                closed_at_ms: Some(terminal.at_ms),
                reason: terminal.reason,
                output: terminal.output,
            };
            turn.batch.put_run(id, &summary, Some(run.summary_status), false)?;
            for waiter in self.watchers.take(id) {
                turn.after_commit(move || {
                    let _ = waiter.send(());
                });
            }
            tracing::debug!(workflow_id = %id, status = terminal.status.as_str(), "run finished");
            return Ok(());
        }
        if let Some(run) = self.runs.get_mut(id) {
            let status = run.state.status();
            if status != run.summary_status {
                // Parked (FAILED, waiting for an operator) or resumed (RUNNING again).
                let summary = RunSummary {
                    workflow_type: run.definition.name.clone(),
                    definition_version: run.definition.version,
                    status,
                    created_at_ms: run.state.created_at_ms,
                    closed_at_ms: None,
                    reason: run.state.parked.clone(),
                    output: None,
                };
                turn.batch.put_run(id, &summary, Some(run.summary_status), true)?;
                run.summary_status = status;
                // Whoever waits for this run to settle is answered: FAILED needs an operator.
                for waiter in self.watchers.take(id) {
                    turn.after_commit(move || {
                        let _ = waiter.send(());
                    });
                }
            }
        }
        self.refresh_timers(id);
        if let Some(queue) = self.sync_ready(id) {
            turn.queues_with_new_tasks.insert(queue);
        }
        Ok(())
    }

    fn refresh_timers(&mut self, id: &WorkflowId) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        let new = decider::timers(&run.definition, &run.state);
        for timer in run.timers.iter().filter(|t| !new.contains(t)) {
            self.timers.remove(&(timer.due_ms, id.clone(), timer.kind));
        }
        for timer in new.iter().filter(|t| !run.timers.contains(t)) {
            self.timers.insert((timer.due_ms, id.clone(), timer.kind));
        }
        run.timers = new;
    }

    fn fire_due_timers(&mut self, turn: &mut Turn, now: u64) {
        while let Some((due, _, _)) = self.timers.first() {
            if *due > now {
                break;
            }
            let Some((due, id, kind)) = self.timers.pop_first() else {
                break;
            };
            if let Some(run) = self.runs.get_mut(&id) {
                run.timers.retain(|t| !(t.due_ms == due && t.kind == kind));
            }
            match self.apply_to_run(turn, &id, Input::TimerFired(kind), now) {
                Ok(_) | Err(CoreError::Stale(_)) => {}
                Err(error) => tracing::warn!(workflow_id = %id, ?kind, %error, "timer could not fire"),
            }
        }
    }

    fn register(&mut self, turn: &mut Turn, definition: Definition) -> Result<bool, CoreError> {
        let (name, version, source) = (definition.name.clone(), definition.version, definition.source.clone());
        let mut registry = self.registry.write().map_err(|_| CoreError::Storage("registry lock poisoned".into()))?;
        let added = registry.insert(definition).map_err(|e| CoreError::DefinitionConflict(e.to_string()))?;
        if added {
            turn.batch.put_definition(&name, version, &source).map_err(|e| CoreError::Storage(e.to_string()))?;
        }
        Ok(added)
    }
}

/// Whether two JSON texts are the same value: a retried start may format its input
/// differently (spaces, key order). Only the duplicate path pays for parsing.
fn same_json(a: &JsonText, b: &JsonText) -> bool {
    if a.as_str() == b.as_str() {
        return true;
    }
    match (serde_json::from_str::<serde_json::Value>(a.as_str()), serde_json::from_str::<serde_json::Value>(b.as_str()))
    {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
