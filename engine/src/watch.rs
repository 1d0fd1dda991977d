//! The watch hub: waiting reads (`GET ...?wait=`), woken by the stream of committed events
//! rather than by the core.
//!
//! A handler takes a slot ([`WaitSlots`]: per caller and in total, released by an RAII guard
//! the moment the request ends in any way, so one caller cannot take every slot), registers
//! with the hub BEFORE reading the store (so no settling event can slip between the read and
//! the wait), reads, and waits if the run is still going. One task ([`WatchHub::follow`])
//! follows the stream and wakes the waiters of a run when its terminal or parked event is
//! committed; on a lag it wakes every waiter, each of which re-reads the store and waits
//! again if its run is still going. A caller that stops waiting drops its receiver; such a
//! waiter is pruned whenever its run gets a new one, and all are swept at the cap.
//!
//! Nothing here may block: its lock is held only to count or move senders, never across an
//! await, and it never talks to the core.

use crate::core::stream::Subscription;
use shop_types::WorkflowId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

/// Waiting reads: who waits for which run, the slots they hold, and whether the engine is
/// shutting down (every wait is then answered at once).
pub struct WatchHub {
    waiters: Mutex<Watchers>,
    slots: Arc<WaitSlots>,
    shutting_down: AtomicBool,
}

impl WatchHub {
    /// A hub for at most `max_total` waits, `max_per_caller` of them per caller.
    pub fn new(max_per_caller: usize, max_total: usize) -> WatchHub {
        WatchHub {
            waiters: Mutex::new(Watchers::new(max_total)),
            slots: Arc::new(WaitSlots::new(max_per_caller, max_total)),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The slots of waits in progress, taken at the HTTP door.
    pub fn slots(&self) -> &Arc<WaitSlots> {
        &self.slots
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watchers> {
        // A poisoned lock only means a panic while moving senders; the map is still whole.
        self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a waiter for run `id`: the receiver is woken when the run settles, on a lag,
    /// or at shutdown. `None` (answer now) while shutting down or when every slot holds a
    /// live waiter. Call it before reading the run from the store.
    pub fn register(&self, id: &WorkflowId) -> Option<oneshot::Receiver<()>> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.lock().add(id, tx).ok().map(|()| rx)
    }

    /// Follows the stream until it closes, waking the waiters of every run that settles.
    pub async fn follow(&self, mut subscription: Subscription) {
        loop {
            let woken = match subscription.recv().await {
                Ok(commit) => {
                    let mut waiters = self.lock();
                    commit.events.iter().filter(|e| e.settles).flat_map(|e| waiters.take(&e.run)).collect()
                }
                // Some settling events may be among those missed: wake everyone to re-read.
                Err(RecvError::Lagged(_)) => self.lock().take_all(),
                Err(RecvError::Closed) => return,
            };
            wake(woken);
        }
    }

    /// Answers every wait now and every later one at once, so the server can drain.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        let woken = self.lock().take_all();
        wake(woken);
    }
}

fn wake(waiters: Vec<oneshot::Sender<()>>) {
    for waiter in waiters {
        let _ = waiter.send(());
    }
}

/// Callers waiting for runs to finish, per run, with an exact count of the live ones.
struct Watchers {
    by_run: HashMap<WorkflowId, Vec<oneshot::Sender<()>>>,
    count: usize,
    max: usize,
}

impl Watchers {
    fn new(max: usize) -> Watchers {
        Watchers { by_run: HashMap::new(), count: 0, max }
    }

    /// Waiters held now (closed ones not yet pruned included).
    #[cfg(test)]
    fn count(&self) -> usize {
        self.count
    }

    /// Adds a waiter for `id`, or hands `reply` back when every slot holds a live waiter.
    fn add(&mut self, id: &WorkflowId, reply: oneshot::Sender<()>) -> Result<(), oneshot::Sender<()>> {
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
    fn take(&mut self, id: &WorkflowId) -> Vec<oneshot::Sender<()>> {
        let waiters = self.by_run.remove(id).unwrap_or_default();
        self.count -= waiters.len();
        waiters
    }

    /// Removes and returns every waiter, to be answered (at shutdown).
    fn take_all(&mut self) -> Vec<oneshot::Sender<()>> {
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
    use crate::core::stream::{Commit, CommittedEvent};
    use std::time::Duration;
    use tokio::sync::broadcast;

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

    fn commit(number: u64, events: Vec<CommittedEvent>) -> Arc<Commit> {
        Arc::new(Commit { number, events_total: 0, events })
    }

    fn event(run: &str, kind: &'static str, settles: bool) -> CommittedEvent {
        CommittedEvent::sample(run, 1, kind, settles)
    }

    #[tokio::test]
    async fn the_hub_wakes_a_run_s_waiters_when_it_settles_everyone_on_a_lag_and_at_shutdown() {
        let hub = Arc::new(WatchHub::new(4, 8));
        let (tx, rx) = broadcast::channel(2);
        let follower = hub.clone();
        let following = tokio::spawn(async move { follower.follow(rx).await });
        let mut a = hub.register(&id("a")).expect("room");
        let mut b = hub.register(&id("b")).expect("room");
        // An event that does not settle `a`, then one that does.
        tx.send(commit(1, vec![event("a", "StepCompleted", false)])).expect("sent");
        tx.send(commit(2, vec![event("a", "WorkflowCompleted", true)])).expect("sent");
        tokio::time::timeout(Duration::from_secs(5), &mut a).await.expect("woken").expect("sent");
        assert!(b.try_recv().is_err(), "b's run has not settled");
        // Three messages into a channel of two while the follower is not looking: it lags.
        let mut c = hub.register(&id("c")).expect("room");
        tx.send(commit(3, Vec::new())).expect("sent");
        tx.send(commit(4, Vec::new())).expect("sent");
        tx.send(commit(5, Vec::new())).expect("sent");
        // The lag wakes everyone, or the follower saw all three (it was fast): either way,
        // shutdown wakes whoever is left, and later waits are answered at once.
        hub.shutdown();
        tokio::time::timeout(Duration::from_secs(5), &mut b).await.expect("woken").expect("sent");
        tokio::time::timeout(Duration::from_secs(5), &mut c).await.expect("woken").expect("sent");
        assert!(hub.register(&id("d")).is_none(), "after shutdown nobody waits");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), following).await.expect("ends").expect("no panic");
    }

    #[tokio::test]
    async fn a_lag_wakes_every_waiter() {
        let hub = WatchHub::new(4, 8);
        let (tx, rx) = broadcast::channel(1);
        let mut a = hub.register(&id("a")).expect("room");
        tx.send(commit(1, Vec::new())).expect("sent");
        tx.send(commit(2, Vec::new())).expect("sent");
        drop(tx);
        hub.follow(rx).await;
        assert!(a.try_recv().is_ok(), "woken by the lag, to re-read the store");
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
