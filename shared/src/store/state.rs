//! The replicated state machine's rules — KV with revisions and compare-and-set, streams,
//! idempotency keys, seq and HLC assignment — as plain functions over the keyspaces, so
//! they can be tested without Raft. Everything here is deterministic in (state, command):
//! replicas that apply the same log hold the same bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjall::{OwnedWriteBatch as WriteBatch, Slice};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, read_u64, u64_key};
use super::{Keyspaces, StoreError};
use crate::limits::IDEMPOTENCY_EXPIRE_PER_APPLY;
use crate::types::{Command, CommandResponse, Hlc, LogId, Op, StoredMembership};

/// State machine bookkeeping, written atomically with every applied entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SmMeta {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Seq of the last event (gap-free from 1).
    pub last_seq: u64,
    /// HLC of the last applied command.
    pub hlc: Hlc,
    /// A snapshot install began and has not finished: redo it from `current.snap` on open.
    pub install_pending: bool,
    /// In memory only: no idempotency expiry index entry is earlier than this (0 = unknown).
    /// Lets apply skip the expiry scan exactly when the scan would remove nothing, so
    /// replicas with different hints (e.g. one just restarted) still apply identically.
    #[serde(skip)]
    pub idem_expiry_floor_ms: u64,
}

pub(crate) const SM_META_KEY: &[u8] = b"state";

pub(crate) fn load_meta(ks: &Keyspaces) -> Result<SmMeta, StoreError> {
    match ks.sm_meta.get(SM_META_KEY)? {
        Some(bytes) => decode("state machine meta", &bytes),
        None => Ok(SmMeta::default()),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct IdemRecord {
    expires_ms: u64,
    response: CommandResponse,
}

/// Stream keys: name ‖ 0x00 ‖ seq (BE). Names never contain 0x00 (validated at the API).
pub(crate) fn stream_key(stream: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&u64_key(seq));
    key
}

fn kv_value(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&u64_key(revision));
    out.extend_from_slice(value);
    out
}

fn current_revision(ks: &Keyspaces, key: &[u8]) -> Result<Option<u64>, StoreError> {
    ks.kv
        .get(key)?
        .map(|v| read_u64("kv record", &v))
        .transpose()
}

/// Applies one command: stages its writes in `batch` and advances `meta`. The caller
/// commits the batch together with `meta`.
pub(crate) fn apply_command(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    command: &Command,
) -> Result<CommandResponse, StoreError> {
    meta.hlc = meta.hlc.tick(command.proposed_ms);
    let now_ms = meta.hlc.physical_ms();

    if let Some(idem) = &command.idempotency {
        if let Some(bytes) = ks.idem.get(idem.key.as_bytes())? {
            let record: IdemRecord = decode("idempotency record", &bytes)?;
            if record.expires_ms > now_ms {
                return Ok(record.response);
            }
        }
    }

    let response = match &command.op {
        Op::Put {
            key,
            value,
            if_revision,
        } => {
            let current = current_revision(ks, key)?;
            if let Some(expected) = *if_revision {
                if current.unwrap_or(0) != expected {
                    return finish(
                        ks,
                        meta,
                        batch,
                        command,
                        now_ms,
                        CommandResponse::RevisionMismatch { current },
                    );
                }
            }
            meta.last_seq += 1;
            batch.insert(&ks.kv, key.as_slice(), kv_value(meta.last_seq, value));
            CommandResponse::Put {
                seq: meta.last_seq,
                revision: meta.last_seq,
            }
        }
        Op::Delete { key, if_revision } => {
            let current = current_revision(ks, key)?;
            match (current, *if_revision) {
                (None, _) => CommandResponse::NotFound,
                (Some(revision), Some(expected)) if revision != expected => {
                    CommandResponse::RevisionMismatch { current }
                }
                (Some(_), _) => {
                    meta.last_seq += 1;
                    batch.remove(&ks.kv, key.as_slice());
                    CommandResponse::Deleted { seq: meta.last_seq }
                }
            }
        }
        Op::Append { stream, data } => {
            meta.last_seq += 1;
            batch.insert(
                &ks.streams,
                stream_key(stream, meta.last_seq),
                kv_value(meta.hlc.0, data),
            );
            CommandResponse::Appended {
                seq: meta.last_seq,
                hlc: meta.hlc.0,
            }
        }
    };
    finish(ks, meta, batch, command, now_ms, response)
}

/// Remembers the response under the idempotency key and expires a bounded number of old
/// records (deterministically: by the HLC clock of the log, not the local wall clock).
fn finish(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    command: &Command,
    now_ms: u64,
    response: CommandResponse,
) -> Result<CommandResponse, StoreError> {
    if now_ms >= meta.idem_expiry_floor_ms {
        expire_idempotency(ks, meta, batch, command, now_ms)?;
    }
    if let Some(idem) = &command.idempotency {
        let expires_ms = now_ms.saturating_add(u64::from(idem.window_secs) * 1000);
        let record = IdemRecord {
            expires_ms,
            response: response.clone(),
        };
        batch.insert(&ks.idem, idem.key.as_bytes(), encode(&record)?);
        let mut index_key = u64_key(expires_ms).to_vec();
        index_key.extend_from_slice(idem.key.as_bytes());
        batch.insert(&ks.idem_exp, index_key, Vec::new());
        meta.idem_expiry_floor_ms = meta.idem_expiry_floor_ms.min(expires_ms);
    }
    Ok(response)
}

/// Removes up to `IDEMPOTENCY_EXPIRE_PER_APPLY` expired idempotency records, oldest first,
/// and sets the floor to the earliest index entry left.
fn expire_idempotency(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    command: &Command,
    now_ms: u64,
) -> Result<(), StoreError> {
    let current_key = command.idempotency.as_ref().map(|i| i.key.as_bytes());
    meta.idem_expiry_floor_ms = u64::MAX;
    // `removed` counts the entries removed before this one: each earlier pass removed one.
    for (removed, item) in ks.idem_exp.iter().enumerate() {
        let index_key = item.key()?;
        let expires_ms = read_u64("idempotency expiry", &index_key)?;
        let idem_key = &index_key[8..];
        // Stop at the first entry this apply leaves: unexpired, over budget, or the
        // command's own key (rewritten below; never remove and insert one key in one batch).
        if expires_ms > now_ms
            || removed == IDEMPOTENCY_EXPIRE_PER_APPLY
            || Some(idem_key) == current_key
        {
            meta.idem_expiry_floor_ms = expires_ms;
            break;
        }
        batch.remove(&ks.idem_exp, index_key.clone());
        if let Some(bytes) = ks.idem.get(idem_key)? {
            let record: IdemRecord = decode("idempotency record", &bytes)?;
            if record.expires_ms == expires_ms {
                batch.remove(&ks.idem, idem_key);
            }
        }
    }
    Ok(())
}

/// One KV pair as read.
#[derive(Clone, Debug)]
pub struct KvItem {
    pub key: Slice,
    pub revision: u64,
    record: Slice,
}

impl KvItem {
    pub fn value(&self) -> &[u8] {
        &self.record[8..]
    }

    fn parse(key: Slice, record: Slice) -> Result<Self, StoreError> {
        let revision = read_u64("kv record", &record)?;
        Ok(KvItem {
            key,
            revision,
            record,
        })
    }
}

/// One stream event as read.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    pub seq: u64,
    pub hlc: Hlc,
    record: Slice,
}

impl StreamEvent {
    pub fn data(&self) -> &[u8] {
        &self.record[8..]
    }
}

/// Read access to the applied state, for the client API (any task, any time).
#[derive(Clone)]
pub struct StateReader {
    pub(crate) ks: Arc<Keyspaces>,
    pub(crate) applied_seq: Arc<AtomicU64>,
}

impl StateReader {
    /// Seq of the last event applied on this node.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<KvItem>, StoreError> {
        match self.ks.kv.get(key)? {
            Some(record) => Ok(Some(KvItem::parse(Slice::from(key), record)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` pairs whose key starts with `prefix`, after `after` (exclusive);
    /// the flag says whether more follow.
    pub fn list(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KvItem>, bool), StoreError> {
        let mut items = Vec::new();
        for guard in self.ks.kv.prefix(prefix) {
            let (key, record) = guard.into_inner()?;
            if after.is_some_and(|after| key.as_ref() <= after) {
                continue;
            }
            if items.len() == limit {
                return Ok((items, true));
            }
            items.push(KvItem::parse(key, record)?);
        }
        Ok((items, false))
    }

    /// Up to `limit` events of `stream` with seq ≥ `from`.
    pub fn stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, StoreError> {
        let start = stream_key(stream, from);
        let end = stream_key(stream, u64::MAX);
        let mut events = Vec::new();
        for guard in self.ks.streams.range(start..=end).take(limit) {
            let (key, record) = guard.into_inner()?;
            let seq = read_u64("stream key", &key[key.len().saturating_sub(8)..])?;
            let hlc = Hlc(read_u64("stream record", &record)?);
            events.push(StreamEvent { seq, hlc, record });
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageSection;
    use crate::store::Store;
    use crate::types::IdempotencyKey;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        meta: SmMeta,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path(), &StorageSection::default()).expect("open");
            Fixture {
                _dir: dir,
                store,
                meta: SmMeta::default(),
            }
        }

        fn apply(&mut self, ms: u64, idem: Option<&str>, op: Op) -> CommandResponse {
            let command = Command {
                proposed_ms: ms,
                idempotency: idem.map(|k| IdempotencyKey {
                    key: k.into(),
                    window_secs: 600,
                }),
                op,
            };
            let ks = &self.store.ks;
            let mut batch = ks.db.batch();
            let response = apply_command(ks, &mut self.meta, &mut batch, &command).expect("apply");
            batch.commit().expect("commit");
            response
        }

        fn reader(&self) -> StateReader {
            StateReader {
                ks: self.store.ks.clone(),
                applied_seq: Arc::new(AtomicU64::new(self.meta.last_seq)),
            }
        }
    }

    fn put(key: &str, value: &str, if_revision: Option<u64>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            if_revision,
        }
    }

    #[test]
    fn seq_and_revisions_and_cas() {
        let mut f = Fixture::new();
        assert_eq!(
            f.apply(1, None, put("a", "1", None)),
            CommandResponse::Put {
                seq: 1,
                revision: 1
            }
        );
        assert_eq!(
            f.apply(2, None, put("a", "2", Some(7))),
            CommandResponse::RevisionMismatch { current: Some(1) }
        );
        assert_eq!(
            f.apply(3, None, put("a", "2", Some(1))),
            CommandResponse::Put {
                seq: 2,
                revision: 2
            }
        );
        assert_eq!(
            f.apply(4, None, put("b", "x", Some(1))),
            CommandResponse::RevisionMismatch { current: None }
        );
        assert_eq!(
            f.apply(5, None, put("b", "x", Some(0))),
            CommandResponse::Put {
                seq: 3,
                revision: 3
            }
        );
        let item = f.reader().get(b"a").expect("get").expect("present");
        assert_eq!((item.revision, item.value()), (2, &b"2"[..]));
        assert_eq!(
            f.apply(
                6,
                None,
                Op::Delete {
                    key: "zz".into(),
                    if_revision: None
                }
            ),
            CommandResponse::NotFound
        );
        assert_eq!(
            f.apply(
                7,
                None,
                Op::Delete {
                    key: "a".into(),
                    if_revision: None
                }
            ),
            CommandResponse::Deleted { seq: 4 }
        );
        assert!(f.reader().get(b"a").expect("get").is_none());
        assert_eq!(f.meta.last_seq, 4, "rejected writes take no seq");
    }

    #[test]
    fn idempotent_retry_writes_once() {
        let mut f = Fixture::new();
        let first = f.apply(1_000, Some("k1"), put("a", "1", None));
        let again = f.apply(2_000, Some("k1"), put("a", "other", None));
        assert_eq!(first, again);
        assert_eq!(
            f.reader().get(b"a").expect("get").expect("present").value(),
            b"1"
        );
        assert_eq!(f.meta.last_seq, 1);
        // After the window the key is new again.
        let later = f.apply(1_000 + 601_000, Some("k1"), put("a", "3", None));
        assert_eq!(
            later,
            CommandResponse::Put {
                seq: 2,
                revision: 2
            }
        );
    }

    #[test]
    fn expired_idempotency_records_are_removed() {
        let mut f = Fixture::new();
        for i in 0..5 {
            f.apply(1_000, Some(&format!("k{i}")), put("a", "1", None));
        }
        assert_eq!(f.store.ks.idem.iter().count(), 5);
        f.apply(10_000_000, None, put("b", "1", None));
        assert_eq!(f.store.ks.idem.iter().count(), 0);
        assert_eq!(f.store.ks.idem_exp.iter().count(), 0);
    }

    fn dump(f: &Fixture) -> Vec<(Vec<u8>, Vec<u8>)> {
        let ks = &f.store.ks;
        [&ks.kv, &ks.idem, &ks.idem_exp]
            .into_iter()
            .flat_map(|k| k.iter().map(|g| g.into_inner().expect("read")))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn expiry_floor_never_changes_what_is_applied() {
        // One replica uses the in-memory floor; the other forgets it before every apply (as
        // if it had just restarted). Their keyspaces must stay byte-identical.
        let (mut with_floor, mut always_scan) = (Fixture::new(), Fixture::new());
        let mut state = 7_u64;
        let mut ms = 1_000_u64;
        for i in 0..400 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ms += match state % 10 {
                0 => 700_000, // jump past every window
                1 => 0,
                _ => state % 5_000,
            };
            let key = format!("k{}", state % 23);
            let idem = (!state.is_multiple_of(3)).then(|| format!("i{}", state % 31));
            let op = put(&key, &format!("v{i}"), None);
            always_scan.meta.idem_expiry_floor_ms = 0;
            let a = with_floor.apply(ms, idem.as_deref(), op.clone());
            let b = always_scan.apply(ms, idem.as_deref(), op);
            assert_eq!(a, b, "apply {i}");
        }
        assert_eq!(dump(&with_floor), dump(&always_scan));
    }

    #[test]
    fn streams_and_list_pages() {
        let mut f = Fixture::new();
        for i in 0..3 {
            f.apply(
                10,
                None,
                Op::Append {
                    stream: "t".into(),
                    data: format!("e{i}").into_bytes(),
                },
            );
            f.apply(
                10,
                None,
                Op::Append {
                    stream: "t2".into(),
                    data: b"other".to_vec(),
                },
            );
        }
        let events = f.reader().stream("t", 1, 10).expect("stream");
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 3, 5]);
        assert_eq!(events[2].data(), b"e2");
        assert!(events[0].hlc < events[1].hlc, "HLC increases with seq");
        assert_eq!(f.reader().stream("t", 4, 10).expect("stream").len(), 1);

        for k in ["p/a", "p/b", "p/c", "q/a"] {
            f.apply(20, None, put(k, "v", None));
        }
        let (page, more) = f.reader().list(b"p/", None, 2).expect("list");
        assert!(more);
        assert_eq!(
            page.iter().map(|i| i.key.to_vec()).collect::<Vec<_>>(),
            vec![b"p/a".to_vec(), b"p/b".to_vec()]
        );
        let (page, more) = f.reader().list(b"p/", Some(b"p/b"), 2).expect("list");
        assert!(!more);
        assert_eq!(page.len(), 1);
    }
}
