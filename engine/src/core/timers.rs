//! The timer wheel: every in-flight run's live timers ordered by due time, kept in line with
//! run state, and fired when due.
//!
//! Timers are derived from state (`decider::timers`), never stored on their own, so a run
//! that ends cannot leave one behind.

use super::*;

impl Core {
    pub(super) fn next_wake_ms(&self) -> Option<u64> {
        let timer = self.timers.first().map(|(due, _, _)| *due);
        let poll = self.waiting_polls.next_deadline_ms();
        match (timer, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn refresh_timers(&mut self, id: &WorkflowId) {
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

    pub(super) fn fire_due_timers(&mut self, turn: &mut Turn, now: u64) {
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
}
