//! Retention of the log by bytes, beside openraft's by entries (`raft.snapshot_every_entries`,
//! `raft.log_entries_kept_after_snapshot`): every `LogByteBudget::check_every` bytes appended,
//! this node asks openraft for a snapshot once the entries after the last one hold
//! `snapshot_every` bytes, and purges the log up to the newest `keep_after_snapshot` bytes
//! before the snapshot. Whichever bound is tighter wins. Why bytes: `store/log_sizes.rs`.
//!
//! A leader never cuts, for the bytes, entries a member still needs, as far as
//! `MIN_ENTRIES_KEPT` entries behind the snapshot (or the configured count, if smaller): a
//! follower that restarts or stalls under load still catches up from the log, as far as
//! that goes, instead of needing a snapshot of the whole state (a hub's entries are shipped
//! batches of up to `SHIP_BATCH_TARGET_BYTES` before compression). Entries every member
//! holds are cut by the bytes alone: kept for nobody, a hundred large entries (~75 KB each
//! at 256 writers) would outgrow the log's memtable and be flushed to its tables. A
//! follower's own log serves nobody, so it keeps only the bytes.
//!
//! Both are requests openraft may defer: a snapshot already being built is not started
//! again, and a purge waits while a replication request still reads the entries (so a
//! follower streaming them is not forced onto a snapshot by it). A follower further behind
//! than what is kept is sent a snapshot, as with the entry counts.

use std::sync::{Arc, Weak};

use super::GroupNode;
use crate::store::{LogByteBudget, LogSizes};

/// Entries a leader keeps behind a snapshot for a member that still needs them, however
/// large they are (unless the configured count, `raft.log_entries_kept_after_snapshot`, is
/// smaller). At the edge a hundred entries are about 0.7 MB under 64 writers, ~7 MB under
/// 256.
pub const MIN_ENTRIES_KEPT: u64 = 100;

/// How far the log may be cut: `bytes` before the snapshot, but not the entries a lagging
/// member needs within `min_entries` of the snapshot.
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

/// `members_matched`: when this node leads, the last log index each member (itself
/// included or not) is known to hold, `None` for a member not known to hold any; when it
/// does not lead, empty.
pub(super) fn decide(
    sizes: &LogSizes,
    limits: Limits,
    snapshot_index: Option<u64>,
    purged_index: Option<u64>,
    members_matched: &[Option<u64>],
) -> Retention {
    let snapshot = sizes.bytes_after(snapshot_index) >= limits.bytes.snapshot_every;
    let purge_through = snapshot_index
        .and_then(|s| {
            let by_bytes = sizes.purge_point(s, limits.bytes.keep_after_snapshot)?;
            // For a member, keep what it lacks, but at most min_entries entries: purge
            // through its matched index, or s - min_entries if that is later.
            let furthest_back = s.checked_sub(limits.min_entries);
            let for_members = members_matched.iter().try_fold(s, |bound, matched| {
                let keep_for = match (*matched, furthest_back) {
                    (Some(m), Some(f)) => m.max(f),
                    (Some(m), None) => m,
                    (None, f) => f?,
                };
                Some(bound.min(keep_for))
            })?;
            Some(by_bytes.min(for_members))
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
        let (snapshot, purged, members_matched) = self.with_raft_metrics(|m| {
            let matched: Vec<Option<u64>> = m
                .replication
                .as_ref()
                .map(|r| r.values().map(|l| l.as_ref().map(|l| l.index)).collect())
                .unwrap_or_default();
            (
                m.snapshot.as_ref().map(|l| l.index),
                m.purged.as_ref().map(|l| l.index),
                matched,
            )
        });
        let retention = decide(sizes, limits, snapshot, purged, &members_matched);
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

    #[test]
    fn snapshots_once_the_entries_after_the_last_hold_the_budget() {
        let log = LogSizes::of_entries(&[(1, 40), (2, 40), (3, 40)]);
        assert!(decide(&log, BUDGET, None, None, &[]).snapshot);
        assert!(!decide(&log, BUDGET, Some(1), None, &[]).snapshot);
        assert!(!decide(&LogSizes::of_entries(&[(1, 99)]), BUDGET, None, None, &[]).snapshot);
    }

    #[test]
    fn purges_before_the_newest_kept_bytes_of_the_snapshot_only() {
        let log = LogSizes::of_entries(&[(1, 30), (2, 30), (3, 30), (4, 30), (5, 30)]);
        // Snapshot at 4: keep 4 and 3 (60 ≥ 50), purge through 2; 5 is after the snapshot.
        let retention = decide(&log, BUDGET, Some(4), None, &[]);
        assert_eq!(retention.purge_through, Some(2));
        // Already purged that far: nothing to ask.
        assert_eq!(
            decide(&log, BUDGET, Some(4), Some(2), &[]).purge_through,
            None
        );
        // No snapshot yet: nothing may be purged.
        assert_eq!(decide(&log, BUDGET, None, None, &[]).purge_through, None);
    }

    #[test]
    fn a_leader_keeps_what_a_lagging_member_lacks_up_to_the_minimum_entries() {
        let log = LogSizes::of_entries(&[(1, 30), (2, 30), (3, 30), (4, 30), (5, 30), (6, 30)]);
        let three = Limits {
            min_entries: 3,
            ..BUDGET
        };
        let purge = |limits, snapshot, matched: &[Option<u64>]| {
            decide(&log, limits, Some(snapshot), None, matched).purge_through
        };
        // Bytes alone purge through 4 (keep 6 and 5).
        assert_eq!(
            purge(three, 6, &[]),
            Some(4),
            "a follower keeps the bytes only"
        );
        assert_eq!(
            purge(three, 6, &[Some(6), Some(6)]),
            Some(4),
            "members that hold everything keep nothing more"
        );
        // A member at 2 lacks 3..: keep them, but only the three entries 4..=6 at most.
        assert_eq!(purge(three, 6, &[Some(6), Some(2)]), Some(3));
        assert_eq!(purge(three, 6, &[Some(6), Some(3)]), Some(3));
        let ten = Limits {
            min_entries: 10,
            ..BUDGET
        };
        assert_eq!(purge(ten, 6, &[Some(6), Some(2)]), Some(2), "all it lacks");
        // A member known to hold nothing: the minimum entries are kept, as for any lag.
        assert_eq!(purge(three, 6, &[None, Some(6)]), Some(3));
        // A snapshot younger than the minimum: nothing is purged for such a member...
        assert_eq!(purge(three, 2, &[None]), None);
        // ...but a member holding the entries does not stop the bytes.
        assert_eq!(purge(three, 6, &[Some(5)]), Some(4));
    }

    #[test]
    fn small_entries_leave_retention_to_the_entry_counts() {
        let log = LogSizes::of_entries(&[(1, 1), (2, 1), (3, 1)]);
        assert_eq!(
            decide(&log, BUDGET, Some(3), None, &[]),
            Retention {
                snapshot: false,
                purge_through: None
            }
        );
    }
}
