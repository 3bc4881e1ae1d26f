//! Counts work under way so a stopping node can wait until it is done: the requests a
//! transport is serving, the writes other members forwarded to a departing leader.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// Counts one piece of work until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// Returns as soon as nothing is under way (at once if nothing is). Work that starts
    /// meanwhile is not waited for once the count has been zero.
    pub async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let work = Arc::new(InFlight::default());
        work.idle().await; // nothing under way: at once
        let (first, second) = (work.enter(), work.enter());
        let waiter = tokio::spawn({
            let work = work.clone();
            async move { work.idle().await }
        });
        drop(first);
        let early = tokio::time::timeout(Duration::from_millis(50), work.idle()).await;
        assert!(early.is_err(), "one piece of work is still under way");
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("idle after the last guard")
            .expect("task");
    }
}
