//! The shutdown signal every long-running task of the worker listens to.
//!
//! One `Trigger` fires it once; any number of cheap `Shutdown` clones observe it. A dropped
//! trigger counts as fired, so a task can never wait for a shutdown that nobody can send.
//! This module only signals; waiting for tasks to finish is the caller's job.

use tokio::sync::watch;

/// Fires the shutdown signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Observes the shutdown signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Returns once shutdown was triggered (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which is a shutdown too.
        let _ = self.0.wait_for(|triggered| *triggered).await;
    }

    /// `wait`, owning its receiver, for APIs that need a `'static` future.
    pub async fn wait_owned(mut self) {
        self.wait().await;
    }

    /// Sleeps for `duration` unless shutdown comes first; returns false on shutdown.
    pub async fn sleep(&mut self, duration: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.wait() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn observers_see_the_trigger_and_a_dropped_trigger() {
        let (trigger, mut shutdown) = channel();
        assert!(!shutdown.is_triggered());
        trigger.fire();
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
        assert!(!shutdown.sleep(Duration::from_secs(60)).await);

        let (trigger, mut shutdown) = channel();
        drop(trigger);
        assert!(shutdown.is_triggered());
        shutdown.wait().await;
    }
}
