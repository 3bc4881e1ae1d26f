//! The encoded size of each entry in the stored log, for retention by bytes
//! (`group/log_retention.rs`). openraft bounds the log in entries (snapshot every N, keep M
//! after it), but a batch entry holds from one write to `MAX_PROPOSAL_BATCH_WRITES`, so a
//! window of 1,000 + 1,000 entries was ~14 MB under 64 writers. That outgrew the log's 4 MiB
//! memtable: entries reached LSM tables before they were purged, and the purge then had to
//! be compacted away, a third of all bytes a node wrote (docs/benchmarks.md). Kept below
//! the memtable, most of the log is purged while still in memory and never written again.
//!
//! Plain bookkeeping, in memory: entries appended before a restart are not counted (their
//! sizes would have to be read back), so until they are purged retention falls back to the
//! entry counts for them; each new entry is counted.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Sizes of the log's entries (index, encoded bytes), in index order without gaps.
#[derive(Debug, Default)]
struct Sizes {
    entries: VecDeque<(u64, u64)>,
    /// Bytes appended since the last `Notify`.
    unannounced: u64,
}

/// The log's entry sizes, shared by the log store (which records them) and the retention
/// task (which it wakes every `announce_every` bytes appended).
#[derive(Debug)]
pub struct LogSizes {
    sizes: Mutex<Sizes>,
    announce_every: u64,
    grown: Notify,
}

impl LogSizes {
    /// `announce_every`: bytes appended between wake-ups of `grown`.
    pub fn new(announce_every: u64) -> Self {
        LogSizes {
            sizes: Mutex::new(Sizes::default()),
            announce_every: announce_every.max(1),
            grown: Notify::new(),
        }
    }

    fn sizes(&self) -> std::sync::MutexGuard<'_, Sizes> {
        // Plain bookkeeping: a panic elsewhere cannot leave it inconsistent.
        self.sizes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entry `index` of `bytes` was appended (after any entries it replaces were truncated).
    pub fn appended(&self, index: u64, bytes: u64) {
        let announce = {
            let mut sizes = self.sizes();
            // An append that overwrites the tail (openraft truncates first) or leaves a gap
            // (after a snapshot install) restarts the count where it can stay gapless.
            while sizes.entries.back().is_some_and(|(i, _)| *i >= index) {
                sizes.entries.pop_back();
            }
            if sizes.entries.back().is_some_and(|(i, _)| *i + 1 != index) {
                sizes.entries.clear();
            }
            sizes.entries.push_back((index, bytes));
            sizes.unannounced += bytes;
            let announce = sizes.unannounced >= self.announce_every;
            if announce {
                sizes.unannounced = 0;
            }
            announce
        };
        if announce {
            self.grown.notify_one();
        }
    }

    /// Entries after `index` were removed (`None`: all of them).
    pub fn truncated_after(&self, index: Option<u64>) {
        let mut sizes = self.sizes();
        while sizes
            .entries
            .back()
            .is_some_and(|(i, _)| index.is_none_or(|keep| *i > keep))
        {
            sizes.entries.pop_back();
        }
    }

    /// Entries up to and including `index` were purged.
    pub fn purged_through(&self, index: u64) {
        let mut sizes = self.sizes();
        while sizes.entries.front().is_some_and(|(i, _)| *i <= index) {
            sizes.entries.pop_front();
        }
    }

    /// Counted bytes of the entries after `index` (`None`: all).
    pub fn bytes_after(&self, index: Option<u64>) -> u64 {
        self.sizes()
            .entries
            .iter()
            .rev()
            .take_while(|(i, _)| index.is_none_or(|after| *i > after))
            .map(|(_, b)| *b)
            .sum()
    }

    /// The index up to which the log can be purged and still hold at least `keep_bytes` of
    /// the entries up to `snapshot_index` (the newest ones): `None` if the counted entries
    /// up to it hold less, or nothing before them is left to purge.
    pub fn purge_point(&self, snapshot_index: u64, keep_bytes: u64) -> Option<u64> {
        let sizes = self.sizes();
        let mut kept = 0u64;
        for (index, bytes) in sizes.entries.iter().rev() {
            if *index > snapshot_index {
                continue;
            }
            kept += bytes;
            if kept >= keep_bytes {
                // Keep this entry and the newer ones; everything before it may go.
                return index.checked_sub(1);
            }
        }
        None
    }

    /// Waits until `announce_every` more bytes have been appended.
    pub async fn grown(&self) {
        self.grown.notified().await;
    }

    /// Tests: sizes of `entries` (index, bytes) appended in order, never announced.
    #[cfg(test)]
    pub(crate) fn of_entries(entries: &[(u64, u64)]) -> Self {
        let sizes = LogSizes::new(u64::MAX);
        for (index, bytes) in entries {
            sizes.appended(*index, *bytes);
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_bytes_after_an_index() {
        let sizes = LogSizes::of_entries(&[(1, 10), (2, 20), (3, 30)]);
        assert_eq!(sizes.bytes_after(None), 60);
        assert_eq!(sizes.bytes_after(Some(1)), 50);
        assert_eq!(sizes.bytes_after(Some(3)), 0);
    }

    #[test]
    fn purges_up_to_what_keeps_the_byte_budget_before_the_snapshot() {
        let sizes = LogSizes::of_entries(&[(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]);
        // Snapshot at 4: keep ≥ 60 bytes of entries ≤ 4, i.e. 4 and 3 (70): purge through 2.
        assert_eq!(sizes.purge_point(4, 60), Some(2));
        assert_eq!(sizes.purge_point(4, 70), Some(2));
        assert_eq!(sizes.purge_point(4, 71), Some(1));
        // Entries after the snapshot never count towards what is kept.
        assert_eq!(sizes.purge_point(2, 20), Some(1));
        // Not enough counted bytes: keep everything.
        assert_eq!(sizes.purge_point(4, 101), None);
        assert_eq!(sizes.purge_point(1, 10), Some(0));
    }

    #[test]
    fn follows_truncation_and_purge() {
        let sizes = LogSizes::of_entries(&[(1, 10), (2, 20), (3, 30)]);
        sizes.truncated_after(Some(1));
        assert_eq!(sizes.bytes_after(None), 10);
        sizes.appended(2, 5);
        assert_eq!(sizes.bytes_after(None), 15);
        sizes.purged_through(1);
        assert_eq!(sizes.bytes_after(None), 5);
        sizes.truncated_after(None);
        assert_eq!(sizes.bytes_after(None), 0);
    }

    #[test]
    fn an_overwritten_tail_or_a_gap_is_not_counted_twice() {
        let sizes = LogSizes::of_entries(&[(1, 10), (2, 20), (3, 30)]);
        sizes.appended(2, 7); // openraft replaced 2.. with a new entry 2
        assert_eq!(sizes.bytes_after(None), 17);
        sizes.appended(10, 1); // after a snapshot install the log restarts at 10
        assert_eq!(sizes.bytes_after(None), 1);
    }

    #[tokio::test]
    async fn wakes_the_waiter_every_announced_amount() {
        let sizes = std::sync::Arc::new(LogSizes::new(100));
        sizes.appended(1, 60);
        let waiter = tokio::spawn({
            let sizes = sizes.clone();
            async move { sizes.grown().await }
        });
        sizes.appended(2, 60);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken within 10 s")
            .expect("waiter");
    }
}
