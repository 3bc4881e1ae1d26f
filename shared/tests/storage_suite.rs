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
