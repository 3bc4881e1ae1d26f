//! Retention of the log by bytes, beside openraft's by entries (`raft.snapshot_every_entries`,
//! `raft.log_entries_kept_after_snapshot`): every `LogByteBudget::check_every` bytes appended,
//! this node asks openraft for a snapshot once the entries after the last one hold
//! `snapshot_every` bytes, and purges the log up to the newest `keep_after_snapshot` bytes
//! before the snapshot. Whichever bound is tighter wins. Why bytes: `store/log_sizes.rs`.
//!
//! The bytes never cut the log below `MIN_ENTRIES_KEPT` entries (or the configured count,
//! if smaller): a follower that restarts under load still catches up from the log, as far
//! as that goes, instead of needing a snapshot of the whole state (a hub's entries are
//! shipped batches of up to `SHIP_BATCH_TARGET_BYTES` before compression).
//!
//! Both are requests openraft may defer: a snapshot already being built is not started
//! again, and a purge waits while a replication request still reads the entries (so a
//! follower streaming them is not forced onto a snapshot by it). A follower further behind
//! than what is kept is sent a snapshot, as with the entry counts.

use std::sync::{Arc, Weak};

use super::GroupNode;
use crate::store::{LogByteBudget, LogSizes};

/// Entries kept behind a snapshot however large they are (unless the configured count,
/// `raft.log_entries_kept_after_snapshot`, is smaller). At the edge under 64 writers a
/// hundred entries are about 0.7 MB, near the byte budget of the default memtable.
pub const MIN_ENTRIES_KEPT: u64 = 100;

/// How far the log may be cut: `bytes` before the snapshot, but never fewer than
/// `min_entries` entries.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub bytes: LogByteBudget,
    pub min_entries: u64,
}

/// Starts the node's retention task; it ends when the node is dropped (at its next look)
/// or Raft stops.
pub(super) fn start(node: Weak<GroupNode>, sizes: Arc<LogSizes>, limits: Limits) {
    tokio::spawn(async move {
        loop {
            sizes.grown().await;
            let Some(node) = node.upgrade() else {
                return;
            };
            if node.retain_log(&sizes, limits).await.is_err() {
                return;
            }
        }
    });
}

/// What to ask of openraft, from the log's sizes and where its snapshot and purge stand.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Retention {
    pub snapshot: bool,
    pub purge_through: Option<u64>,
}

pub(super) fn decide(
    sizes: &LogSizes,
    limits: Limits,
    snapshot_index: Option<u64>,
    purged_index: Option<u64>,
) -> Retention {
    let snapshot = sizes.bytes_after(snapshot_index) >= limits.bytes.snapshot_every;
    let purge_through = snapshot_index
        .and_then(|s| {
            let by_bytes = sizes.purge_point(s, limits.bytes.keep_after_snapshot)?;
            // Keep entries min_entries-1 .. s at least: purge through s - min_entries.
            let by_count = s.checked_sub(limits.min_entries)?;
            Some(by_bytes.min(by_count))
        })
        .filter(|p| purged_index.is_none_or(|purged| *p > purged));
    Retention {
        snapshot,
        purge_through,
    }
}

impl GroupNode {
    /// One look: `Err` once Raft has stopped.
    async fn retain_log(
        &self,
        sizes: &LogSizes,
        limits: Limits,
    ) -> Result<(), openraft::error::Fatal<crate::types::TypeConfig>> {
        let (snapshot, purged) = self.with_raft_metrics(|m| {
            (
                m.snapshot.as_ref().map(|l| l.index),
                m.purged.as_ref().map(|l| l.index),
            )
        });
        let retention = decide(sizes, limits, snapshot, purged);
        if retention.snapshot {
            self.raft.trigger().snapshot().await?;
        }
        if let Some(index) = retention.purge_through {
            self.raft.trigger().purge_log(index).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Limits = Limits {
        bytes: LogByteBudget {
            snapshot_every: 100,
            keep_after_snapshot: 50,
            check_every: 10,
        },
        min_entries: 1,
    };

    fn sizes(entries: &[(u64, u64)]) -> LogSizes {
        let sizes = LogSizes::new(u64::MAX);
        for (i, b) in entries {
            sizes.appended(*i, *b);
        }
        sizes
    }

    #[test]
    fn snapshots_once_the_entries_after_the_last_hold_the_budget() {
        let log = sizes(&[(1, 40), (2, 40), (3, 40)]);
        assert!(decide(&log, BUDGET, None, None).snapshot);
        assert!(!decide(&log, BUDGET, Some(1), None).snapshot);
        assert!(!decide(&sizes(&[(1, 99)]), BUDGET, None, None).snapshot);
    }

    #[test]
    fn purges_before_the_newest_kept_bytes_of_the_snapshot_only() {
        let log = sizes(&[(1, 30), (2, 30), (3, 30), (4, 30), (5, 30)]);
        // Snapshot at 4: keep 4 and 3 (60 ≥ 50), purge through 2; 5 is after the snapshot.
        let retention = decide(&log, BUDGET, Some(4), None);
        assert_eq!(retention.purge_through, Some(2));
        // Already purged that far: nothing to ask.
        assert_eq!(decide(&log, BUDGET, Some(4), Some(2)).purge_through, None);
        // No snapshot yet: nothing may be purged.
        assert_eq!(decide(&log, BUDGET, None, None).purge_through, None);
    }

    #[test]
    fn never_fewer_than_the_minimum_entries_are_kept() {
        let log = sizes(&[(1, 30), (2, 30), (3, 30), (4, 30), (5, 30), (6, 30)]);
        let three = Limits {
            min_entries: 3,
            ..BUDGET
        };
        // Bytes alone would purge through 4 (keep 6 and 5); three entries keep 4..=6.
        assert_eq!(decide(&log, BUDGET, Some(6), None).purge_through, Some(4));
        assert_eq!(decide(&log, three, Some(6), None).purge_through, Some(3));
        // A snapshot younger than the minimum: nothing to purge.
        assert_eq!(decide(&log, three, Some(2), None).purge_through, None);
    }

    #[test]
    fn small_entries_leave_retention_to_the_entry_counts() {
        let log = sizes(&[(1, 1), (2, 1), (3, 1)]);
        assert_eq!(
            decide(&log, BUDGET, Some(3), None),
            Retention {
                snapshot: false,
                purge_through: None
            }
        );
    }
}
