//! The leader's client writes in batch entries: concurrent puts, deletes and appends, keyed
//! or conditional or neither (`types::BatchedWrite`), are proposed as one log entry
//! (`Op::Batch` when all are blind and unkeyed, else `Op::ClientBatch`) instead of one entry
//! each.
//! The entry is appended, replicated, fsynced and applied once, and its per-entry costs
//! (openraft's bookkeeping, the log record, its replication frame, the state machine's meta)
//! are shared by every write in it. Batches form in `batcher.rs`; a lone write is proposed
//! as the command it is.
//!
//! Every write keeps its own outcome: the batch's response holds one per write, in order.
//! A proposal that failed as a whole fails each write with the error a single proposal
//! would have had (`GroupNode::client_write`).

use std::sync::Weak;
use std::time::Instant;

use super::batcher::{same_for_all, still_wanted, BatchLimits, Batcher, Outcome, Pending};
use super::{GroupNode, OpError};
use crate::limits::{
    MAX_PROPOSAL_BATCHES_IN_FLIGHT, MAX_PROPOSAL_BATCH_WRITES, PROPOSAL_BATCH_ITEM_MAX_BYTES,
    PROPOSAL_BATCH_MAX_BYTES,
};
use crate::metrics::GROUP;
use crate::types::{BatchedWrite, Command, CommandResponse};

const LIMITS: BatchLimits = BatchLimits {
    writes: MAX_PROPOSAL_BATCH_WRITES,
    bytes: PROPOSAL_BATCH_MAX_BYTES,
    in_flight: MAX_PROPOSAL_BATCHES_IN_FLIGHT,
};

/// The queue of the writes this node proposes as leader; its task ends when the node is
/// dropped.
pub(super) struct Proposer(Batcher<BatchedWrite>);

impl Proposer {
    pub(super) fn start(node: Weak<GroupNode>) -> Proposer {
        Proposer(Batcher::start(node, LIMITS, |node, batch| async move {
            node.propose_batch(batch).await
        }))
    }

    /// Proposes `command`, in a batch entry with whatever else is waiting if it is a client
    /// write of at most `PROPOSAL_BATCH_ITEM_MAX_BYTES`, else as its own entry.
    pub(super) async fn propose(&self, node: &GroupNode, command: Command) -> Outcome {
        let bytes = command.approx_encoded_bytes();
        if bytes > PROPOSAL_BATCH_ITEM_MAX_BYTES {
            return node.client_write(command).await;
        }
        match BatchedWrite::from_command(command) {
            Ok(write) => self.0.write(write, bytes).await,
            Err(command) => node.client_write(*command).await,
        }
    }
}

impl GroupNode {
    async fn propose_batch(&self, batch: Vec<Pending<BatchedWrite>>) {
        let (mut writes, replies) = still_wanted(batch);
        let count = writes.len();
        let proposed = Instant::now();
        let outcomes = match count {
            0 => return,
            1 => vec![self.client_write(writes.remove(0).into_command()).await],
            _ => {
                GROUP.batch_entries.inc();
                GROUP.batched_writes.add(count as u64);
                let keyed = writes.iter().filter(|w| w.idempotency.is_some()).count();
                GROUP.batched_keyed_writes.add(keyed as u64);
                match self.client_write(Command::batch(writes)).await {
                    Ok(CommandResponse::Batch(responses)) if responses.len() == count => {
                        responses.into_iter().map(Ok).collect()
                    }
                    Ok(other) => same_for_all(
                        count,
                        OpError::OutcomeUnknown(format!(
                            "unexpected response to a batch of {count} writes: {other:?}"
                        )),
                    ),
                    Err(e) => same_for_all(count, e),
                }
            }
        };
        GROUP.proposal_latency.observe(proposed.elapsed());
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The writer may have given up (its deadline passed): nothing to tell it.
            let _ = reply.send(outcome);
        }
    }
}
