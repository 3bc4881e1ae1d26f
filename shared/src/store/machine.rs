//! openraft's `RaftStateMachine` over the rules in `state` and the snapshots in `snapshot`.
//!
//! Each applied entry is one fjall batch holding its KV/stream/idempotency writes and the
//! new `SmMeta` (applied log id, seq, HLC; the membership only when it changed), so the
//! state machine on disk is always the result of a prefix of the log. Applying does not
//! fsync: on restart openraft re-applies from the durable `applied` up to the saved
//! `committed`. A snapshot is a fjall view of the state machine (no IO); it is written out
//! only when sent to a follower.

use std::sync::Arc;

use fjall::OwnedWriteBatch as WriteBatch;
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tracing::{debug, info, warn};

use super::snapshot::{self, LazySnapshot, SnapshotData};
use super::state::{apply_command, load_meta, stage_meta, Published, SmMeta, StateReader};
use super::{Store, StoreError};
use crate::metrics::SHARED;
use crate::types::{
    CommandResponse, Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};

pub struct StateMachine {
    store: Store,
    meta: SmMeta,
    published: Arc<Published>,
    /// The membership record on disk is `meta.membership` (false until this process has
    /// written it once: a store from before the split may hold none).
    membership_written: bool,
}

impl StateMachine {
    /// Loads the state machine, finishing an interrupted snapshot install first.
    pub fn open(store: Store) -> Result<(Self, StateReader), StoreError> {
        let mut meta = load_meta(&store.ks)?;
        if meta.install_pending {
            warn!("finishing a snapshot install interrupted by a crash");
            meta = snapshot::redo_install(&store.ks, &store.snapshot_dir)?;
        }
        let published = Published::new(&meta);
        let reader = StateReader::new(store.ks.clone(), published.clone());
        Ok((
            StateMachine {
                store,
                meta,
                published,
                membership_written: false,
            },
            reader,
        ))
    }

    /// Applies one entry to `self.meta` and stages its writes, and the meta, in `batch`.
    /// Applies in place: cloning the meta per entry cloned the membership too.
    fn apply_entry(
        &mut self,
        batch: &mut WriteBatch,
        entry: &Entry,
    ) -> Result<CommandResponse, StoreError> {
        let ks = &self.store.ks;
        let meta = &mut self.meta;
        let mut membership_changed = !self.membership_written;
        let response = match &entry.payload {
            EntryPayload::Blank => CommandResponse::Empty,
            EntryPayload::Normal(command) => apply_command(ks, meta, batch, command)?,
            EntryPayload::Membership(membership) => {
                meta.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                membership_changed = true;
                CommandResponse::Empty
            }
        };
        meta.applied = Some(entry.log_id);
        stage_meta(ks, batch, meta, membership_changed)?;
        self.membership_written = true;
        Ok(response)
    }

    fn publish(&self) {
        self.published.set(&self.meta);
    }

    /// A snapshot of the state as applied now: a fjall view, no IO.
    fn lazy_snapshot(&self) -> Snapshot<SnapshotData> {
        Snapshot {
            meta: snapshot::meta_of(&self.meta),
            snapshot: SnapshotData::Lazy(Box::new(LazySnapshot {
                ks: self.store.ks.clone(),
                view: self.store.ks.db.snapshot(),
                sm: self.meta.clone(),
                dir: self.store.snapshot_dir.clone(),
            })),
        }
    }
}

/// Hands openraft the snapshot taken when the builder was made (openraft asks for the
/// builder between applies, so the view matches the meta).
pub struct SnapshotBuilder {
    snapshot: Option<Snapshot<SnapshotData>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot<SnapshotData>, std::io::Error> {
        let built = self
            .snapshot
            .take()
            .ok_or_else(|| std::io::Error::other("snapshot builder used twice"))?;
        SHARED.snapshots_built.inc();
        // Several a second under heavy load (the log is kept small in bytes): counted in
        // `openclaw_snapshots_built_total`, logged only at debug.
        debug!(last_log_id = ?built.meta.last_log_id, "snapshot taken");
        Ok(built)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), std::io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut batch = self.store.ks.db.batch();
            let applied = self.apply_entry(&mut batch, &entry).and_then(|response| {
                batch.commit()?;
                Ok(response)
            });
            let response = match applied {
                Ok(response) => response,
                Err(e) => {
                    // `self.meta` is ahead of the disk now; openraft stops on this error,
                    // and a state machine that is asked again starts from the disk.
                    self.meta = load_meta(&self.store.ks)?;
                    self.membership_written = false;
                    return Err(e.into());
                }
            };
            self.publish();
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            snapshot: Some(self.lazy_snapshot()),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), std::io::Error> {
        let ks = self.store.ks.clone();
        let dir = self.store.snapshot_dir.clone();
        let installed = tokio::task::spawn_blocking(move || {
            let file = snapshot.into_file()?;
            snapshot::install(&ks, file, &dir)
        })
        .await
        .map_err(std::io::Error::other)??;
        if installed.applied != meta.last_log_id {
            return Err(std::io::Error::other(format!(
                "snapshot file says applied {:?}, its meta says {:?}",
                installed.applied, meta.last_log_id
            )));
        }
        self.meta = installed;
        self.membership_written = true;
        self.publish();
        SHARED.snapshots_installed.inc();
        info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<SnapshotData>>, std::io::Error> {
        // The state machine is its own snapshot: its applied state can be sent as one.
        Ok(self.meta.applied.is_some().then(|| self.lazy_snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::entry::RaftEntry;
    use openraft::Membership;

    use super::*;
    use crate::config::StorageSection;
    use crate::store::codec::encode;
    use crate::store::state::{SM_MEMBERSHIP_KEY, SM_META_KEY};
    use crate::types::{Command, NodeAddr, Op};

    fn log_id(index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(1, 1, index)
    }

    fn membership_entry(index: u64) -> Entry {
        let nodes: BTreeMap<u64, NodeAddr> = (1..=3)
            .map(|id| {
                let addr = NodeAddr {
                    raft: format!("gateway-{id}.plant.example:7000"),
                    http: format!("http://gateway-{id}.plant.example:8080"),
                };
                (id, addr)
            })
            .collect();
        let voters = vec![nodes.keys().copied().collect()];
        let membership = Membership::new(voters, nodes).expect("membership");
        Entry::new_membership(log_id(index), membership)
    }

    fn put_entry(index: u64) -> Entry {
        let command = Command {
            proposed_ms: index,
            elapsed_ms: index,
            idempotency: None,
            backlog_limit: None,
            site: None,
            op: Op::Put {
                key: format!("k{index}").into_bytes(),
                value: vec![b'v'; 256],
                if_revision: None,
            },
        };
        Entry::new_normal(log_id(index), command)
    }

    async fn apply(machine: &mut StateMachine, entries: Vec<Entry>) {
        let items = entries.into_iter().map(|e| Ok((e, None)));
        machine
            .apply(futures::stream::iter(items))
            .await
            .expect("apply");
    }

    fn open(dir: &std::path::Path) -> StateMachine {
        let store = Store::open(dir, &StorageSection::default()).expect("open");
        StateMachine::open(store).expect("machine").0
    }

    #[tokio::test]
    async fn only_an_apply_that_changes_the_shipping_state_wakes_the_shipper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StorageSection::default()).expect("open");
        let (mut machine, reader) = StateMachine::open(store).expect("machine");
        let mut changes = reader.ship_changes();
        apply(&mut machine, vec![membership_entry(1)]).await;
        assert!(
            !changes.has_changed().expect("the machine holds the sender"),
            "a membership entry changes nothing the shipper sends"
        );
        apply(&mut machine, vec![put_entry(2), put_entry(3)]).await;
        assert!(changes.has_changed().expect("the machine holds the sender"));
        let status = *changes.borrow_and_update();
        assert_eq!(status.last_seq, 2, "two events applied");
        assert_eq!(reader.ship_status(), status);
        assert!(!changes.has_changed().expect("the machine holds the sender"));
    }

    #[tokio::test]
    async fn the_membership_is_stored_once_not_with_every_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut machine = open(dir.path());
        apply(&mut machine, vec![membership_entry(1)]).await;
        let expected = machine.meta.membership.clone();
        assert_eq!(expected.log_id(), &Some(log_id(1)));
        let ks = machine.store.ks.clone();
        let stored = ks
            .sm_meta
            .get(SM_MEMBERSHIP_KEY)
            .expect("get")
            .expect("written");
        assert_eq!(stored.as_ref(), encode(&expected).expect("encode"));

        apply(&mut machine, (2..=10).map(put_entry).collect()).await;
        let state = ks.sm_meta.get(SM_META_KEY).expect("get").expect("state");
        // What every entry rewrites stays small however long the members' addresses are.
        assert!(state.len() < 64, "{} bytes per applied entry", state.len());
        assert!(stored.len() > 150, "{} bytes of membership", stored.len());
        drop((machine, ks));

        let machine = open(dir.path());
        assert_eq!(machine.meta.membership, expected);
        assert_eq!(machine.meta.applied, Some(log_id(10)));
        assert_eq!(machine.meta.last_seq, 9);
    }

    /// An entry whose apply fails part-way (here: a corrupt idempotency record, after the
    /// HLC and retention clock have moved) leaves the machine's meta as the disk has it, not
    /// half-advanced: nothing of the entry is applied, in memory or on disk.
    #[tokio::test]
    async fn a_failed_apply_leaves_the_meta_as_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut machine = open(dir.path());
        apply(&mut machine, vec![membership_entry(1), put_entry(2)]).await;
        let before = machine.meta.clone();
        machine
            .store
            .ks
            .idem
            .insert("retry-1", [0xffu8, 0xff])
            .expect("insert");
        let mut entry = put_entry(3);
        if let EntryPayload::Normal(command) = &mut entry.payload {
            command.proposed_ms = 1_000_000;
            command.elapsed_ms = 1_000_000;
            command.idempotency = Some(crate::types::IdempotencyKey {
                key: "retry-1".into(),
                window_secs: 600,
            });
        }
        let items = vec![Ok((entry, None))].into_iter();
        let result = machine.apply(futures::stream::iter(items)).await;
        assert!(result.is_err(), "a corrupt record must fail the apply");
        assert_eq!(machine.meta.applied, before.applied);
        assert_eq!(machine.meta.hlc, before.hlc);
        assert_eq!(machine.meta.retention_ms, before.retention_ms);
        assert_eq!(machine.meta.membership, before.membership);
        assert_eq!(
            load_meta(&machine.store.ks).expect("load").applied,
            before.applied
        );
        assert!(
            !machine.membership_written,
            "the membership is written again next time"
        );
    }

    #[tokio::test]
    async fn a_store_from_before_the_split_keeps_its_membership() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut machine = open(dir.path());
        apply(&mut machine, vec![membership_entry(1), put_entry(2)]).await;
        let whole = machine.meta.clone();
        let ks = machine.store.ks.clone();
        drop(machine);
        // The old layout: the whole meta, membership included, under one key.
        ks.sm_meta
            .insert(SM_META_KEY, encode(&whole).expect("encode"))
            .expect("insert");
        ks.sm_meta.remove(SM_MEMBERSHIP_KEY).expect("remove");
        drop(ks);

        let mut machine = open(dir.path());
        assert_eq!(machine.meta.membership, whole.membership);
        assert_eq!(machine.meta.applied, whole.applied);
        apply(&mut machine, vec![put_entry(3)]).await;
        drop(machine);
        let machine = open(dir.path());
        assert_eq!(machine.meta.membership, whole.membership);
        assert_eq!(machine.meta.applied, Some(log_id(3)));
    }
}
