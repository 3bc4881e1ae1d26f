//! The Raft log and vote on fjall (openraft `RaftLogStorage`).
//!
//! `append` commits the entries to the journal (readable at once) and hands the callback to
//! the syncer, which fires it only after the fsync that covers them. `save_vote` waits for
//! its fsync before returning. `committed` is written without its own fsync: the journal's
//! order means it is durable only together with the entries it points to.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::codec::{decode, encode, u64_key};
use super::{Keyspaces, Store, StoreError};
use crate::types::{Entry, LogId, TypeConfig, Vote};

const VOTE_KEY: &[u8] = b"vote";
pub(crate) const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";

/// Reads the log; cheap to clone, one per replication task.
#[derive(Clone)]
pub struct LogReader {
    ks: std::sync::Arc<Keyspaces>,
}

/// The log writer openraft owns.
pub struct LogStore {
    store: Store,
}

impl LogStore {
    pub fn new(store: Store) -> Self {
        LogStore { store }
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(
    ks: &Keyspaces,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match ks.raft_meta.get(key)? {
        Some(bytes) => Ok(Some(decode(&String::from_utf8_lossy(key), &bytes)?)),
        None => Ok(None),
    }
}

fn index_range<RB: RangeBounds<u64>>(range: &RB) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |b: Bound<&u64>| match b {
        Bound::Included(i) => Bound::Included(u64_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(u64_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

impl LogReader {
    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.ks.log.range(index_range(&range)) {
            let value = item.value()?;
            out.push(decode("log entry", &value)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        Ok(self.entries(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(read_meta(&self.ks, VOTE_KEY)?)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        Ok(self.reader().entries(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        Ok(read_meta(&self.store.ks, VOTE_KEY)?)
    }
}

impl LogStore {
    fn reader(&self) -> LogReader {
        LogReader {
            ks: self.store.ks.clone(),
        }
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.store.ks.log.last_key_value() {
            Some(guard) => {
                let (_, value) = guard.into_inner()?;
                let entry: Entry = decode("log entry", &value)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        let purged: Option<LogId> = read_meta(&self.store.ks, PURGED_KEY)?;
        let last = self.last_entry_id()?.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        let ks = &self.store.ks;
        ks.raft_meta
            .insert(VOTE_KEY, encode(vote)?)
            .map_err(StoreError::from)?;
        // A vote answers a candidate only once it is on disk: never two votes in one term.
        self.store.syncer.sync().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        let ks = &self.store.ks;
        ks.raft_meta
            .insert(COMMITTED_KEY, encode(&committed)?)
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        Ok(read_meta::<Option<LogId>>(&self.store.ks, COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let ks = &self.store.ks;
        let mut batch = ks.db.batch();
        let mut sizes = Vec::new();
        for entry in entries {
            let encoded = encode(&entry)?;
            sizes.push((entry.log_id.index, encoded.len() as u64));
            batch.insert(&ks.log, u64_key(entry.log_id.index), encoded);
        }
        batch.commit().map_err(StoreError::from)?;
        for (index, bytes) in sizes {
            self.store.log_sizes.appended(index, bytes);
        }
        self.store
            .syncer
            .after_sync(move |result| callback.io_completed(result));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        let ks = &self.store.ks;
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        let mut batch = ks.db.batch();
        for item in ks.log.range(u64_key(from)..) {
            let key = item.key().map_err(StoreError::from)?;
            batch.remove(&ks.log, key);
        }
        batch.commit().map_err(StoreError::from)?;
        self.store
            .log_sizes
            .truncated_after(last_log_id.map(|id| id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        let ks = &self.store.ks;
        let previous: Option<LogId> = read_meta(ks, PURGED_KEY)?;
        let mut batch = ks.db.batch();
        // Record the purge point first in the same atomic batch: never a hole.
        batch.insert(&ks.raft_meta, PURGED_KEY, encode(&log_id)?);
        match previous {
            // The log holds exactly the entries after the previous purge point, without
            // gaps (appends extend it, `truncate_after` cuts its end, purges its start): delete
            // them by key. Scanning instead would read back every entry being deleted and the
            // tombstones of every earlier purge not yet compacted, filling the block cache
            // with the log's dead blocks.
            Some(previous) => {
                let last = self
                    .last_entry_id()?
                    .map_or(previous.index, |last| last.index);
                for index in previous.index + 1..=last.min(log_id.index) {
                    batch.remove(&ks.log, u64_key(index));
                }
            }
            // The first purge: where the log starts is not recorded.
            None => {
                for item in ks.log.range(..=u64_key(log_id.index)) {
                    let key = item.key().map_err(StoreError::from)?;
                    batch.remove(&ks.log, key);
                }
            }
        }
        batch.commit().map_err(StoreError::from)?;
        self.store.log_sizes.purged_through(log_id.index);
        Ok(())
    }
}
