//! Turning commands into events: starts, reports, heartbeats, cancels, resumes and
//! registrations, each run through the decider and recorded in the turn's batch.
//!
//! Nothing here syncs or answers anyone directly: answers are queued on the turn and sent
//! by the syncer after the sync that covers the turn.

use super::*;
use crate::state::signal_digest;
use shop_types::history::EventKind;
use stream::TaskEvent;

impl Core {
    pub(super) fn handle(&mut self, turn: &mut Turn, command: Command, now: u64) {
        let command = if self.room_to_write { Some(command) } else { self.refuse_writes(turn, command) };
        let Some(command) = command else {
            return;
        };
        match command {
            Command::Start { id, workflow_type, input, trace, reply } => {
                let result =
                    self.owns(&id).and_then(|()| self.start(turn, id, &workflow_type, input, trace.as_deref(), now));
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::StartWithSignal { id, workflow_type, input, signal, trace, reply } => {
                let result = self.owns(&id).and_then(|()| {
                    self.start_with_signal(turn, id, &workflow_type, input, signal, trace.as_deref(), now)
                });
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Signal { id, signal, reply } => {
                let result = self.owns(&id).and_then(|()| self.signal(turn, &id, signal, now));
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Report { reports, reply } => {
                let results: Vec<_> = reports
                    .into_iter()
                    .map(|r| self.owns(&r.token.workflow_id).and_then(|()| self.report(turn, r, now)))
                    .collect();
                turn.after_commit(move || {
                    let _ = reply.send(results);
                });
            }
            Command::Heartbeat { token, reply } => {
                let result = self.owns(&token.workflow_id).and_then(|()| self.heartbeat(&token, now));
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Poll { queue, worker_id, max_tasks, deadline_ms, reply } => {
                self.sightings.saw(&queue, &worker_id, now);
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
            Command::Heartbeats { id, reply } => {
                let heartbeats = self.runs.get(&id).map_or_else(Vec::new, |run| {
                    run.state
                        .attempts
                        .values()
                        .filter_map(|a| match a.status {
                            AttemptStatus::Started { last_heartbeat_ms, .. } => {
                                Some((a.step, a.attempt, last_heartbeat_ms))
                            }
                            _ => None,
                        })
                        .collect()
                });
                turn.after_commit(move || {
                    let _ = reply.send(heartbeats);
                });
            }
            Command::Cancel { id, reason, by, terminate, reply } => {
                let by = Some(by);
                let input = if terminate { Input::Terminate { reason, by } } else { Input::Cancel { reason, by } };
                let result = self.owns(&id).and_then(|()| self.apply_to_run(turn, &id, input, now).map(|_| ()));
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Resume { id, reason, by, reply } => {
                let input = Input::Resume { reason, by: Some(by) };
                let result = self.owns(&id).and_then(|()| self.apply_to_run(turn, &id, input, now).map(|_| ()));
                turn.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::Register { definition, reply } => {
                let result = self.register(turn, *definition, now);
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
            Command::TakeShard { shard, epoch, reply } => {
                let started = std::time::Instant::now();
                self.reload_definitions();
                let result = self.take_shard(shard, epoch, now).map(|recovered| {
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    tracing::info!(
                        shard = shard.0,
                        epoch = epoch.0,
                        recovered,
                        elapsed_ms,
                        "recovered a shard's in-flight runs"
                    );
                });
                let result = result.map_err(|error| CoreError::Storage(error.to_string()));
                // At once: a take writes nothing, and its answer must not be lost with a
                // refused group's.
                let _ = reply.send(result);
            }
            Command::DropShard { shard, reply } => {
                if self.held.contains_key(&shard) {
                    self.drop_shard(shard);
                }
                // Answered after every earlier turn is synced (or refused): the shard's last
                // batch is settled before its lease is released.
                turn.after_commit(move || {
                    let _ = reply.send(Ok(()));
                });
            }
            Command::Shutdown => {
                self.stats.stopping.store(true, Ordering::SeqCst);
                self.shutting_down = true;
                for poll in self.waiting_polls.take_all() {
                    turn.after_commit(move || {
                        let _ = poll.reply.send(Vec::new());
                    });
                }
            }
        }
    }

    /// With the disk nearly full, answers every command that would write with `DiskFull`
    /// (nothing is recorded) and hands back the others.
    pub(super) fn refuse_writes(&mut self, turn: &mut Turn, command: Command) -> Option<Command> {
        fn refuse<T: Send + 'static>(turn: &mut Turn, reply: oneshot::Sender<Result<T, CoreError>>) {
            turn.after_commit(move || {
                let _ = reply.send(Err(CoreError::DiskFull));
            });
        }
        match command {
            Command::Start { reply, .. } => refuse(turn, reply),
            Command::StartWithSignal { reply, .. } => refuse(turn, reply),
            Command::Signal { reply, .. } => refuse(turn, reply),
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

    /// The latest version of `workflow_type`, read from the store on a miss (another node may
    /// have registered it).
    pub(super) fn latest_definition(
        &mut self,
        workflow_type: &shop_types::WorkflowType,
    ) -> Result<Arc<Definition>, CoreError> {
        let latest = |core: &Core| {
            core.registry
                .read()
                .map_err(|_| CoreError::Storage("registry lock poisoned".into()))
                .map(|registry| registry.latest(workflow_type.as_str()))
        };
        if let Some(definition) = latest(self)? {
            return Ok(definition);
        }
        self.reload_definitions();
        latest(self)?.ok_or_else(|| CoreError::UnknownWorkflowType(workflow_type.to_string()))
    }

    pub(super) fn start(
        &mut self,
        turn: &mut Turn,
        id: WorkflowId,
        workflow_type: &shop_types::WorkflowType,
        input: JsonText,
        trace: Option<&str>,
        now: u64,
    ) -> Result<StartOutcome, CoreError> {
        if let Some(run) = self.runs.get(&id) {
            return if run.state.workflow_type == *workflow_type && same_json(&run.state.input, &input) {
                Ok(StartOutcome::Existing)
            } else {
                Err(CoreError::AlreadyExists(id))
            };
        }
        if let Some(finished) = turn.finished.get(&id) {
            // Finished earlier in this very turn: not in the store until the turn is applied.
            return if finished.summary.workflow_type == *workflow_type && same_json(&finished.input, &input) {
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
            return if summary.workflow_type == *workflow_type && same_input {
                Ok(StartOutcome::Existing)
            } else {
                Err(CoreError::AlreadyExists(id))
            };
        }
        if self.runs.len() >= self.limits.max_active_workflows {
            return Err(CoreError::Overloaded("too many workflows in flight"));
        }
        let definition = self.latest_definition(workflow_type)?;
        let mut state = WorkflowState::new(id.clone(), &definition, input.clone(), now);
        let registry = self.registry.clone();
        let latest = move |name: &shop_types::WorkflowType| {
            registry.read().ok().and_then(|r| r.latest(name.as_str())).map(|d| d.version)
        };
        let context = decider::Context { latest_versions: Some(&latest), trace, ..self.context(now) };
        let decision = decider::start_pinned(&definition, &mut state, &input, context);
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
            Run { state, summary_status: WorkflowStatus::Running, definition, timers: Vec::new(), ready: Vec::new() };
        self.runs.insert(id.clone(), run);
        self.record(turn, &id, decision.events).map_err(storage)?;
        self.apply_effects(turn, &id, decision.effects, now);
        Ok(StartOutcome::Created)
    }

    /// Records a signal for run `id` (see `decider::wait`).
    ///
    /// The run's due timers fire first: a turn fires at most `MAX_TIMERS_PER_TURN`, so one
    /// may be overdue, and a wait past its deadline must time out rather than take the
    /// signal, which then meets the run as it now stands. A run not in flight has finished
    /// (or never was): a retry of a signal it recorded is still a duplicate, found in its
    /// history, so a caller retrying the signal that completed the run is not told 409.
    pub(super) fn signal(
        &mut self,
        turn: &mut Turn,
        id: &WorkflowId,
        signal: SignalRequest,
        now: u64,
    ) -> Result<SignalOutcome, CoreError> {
        let SignalRequest { name, idempotency_key: key, payload } = signal;
        self.fire_due_timers_of(turn, id, now);
        let digest = signal_digest(&payload);
        if let Some(run) = self.runs.get(id) {
            // A duplicate changes nothing: answered here, with no event, like a repeated start.
            if run.state.signal_by_key(&key).is_some_and(|seen| seen.same(&name, &digest)) {
                return Ok(SignalOutcome::Duplicate);
            }
            let input = Input::Signal { name, key, payload };
            return self.apply_to_run(turn, id, input, now).map(|_| SignalOutcome::Recorded);
        }
        let seen = match turn.finished_signals.get(id) {
            // Finished in this very turn: not in the store until the turn is applied.
            Some(signals) => signals.iter().find(|s| s.key == key).map(|s| s.same(&name, &digest)),
            None => self.stored_signal_matches(id, &key, &name, &digest)?,
        };
        match seen {
            Some(true) => Ok(SignalOutcome::Duplicate),
            Some(false) => Err(CoreError::KeyReused),
            None => Err(CoreError::Finished),
        }
    }

    /// For a run not in flight: whether its history holds a signal with idempotency key
    /// `key` (`Some(true)` with the same name and payload), `NotFound` if there is no run.
    /// Reads the whole history, which only a signal to a finished run pays for.
    fn stored_signal_matches(
        &self,
        id: &WorkflowId,
        key: &str,
        name: &str,
        digest: &[u8; 32],
    ) -> Result<Option<bool>, CoreError> {
        let storage = |e: store::Error| CoreError::Storage(e.to_string());
        if self.store.run(id).map_err(storage)?.is_none() {
            return Err(CoreError::NotFound(id.clone()));
        }
        let history = self.store.history(id).map_err(storage)?;
        Ok(history.iter().find_map(|event| match &event.kind {
            EventKind::SignalReceived { name: seen, key: k, payload } if k == key => {
                Some(seen == name && signal_digest(payload) == *digest)
            }
            _ => None,
        }))
    }

    /// Fires the timers of run `id` that are due at `now`, as `fire_due_timers` would have.
    fn fire_due_timers_of(&mut self, turn: &mut Turn, id: &WorkflowId, now: u64) {
        let due: Vec<Timer> = match self.runs.get(id) {
            Some(run) => run.timers.iter().filter(|t| t.due_ms <= now).copied().collect(),
            None => return,
        };
        for timer in due {
            self.timers.remove(&(timer.due_ms, id.clone(), timer.kind));
            if let Some(run) = self.runs.get_mut(id) {
                run.timers.retain(|t| *t != timer);
            }
            if self.hold_schedule_to_start(id, timer.kind, now) {
                continue;
            }
            match self.apply_to_run(turn, id, Input::TimerFired(timer.kind), now) {
                Ok(_) | Err(CoreError::Stale(_)) | Err(CoreError::Finished) | Err(CoreError::NotFound(_)) => {}
                Err(error) => tracing::warn!(workflow_id = %id, kind = ?timer.kind, %error, "timer could not fire"),
            }
        }
    }

    /// Signal-with-start: checks the signal against the definition the run would start on,
    /// starts the run (or finds it), then records the signal in the same turn, so both are in
    /// one batch. A run that finishes as it starts (every step skipped, say) is not in the
    /// store before the turn is applied: `signal` finds it among the turn's finished runs
    /// and answers `Finished` (409), not `NotFound`, while the start itself stands.
    /// (The start's arguments, the signal and the trace, as `start` takes them.)
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_with_signal(
        &mut self,
        turn: &mut Turn,
        id: WorkflowId,
        workflow_type: &shop_types::WorkflowType,
        input: JsonText,
        signal: SignalRequest,
        trace: Option<&str>,
        now: u64,
    ) -> Result<(StartOutcome, SignalOutcome), CoreError> {
        if !self.runs.contains_key(&id) {
            let definition = self.latest_definition(workflow_type)?;
            if !definition.signals.contains(&signal.name) {
                return Err(CoreError::UnknownSignal(signal.name));
            }
        }
        let started = self.start(turn, id.clone(), workflow_type, input, trace, now)?;
        let signalled = self.signal(turn, &id, signal, now)?;
        Ok((started, signalled))
    }

    pub(super) fn report(&mut self, turn: &mut Turn, report: TaskReport, now: u64) -> Result<(), CoreError> {
        // The MAC was checked at the door (`api::tasks`); the core trusts what reaches it.
        let TaskToken { workflow_id, step, attempt, .. } = report.token;
        let input = match report.outcome {
            TaskOutcome::Completed { output } => Input::Completed { step, attempt, output },
            TaskOutcome::Failed { error } => Input::Failed { step, attempt, error },
        };
        self.apply_to_run(turn, &workflow_id, input, now).map(|_| ())
    }

    pub(super) fn heartbeat(&mut self, token: &TaskToken, now: u64) -> Result<(), CoreError> {
        let stale = || CoreError::Stale("the attempt is no longer current".into());
        let run = self.runs.get_mut(&token.workflow_id).ok_or_else(stale)?;
        let node = run.definition.node_id(token.step).ok_or_else(stale)?;
        match run.state.attempts.get_mut(&node) {
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
    pub(super) fn apply_to_run(
        &mut self,
        turn: &mut Turn,
        id: &WorkflowId,
        input: Input,
        now: u64,
    ) -> Result<usize, CoreError> {
        let is_task_report = matches!(input, Input::Completed { .. } | Input::Failed { .. } | Input::Started { .. });
        // A child step naming no version takes the latest registered when it starts.
        let registry = self.registry.clone();
        let latest = move |name: &shop_types::WorkflowType| {
            registry.read().ok().and_then(|r| r.latest(name.as_str())).map(|d| d.version)
        };
        let context = decider::Context { latest_versions: Some(&latest), ..self.context(now) };
        let circuit = self.circuit_input(id, &input);
        let Some(run) = self.runs.get_mut(id) else {
            if is_task_report {
                return Err(CoreError::Stale("the workflow is not in flight".into()));
            }
            if turn.finished.contains_key(id) {
                return Err(CoreError::Finished);
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
            Rejection::HeldByParent(parent) => CoreError::HeldByParent(parent),
            Rejection::UnknownSignal(name) => CoreError::UnknownSignal(name),
            // The core answers a duplicate signal before it gets here (`signal`).
            Rejection::DuplicateSignal => CoreError::Stale(r.to_string()),
            Rejection::KeyReused => CoreError::KeyReused,
            Rejection::TooManySignals => CoreError::TooManySignals,
            Rejection::SignalTooLarge(size) => CoreError::SignalTooLarge(size),
            Rejection::SignalBufferFull => CoreError::SignalBufferFull,
            Rejection::SignalsClosed(why) => CoreError::SignalsClosed(why),
            Rejection::SignalNotAwaited(name) => CoreError::SignalNotAwaited(name),
        })?;
        let count = decision.events.len();
        if let Some((activity, key, outcome)) = circuit.filter(|_| count > 0) {
            self.circuit_outcome(turn, &activity, &key, outcome, now);
        }
        self.record(turn, id, decision.events).map_err(|e| CoreError::Storage(e.to_string()))?;
        self.apply_effects(turn, id, decision.effects, now);
        Ok(count)
    }

    /// Adds a transition's events to the turn's batch and brings timers, task queues, the
    /// run summary and waiters in line with the run's new state.
    pub(super) fn record(&mut self, turn: &mut Turn, id: &WorkflowId, events: Vec<Event>) -> Result<(), store::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let (workflow_type, before) = match self.runs.get(id) {
            Some(run) => (run.definition.name.clone(), run.summary_status),
            // Not in flight: only its stored summary knows (not a path a turn takes today).
            None => match self.store.run(id)? {
                Some(summary) => (summary.workflow_type, summary.status),
                None => return Err(store::Error::Gap { run: id.clone(), seq: 0 }),
            },
        };
        turn.batch.append_transition(id, &events, before)?;
        let mut status = before;
        let definition = self.runs.get(id).map(|run| run.definition.clone());
        let shard = self.shard(id);
        turn.events.extend(events.iter().map(|event| {
            status = event.kind.status_after(status);
            let task = TaskEvent::of(&event.kind, |step| {
                let step = definition.as_ref()?.step(step)?;
                Some((step.queue()?.clone(), step.activity()?.clone(), step.name.clone()))
            });
            CommittedEvent::new(shard, id, &workflow_type, status, event, task)
        }));
        let terminal = match self.runs.get(id) {
            Some(run) => run.state.terminal.clone(),
            None => return Ok(()),
        };
        if let Some(terminal) = terminal {
            let Some(run) = self.runs.remove(id) else {
                return Ok(());
            };
            turn.finished_signals.insert(id.clone(), run.state.signals.clone());
            for timer in &run.timers {
                self.timers.remove(&(timer.due_ms, id.clone(), timer.kind));
            }
            for key in &run.ready {
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
            // Moved, not copied: the run is gone from memory, and the turn is the last to need it.
            turn.finished.insert(id.clone(), FinishedRun { summary, input: run.state.input });
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
            }
        }
        self.refresh_timers(id);
        turn.queues_with_new_tasks.extend(self.sync_ready(id));
        Ok(())
    }

    pub(super) fn register(&mut self, turn: &mut Turn, definition: Definition, now: u64) -> Result<bool, CoreError> {
        let (name, version, source) = (definition.name.clone(), definition.version, definition.source.clone());
        let mut registry = self.registry.write().map_err(|_| CoreError::Storage("registry lock poisoned".into()))?;
        let added = registry.insert(definition).map_err(|e| CoreError::DefinitionConflict(e.to_string()))?;
        if added {
            if let Some(definition) = registry.get(name.as_str(), version) {
                self.circuits.configure(&definition);
            }
            registry.mark_registered(name.as_str(), version, now);
            turn.batch
                .put_definition(name.as_str(), version, &source)
                .map_err(|e| CoreError::Storage(e.to_string()))?;
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
