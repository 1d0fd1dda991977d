//! Recovery: rebuilding every in-flight run of the shards the store holds at start (sled: its
//! one shard; PostgreSQL: none, the lease manager hands them over one by one, through
//! `shards`), and quarantining a run whose history cannot be replayed (left on disk, not
//! served).
//!
//! It must never write: a run it cannot read is reported, not repaired; what links runs
//! together is repaired by the first turn (`reconcile`).

use super::*;

impl Core {
    /// Rebuilds every in-flight run of the shards the store holds from its history (only
    /// those: the in-flight index names them) and returns the core with a handle to it.
    /// Overdue timers fire on the first turn.
    pub fn recover(
        store: Arc<Store>,
        registry: Arc<RwLock<Registry>>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Result<(Core, Handle), store::Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE_CAPACITY);
        let stats = Arc::new(Stats::default());
        let signer = Arc::new(TaskSigner::new(store.task_token_key()?));
        let shard_count = store.shard_count();
        let held: std::collections::BTreeMap<store::ShardId, store::Epoch> = store.shards().into_iter().collect();
        let mut last_position = HashMap::new();
        for shard in held.keys() {
            last_position.insert(*shard, store.last_position(*shard)?);
        }
        let positions: Vec<(store::ShardId, u64)> = last_position.iter().map(|(s, p)| (*s, *p)).collect();
        let (publisher, stream) = Publisher::new(shard_count, &positions);
        let durable = publisher.durable();
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
            sightings: PollerSightings::default(),
            circuits: circuit::Circuits::default(),
            signer: signer.clone(),
            shutting_down: false,
            syncer: None,
            disk: None,
            room_to_write: true,
            commands: Some(rx),
            publisher: Some(publisher),
            reconcile_pending: true,
            shard_count,
            held,
            last_position,
            durable: durable.clone(),
            guard: None,
            suspect: Arc::new(Suspect::default()),
            generation: 0,
        };
        // Every breaker starts closed: see `circuit` for why its state is not kept.
        // In name and version order, so a later version's declaration wins.
        let definitions = core
            .registry
            .read()
            .map(|registry| {
                let mut all = registry.all();
                all.sort_by(|a, b| (a.name.as_str(), a.version).cmp(&(b.name.as_str(), b.version)));
                all
            })
            .unwrap_or_default();
        for definition in &definitions {
            core.circuits.configure(definition);
        }
        let now = core.clock.now_ms();
        let ids: Vec<WorkflowId> = core.store.in_flight_held()?;
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
        Ok((core, Handle::new(tx, stats, signer, stream, durable)))
    }

    /// Drops each leased shard as soon as `guard` says its lease may have lapsed.
    pub fn guard_leases(&mut self, guard: Arc<crate::cluster::lease::LeaseGuard>) {
        self.guard = Some(guard);
    }

    /// Refuses writes while the store's disk is below the guard's low-water mark.
    pub fn guard_disk(&mut self, guard: DiskGuard) {
        self.disk = Some(guard);
    }

    pub(super) fn replay(&self, id: &WorkflowId, now: u64) -> Result<Run, String> {
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
            .get(workflow_type.as_str(), *definition_version)
            .ok_or_else(|| format!("definition {workflow_type} v{definition_version} is not registered"))?;
        let mut state = WorkflowState::replay(id.clone(), &definition, &events).map_err(|e| e.to_string())?;
        // Heartbeats are not history: give a running attempt a fresh heartbeat window rather
        // than time it out for the engine's own downtime.
        for current in state.attempts.values_mut() {
            if let AttemptStatus::Started { last_heartbeat_ms, .. } = &mut current.status {
                *last_heartbeat_ms = (*last_heartbeat_ms).max(now);
            }
        }
        Ok(Run { summary_status: state.status(), state, definition, timers: Vec::new(), ready: Vec::new() })
    }
}
