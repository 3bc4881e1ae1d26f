//! openraft's storage conformance suite against the fjall log store and state machine.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use shared::config::StorageSection;
use shared::store::{LogStore, StateMachine, Store};
use shared::types::TypeConfig;

struct FjallBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FjallBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StorageSection::default()).expect("open store");
        let (machine, _reader) = StateMachine::open(store.clone()).expect("open state machine");
        Ok((dir, LogStore::new(store), machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(FjallBuilder).await.expect("storage suite");
}

/// Purges after the first delete by key from the previous purge point instead of scanning:
/// every entry up to the new point must be gone, every later one must stay, and a purge
/// past the log's end (a snapshot ahead of it) must leave no entry behind.
#[tokio::test]
async fn purges_after_the_first_remove_exactly_the_entries_up_to_the_point() {
    use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
    use openraft::testing::{blank_ent, log_id};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &StorageSection::default()).expect("open store");
    let mut log = LogStore::new(store);
    let indexes = |entries: Vec<shared::types::Entry>| -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    };
    let entries = (1..=20).map(|i| blank_ent::<TypeConfig>(1, 1, i));
    log.append(entries, IOFlushed::noop())
        .await
        .expect("append");

    log.purge(log_id::<TypeConfig>(1, 1, 4))
        .await
        .expect("first purge");
    log.purge(log_id::<TypeConfig>(1, 1, 11))
        .await
        .expect("second purge");
    let left = log.try_get_log_entries(0..100).await.expect("read");
    assert_eq!(indexes(left), (12..=20).collect::<Vec<_>>());
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(11));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(20));

    log.purge(log_id::<TypeConfig>(1, 1, 35))
        .await
        .expect("purge past the end");
    assert!(log
        .try_get_log_entries(0..100)
        .await
        .expect("read")
        .is_empty());
    let after = (36..=38).map(|i| blank_ent::<TypeConfig>(1, 1, i));
    log.append(after, IOFlushed::noop())
        .await
        .expect("append after");
    log.purge(log_id::<TypeConfig>(1, 1, 36))
        .await
        .expect("purge again");
    let left = log.try_get_log_entries(0..100).await.expect("read");
    assert_eq!(indexes(left), vec![37, 38]);
}
