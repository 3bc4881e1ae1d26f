//! openraft's `RaftStateMachine` over the rules in `state` and the snapshots in `snapshot`.
//!
//! Each applied entry is one fjall batch holding its KV/stream/idempotency writes and the
//! new `SmMeta` (applied log id, membership, seq, HLC), so the state machine on disk is always
//! the result of a prefix of the log. Applying does not fsync: on restart openraft re-applies
//! from the durable `applied` up to the saved `committed`. A snapshot is a fjall view of the
//! state machine (no IO); it is written out only when sent to a follower.

use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tracing::{info, warn};

use super::codec::encode;
use super::snapshot::{self, LazySnapshot, SnapshotData};
use super::state::{apply_command, load_meta, Published, SmMeta, StateReader, SM_META_KEY};
use super::{Store, StoreError};
use crate::metrics::SHARED;
use crate::types::{CommandResponse, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

pub struct StateMachine {
    store: Store,
    meta: SmMeta,
    published: Arc<Published>,
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
            },
            reader,
        ))
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
        info!(last_log_id = ?built.meta.last_log_id, "snapshot taken");
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
            let ks = &self.store.ks;
            let mut batch = ks.db.batch();
            let mut meta = self.meta.clone();
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::Empty,
                EntryPayload::Normal(command) => apply_command(ks, &mut meta, &mut batch, command)?,
                EntryPayload::Membership(membership) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    CommandResponse::Empty
                }
            };
            meta.applied = Some(entry.log_id);
            batch.insert(&ks.sm_meta, SM_META_KEY, encode(&meta)?);
            batch.commit().map_err(StoreError::from)?;
            self.meta = meta;
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
