//! A queue that sends concurrent writes on in batches, each write keeping its own outcome.
//! Two stages use it: a follower forwarding its clients' writes to the leader
//! (`forward.rs`), and the leader proposing blind writes as one log entry (`proposer.rs`).
//!
//! Batches form by themselves: up to `in_flight` batches are under way at once; writes
//! arriving while every slot is taken queue and leave together in the next batch. An idle
//! node therefore sends a lone write at once, a loaded one sends fewer, fuller batches.

use std::future::Future;
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{GroupNode, OpError};
use crate::types::CommandResponse;

pub(super) type Outcome = Result<CommandResponse, OpError>;

/// One write waiting for a batch, and where its outcome goes.
pub(super) struct Pending<T> {
    pub write: T,
    pub bytes: usize,
    pub reply: oneshot::Sender<Outcome>,
}

/// How large a batch may grow and how many may be under way at once.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchLimits {
    pub writes: usize,
    pub bytes: usize,
    pub in_flight: usize,
}

/// What one batch may still take: `limits.writes` writes and `limits.bytes` of estimated
/// encoding; the first write always fits.
#[derive(Debug)]
struct BatchBudget {
    limits: BatchLimits,
    writes: usize,
    bytes: usize,
}

impl BatchBudget {
    fn new(limits: BatchLimits) -> Self {
        BatchBudget {
            limits,
            writes: 0,
            bytes: 0,
        }
    }

    fn admits(&self, bytes: usize) -> bool {
        self.writes == 0
            || (self.writes < self.limits.writes && self.bytes + bytes <= self.limits.bytes)
    }

    fn take(&mut self, bytes: usize) {
        self.writes += 1;
        self.bytes += bytes;
    }
}

/// The queue; its task ends when the node is dropped.
pub(super) struct Batcher<T> {
    queue: mpsc::Sender<Pending<T>>,
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the queue's task; `send` carries one batch and answers every write in it.
    pub(super) fn start<F, Fut>(node: Weak<GroupNode>, limits: BatchLimits, send: F) -> Self
    where
        F: Fn(Arc<GroupNode>, Vec<Pending<T>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Two full batches wait before submitters do.
        let (queue, pending) = mpsc::channel(2 * limits.writes);
        tokio::spawn(run(node, limits, pending, send));
        Batcher { queue }
    }

    /// Queues `write` (estimated at `bytes` encoded) and waits for its outcome.
    pub(super) async fn write(&self, write: T, bytes: usize) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending {
                write,
                bytes,
                reply,
            })
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        outcome.await.unwrap_or(Err(OpError::ShuttingDown))
    }
}

async fn run<T, F, Fut>(
    node: Weak<GroupNode>,
    limits: BatchLimits,
    mut pending: mpsc::Receiver<Pending<T>>,
    send: F,
) where
    T: Send + 'static,
    F: Fn(Arc<GroupNode>, Vec<Pending<T>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    let mut carried: Option<Pending<T>> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match pending.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Waiting for a slot is what lets a batch fill up under load.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut budget = BatchBudget::new(limits);
        budget.take(first.bytes);
        let mut batch = vec![first];
        while let Ok(p) = pending.try_recv() {
            if !budget.admits(p.bytes) {
                carried = Some(p);
                break;
            }
            budget.take(p.bytes);
            batch.push(p);
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let sent = send(node, batch);
        tokio::spawn(async move {
            sent.await;
            drop(slot);
        });
    }
}

/// The writes of `batch` whose writers still wait, and where their outcomes go. A writer
/// that gave up while its write waited (its deadline passed, the client went away) was told
/// the outcome is unknown; not sending the write keeps that answer's "may not have been
/// applied" the likely case instead of applying it much later.
pub(super) fn still_wanted<T>(batch: Vec<Pending<T>>) -> (Vec<T>, Vec<oneshot::Sender<Outcome>>) {
    batch
        .into_iter()
        .filter(|p| !p.reply.is_closed())
        .map(|p| (p.write, p.reply))
        .unzip()
}

/// The outcome of a batch that failed as a whole, for each of its `count` writes.
pub(super) fn same_for_all(count: usize, error: OpError) -> Vec<Outcome> {
    vec![Err(error); count]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        writes: 256,
        bytes: 1024 * 1024,
        in_flight: 4,
    };

    #[test]
    fn the_first_write_always_fits() {
        let budget = BatchBudget::new(LIMITS);
        assert!(budget.admits(LIMITS.bytes * 4));
    }

    #[test]
    fn a_batch_stops_at_its_write_count() {
        let mut budget = BatchBudget::new(LIMITS);
        for _ in 0..LIMITS.writes {
            assert!(budget.admits(1));
            budget.take(1);
        }
        assert!(!budget.admits(1));
    }

    #[test]
    fn a_batch_stops_at_its_byte_budget() {
        let mut budget = BatchBudget::new(LIMITS);
        budget.take(LIMITS.bytes - 100);
        assert!(budget.admits(100));
        assert!(!budget.admits(101));
    }
}
