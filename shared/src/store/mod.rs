//! Durable state of one node in one fjall database: the Raft log and vote (`log`), the
//! state machine (`state`, `machine`), snapshots (`snapshot`), and group commit (`syncer`).
//!
//! Durability rests on one fact: fjall has a single journal, written in order, and recovery
//! replays a prefix of it. So one `persist(SyncData)` makes every earlier write durable in
//! every keyspace, and anything durable implies everything written before it is. Batches are
//! committed with no durability of their own (`manual_journal_persist`); the syncer thread
//! fsyncs once for all appends and votes waiting at that moment (group commit).

mod codec;
mod log;
mod machine;
mod snapshot;
mod state;
mod syncer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

pub use self::log::{LogReader, LogStore};
pub use self::machine::StateMachine;
pub use self::snapshot::{SnapshotData, SnapshotFile};
pub use self::state::{FeedEvent, KvItem, ShipStatus, SiteRecord, StateReader, StreamEvent};
pub use self::syncer::Syncer;

use crate::config::StorageSection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("storage file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt {what}: {message}")]
    Corrupt { what: String, message: String },
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// The fixed set of keyspaces (kept small: each has its own memtables).
#[derive(Clone)]
pub(crate) struct Keyspaces {
    pub db: Database,
    /// Raft log: index (u64 BE) → encoded entry.
    pub log: Keyspace,
    /// Raft vote, committed and purged log ids.
    pub raft_meta: Keyspace,
    /// State machine bookkeeping: applied log id, membership, last seq, HLC.
    pub sm_meta: Keyspace,
    /// KV: key → revision (u64 BE) ‖ value.
    pub kv: Keyspace,
    /// Streams: name ‖ 0x00 ‖ seq (u64 BE) → hlc (u64 BE) ‖ data.
    pub streams: Keyspace,
    /// Idempotency: key → encoded record.
    pub idem: Keyspace,
    /// Idempotency expiry index: expires_ms (u64 BE) ‖ key → ().
    pub idem_exp: Keyspace,
    /// Edge: events not yet known to be at the hub, seq (u64 BE) → encoded `ShippedEvent`.
    pub outbox: Keyspace,
    /// Hub: the merged feed of all sites, cursor (u64 BE) → encoded `FeedEvent`.
    pub feed: Keyspace,
    /// Hub: shipping state of each site, site id → encoded `SiteRecord`.
    pub sites: Keyspace,
}

/// An open node store: the database and the group-commit thread.
#[derive(Clone)]
pub struct Store {
    pub(crate) ks: Arc<Keyspaces>,
    pub(crate) syncer: Syncer,
    pub(crate) snapshot_dir: PathBuf,
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path, options: &StorageSection) -> Result<Self, StoreError> {
        let db_dir = dir.join("db");
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir).map_err(|source| StoreError::Io {
            path: snapshot_dir.clone(),
            source,
        })?;
        remove_temporary_snapshots(&snapshot_dir);
        let db = Database::builder(&db_dir)
            .cache_size(options.cache_size.0)
            .max_journaling_size(options.max_journal_size.0)
            .worker_threads(options.worker_threads)
            .manual_journal_persist(true)
            .open()?;
        let memtable = options.memtable_size.0;
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(memtable)
            })
        };
        let ks = Keyspaces {
            log: open("log")?,
            raft_meta: open("raft_meta")?,
            sm_meta: open("sm_meta")?,
            kv: open("kv")?,
            streams: open("streams")?,
            idem: open("idem")?,
            idem_exp: open("idem_exp")?,
            outbox: open("outbox")?,
            feed: open("feed")?,
            sites: open("sites")?,
            db,
        };
        let syncer = Syncer::start(ks.db.clone());
        Ok(Store {
            ks: Arc::new(ks),
            syncer,
            snapshot_dir,
        })
    }

    /// Makes every write so far durable (used on clean shutdown).
    pub async fn flush(&self) -> std::io::Result<()> {
        self.syncer.sync().await
    }

    /// Bytes the database occupies on disk.
    ///
    /// (fjall's figure; snapshot files come and go with transfers.)
    pub fn disk_bytes(&self) -> u64 {
        self.ks.db.disk_space().unwrap_or(0)
    }
}

/// Snapshot copies being sent or received when the process died are useless after a restart;
/// `current.snap` (a finished install, needed to redo an interrupted one) is kept.
fn remove_temporary_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("outgoing-") || name.starts_with("incoming-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
