//! Reconciliation: the links between parents and children, checked once at start-up (the
//! first turn that may write) and repaired where they disagree.
//!
//! A parent and its child change in the same batch, so a crash alone never leaves them apart.
//! What this repairs is what that cannot cover: a run restored from an older backup, or lost;
//! histories written before children were held; an effect a run could not take because it
//! was not in flight then (quarantined, later repaired). A parent waiting on a child that
//! does not exist starts it (or, compensating, hears that it is gone); a parent that missed
//! its child's report hears it again; a held child whose parent ended, is unknown or does
//! not wait for it gets the verdict its parent would have given (see `orphan_verdict`).
//!
//! It must never repair by guessing at state: every repair is an input the decider would
//! have been given (a start, a report, a verdict, a cancel), so a repair made already is
//! refused as stale and running it twice changes nothing. A run it cannot read is left alone.

use super::*;
use crate::decider::{Effect, Verdict};
use crate::state::OpenChild;
use shop_types::history::EventKind;

/// Where a run stands, as a run linked to it sees it.
enum Standing {
    InFlight,
    Ended(RunSummary),
    Missing,
    /// In the store but neither in flight here nor ended (quarantined), or unreadable.
    Unknown,
}

impl Core {
    /// Checks every run in flight against the runs it is linked to, parents first within
    /// each run, in id order; see the module's doc.
    pub(super) fn reconcile(&mut self, turn: &mut Turn, now: u64) {
        let mut ids: Vec<WorkflowId> = self.runs.keys().cloned().collect();
        ids.sort();
        for id in &ids {
            self.reconcile_children(turn, id, now);
            self.reconcile_parent(turn, id, now);
        }
    }

    fn standing(&self, turn: &Turn, id: &WorkflowId) -> Standing {
        if self.runs.contains_key(id) {
            return Standing::InFlight;
        }
        if let Some(finished) = turn.finished.get(id) {
            return Standing::Ended(finished.summary.clone());
        }
        match self.store.run(id) {
            Ok(Some(summary)) if summary.closed_at_ms.is_some() => Standing::Ended(summary),
            Ok(Some(_)) | Err(_) => Standing::Unknown,
            Ok(None) => Standing::Missing,
        }
    }

    /// The verdict a held child gets when its parent will not give one: complete if the
    /// parent completed, else compensate (the parent ended otherwise, does not wait for it,
    /// or is unknown: nobody will use the child's output, so its effects are undone rather
    /// than left orphaned). None while the parent cannot be read.
    fn orphan_verdict(&self, turn: &Turn, parent: &WorkflowId) -> Option<Verdict> {
        let reason = match self.standing(turn, parent) {
            Standing::Ended(summary) if summary.status == WorkflowStatus::Completed => return Some(Verdict::Complete),
            Standing::Ended(summary) => format!("its parent {parent} ended {}", summary.status.as_str()),
            Standing::InFlight => format!("its parent {parent} does not wait for it"),
            Standing::Missing => format!("its parent {parent} is unknown"),
            Standing::Unknown => return None,
        };
        Some(Verdict::Compensate { reason })
    }

    /// Held child `child` is judged without its parent `parent`, which will never give it a
    /// verdict (it refused the child's report, or reconciliation found it so).
    pub(super) fn judge_orphan(&mut self, turn: &mut Turn, child: &WorkflowId, parent: &WorkflowId, now: u64) {
        let Some(verdict) = self.orphan_verdict(turn, parent) else {
            tracing::warn!(workflow_id = %child, %parent, "held child's parent cannot be read: it stays held until the next start");
            return;
        };
        self.repair(turn, child, Input::Verdict(verdict), "verdict without its parent", now);
    }

    /// Run `id` as a parent: each child it waits for is checked against the child's run.
    fn reconcile_children(&mut self, turn: &mut Turn, id: &WorkflowId, now: u64) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        let going_forward = run.state.compensation_plan.is_none() && run.state.stopping.is_none();
        let open: Vec<OpenChild> = run.state.children.values().cloned().collect();
        for open in open {
            let outcome = match self.standing(turn, &open.child) {
                Standing::Missing if going_forward && !open.compensating => {
                    self.restart_child(turn, id, &open, now);
                    continue;
                }
                Standing::Missing => Err(format!("child {} does not exist", open.child)),
                // A child told to compensate that completed anyway (under an engine older
                // than holding) cannot any more: the parent hears that it ended.
                Standing::Ended(summary) => match (summary.status, summary.output) {
                    (WorkflowStatus::Completed, Some(output)) if !open.compensating => Ok(output),
                    (status, _) => Err(decider::ended_reason(&open.child, status, summary.reason.as_deref())),
                },
                Standing::InFlight => {
                    self.reconcile_child_in_flight(turn, id, &open, going_forward, now);
                    continue;
                }
                Standing::Unknown => continue,
            };
            let input = Input::ChildEnded { step: open.step, child: open.child.clone(), outcome };
            self.repair(turn, id, input, "the child's end, again", now);
        }
    }

    /// Parent `id` waits for `open`, which is in flight: it hears a hold it missed, a held
    /// child hears the verdict it missed, a child running on while the parent compensates
    /// hears the cancel it missed.
    fn reconcile_child_in_flight(
        &mut self,
        turn: &mut Turn,
        id: &WorkflowId,
        open: &OpenChild,
        going_forward: bool,
        now: u64,
    ) {
        let Some(child) = self.runs.get(&open.child).map(|run| &run.state) else {
            return;
        };
        let (run, input, what) = match (child.held(), &child.held_by_parent) {
            (true, Some(output)) if !open.compensating => {
                let input =
                    Input::ChildEnded { step: open.step, child: open.child.clone(), outcome: Ok(output.clone()) };
                (id.clone(), input, "the child's hold, again")
            }
            (true, _) => {
                let reason = format!("the parent {id} compensates");
                (open.child.clone(), Input::Verdict(Verdict::Compensate { reason }), "the parent's verdict, again")
            }
            (false, _) if !going_forward && child.cancel_requested.is_none() && child.compensation_plan.is_none() => {
                let input = Input::Cancel { reason: format!("the parent {id} compensates"), by: None };
                (open.child.clone(), input, "the parent's cancel, again")
            }
            (false, _) => return,
        };
        self.repair(turn, &run, input, what, now);
    }

    /// Run `id` as a child: held, it gets a verdict if its parent will not give one; running
    /// forward with a parent that ended without completing or is unknown, it is cancelled.
    fn reconcile_parent(&mut self, turn: &mut Turn, id: &WorkflowId, now: u64) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        let Some(parent) = run.state.parent.as_ref().map(|link| link.parent.clone()) else {
            return;
        };
        let held = run.state.held();
        let running_forward = !held
            && run.state.held_by_parent.is_none()
            && run.state.cancel_requested.is_none()
            && run.state.compensation_plan.is_none();
        let standing = self.standing(turn, &parent);
        let waits_for_it = |parent: &WorkflowState| {
            parent.children.values().chain(parent.held_children.values()).any(|open| open.child == *id)
        };
        match standing {
            Standing::InFlight if self.runs.get(&parent).is_some_and(|p| waits_for_it(&p.state)) => {}
            Standing::Unknown => {}
            _ if held => self.judge_orphan(turn, id, &parent, now),
            Standing::Missing | Standing::Ended(_) if running_forward => {
                let Some(Verdict::Compensate { reason }) = self.orphan_verdict(turn, &parent) else {
                    return;
                };
                self.repair(turn, id, Input::Cancel { reason, by: None }, "cancel without its parent", now);
            }
            _ => {}
        }
    }

    /// Starts the missing child of `open` again, as the parent's `ChildStarted` said.
    fn restart_child(&mut self, turn: &mut Turn, id: &WorkflowId, open: &OpenChild, now: u64) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        let version = self.store.history(id).ok().and_then(|events| {
            events.into_iter().find_map(|event| match event.kind {
                EventKind::ChildStarted { step, version, .. } if step == open.step => Some(version),
                _ => None,
            })
        });
        let spec = run.definition.node_id(open.step).and_then(|node| run.definition.child_of(node));
        let (Some(version), Some(spec)) = (version, spec) else {
            tracing::warn!(workflow_id = %id, child = %open.child, "missing child not restarted: its start cannot be read");
            return;
        };
        tracing::info!(workflow_id = %id, child = %open.child, "starting a missing child again");
        let effect = Effect::Start {
            run: open.child.clone(),
            workflow_type: spec.name.clone(),
            version,
            input: JsonText::from_value(&run.state.context_json()),
            parent: id.clone(),
            step: open.step,
            depth: run.state.depth().saturating_add(1),
        };
        self.apply_effects(turn, id, vec![effect], now);
    }

    /// Gives run `id` the input `what` describes, logging the outcome: a repair refused
    /// (made already, or not possible) changes nothing.
    fn repair(&mut self, turn: &mut Turn, id: &WorkflowId, input: Input, what: &str, now: u64) {
        match self.apply_to_run(turn, id, input, now) {
            Ok(_) => tracing::info!(workflow_id = %id, repair = what, "parent-child link repaired"),
            Err(error) => tracing::info!(workflow_id = %id, repair = what, %error, "parent-child repair refused"),
        }
    }
}
