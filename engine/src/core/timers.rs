//! The timer wheel: every in-flight run's live timers ordered by due time, kept in line with
//! run state, and fired when due.
//!
//! Timers are derived from state (`decider::timers`), never stored on their own, so a run
//! that ends cannot leave one behind.

use super::*;

/// Timers fired in one turn at most, as commands are capped per turn.
pub const MAX_TIMERS_PER_TURN: usize = 1_024;

impl Core {
    pub(super) fn next_wake_ms(&self) -> Option<u64> {
        let timer = self.timers.first().map(|(due, _, _)| *due);
        let poll = self.waiting_polls.next_deadline_ms();
        let circuit = self.circuits.next_wake_ms();
        [timer, poll, circuit].into_iter().flatten().min()
    }

    pub(super) fn refresh_timers(&mut self, id: &WorkflowId) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        let mut new = decider::timers(&run.definition, &run.state);
        // A schedule-to-start timer the circuit put off keeps its later time (`circuit`).
        for timer in new.iter_mut().filter(|t| matches!(t.kind, TimerKind::ScheduleToStart { .. })) {
            if let Some(held) = run.timers.iter().find(|t| t.kind == timer.kind && t.due_ms > timer.due_ms) {
                timer.due_ms = held.due_ms;
            }
        }
        for timer in run.timers.iter().filter(|t| !new.contains(t)) {
            self.timers.remove(&(timer.due_ms, id.clone(), timer.kind));
        }
        for timer in new.iter().filter(|t| !run.timers.contains(t)) {
            self.timers.insert((timer.due_ms, id.clone(), timer.kind));
        }
        run.timers = new;
    }

    /// Fires due timers, at most [`MAX_TIMERS_PER_TURN`]: after downtime many may be overdue
    /// at once, and one turn must stay short (commands wait behind it, and `/healthz` calls a
    /// core that has not ticked for seconds dead). Any left are due, so the loop's next wait
    /// is zero and the next turn fires them.
    pub(super) fn fire_due_timers(&mut self, turn: &mut Turn, now: u64) {
        let mut fired = 0;
        while let Some((due, _, _)) = self.timers.first() {
            if *due > now || fired == MAX_TIMERS_PER_TURN {
                break;
            }
            fired += 1;
            let Some((due, id, kind)) = self.timers.pop_first() else {
                break;
            };
            if let Some(run) = self.runs.get_mut(&id) {
                run.timers.retain(|t| !(t.due_ms == due && t.kind == kind));
            }
            if self.hold_schedule_to_start(&id, kind, now) {
                continue;
            }
            match self.apply_to_run(turn, &id, Input::TimerFired(kind), now) {
                Ok(_) | Err(CoreError::Stale(_)) => {}
                Err(error) => tracing::warn!(workflow_id = %id, ?kind, %error, "timer could not fire"),
            }
        }
    }
}
