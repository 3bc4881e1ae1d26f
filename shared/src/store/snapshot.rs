//! Snapshots: a consistent fjall view taken in O(1) when openraft asks for a snapshot, and
//! serialized to a file only when a follower needs one; verification and install on the
//! receiving side.
//!
//! A lazy snapshot needs no fsync of its own: the state machine it views is in fjall's
//! journal before any purge that relies on it, and the journal is recovered as a prefix.
//!
//! Format: magic ‖ u32 header length ‖ header (codec) ‖ records ‖ END ‖ crc32 of all before.
//! A record is tag ‖ u32 key length ‖ key ‖ u32 value length ‖ value, each length bounded
//! before allocation. A backup is the same file plus the committed Raft log the node still
//! holds (`TAG_LOG` records, index order), so it can be rolled forward (`restore`). A
//! received file is checked end to end (crc and every record's framing) before anything is
//! cleared. Install is crash-safe: the file becomes `current.snap` and `install_pending` is
//! made durable before the keyspaces are cleared, and `StateMachine::open` redoes an
//! interrupted install.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use fjall::{Keyspace, Readable};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::state::{stage_meta, SmMeta};
use super::{Keyspaces, StoreError};
use crate::limits::{
    MAX_FRAME_BYTES, MAX_KEY_BYTES, MAX_SITE_ID_BYTES, MAX_STREAM_NAME_BYTES, MAX_VALUE_BYTES,
};
use crate::types::{Entry, LogId, SnapshotMeta};

const MAGIC: &[u8; 8] = b"OCSNAP01";
const CURRENT: &str = "current.snap";
const TAG_KV: u8 = 1;
const TAG_STREAM: u8 = 2;
const TAG_IDEM: u8 = 3;
const TAG_IDEM_EXP: u8 = 4;
const TAG_OUTBOX: u8 = 5;
const TAG_FEED: u8 = 6;
const TAG_SITES: u8 = 7;
const TAG_SITE_LOG: u8 = 8;
/// Backups only: a committed Raft log entry, u64 BE index → encoded entry.
const TAG_LOG: u8 = 9;
const TAG_END: u8 = 0xff;
/// Longest record key: a site namespace, then a stream name, separator and seq, or an
/// idempotency index key.
const MAX_RECORD_KEY_BYTES: usize =
    MAX_SITE_ID_BYTES + 1 + MAX_KEY_BYTES + MAX_STREAM_NAME_BYTES + 16;
/// Longest record value: a value with its 8-byte revision or HLC prefix, or an encoded
/// outbox/feed event (value plus key, stream and site names).
const MAX_RECORD_VALUE_BYTES: usize = MAX_VALUE_BYTES + MAX_KEY_BYTES + 4096;
/// Longest log record: one entry, and every entry once fit in one frame.
const MAX_LOG_RECORD_BYTES: usize = MAX_FRAME_BYTES;
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Records per write batch while installing.
const INSTALL_BATCH_RECORDS: usize = 1024;

/// A snapshot on disk, held open (a rename over its path does not disturb a reader).
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: File,
    pub size_bytes: u64,
}

impl SnapshotFile {
    pub fn open(path: PathBuf) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let size_bytes = file.metadata().map_err(io)?.len();
        Ok(SnapshotFile {
            path,
            file,
            size_bytes,
        })
    }

    /// A fresh path in `dir` for a snapshot being received.
    pub fn incoming_path(dir: &Path) -> PathBuf {
        dir.join(format!("incoming-{:016x}.snap", rand::random::<u64>()))
    }
}

/// What openraft holds as snapshot data.
pub enum SnapshotData {
    /// A view of this node's own state machine, not yet written anywhere.
    Lazy(Box<LazySnapshot>),
    /// A snapshot file (received from a leader, or a materialized view being sent).
    File(SnapshotFile),
}

/// A consistent view of the state machine and its bookkeeping at one applied log id.
pub struct LazySnapshot {
    pub(crate) ks: std::sync::Arc<Keyspaces>,
    pub(crate) view: fjall::Snapshot,
    pub(crate) sm: SmMeta,
    pub(crate) dir: PathBuf,
}

impl SnapshotData {
    /// The snapshot as a file, writing it if needed (blocking IO: call off the runtime).
    pub fn into_file(self) -> Result<SnapshotFile, StoreError> {
        match self {
            SnapshotData::File(file) => Ok(file),
            SnapshotData::Lazy(lazy) => write(&lazy.ks, &lazy.view, &lazy.sm, &lazy.dir),
        }
    }
}

impl SnapshotFile {
    /// Deletes the file (an outgoing copy, once sent).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    meta: SnapshotMeta,
    sm: SmMeta,
}

fn corrupt(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: format!("snapshot {}", path.display()),
        message: message.into(),
    }
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_record<W: Write>(out: &mut W, tag: u8, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    out.write_all(&[tag])?;
    out.write_all(&(key.len() as u32).to_be_bytes())?;
    out.write_all(key)?;
    out.write_all(&(value.len() as u32).to_be_bytes())?;
    out.write_all(value)
}

/// The meta openraft keeps for a snapshot of state `sm`.
pub(crate) fn meta_of(sm: &SmMeta) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: sm.applied,
        last_membership: sm.membership.clone(),
    }
}

/// The state machine keyspaces a snapshot holds, each with its record tag (`sm_meta` travels
/// in the header).
fn sections(ks: &Keyspaces) -> [(u8, &Keyspace); 8] {
    [
        (TAG_KV, &ks.kv),
        (TAG_STREAM, &ks.streams),
        (TAG_IDEM, &ks.idem),
        (TAG_IDEM_EXP, &ks.idem_exp),
        (TAG_OUTBOX, &ks.outbox),
        (TAG_FEED, &ks.feed),
        (TAG_SITES, &ks.sites),
        (TAG_SITE_LOG, &ks.site_log),
    ]
}

/// Writes `view` (a consistent fjall snapshot whose state is `sm`) to a new file in `dir`.
/// No fsync: the file is a copy for sending; the receiver verifies and syncs it.
fn write(
    ks: &Keyspaces,
    view: &fjall::Snapshot,
    sm: &SmMeta,
    dir: &Path,
) -> Result<SnapshotFile, StoreError> {
    let path = dir.join(format!("outgoing-{:016x}.snap", rand::random::<u64>()));
    write_file(&path, sm, |out| write_sections(ks, view, out))?;
    SnapshotFile::open(path)
}

/// A backup: the state machine in `view` (whose state is `sm`) and then every committed
/// log entry the view still holds, written to a new file in `dir`.
pub(crate) fn write_backup(
    ks: &Keyspaces,
    view: &fjall::Snapshot,
    sm: &SmMeta,
    dir: &Path,
) -> Result<SnapshotFile, StoreError> {
    let committed: Option<LogId> = match view.get(&ks.raft_meta, super::log::COMMITTED_KEY)? {
        Some(bytes) => decode::<Option<LogId>>("committed", &bytes)?,
        None => None,
    };
    let path = dir.join(format!(
        "outgoing-backup-{:016x}.snap",
        rand::random::<u64>()
    ));
    write_file(&path, sm, |out| {
        write_sections(ks, view, out)?;
        if let Some(committed) = committed {
            for guard in view.range(&ks.log, ..=super::codec::u64_key(committed.index)) {
                let (key, value) = guard.into_inner()?;
                out(TAG_LOG, &key, &value)?;
            }
        }
        Ok(())
    })?;
    SnapshotFile::open(path)
}

/// Where a file's records go as they are written: tag, key, value.
type RecordSink<'a> = dyn FnMut(u8, &[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// Emits every state machine record of `view`.
fn write_sections(
    ks: &Keyspaces,
    view: &fjall::Snapshot,
    out: &mut RecordSink<'_>,
) -> Result<(), StoreError> {
    for (tag, keyspace) in sections(ks) {
        for guard in view.iter(keyspace) {
            let (key, value) = guard.into_inner()?;
            out(tag, &key, &value)?;
        }
    }
    Ok(())
}

/// A digest of the state machine in `view` (whose state is `sm`): every record of every
/// section, in order, and `sm`. Replicas that applied the same log prefix have the same
/// digest; the fault rig compares them (FNV-1a 64: stable across builds and machines).
pub(crate) fn digest(
    ks: &Keyspaces,
    view: &fjall::Snapshot,
    sm: &SmMeta,
) -> Result<StateDigest, StoreError> {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut digest = StateDigest {
        applied_index: sm.applied.map(|a| a.index),
        hash: OFFSET,
        records: 0,
    };
    let mut feed = |bytes: &[u8]| {
        for byte in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
            digest.hash = (digest.hash ^ u64::from(*byte)).wrapping_mul(PRIME);
        }
    };
    feed(&encode(sm)?);
    let mut records = 0u64;
    write_sections(ks, view, &mut |tag, key, value| {
        feed(&[tag]);
        feed(key);
        feed(value);
        records += 1;
        Ok(())
    })?;
    digest.records = records;
    Ok(digest)
}

/// What [`digest`] says of a state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateDigest {
    /// The log index the state was applied through.
    pub applied_index: Option<u64>,
    pub hash: u64,
    pub records: u64,
}

/// Writes a snapshot file: header for `sm`, the records `body` emits, end tag, checksum.
fn write_file(
    path: &Path,
    sm: &SmMeta,
    body: impl FnOnce(&mut RecordSink<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let mut out = CrcWriter {
        inner: BufWriter::new(file),
        crc: crc32fast::Hasher::new(),
    };
    let header = encode(&Header {
        meta: meta_of(sm),
        sm: sm.clone(),
    })?;
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&(header.len() as u32).to_be_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    body(&mut |tag, key, value| write_record(&mut out, tag, key, value).map_err(io))?;
    out.write_all(&[TAG_END]).map_err(io)?;
    let crc = out.crc.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_be_bytes()).map_err(io)?;
    inner.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(())
}

/// Hub: writes the seed of a new edge group for `site` — the site's KV and streams out of
/// its namespace, at seq `sm.last_seq`, with the edge bookkeeping in `sm` — to `path`
/// (fsynced: it is served for as long as the failback takes).
pub(crate) fn write_site_seed(
    ks: &Keyspaces,
    view: &fjall::Snapshot,
    ns: &[u8],
    sm: &SmMeta,
    path: &Path,
) -> Result<(), StoreError> {
    write_file(path, sm, |out| {
        for (tag, keyspace) in [(TAG_KV, &ks.kv), (TAG_STREAM, &ks.streams)] {
            for guard in view.prefix(keyspace, ns) {
                let (key, value) = guard.into_inner()?;
                out(tag, &key[ns.len()..], &value)?;
            }
        }
        Ok(())
    })?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Edge: makes an empty store the state a seed file describes (checksum verified first).
pub(crate) fn install_seed(ks: &Keyspaces, path: &Path) -> Result<SmMeta, StoreError> {
    validate(ks, path)?;
    replace_state(ks, path)
}

/// Reads and checks the header of a snapshot file, leaving `file` positioned at the records.
fn read_header(path: &Path, file: &mut impl Read) -> Result<Header, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(corrupt(path, "not a snapshot file (bad magic)"));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len).map_err(io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(corrupt(path, format!("header of {len} bytes")));
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header).map_err(io)?;
    decode("snapshot header", &header)
}

/// Checks the crc of a whole file without interpreting it.
fn verify_checksum(path: &Path, file: &File) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let size = file.metadata().map_err(io)?.len();
    if size < (MAGIC.len() + 4 + 1 + 4) as u64 {
        return Err(corrupt(path, format!("only {size} bytes")));
    }
    let mut reader = BufReader::new(file.try_clone().map_err(io)?);
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut body = reader.by_ref().take(size - 4);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    let mut trailer = [0u8; 4];
    reader.read_exact(&mut trailer).map_err(io)?;
    if crc.finalize() != u32::from_be_bytes(trailer) {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok(())
}

fn read_len(path: &Path, reader: &mut impl Read, max: usize) -> Result<usize, StoreError> {
    let mut len = [0u8; 4];
    reader
        .read_exact(&mut len)
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(corrupt(
            path,
            format!("record field of {len} bytes (max {max})"),
        ));
    }
    Ok(len)
}

/// Makes `incoming` the current snapshot and replaces the state machine with it.
/// Returns the installed state machine meta.
pub(crate) fn install(
    ks: &Keyspaces,
    incoming: SnapshotFile,
    dir: &Path,
) -> Result<SmMeta, StoreError> {
    validate(ks, &incoming.path)?;
    let current = dir.join(CURRENT);
    if incoming.path != current {
        incoming.file.sync_all().map_err(|source| StoreError::Io {
            path: incoming.path.clone(),
            source,
        })?;
        std::fs::rename(&incoming.path, &current).map_err(|source| StoreError::Io {
            path: incoming.path.clone(),
            source,
        })?;
        super::dirs::sync_dir(dir)?;
    }
    replace_state(ks, &current)
}

/// Finishes an install that a crash interrupted (`install_pending` was durable).
pub(crate) fn redo_install(ks: &Keyspaces, dir: &Path) -> Result<SmMeta, StoreError> {
    let current = dir.join(CURRENT);
    validate(ks, &current)?;
    replace_state(ks, &current)
}

/// Checks a whole file in one read before anything is cleared: its crc and every record's
/// framing and tag, so a file that would fail part-way (an unknown tag, a bad length, a
/// truncation) fails while the old state is still there.
fn validate(ks: &Keyspaces, path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size < (MAGIC.len() + 4 + 1 + 4) as u64 {
        return Err(corrupt(path, format!("only {size} bytes")));
    }
    let mut body = CrcReader {
        inner: BufReader::new(file.take(size - 4)),
        crc: crc32fast::Hasher::new(),
    };
    read_header(path, &mut body)?;
    read_records(path, &mut body, |tag, _, _| {
        if tag != TAG_LOG && !sections(ks).iter().any(|(t, _)| *t == tag) {
            return Err(corrupt(path, format!("unknown record tag {tag}")));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let mut trailing = [0u8; 1];
    if body.read(&mut trailing).map_err(io)? != 0 {
        return Err(corrupt(path, "bytes after the end record"));
    }
    let crc = body.crc.finalize();
    let mut trailer = [0u8; 4];
    body.inner
        .into_inner()
        .into_inner()
        .read_exact(&mut trailer)
        .map_err(io)?;
    if crc != u32::from_be_bytes(trailer) {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok(())
}

/// Reads through, hashing what it reads.
struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Replaces the state machine keyspaces with the contents of the (validated) snapshot file.
fn replace_state(ks: &Keyspaces, path: &Path) -> Result<SmMeta, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::new(file);
    let header = read_header(path, &mut reader)?;

    // Mark the state machine as mid-install before destroying it.
    let mut pending = header.sm.clone();
    pending.install_pending = true;
    let mut marker = ks.db.batch();
    stage_meta(ks, &mut marker, &mut pending, true)?;
    marker.commit()?;
    ks.db.persist(fjall::PersistMode::SyncData)?;

    for (_, keyspace) in sections(ks) {
        keyspace.clear()?;
    }
    let mut batch = ks.db.batch();
    read_records(path, &mut reader, |tag, key, value| {
        if tag == TAG_LOG {
            return Ok(ControlFlow::Continue(())); // replayed by `restore`, not state
        }
        let Some((_, keyspace)) = sections(ks).into_iter().find(|(t, _)| *t == tag) else {
            return Err(corrupt(path, format!("unknown record tag {tag}")));
        };
        batch.insert(keyspace, key, value);
        if batch.len() >= INSTALL_BATCH_RECORDS {
            std::mem::replace(&mut batch, ks.db.batch()).commit()?;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let mut installed = header.sm;
    installed.install_pending = false;
    stage_meta(ks, &mut batch, &mut installed, true)?;
    batch.commit()?;
    ks.db.persist(fjall::PersistMode::SyncData)?;
    Ok(installed)
}

/// Reads the records after the header up to the end tag, each length bounded before
/// allocation, until `visit` breaks.
fn read_records(
    path: &Path,
    reader: &mut impl Read,
    mut visit: impl FnMut(u8, Vec<u8>, Vec<u8>) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    loop {
        let mut tag = [0u8; 1];
        reader.read_exact(&mut tag).map_err(io)?;
        let tag = tag[0];
        if tag == TAG_END {
            return Ok(());
        }
        let key_len = read_len(path, reader, MAX_RECORD_KEY_BYTES)?;
        if key_len == 0 {
            // No writer makes one (fjall holds no empty key, and inserting one panics).
            return Err(corrupt(
                path,
                format!("record (tag {tag}) with an empty key"),
            ));
        }
        let mut key = vec![0u8; key_len];
        reader.read_exact(&mut key).map_err(io)?;
        let max_value = if tag == TAG_LOG {
            MAX_LOG_RECORD_BYTES
        } else {
            MAX_RECORD_VALUE_BYTES
        };
        let value_len = read_len(path, reader, max_value)?;
        let mut value = vec![0u8; value_len];
        reader.read_exact(&mut value).map_err(io)?;
        if visit(tag, key, value)?.is_break() {
            return Ok(());
        }
    }
}

/// What a backup holds: its state's bookkeeping and the log indexes it carries.
pub(crate) struct BackupContents {
    pub sm: SmMeta,
    /// First and last index of the log entries (none: no log).
    pub log: Option<(u64, u64)>,
}

/// Verifies a backup end to end and says what it holds.
pub(crate) fn describe(path: &Path) -> Result<BackupContents, StoreError> {
    let mut log: Option<(u64, u64)> = None;
    let sm = for_each_log_entry(path, |index, _| {
        log = Some((log.map_or(index, |(first, _)| first), index));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(BackupContents { sm, log })
}

/// Verifies the file, then hands `visit` each log entry it carries, in index order (checked)
/// until it breaks; returns the file's state bookkeeping.
pub(crate) fn for_each_log_entry(
    path: &Path,
    mut visit: impl FnMut(u64, Entry) -> Result<ControlFlow<()>, StoreError>,
) -> Result<SmMeta, StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    verify_checksum(path, &file)?;
    let mut file = file;
    // The check read through a clone of the handle, which shares its offset.
    file.seek(SeekFrom::Start(0))
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
    let mut reader = BufReader::new(file);
    let header = read_header(path, &mut reader)?;
    let mut previous: Option<u64> = None;
    read_records(path, &mut reader, |tag, key, value| {
        if tag != TAG_LOG {
            return Ok(ControlFlow::Continue(()));
        }
        let index = super::codec::read_u64("log record key", &key)?;
        if previous.is_some_and(|p| p.checked_add(1) != Some(index)) {
            return Err(corrupt(
                path,
                format!("log record {index} follows {previous:?}"),
            ));
        }
        previous = Some(index);
        let entry: Entry = decode("log entry", &value)?;
        if entry.log_id.index != index {
            return Err(corrupt(
                path,
                format!("log record {index} holds entry {}", entry.log_id.index),
            ));
        }
        visit(index, entry)
    })?;
    Ok(header.sm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageSection;
    use crate::store::Store;
    use openraft::entry::RaftEntry;

    /// A checksummed file with a valid header and the records `body` emits.
    fn file_with(
        dir: &Path,
        body: impl FnOnce(&mut RecordSink<'_>) -> Result<(), StoreError>,
    ) -> PathBuf {
        let path = dir.join("crafted.snap");
        write_file(&path, &SmMeta::default(), body).expect("write");
        path
    }

    /// Found by the `snapshot_install` fuzz target: a record with an empty key reached
    /// fjall's `WriteBatch::insert`, which asserts a non-empty key, so a snapshot from a
    /// leader, a seed or a backup could panic (abort) the node mid-install, and again on
    /// every restart (redo of the pending install).
    #[test]
    fn empty_record_key_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("store"), &StorageSection::default()).expect("store");
        let path = file_with(dir.path(), |out| out(TAG_KV, b"", b"value"));
        assert!(matches!(
            install_seed(&store.ks, &path),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(describe(&path), Err(StoreError::Corrupt { .. })));
    }

    /// A file whose structure is bad further in (here an unknown record tag after a good
    /// one) is refused before anything is cleared: the state it would replace stays.
    #[test]
    fn digests_agree_on_equal_state_and_tell_any_difference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| {
            Store::open(&dir.path().join(name), &StorageSection::default()).expect("store")
        };
        let (a, b) = (open("a"), open("b"));
        for store in [&a, &b] {
            store.ks.kv.insert(b"k1", b"v1").expect("insert");
            store.ks.streams.insert(b"s\0\0", b"e").expect("insert");
        }
        assert_eq!(a.digest().expect("digest"), b.digest().expect("digest"));
        assert_eq!(a.digest().expect("digest").records, 2);
        b.ks.idem.insert(b"hidden", b"state").expect("insert");
        assert_ne!(
            a.digest().expect("digest").hash,
            b.digest().expect("digest").hash
        );
        b.ks.idem.remove(b"hidden").expect("remove");
        b.ks.kv.insert(b"k1", b"v2").expect("insert");
        assert_ne!(
            a.digest().expect("digest").hash,
            b.digest().expect("digest").hash
        );
    }

    #[test]
    fn a_file_bad_part_way_leaves_the_state_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("store"), &StorageSection::default()).expect("store");
        store.ks.kv.insert(b"kept", b"value").expect("insert");
        let path = file_with(dir.path(), |out| {
            out(TAG_KV, b"new", b"value")?;
            out(0x7f, b"key", b"value")
        });
        assert!(matches!(
            install_seed(&store.ks, &path),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(store.ks.kv.get(b"kept").expect("get").is_some());
        assert!(store.ks.kv.get(b"new").expect("get").is_none());
        assert!(
            !super::super::state::load_meta(&store.ks)
                .expect("meta")
                .install_pending
        );
    }

    /// A flipped byte, or bytes after the end record, fail the one validating read.
    #[test]
    fn a_bad_checksum_or_trailing_bytes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("store"), &StorageSection::default()).expect("store");
        let path = file_with(dir.path(), |out| out(TAG_KV, b"k", b"value"));
        let good = std::fs::read(&path).expect("read");
        let mut flipped = good.clone();
        flipped[good.len() - 8] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        assert!(matches!(
            install_seed(&store.ks, &path),
            Err(StoreError::Corrupt { .. })
        ));
        let mut longer = good[..good.len() - 4].to_vec();
        longer.push(0);
        longer.extend_from_slice(&good[good.len() - 4..]);
        std::fs::write(&path, &longer).expect("write");
        assert!(matches!(
            install_seed(&store.ks, &path),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::write(&path, &good).expect("write");
        install_seed(&store.ks, &path).expect("the intact file installs");
    }

    /// Log records must follow each other; index u64::MAX has no successor (this overflowed,
    /// a panic in debug builds, and in release let index 0 follow it).
    #[test]
    fn log_index_after_u64_max_is_corrupt_not_an_overflow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = |index: u64| {
            let log_id = openraft::testing::log_id::<crate::types::TypeConfig>(1, 1, index);
            encode(&Entry::new_blank(log_id)).expect("encode")
        };
        let path = file_with(dir.path(), |out| {
            out(TAG_LOG, &u64::MAX.to_be_bytes(), &entry(u64::MAX))?;
            out(TAG_LOG, &0u64.to_be_bytes(), &entry(0))
        });
        assert!(matches!(describe(&path), Err(StoreError::Corrupt { .. })));
    }
}
