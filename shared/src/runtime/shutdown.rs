//! The one stop signal of a process. A [`ShutdownTrigger`] is fired once; every loop holds a
//! [`Shutdown`] (cheap to clone) and checks it between units of work or waits on it.

use std::time::Duration;

use tokio::sync::watch;

/// Fires the stop signal of every [`Shutdown`] subscribed to it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A loop's view of the stop signal.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl ShutdownTrigger {
    /// A new, unfired signal.
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// Asks every subscriber to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A receiver of this signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that never fires (tests, one-off tools).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        // The sender is kept alive forever, so `changed` never resolves.
        std::mem::forget(tx);
        Self(rx)
    }

    /// Whether stopping was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once stopping is asked for (at once if it already was). A dropped trigger
    /// counts as fired: nobody is left to say "go on".
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps `delay`, or less when stopping is asked for; returns whether to stop.
    pub async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => self.is_triggered(),
            () = self.wait() => true,
        }
    }
}

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Self {
        Self(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_wakes_sleepers_and_waiters() {
        let trigger = ShutdownTrigger::new();
        let shutdown = trigger.subscribe();
        assert!(!shutdown.is_triggered());
        let sleeper = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.sleep(Duration::from_secs(3600)).await }
        });
        trigger.trigger();
        assert!(sleeper.await.unwrap());
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn never_does_not_fire() {
        let shutdown = Shutdown::never();
        assert!(!shutdown.sleep(Duration::from_millis(10)).await);
    }
}
