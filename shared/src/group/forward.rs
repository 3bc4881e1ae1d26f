//! Forwarded writes in batches: a follower's concurrent client writes share one RPC to the
//! leader (`Request::ClientWriteBatch`) instead of a QUIC stream each. With every client of a
//! 3-node group spread over the nodes, two writes in three are forwarded, and one stream per
//! write cost a third of the group's throughput (openclaw-bench, docs/benchmarks.md).
//! Batches form in `batcher.rs`.
//!
//! Each write keeps its own outcome: the leader answers one result per command, and a batch
//! that failed as a whole gives every write in it the error the single-write path would have
//! given (retry if it provably never reached the leader, `outcome_unknown` otherwise).

use std::sync::Weak;
use std::time::Instant;

use super::batcher::{same_for_all, still_wanted, BatchLimits, Batcher, Outcome, Pending};
use super::{GroupNode, OpError};
use crate::limits::{
    FORWARD_BATCH_MAX_BYTES, MAX_FORWARD_BATCHES_IN_FLIGHT, MAX_FORWARD_BATCH_COMMANDS,
};
use crate::metrics::GROUP;
use crate::types::Command;
use crate::wire::{Request, Response};

const LIMITS: BatchLimits = BatchLimits {
    writes: MAX_FORWARD_BATCH_COMMANDS,
    bytes: FORWARD_BATCH_MAX_BYTES,
    in_flight: MAX_FORWARD_BATCHES_IN_FLIGHT,
};

/// The queue of a node's forwarded writes; its task ends when the node is dropped.
pub(super) struct Forwarder(Batcher<Command>);

impl Forwarder {
    pub(super) fn start(node: Weak<GroupNode>) -> Forwarder {
        Forwarder(Batcher::start(node, LIMITS, |node, batch| async move {
            node.forward_batch(batch).await
        }))
    }

    /// Forwards `command` to the leader with whatever else is waiting.
    pub(super) async fn write(&self, command: Command) -> Outcome {
        let bytes = command.approx_encoded_bytes();
        self.0.write(command, bytes).await
    }
}

impl GroupNode {
    async fn forward_batch(&self, batch: Vec<Pending<Command>>) {
        let (commands, replies) = still_wanted(batch);
        let count = commands.len();
        if count == 0 {
            return;
        }
        GROUP.forwarded_batches.inc();
        let sent = Instant::now();
        let answer = self.to_leader(&Request::ClientWriteBatch(commands)).await;
        GROUP.forward_latency.observe(sent.elapsed());
        let outcomes: Vec<Outcome> = match answer {
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
