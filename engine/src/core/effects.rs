//! Effects: what one run's decision asks of other runs (child workflows), applied in the
//! same turn's batch as that decision, so a parent and its child change together or not at
//! all. It must never drop an effect silently: a child that cannot start fails its parent's
//! step; a verdict a child can no longer take is answered to its parent; a held child whose
//! parent will never give it a verdict (unknown, ended, not waiting for it) is given one
//! here; any other effect on a run no longer in flight is logged.

use super::*;
use crate::decider::{self, Input, Verdict};
use crate::state::WorkflowState;
use crate::store::RunSummary;
use shop_types::api::WorkflowStatus;
use shop_types::{JsonText, WorkflowId};

impl Core {
    /// Applies what a decision asks of other runs, in the same turn's batch as the deciding
    /// run's events (see `decider::Effect`): starting a child, cancelling one, giving a held
    /// one its verdict, telling a parent its child is held or ended. A child that cannot
    /// start fails its parent's step; see the module's doc for the rest.
    pub(super) fn apply_effects(&mut self, turn: &mut Turn, id: &WorkflowId, effects: Vec<decider::Effect>, now: u64) {
        for effect in effects {
            match effect {
                decider::Effect::Start { run, workflow_type, version, input, parent, step, depth } => {
                    let link = crate::state::ParentLink { parent: parent.clone(), step, depth };
                    if let Err(error) = self.start_child(turn, &run, &workflow_type, version, input, link, now) {
                        let outcome = Err(format!("child {run} could not start: {error}"));
                        let input = Input::ChildEnded { step, child: run.clone(), outcome };
                        if let Err(error) = self.apply_to_run(turn, &parent, input, now) {
                            tracing::warn!(workflow_id = %parent, child = %run, %error, "child start failure not recorded");
                        }
                    }
                }
                decider::Effect::Cancel { run, reason } => {
                    match self.apply_to_run(turn, &run, Input::Cancel { reason, by: None }, now) {
                        Ok(_) | Err(CoreError::Finished) => {}
                        // Past its pivot the child goes on; its parent waits for its outcome.
                        Err(error) => tracing::info!(workflow_id = %run, parent = %id, %error, "child not cancelled"),
                    }
                }
                decider::Effect::Verdict { run, parent, step, verdict } => {
                    let compensate = matches!(verdict, Verdict::Compensate { .. });
                    match self.apply_to_run(turn, &run, Input::Verdict(verdict), now) {
                        Ok(_) => {}
                        // Its parent waits for it to compensate: tell the parent it cannot.
                        Err(error) if compensate => {
                            let outcome = Err(format!("child {run} could not compensate: {error}"));
                            let input = Input::ChildEnded { step, child: run.clone(), outcome };
                            if let Err(error) = self.apply_to_run(turn, &parent, input, now) {
                                tracing::debug!(workflow_id = %parent, child = %run, %error, "the parent no longer waits for its child");
                            }
                        }
                        Err(error) => {
                            tracing::info!(workflow_id = %run, parent = %parent, %error, "child not completed with its parent")
                        }
                    }
                }
                decider::Effect::ChildEnded { parent, step, child, outcome } => {
                    let held = outcome.is_ok();
                    let input = Input::ChildEnded { step, child: child.clone(), outcome };
                    match self.apply_to_run(turn, &parent, input, now) {
                        Ok(_) => {}
                        // Held, it would wait for a verdict that will never come: decide it now.
                        Err(CoreError::NotFound(_) | CoreError::Finished | CoreError::Stale(_)) if held => {
                            self.judge_orphan(turn, &child, &parent, now)
                        }
                        Err(error) => {
                            tracing::info!(workflow_id = %parent, child = %id, %error, "child's end not recorded: the parent no longer waits for it")
                        }
                    }
                }
                decider::Effect::Signal { run, .. } => {
                    tracing::error!(workflow_id = %id, target = %run, "signal effect ignored: no construct emits one");
                }
            }
        }
    }

    /// Starts child run `id` of `workflow_type` v`version` for its parent, in the turn's batch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_child(
        &mut self,
        turn: &mut Turn,
        id: &WorkflowId,
        workflow_type: &shop_types::WorkflowType,
        version: u32,
        input: JsonText,
        link: crate::state::ParentLink,
        now: u64,
    ) -> Result<(), CoreError> {
        let storage = |e: store::Error| CoreError::Storage(e.to_string());
        if self.runs.contains_key(id)
            || turn.finished.contains_key(id)
            || self.store.run(id).map_err(storage)?.is_some()
        {
            return Err(CoreError::AlreadyExists(id.clone()));
        }
        if self.runs.len() >= self.limits.max_active_workflows {
            return Err(CoreError::Overloaded("too many workflows in flight"));
        }
        let get = |core: &Core| core.registry.read().ok().and_then(|r| r.get(workflow_type.as_str(), version));
        let definition = match get(self) {
            Some(definition) => Some(definition),
            // Registered on another node, perhaps.
            None => self.reload_definitions().then(|| get(self)).flatten(),
        };
        let definition =
            definition.ok_or_else(|| CoreError::UnknownWorkflowType(format!("{workflow_type} v{version}")))?;
        let mut state = WorkflowState::new(id.clone(), &definition, input.clone(), now);
        let registry = self.registry.clone();
        let latest = move |name: &shop_types::WorkflowType| {
            registry.read().ok().and_then(|r| r.latest(name.as_str())).map(|d| d.version)
        };
        // A child continues its parent's trace.
        let trace = self.runs.get(&link.parent).and_then(|parent| parent.state.trace.clone());
        let context = decider::Context { latest_versions: Some(&latest), trace: trace.as_deref(), ..self.context(now) };
        let decision = decider::start_child(&definition, &mut state, &input, link, context);
        let summary = RunSummary {
            workflow_type: definition.name.clone(),
            definition_version: definition.version,
            status: WorkflowStatus::Running,
            created_at_ms: now,
            closed_at_ms: None,
            reason: None,
            output: None,
        };
        turn.batch.put_run(id, &summary, None, true).map_err(storage)?;
        let run =
            Run { state, summary_status: WorkflowStatus::Running, definition, timers: Vec::new(), ready: Vec::new() };
        self.runs.insert(id.clone(), run);
        self.record(turn, id, decision.events).map_err(storage)?;
        self.apply_effects(turn, id, decision.effects, now);
        Ok(())
    }
}
