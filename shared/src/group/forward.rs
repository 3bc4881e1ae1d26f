//! Forwarded writes in batches: a follower's concurrent client writes share one RPC to the
//! leader (`Request::ClientWriteBatch`) instead of a QUIC stream each. With every client of a
//! 3-node group spread over the nodes, two writes in three are forwarded, and one stream per
//! write cost a third of the group's throughput (openclaw-bench, docs/benchmarks.md).
//!
//! Batches form by themselves: up to `MAX_FORWARD_BATCHES_IN_FLIGHT` are in flight at once;
//! writes arriving while every slot is taken queue and leave together in the next batch. An
//! idle follower therefore sends a lone write at once, a loaded one sends fewer, fuller RPCs.
//!
//! Each write keeps its own outcome: the leader answers one result per command, and a batch
//! that failed as a whole gives every write in it the error the single-write path would have
//! given (retry if it provably never reached the leader, `outcome_unknown` otherwise).

use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{GroupNode, OpError};
use crate::limits::{
    FORWARD_BATCH_MAX_BYTES, MAX_FORWARD_BATCHES_IN_FLIGHT, MAX_FORWARD_BATCH_COMMANDS,
};
use crate::metrics::GROUP;
use crate::types::{Command, CommandResponse};
use crate::wire::{Request, Response};

/// Writes waiting for a batch: enough to fill every slot twice before submitters wait.
const QUEUE_CAPACITY: usize = 2 * MAX_FORWARD_BATCH_COMMANDS;

type Outcome = Result<CommandResponse, OpError>;

/// One write waiting to be forwarded, and where its outcome goes.
struct Pending {
    command: Command,
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
}

/// What one batch may still take: `MAX_FORWARD_BATCH_COMMANDS` commands and
/// `FORWARD_BATCH_MAX_BYTES` of estimated encoding; the first command always fits.
#[derive(Debug, Default)]
struct BatchBudget {
    commands: usize,
    bytes: usize,
}

impl BatchBudget {
    fn admits(&self, bytes: usize) -> bool {
        self.commands == 0
            || (self.commands < MAX_FORWARD_BATCH_COMMANDS
                && self.bytes + bytes <= FORWARD_BATCH_MAX_BYTES)
    }

    fn take(&mut self, bytes: usize) {
        self.commands += 1;
        self.bytes += bytes;
    }
}

/// The queue of a node's forwarded writes; its task ends when the node is dropped.
pub(super) struct Forwarder {
    queue: mpsc::Sender<Pending>,
}

impl Forwarder {
    pub(super) fn start(node: Weak<GroupNode>) -> Forwarder {
        let (queue, pending) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(node, pending));
        Forwarder { queue }
    }

    /// Forwards `command` to the leader with whatever else is waiting.
    pub(super) async fn write(&self, command: Command) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        let bytes = command.approx_encoded_bytes();
        self.queue
            .send(Pending {
                command,
                bytes,
                reply,
            })
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        outcome.await.unwrap_or(Err(OpError::ShuttingDown))
    }
}

async fn run(node: Weak<GroupNode>, mut pending: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_FORWARD_BATCHES_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
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
        let mut budget = BatchBudget::default();
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
        tokio::spawn(async move {
            node.forward_batch(batch).await;
            drop(slot);
        });
    }
}

impl GroupNode {
    async fn forward_batch(&self, batch: Vec<Pending>) {
        // A writer that gave up while its write waited (its deadline passed, the client went
        // away) was told the outcome is unknown; not sending the write keeps that answer's
        // "may not have been applied" the likely case instead of applying it much later.
        let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) = batch
            .into_iter()
            .filter(|p| !p.reply.is_closed())
            .map(|p| (p.command, p.reply))
            .unzip();
        let count = commands.len();
        if count == 0 {
            return;
        }
        GROUP.forwarded_batches.inc();
        let outcomes: Vec<Outcome> =
            match self.to_leader(&Request::ClientWriteBatch(commands)).await {
                // This node leads now: each write retries here (`GroupNode::write`).
                Ok(None) => same_for_all(count, OpError::NoLeader),
                Ok(Some(Response::ClientWriteBatch(results))) if results.len() == count => results
                    .into_iter()
                    .map(|r| r.map_err(OpError::from))
                    .collect(),
                Ok(Some(Response::Error(e))) => same_for_all(count, e.into()),
                Ok(Some(other)) => same_for_all(
                    count,
                    OpError::OutcomeUnknown(format!(
                        "unexpected reply to a batch of {count} writes: {other:?}"
                    )),
                ),
                Err(e) => same_for_all(count, e),
            };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            if outcome.is_ok() {
                GROUP.forwarded_writes.inc();
            }
            // The writer may have given up (its deadline passed): nothing to tell it.
            let _ = reply.send(outcome);
        }
    }
}

/// The outcome of a batch that failed as a whole, for each of its `count` writes.
fn same_for_all(count: usize, error: OpError) -> Vec<Outcome> {
    vec![Err(error); count]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_command_always_fits() {
        let budget = BatchBudget::default();
        assert!(budget.admits(FORWARD_BATCH_MAX_BYTES * 4));
    }

    #[test]
    fn a_batch_stops_at_its_command_count() {
        let mut budget = BatchBudget::default();
        for _ in 0..MAX_FORWARD_BATCH_COMMANDS {
            assert!(budget.admits(1));
            budget.take(1);
        }
        assert!(!budget.admits(1));
    }

    #[test]
    fn a_batch_stops_at_its_byte_budget() {
        let mut budget = BatchBudget::default();
        budget.take(FORWARD_BATCH_MAX_BYTES - 100);
        assert!(budget.admits(100));
        assert!(!budget.admits(101));
    }
}
