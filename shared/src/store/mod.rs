//! Durable state of one node in one fjall database: the Raft log and vote (`log`), the
//! state machine (`state`, `machine`), snapshots (`snapshot`), and group commit (`syncer`).
//!
//! Durability rests on one fact: fjall has a single journal, written in order, and recovery
//! replays a prefix of it. So one `persist(SyncData)` makes every earlier write durable in
//! every keyspace, and anything durable implies everything written before it is. Batches are
//! committed with no durability of their own (`manual_journal_persist`); the syncer thread
//! fsyncs once for all appends and votes waiting at that moment (group commit).

mod codec;
mod dirs;
mod log;
mod log_sizes;
mod machine;
mod memtable_record;
mod restore;
mod snapshot;
mod state;
mod syncer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};

pub use self::dirs::clear_interrupted_creation;
pub use self::log::{LogReader, LogStore};
pub use self::log_sizes::LogSizes;
pub use self::machine::StateMachine;
pub use self::memtable_record::MEMTABLE_BYTES_BEFORE_RECORD;
pub use self::restore::Restored;
pub use self::snapshot::{SnapshotData, SnapshotFile, StateDigest};
pub use self::state::{
    site_namespace, AsOf, FeedEvent, KvItem, ShipStatus, SiteRecord, StateReader, StreamEvent,
};
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
    /// A restore asked for a point the backup and log at hand do not cover.
    #[error("{0}")]
    OutOfRange(String),
}

/// What a backup file holds (checked end to end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// Seq of its state.
    pub last_seq: u64,
    /// Log index its state was applied through.
    pub applied_index: Option<u64>,
    /// First and last index of the committed log entries it carries.
    pub log: Option<(u64, u64)>,
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
    /// Hub: each site's log in seq order, site ‖ 0x00 ‖ seq (u64 BE) → feed cursor (u64 BE).
    pub site_log: Keyspace,
}

/// Memtable of the two bookkeeping keyspaces (`raft_meta`, `sm_meta`). They hold a few
/// records rewritten with every log entry, so a full memtable is almost all superseded
/// versions that a flush drops: a large one only holds memory (4 MiB each at the default
/// `storage.memtable_size`, twice while one flushes), a small one flushes a few keys.
pub const META_MEMTABLE_BYTES: u64 = 1 << 20;

/// Flushed tables the KV keyspace gathers in L0 before fjall compacts them into L1 (fjall's
/// default: 4). Its keys arrive in any order, so every such compaction rewrites all of L1
/// that the new tables overlap, which is nearly all of it: at 256 writers over 256k keys
/// that was ~4.1 of 6.5 disk bytes per payload byte (flush and compaction). Twice the tables
/// halve how often L1 is rewritten, for one more bloom-filtered table per point read on
/// average. Fixed when the store is created, like the memtable sizes.
pub const KV_L0_TABLES: u8 = 8;
const _: () = assert!(KV_L0_TABLES >= 4);

/// fjall's folder of keyspace folders inside its database directory (fjall 3.1 layout).
const FJALL_KEYSPACES_DIR: &str = "keyspaces";

/// Retention of the log by bytes (`group/log_retention.rs`), as shares of the log
/// keyspace's memtable (`storage.memtable_size`): a snapshot once the entries after the last
/// one hold a quarter of it, and after a purge the newest entries up to an eighth of it (or
/// fewer, as openraft's entry counts say). The log then stays within about three eighths of
/// its memtable, so most entries are purged before their memtable is flushed and are
/// written once (the journal) instead of three times (journal, table, compaction). Halves
/// (a snapshot every half, a quarter kept) cut the disk bytes per payload byte about half as
/// much (openclaw-bench, docs/benchmarks.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogByteBudget {
    pub snapshot_every: u64,
    pub keep_after_snapshot: u64,
    /// Bytes appended between two looks of the retention task.
    pub check_every: u64,
}

/// The log's memtable over the bytes after a snapshot that call for the next one.
pub const SNAPSHOT_EVERY_MEMTABLE_PARTS: u64 = 4;
/// The log's memtable over the bytes kept behind a snapshot.
pub const KEEP_AFTER_SNAPSHOT_MEMTABLE_PARTS: u64 = 8;
/// The log's memtable over the bytes appended between two looks of the retention task.
pub const RETENTION_CHECK_MEMTABLE_PARTS: u64 = 32;
const _: () = assert!(SNAPSHOT_EVERY_MEMTABLE_PARTS > 1);
const _: () = assert!(KEEP_AFTER_SNAPSHOT_MEMTABLE_PARTS >= SNAPSHOT_EVERY_MEMTABLE_PARTS);
const _: () = assert!(RETENTION_CHECK_MEMTABLE_PARTS >= KEEP_AFTER_SNAPSHOT_MEMTABLE_PARTS);

impl LogByteBudget {
    pub fn of_memtable(memtable_bytes: u64) -> Self {
        LogByteBudget {
            snapshot_every: memtable_bytes / SNAPSHOT_EVERY_MEMTABLE_PARTS,
            keep_after_snapshot: memtable_bytes / KEEP_AFTER_SNAPSHOT_MEMTABLE_PARTS,
            check_every: memtable_bytes / RETENTION_CHECK_MEMTABLE_PARTS,
        }
    }
}

/// An open node store: the database and the group-commit thread.
#[derive(Clone)]
pub struct Store {
    pub(crate) ks: Arc<Keyspaces>,
    pub(crate) syncer: Syncer,
    pub(crate) snapshot_dir: PathBuf,
    /// The log's entry sizes (kept by `LogStore`, read by the retention task).
    pub(crate) log_sizes: Arc<LogSizes>,
    pub(crate) log_budget: LogByteBudget,
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path, options: &StorageSection) -> Result<Self, StoreError> {
        let db_dir = dir.join("db");
        let snapshot_dir = dir.join("snapshots");
        dirs::create_dir_durable(&snapshot_dir)?;
        if dirs::clear_interrupted_creation(&db_dir)? {
            tracing::warn!(dir = %db_dir.display(), "the store's creation was interrupted (no data was written): creating it again");
        }
        dirs::create_dir_durable(&db_dir)?;
        remove_temporary_snapshots(&snapshot_dir);
        let db = Database::builder(&db_dir)
            .cache_size(options.cache_size.0)
            .max_journaling_size(options.max_journal_size.0)
            .worker_threads(options.worker_threads)
            .manual_journal_persist(true)
            .open()?;
        let memtable = options.memtable_bytes();
        let log_created_now = !db.keyspace_exists("log");
        let meta_memtable = memtable.min(META_MEMTABLE_BYTES);
        // fjall keeps a keyspace's memtable size from its creation: the options apply to a
        // new store only.
        let created_with = |memtable: u64| {
            KeyspaceCreateOptions::default()
                .manual_journal_persist(true)
                .max_memtable_size(memtable)
        };
        let open_sized = |name: &str, memtable: u64| db.keyspace(name, || created_with(memtable));
        let open = |name: &str| open_sized(name, memtable);
        let ks = Keyspaces {
            log: open("log")?,
            raft_meta: open_sized("raft_meta", meta_memtable)?,
            sm_meta: open_sized("sm_meta", meta_memtable)?,
            kv: db.keyspace("kv", || {
                created_with(memtable).compaction_strategy(Arc::new(
                    fjall::compaction::Leveled::default().with_l0_threshold(KV_L0_TABLES),
                ))
            })?,
            streams: open("streams")?,
            idem: open("idem")?,
            idem_exp: open("idem_exp")?,
            outbox: open("outbox")?,
            feed: open("feed")?,
            sites: open("sites")?,
            site_log: open("site_log")?,
            db,
        };
        // fjall 3.1 creates each new keyspace's folder under `keyspaces/` without an fsync of
        // `keyspaces/` itself, so after a power cut the folders of a new store could be gone
        // while its journal (fsynced) says they exist: found by the fault rig's power-cut
        // disk. One fsync here makes them durable before anything is acknowledged.
        let keyspaces_dir = db_dir.join(FJALL_KEYSPACES_DIR);
        if keyspaces_dir.is_dir() {
            dirs::sync_dir(&keyspaces_dir)?;
        }
        let log_memtable =
            memtable_record::log_memtable_bytes(&ks.db, &ks.raft_meta, log_created_now, memtable)?;
        if log_memtable != memtable {
            tracing::info!(
                configured = memtable,
                kept = log_memtable,
                "storage.memtable_size applies to new stores only: this one keeps the memtables it was created with, and its log is retained by them"
            );
        }
        let syncer = Syncer::start(ks.db.clone(), !options.unsafe_no_fsync);
        let log_budget = LogByteBudget::of_memtable(log_memtable);
        Ok(Store {
            ks: Arc::new(ks),
            syncer,
            snapshot_dir,
            log_sizes: Arc::new(LogSizes::new(log_budget.check_every)),
            log_budget,
        })
    }

    /// Makes every write so far durable (used on clean shutdown).
    pub async fn flush(&self) -> std::io::Result<()> {
        self.syncer.sync().await
    }

    /// Hub: a seed file for a new edge group of `site` (which must be handing back, so its
    /// state is frozen), made once per (epoch, seq) under `snapshots/` and reused by every
    /// member that downloads it. Returns the file and the site's record it was made from.
    pub fn site_seed(&self, site: &str) -> Result<Option<(PathBuf, SiteRecord)>, StoreError> {
        let view = self.ks.db.snapshot();
        let record: SiteRecord = match view.get(&self.ks.sites, site.as_bytes())? {
            Some(bytes) => codec::decode("site record", &bytes)?,
            None => return Ok(None),
        };
        if record.owner != crate::types::SiteOwner::HandingBack {
            return Ok(None);
        }
        let name = format!(
            "seed-{site}-e{}-s{}.snap",
            record.epoch + 1,
            record.shipped_through
        );
        let path = self.snapshot_dir.join(&name);
        if !path.exists() {
            let seq = record.shipped_through;
            let sm = state::SmMeta {
                last_seq: seq,
                hlc: crate::types::Hlc::from_ms(record.last_event_ms),
                epoch: record.epoch + 1,
                shipped_through: seq,
                compacted_through: seq,
                awaiting_handback: true,
                ..state::SmMeta::default()
            };
            let tmp = self.snapshot_dir.join(format!("outgoing-{name}"));
            snapshot::write_site_seed(&self.ks, &view, &state::site_namespace(site), &sm, &tmp)?;
            std::fs::rename(&tmp, &path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(Some((path, record)))
    }

    /// Hub: `site`'s state rebuilt as of a seq or a time from the hub's log of it
    /// (point-in-time restore), as a seed file; `None` if the site never shipped here. The
    /// file is named by the last seq it holds (history does not change) and reused.
    pub fn site_seed_as_of(
        &self,
        site: &str,
        as_of: AsOf,
    ) -> Result<Option<(PathBuf, u64)>, StoreError> {
        let Some(bytes) = self.ks.sites.get(site.as_bytes())? else {
            return Ok(None);
        };
        let record: SiteRecord = codec::decode("site record", &bytes)?;
        let work = self
            .snapshot_dir
            .join(format!("outgoing-pitr-{:016x}", rand::random::<u64>()));
        let scratch = Store::open(&work, &StorageSection::default())?;
        let result = (|| {
            let mut sm = state::replay_site(&self.ks, site, as_of, &scratch.ks)?;
            sm.epoch = record.epoch;
            // A copy of the past is for reading (or re-applying elsewhere), never the site's
            // writer: it starts fenced, so its writes are refused instead of colliding with
            // the seqs the site has written since.
            sm.fenced = Some(record.epoch + 1);
            let path = self
                .snapshot_dir
                .join(format!("pitr-{site}-s{}.snap", sm.last_seq));
            if !path.exists() {
                let tmp = work.join("seed.snap");
                let view = scratch.ks.db.snapshot();
                snapshot::write_site_seed(&scratch.ks, &view, &[], &sm, &tmp)?;
                std::fs::rename(&tmp, &path).map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            Ok(Some((path, sm.last_seq)))
        })();
        drop(scratch);
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    /// A consistent copy of this node's whole state machine plus the committed log it still
    /// holds (a backup), written to a new checksummed file under `snapshots/`.
    pub fn backup(&self) -> Result<SnapshotFile, StoreError> {
        let (view, sm) = self.consistent_view()?;
        snapshot::write_backup(&self.ks, &view, &sm, &self.snapshot_dir)
    }

    /// An MVCC view of the database and the state machine meta as of that view.
    fn consistent_view(&self) -> Result<(fjall::Snapshot, state::SmMeta), StoreError> {
        let view = self.ks.db.snapshot();
        let sm = state::meta_from(
            view.get(&self.ks.sm_meta, state::SM_META_KEY)?,
            view.get(&self.ks.sm_meta, state::SM_MEMBERSHIP_KEY)?,
        )?;
        Ok((view, sm))
    }

    /// A digest of this node's whole state machine (a consistent view), to compare replicas.
    pub fn digest(&self) -> Result<StateDigest, StoreError> {
        let (view, sm) = self.consistent_view()?;
        snapshot::digest(&self.ks, &view, &sm)
    }

    /// Verifies a backup file end to end and says what it holds.
    pub fn describe_backup(path: &Path) -> Result<BackupInfo, StoreError> {
        let contents = snapshot::describe(path)?;
        Ok(BackupInfo {
            last_seq: contents.sm.last_seq,
            applied_index: contents.sm.applied.map(|a| a.index),
            log: contents.log,
        })
    }

    /// Makes this (empty) store the state of backup `base` rolled forward through the log
    /// of `log` (default: the backup's own), to its end or to `as_of`, as the start of a new
    /// group: the data and bookkeeping are kept, the old group's log position and membership
    /// are not. A point in time starts fenced (a copy of the past is never the writer).
    pub fn restore_backup(
        &self,
        base: &Path,
        log: Option<&Path>,
        as_of: Option<AsOf>,
    ) -> Result<Restored, StoreError> {
        restore::restore(&self.ks, base, log, as_of)
    }

    /// Edge: makes this (empty) store the state of a seed file from the hub.
    pub fn install_seed(&self, path: &Path) -> Result<(), StoreError> {
        snapshot::install_seed(&self.ks, path).map(|_| ())
    }

    /// The shipping state on disk (what a seed installed).
    pub fn seed_status(&self) -> ShipStatus {
        state::load_meta(&self.ks)
            .map(|meta| ShipStatus::of(&meta))
            .unwrap_or_default()
    }

    /// Whether the state machine has never applied anything (a fresh directory).
    pub fn is_empty(&self) -> bool {
        self.ks.sm_meta.is_empty().unwrap_or(false) && self.ks.log.is_empty().unwrap_or(false)
    }

    /// Bytes the database occupies on disk.
    ///
    /// (fjall's figure; snapshot files come and go with transfers.)
    pub fn disk_bytes(&self) -> u64 {
        self.ks.db.disk_space().unwrap_or(0)
    }

    /// What the store holds in memory now (most of a node's RSS under load).
    pub fn memory(&self) -> StoreMemory {
        StoreMemory {
            memtable_bytes: self.ks.db.write_buffer_size(),
            block_cache_bytes: self.ks.db.cache_size(),
            pending_flushes: self.ks.db.outstanding_flushes() as u64,
        }
    }
}

/// See [`Store::memory`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// Every keyspace's active and sealed (not yet flushed) memtables.
    pub memtable_bytes: u64,
    /// Blocks held by the block cache (at most `storage.cache_size`).
    pub block_cache_bytes: u64,
    /// Sealed memtables waiting for the flush worker.
    pub pending_flushes: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose first open was cut short after fjall made its journal, before its
    /// version marker (as `fjall_power_cut` found), opens as a new store.
    #[test]
    fn a_store_whose_creation_was_interrupted_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        dirs::leave_as_interrupted_creation(&dir.path().join("db"));
        let store = Store::open(dir.path(), &StorageSection::default()).expect("open");
        drop(store);
        // And it is a real store now: opened again, it recovers.
        Store::open(dir.path(), &StorageSection::default()).expect("reopen");
    }

    /// The bookkeeping keyspaces rotate their memtable at `META_MEMTABLE_BYTES`, not at
    /// `storage.memtable_size`: rewrites of one record (as every applied entry does) leave
    /// about 1 MiB in memory, not the ~3.5 MiB written (2.5 MiB of values and the memtable's
    /// per-item overhead), which would stay in a 4 MiB memtable.
    #[test]
    fn bookkeeping_memtables_flush_at_their_own_small_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StorageSection::default();
        let store = Store::open(dir.path(), &options).expect("store");
        let record = [7u8; 200];
        let written = 5 << 19;
        assert!(written < options.memtable_bytes() && written > 2 * META_MEMTABLE_BYTES);
        for _ in 0..written / record.len() as u64 {
            store
                .ks
                .sm_meta
                .insert(b"meta".as_slice(), record.as_slice())
                .expect("insert");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let memory = store.memory();
            if memory.memtable_bytes <= 2 * META_MEMTABLE_BYTES {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "memtables still hold {memory:?} after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let read = store.ks.sm_meta.get(b"meta").expect("get");
        assert_eq!(
            read.as_deref(),
            Some(record.as_slice()),
            "the last version survives"
        );
    }
}
