//! Waiting reads (`GET ...?wait=`): who waits for which run, counted exactly.
//!
//! Two layers share the work. [`Watchers`] lives in the core: the reply channels of the
//! callers waiting for each in-flight run, answered when the run finishes or settles. A
//! caller that stops waiting (its wait timed out, or it hung up) drops its receiver; such a
//! waiter is pruned whenever its run gets a new one, and all of them are swept when the
//! count reaches the cap, so a closed wait never holds a slot that a live one needs.
//! [`WaitSlots`] lives at the HTTP door: one slot per wait in progress, per caller and in
//! total, released by an RAII guard the moment the request ends in any way, so one caller
//! cannot take every slot.
//!
//! Neither must ever block: the core is single-threaded and the slots' lock is held only to
//! count.

use shop_types::WorkflowId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Callers waiting for runs to finish, per run, with an exact count of the live ones.
pub(super) struct Watchers {
    by_run: HashMap<WorkflowId, Vec<oneshot::Sender<()>>>,
    count: usize,
    max: usize,
}

impl Watchers {
    pub(super) fn new(max: usize) -> Watchers {
        Watchers { by_run: HashMap::new(), count: 0, max }
    }

    /// Waiters held now (closed ones not yet pruned included).
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// Adds a waiter for `id`, or hands `reply` back when every slot holds a live waiter.
    pub(super) fn add(&mut self, id: &WorkflowId, reply: oneshot::Sender<()>) -> Result<(), oneshot::Sender<()>> {
        self.prune(id);
        if self.count >= self.max {
            self.sweep();
        }
        if self.count >= self.max {
            return Err(reply);
        }
        self.by_run.entry(id.clone()).or_default().push(reply);
        self.count += 1;
        Ok(())
    }

    /// Removes and returns every waiter of `id`, to be answered.
    pub(super) fn take(&mut self, id: &WorkflowId) -> Vec<oneshot::Sender<()>> {
        let waiters = self.by_run.remove(id).unwrap_or_default();
        self.count -= waiters.len();
        waiters
    }

    /// Removes and returns every waiter, to be answered (at shutdown).
    pub(super) fn take_all(&mut self) -> Vec<oneshot::Sender<()>> {
        self.count = 0;
        self.by_run.drain().flat_map(|(_, waiters)| waiters).collect()
    }

    /// Drops the waiters of `id` whose caller has stopped waiting.
    fn prune(&mut self, id: &WorkflowId) {
        let Some(waiters) = self.by_run.get_mut(id) else {
            return;
        };
        let before = waiters.len();
        waiters.retain(|waiter| !waiter.is_closed());
        self.count -= before - waiters.len();
        if waiters.is_empty() {
            self.by_run.remove(id);
        }
    }

    /// Drops every waiter whose caller has stopped waiting. O(waiters), so only at the cap.
    fn sweep(&mut self) {
        let mut count = 0;
        self.by_run.retain(|_, waiters| {
            waiters.retain(|waiter| !waiter.is_closed());
            count += waiters.len();
            !waiters.is_empty()
        });
        self.count = count;
    }
}

/// Why a wait got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitRefused {
    /// This caller already waits `max_per_caller` times.
    CallerFull,
    /// Every slot of the engine is taken.
    Full,
}

/// Slots for waits in progress, per caller and in total. The map holds only callers with a
/// wait in progress, each with at least one slot, so its size is bounded by `max_total`.
pub struct WaitSlots {
    counts: Mutex<SlotCounts>,
    max_per_caller: usize,
    max_total: usize,
}

#[derive(Default)]
struct SlotCounts {
    by_caller: HashMap<String, usize>,
    total: usize,
}

/// One wait's slot; dropping it (the request ended, however) gives it back.
pub struct WaitSlot {
    slots: Arc<WaitSlots>,
    caller: String,
}

impl WaitSlots {
    pub fn new(max_per_caller: usize, max_total: usize) -> WaitSlots {
        WaitSlots { counts: Mutex::new(SlotCounts::default()), max_per_caller, max_total }
    }

    pub fn max_per_caller(&self) -> usize {
        self.max_per_caller
    }

    /// Takes a slot for `caller`, unless it or the engine is at its cap.
    pub fn acquire(self: &Arc<Self>, caller: &str) -> Result<WaitSlot, WaitRefused> {
        // A poisoned lock only means another request panicked while counting; the counts
        // are still whole numbers, so carry on with them.
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = counts.by_caller.get(caller).copied().unwrap_or(0);
        if held >= self.max_per_caller {
            return Err(WaitRefused::CallerFull);
        }
        if counts.total >= self.max_total {
            return Err(WaitRefused::Full);
        }
        counts.by_caller.insert(caller.to_owned(), held + 1);
        counts.total += 1;
        Ok(WaitSlot { slots: self.clone(), caller: caller.to_owned() })
    }

    /// Waits in progress in total.
    pub fn in_use(&self) -> usize {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.by_caller.get_mut(&self.caller) {
            *held -= 1;
            if *held == 0 {
                counts.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> WorkflowId {
        WorkflowId::parse(text).expect("valid")
    }

    #[test]
    fn closed_waiters_free_their_slots_and_the_count_is_exact() {
        let mut watchers = Watchers::new(3);
        let (a, b) = (id("a"), id("b"));
        let mut receivers = Vec::new();
        for run in [&a, &a, &b] {
            let (tx, rx) = oneshot::channel();
            assert!(watchers.add(run, tx).is_ok());
            receivers.push(rx);
        }
        assert_eq!(watchers.count(), 3);
        // At the cap with every waiter live: refused.
        let (tx, _rx) = oneshot::channel();
        assert!(watchers.add(&a, tx).is_err(), "at the cap");
        // The first waiter of `a` gives up: a new waiter of `a` prunes it and fits.
        drop(receivers.remove(0));
        let (tx, rx_a) = oneshot::channel();
        assert!(watchers.add(&a, tx).is_ok());
        assert_eq!(watchers.count(), 3);
        // The waiter of `b` gives up: a waiter of another run fits after the sweep at the cap.
        drop(receivers.remove(1));
        let (tx, _rx_c) = oneshot::channel();
        assert!(watchers.add(&id("c"), tx).is_ok());
        assert_eq!(watchers.count(), 3);
        assert!(watchers.take(&b).is_empty(), "b's closed waiter was swept");
        assert_eq!(watchers.take(&a).len(), 2);
        assert_eq!(watchers.count(), 1);
        assert_eq!(watchers.take_all().len(), 1);
        assert_eq!(watchers.count(), 0);
        drop(rx_a);
    }

    #[test]
    fn wait_slots_cap_each_caller_and_the_total_and_come_back_on_drop() {
        let slots = Arc::new(WaitSlots::new(2, 3));
        let first = slots.acquire("ip:1").expect("1st");
        let second = slots.acquire("ip:1").expect("2nd");
        assert_eq!(slots.acquire("ip:1").err(), Some(WaitRefused::CallerFull), "at the per-caller cap");
        let third = slots.acquire("ip:2").expect("another caller");
        assert_eq!(slots.acquire("ip:3").err(), Some(WaitRefused::Full), "at the total cap");
        drop(first);
        assert_eq!(slots.in_use(), 2);
        let again = slots.acquire("ip:1").expect("a slot came back");
        drop((second, third, again));
        assert_eq!(slots.in_use(), 0);
        assert!(slots.counts.lock().expect("lock").by_caller.is_empty(), "no caller is kept without a wait");
    }
}
