//! The memtable size a store's written keyspaces were created with.
//!
//! fjall fixes a keyspace's memtable size when it creates the keyspace and keeps it across
//! opens, whatever the options say later, and it does not tell what it was. The log's
//! retention (`LogByteBudget`) is paced by that memtable: a budget larger than the real
//! memtable lets the log reach its tables and be compacted (disk bytes per payload byte
//! rose by about a third when it did, docs/benchmarks.md). So a new store records the size
//! it was created with, and every open paces retention by the record, not by the
//! configuration (a hub whose store predates the 32 MiB hub default keeps 4 MiB tables).

use fjall::{Database, Keyspace, PersistMode};

use super::StoreError;

/// Key of the record in `raft_meta`: the log keyspace's memtable bytes, u64 little-endian.
pub(crate) const LOG_MEMTABLE_KEY: &[u8] = b"log_memtable_bytes";

/// The memtable size assumed for a store created before the record was kept: the one
/// default every daemon had then. A store configured larger back then is paced as if
/// its memtable were this (more frequent snapshots, never a log past its memtable).
pub const MEMTABLE_BYTES_BEFORE_RECORD: u64 = 4 << 20;

/// The log keyspace's memtable bytes for pacing its retention. `created_now` says the log
/// keyspace did not exist before this open, so `configured` is what fjall just created it
/// with; the record is then written and made durable before anything else is.
pub(crate) fn log_memtable_bytes(
    db: &Database,
    raft_meta: &Keyspace,
    created_now: bool,
    configured: u64,
) -> Result<u64, StoreError> {
    if let Some(bytes) = raft_meta.get(LOG_MEMTABLE_KEY)? {
        let recorded: [u8; 8] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: "log memtable record".into(),
            message: format!("{} bytes, expected 8", bytes.len()),
        })?;
        return Ok(u64::from_le_bytes(recorded));
    }
    if !created_now {
        return Ok(configured.min(MEMTABLE_BYTES_BEFORE_RECORD));
    }
    raft_meta.insert(LOG_MEMTABLE_KEY, configured.to_le_bytes())?;
    db.persist(PersistMode::SyncData)?;
    Ok(configured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, StorageSection};
    use crate::store::{LogByteBudget, Store};

    fn with_memtable(bytes: u64) -> StorageSection {
        StorageSection {
            memtable_size: Some(ByteSize(bytes)),
            ..StorageSection::default()
        }
    }

    /// The log is retained by the memtable the store was created with: reopened with a
    /// larger (or smaller) `memtable_size`, the budget does not move.
    #[test]
    fn retention_is_paced_by_the_memtable_the_store_was_created_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &with_memtable(8 << 20)).expect("create");
        assert_eq!(store.log_budget, LogByteBudget::of_memtable(8 << 20));
        drop(store);
        for configured in [32 << 20, 2 << 20] {
            let store = Store::open(dir.path(), &with_memtable(configured)).expect("reopen");
            assert_eq!(store.log_budget, LogByteBudget::of_memtable(8 << 20));
        }
    }

    /// A store from before the record (its log keyspace exists, the record does not) is
    /// paced as the 4 MiB store every daemon created then, or by a smaller configured size;
    /// a damaged record is an error that names it, not a guess.
    #[test]
    fn a_store_without_the_record_is_paced_by_the_old_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &with_memtable(4 << 20)).expect("create");
        store.ks.raft_meta.remove(LOG_MEMTABLE_KEY).expect("remove");
        store.ks.db.persist(PersistMode::SyncData).expect("persist");
        drop(store);
        let store = Store::open(dir.path(), &with_memtable(32 << 20)).expect("reopen");
        assert_eq!(
            store.log_budget,
            LogByteBudget::of_memtable(MEMTABLE_BYTES_BEFORE_RECORD)
        );
        drop(store);
        let store = Store::open(dir.path(), &with_memtable(2 << 20)).expect("reopen");
        assert_eq!(store.log_budget, LogByteBudget::of_memtable(2 << 20));
        assert!(
            store
                .ks
                .raft_meta
                .get(LOG_MEMTABLE_KEY)
                .expect("get")
                .is_none(),
            "a guess is not recorded as the store's size"
        );

        store
            .ks
            .raft_meta
            .insert(LOG_MEMTABLE_KEY, [1u8, 2, 3])
            .expect("insert");
        store.ks.db.persist(PersistMode::SyncData).expect("persist");
        drop(store);
        let error = Store::open(dir.path(), &with_memtable(4 << 20))
            .err()
            .expect("a 3-byte record is refused");
        assert!(error.to_string().contains("log memtable record"), "{error}");
    }
}
