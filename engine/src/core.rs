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

use crate::clock::Clock;
use crate::decider::{self, Context, Input, Rejection, Timer, TimerKind};
use crate::definition::Definition;
use crate::disk::DiskGuard;
use crate::registry::Registry;
use crate::state::{AttemptStatus, WorkflowState};
use crate::store::{self, RunSummary, Store, WriteBatch};
use shop_types::api::{ActivityTask, TaskOutcome, TaskReport, WorkflowStatus};
use shop_types::history::Event;
use shop_types::{JsonText, QueueName, StepRef, TaskToken, WorkflowId};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::Duration;
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
    /// Workers long-polling at once at most, over all queues.
    pub max_parked_polls: usize,
    /// Clients waiting for runs to finish at most.
    pub max_watchers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_history_events: shop_types::limits::DEFAULT_MAX_HISTORY_EVENTS,
            max_active_workflows: 200_000,
            max_parked_polls: 4_096,
            max_watchers: 65_536,
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
    /// Answers every parked poll and watcher now, so the HTTP server can drain.
    Shutdown,
}

/// Counters the core keeps for `/v1/stats` and benchmarks.
#[derive(Default)]
pub struct Stats {
    pub commits: AtomicU64,
    pub commands: AtomicU64,
    pub events: AtomicU64,
    pub active: AtomicU64,
    /// Tasks waiting for a worker, per queue: the backlog an operator watches.
    pub queue_depths: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    /// Runs whose history could not be replayed at start-up, with why: left on disk as they
    /// are and not served, while every other run is.
    pub quarantined: std::sync::Mutex<std::collections::BTreeMap<WorkflowId, String>>,
}

/// A cheap-to-clone way to talk to the core.
#[derive(Clone)]
pub struct Handle {
    tx: SyncSender<Command>,
    pub stats: Arc<Stats>,
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
    waiters: Vec<oneshot::Sender<()>>,
}

struct ParkedPoll {
    worker_id: String,
    max_tasks: usize,
    deadline_ms: u64,
    reply: oneshot::Sender<Vec<ActivityTask>>,
}

/// An answer to send once what its turn applied is durable.
type Reply = Box<dyn FnOnce() + Send>;

/// Turns waiting for the syncer at most; the core blocks beyond it (the disk is the limit).
const SYNC_QUEUE_CAPACITY: usize = 64;

/// What one turn writes and whom it answers once that write is durable.
#[derive(Default)]
struct Turn {
    batch: WriteBatch,
    replies: Vec<Reply>,
    queues_with_new_tasks: HashSet<QueueName>,
}

/// A turn as the syncer sees it: whether it wrote, and whom to answer.
struct AppliedTurn {
    wrote: bool,
    replies: Vec<Reply>,
}

/// The syncer: takes the answers of applied turns, makes everything applied so far durable
/// with one sync, then sends them. Turns arrive in order, so when no turn of a group wrote,
/// every earlier write is already synced and the group is answered without a sync (an empty
/// poll, a heartbeat, a read of a finished run). Ends when the core drops its sender.
fn sync_loop(store: &Store, stats: &Stats, turns: &Receiver<AppliedTurn>) {
    while let Ok(first) = turns.recv() {
        let mut wrote = first.wrote;
        let mut replies = first.replies;
        for more in turns.try_iter() {
            wrote |= more.wrote;
            replies.extend(more.replies);
        }
        if wrote {
            if let Err(error) = store.sync() {
                tracing::error!(%error, "sync failed; exiting so recovery starts from the durable state");
                std::process::exit(70);
            }
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        for reply in replies {
            reply();
        }
    }
}

impl Turn {
    fn after_commit(&mut self, reply: impl FnOnce() + Send + 'static) {
        self.replies.push(Box::new(reply));
    }
}

pub struct Core {
    store: Arc<Store>,
    registry: Arc<RwLock<Registry>>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    stats: Arc<Stats>,
    runs: HashMap<WorkflowId, Run>,
    timers: BTreeSet<(u64, WorkflowId, TimerKind)>,
    ready: HashMap<QueueName, VecDeque<(WorkflowId, StepRef, u32)>>,
    parked: HashMap<QueueName, VecDeque<ParkedPoll>>,
    parked_count: usize,
    watcher_count: usize,
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
        let mut core = Core {
            store,
            registry,
            clock,
            limits,
            stats: stats.clone(),
            runs: HashMap::new(),
            timers: BTreeSet::new(),
            ready: HashMap::new(),
            parked: HashMap::new(),
            parked_count: 0,
            watcher_count: 0,
            shutting_down: false,
            syncer: None,
            disk: None,
            room_to_write: true,
        };
        let now = core.clock.now_ms();
        let ids: Vec<WorkflowId> = core.store.active_ids().collect::<Result<_, _>>()?;
        for id in ids {
            match core.replay(&id, now) {
                Ok(run) => {
                    core.runs.insert(id.clone(), run);
                    core.refresh_timers(&id);
                    core.enqueue_if_scheduled(&id, None);
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
        Ok((core, Handle { tx, stats }, rx))
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
        Ok(Run { summary_status: state.status(), state, definition, timers: Vec::new(), waiters: Vec::new() })
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
            self.room_to_write = self.disk.as_mut().is_none_or(|disk| disk.has_room(now));
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
            self.serve_parked_polls(&mut turn, now);
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
        let poll = self.parked.values().flatten().map(|p| p.deadline_ms).min();
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
        if let Ok(mut depths) = self.stats.queue_depths.lock() {
            for (queue, tasks) in &self.ready {
                depths.insert(queue.to_string(), tasks.len());
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
                } else if self.parked_count >= self.limits.max_parked_polls {
                    // Over the cap a poll is answered empty at once; the worker polls again.
                    turn.after_commit(move || {
                        let _ = reply.send(Vec::new());
                    });
                } else {
                    self.parked_count += 1;
                    self.parked.entry(queue).or_default().push_back(ParkedPoll {
                        worker_id,
                        max_tasks,
                        deadline_ms,
                        reply,
                    });
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
            Command::Watch { id, reply } => match self.runs.get_mut(&id) {
                Some(run)
                    if run.state.parked.is_none()
                        && !self.shutting_down
                        && self.watcher_count < self.limits.max_watchers =>
                {
                    self.watcher_count += 1;
                    run.waiters.push(reply);
                }
                _ => turn.after_commit(move || {
                    let _ = reply.send(());
                }),
            },
            Command::Register { definition, reply } => {
                let result = self.register(turn, definition);
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Shutdown => {
                self.shutting_down = true;
                for (_, polls) in self.parked.drain() {
                    for poll in polls {
                        turn.after_commit(move || {
                            let _ = poll.reply.send(Vec::new());
                        });
                    }
                }
                self.parked_count = 0;
                for run in self.runs.values_mut() {
                    for waiter in run.waiters.drain(..) {
                        turn.after_commit(move || {
                            let _ = waiter.send(());
                        });
                    }
                }
                self.watcher_count = 0;
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
            return if run.state.workflow_type == workflow_type && run.state.input == input {
                Ok(StartOutcome::Existing)
            } else {
                Err(CoreError::AlreadyExists(id))
            };
        }
        let storage = |e: store::Error| CoreError::Storage(e.to_string());
        if let Some(summary) = self.store.run(&id).map_err(storage)? {
            let same_input = match self.store.first_event(&id).map_err(storage)?.map(|e| e.kind) {
                Some(shop_types::history::EventKind::WorkflowStarted { input: stored, .. }) => stored == input,
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
        let run =
            Run { state, summary_status: WorkflowStatus::Running, definition, timers: Vec::new(), waiters: Vec::new() };
        self.runs.insert(id.clone(), run);
        self.record(turn, &id, decision.events).map_err(storage)?;
        self.apply_effects(turn, &id, decision.effects);
        Ok(StartOutcome::Created)
    }

    fn report(&mut self, turn: &mut Turn, report: TaskReport, now: u64) -> Result<(), CoreError> {
        let TaskToken { workflow_id, step, attempt } = report.token;
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
            self.watcher_count = self.watcher_count.saturating_sub(run.waiters.len());
            for waiter in run.waiters {
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
                self.watcher_count = self.watcher_count.saturating_sub(run.waiters.len());
                for waiter in run.waiters.drain(..) {
                    turn.after_commit(move || {
                        let _ = waiter.send(());
                    });
                }
            }
        }
        self.refresh_timers(id);
        let newly_scheduled = events.iter().rev().find_map(|e| match e.kind {
            shop_types::history::EventKind::StepScheduled { step, attempt } => Some((step, attempt)),
            _ => None,
        });
        if let Some(scheduled) = newly_scheduled {
            if let Some(queue) = self.enqueue_if_scheduled(id, Some(scheduled)) {
                turn.queues_with_new_tasks.insert(queue);
            }
        }
        Ok(())
    }

    /// Puts the run's current attempt in its queue if it waits for a worker (and, when
    /// `only` is given, only if that is the attempt just scheduled).
    fn enqueue_if_scheduled(&mut self, id: &WorkflowId, only: Option<(StepRef, u32)>) -> Option<QueueName> {
        let run = self.runs.get(id)?;
        let current = run.state.current()?;
        if !matches!(current.status, AttemptStatus::Scheduled { .. }) {
            return None;
        }
        if only.is_some_and(|o| o != (current.step, current.attempt)) {
            return None;
        }
        let queue = run.definition.step(current.step)?.queue.clone();
        self.ready.entry(queue.clone()).or_default().push_back((id.clone(), current.step, current.attempt));
        Some(queue)
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

    /// Hands up to `max_tasks` ready attempts of `queue` to a worker, recording their start.
    fn take_ready(
        &mut self,
        turn: &mut Turn,
        queue: &QueueName,
        worker_id: &str,
        max_tasks: usize,
        now: u64,
    ) -> Vec<ActivityTask> {
        let mut tasks = Vec::new();
        while tasks.len() < max_tasks {
            let Some((id, step, attempt)) = self.ready.get_mut(queue).and_then(VecDeque::pop_front) else {
                break;
            };
            let input = Input::Started { step, attempt, worker: worker_id.to_owned() };
            // A stale entry (the attempt timed out or the run moved on) is simply dropped.
            if self.apply_to_run(turn, &id, input, now).is_err() {
                continue;
            }
            if let Some(task) = self.runs.get(&id).and_then(|run| activity_task(run, step, attempt)) {
                tasks.push(task);
            }
        }
        tasks
    }

    fn serve_parked_polls(&mut self, turn: &mut Turn, now: u64) {
        let queues: Vec<QueueName> = turn.queues_with_new_tasks.drain().collect();
        for queue in queues {
            while self.ready.get(&queue).is_some_and(|q| !q.is_empty()) {
                let Some(poll) = self.parked.get_mut(&queue).and_then(VecDeque::pop_front) else {
                    break;
                };
                self.parked_count -= 1;
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
        for polls in self.parked.values_mut() {
            let before = polls.len();
            let mut kept = VecDeque::with_capacity(before);
            for poll in polls.drain(..) {
                if poll.deadline_ms <= now || poll.reply.is_closed() {
                    turn.after_commit(move || {
                        let _ = poll.reply.send(Vec::new());
                    });
                } else {
                    kept.push_back(poll);
                }
            }
            self.parked_count -= before - kept.len();
            *polls = kept;
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

fn activity_task(run: &Run, step: StepRef, attempt: u32) -> Option<ActivityTask> {
    let step_def = run.definition.step(step)?;
    let id = &run.state.id;
    Some(ActivityTask {
        token: TaskToken { workflow_id: id.clone(), step, attempt },
        workflow_id: id.clone(),
        workflow_type: run.definition.name.clone(),
        step_name: step_def.name.clone(),
        activity: step_def.activity.clone(),
        attempt,
        idempotency_key: format!("{id}:{}", step_def.name),
        input: run.state.input.clone(),
        results: run.state.results_json(),
        params: step_def.params.clone(),
        start_to_close_ms: step_def.timeouts.start_to_close_ms,
        heartbeat_ms: step_def.timeouts.heartbeat_ms,
    })
}
