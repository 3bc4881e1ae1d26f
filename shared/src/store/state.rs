//! The replicated state machine's rules — KV with revisions and compare-and-set, streams,
//! idempotency keys, seq and HLC assignment — as plain functions over the keyspaces, so
//! they can be tested without Raft. Everything here is deterministic in (state, command):
//! replicas that apply the same log hold the same bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjall::{OwnedWriteBatch as WriteBatch, Slice};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, read_u64, u64_key};
use super::{Keyspaces, StoreError};
use crate::limits::{IDEMPOTENCY_EXPIRE_PER_APPLY, OUTBOX_COMPACT_PER_APPLY};
use crate::ship::rules::{decide, Decision, SiteShipState};
use crate::ship::{EventKind, ShipReply, ShippedEvent};
use crate::types::{
    BatchedOp, BatchedWrite, BlindOp, BlindWrite, Command, CommandResponse, Hlc, IdempotencyKey,
    LogId, Op, SiteOwner, StoredMembership,
};

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
    /// Edge: this group's ownership generation of its site.
    pub epoch: u64,
    /// Edge: the hub answered `Fenced` with this (newer) epoch; writes are refused.
    pub fenced: Option<u64>,
    /// Edge: the hub holds every event through this seq.
    pub shipped_through: u64,
    /// Edge: outbox entries through this seq have been removed.
    pub compacted_through: u64,
    /// Edge: bytes the outbox holds (keys and encoded records).
    pub outbox_bytes: u64,
    /// Hub: cursor of the newest merged-feed entry (0: none).
    pub feed_last: u64,
    /// The group's retention clock: the largest `Command.elapsed_ms` applied (never goes
    /// back; wall clock jumps do not move it).
    pub retention_ms: u64,
    /// Edge: reseeded from the hub and not yet handed the site back; writes are refused.
    pub awaiting_handback: bool,
    /// In memory only: no idempotency expiry index entry is earlier than this (0 = unknown).
    /// Lets apply skip the expiry scan exactly when the scan would remove nothing, so
    /// replicas with different hints (e.g. one just restarted) still apply identically.
    #[serde(skip)]
    pub idem_expiry_floor_ms: u64,
}

/// Where `SmMeta` is kept at rest, in the `sm_meta` keyspace: everything but the membership
/// under `SM_META_KEY`, rewritten with every applied entry, and the membership under
/// `SM_MEMBERSHIP_KEY`, written only when it changes. The membership (every member's
/// addresses) was most of the record's bytes; journaling it again with each entry cost
/// more disk bytes per write than the write's own key. A store written before the split
/// has the whole `SmMeta` under `SM_META_KEY` and no membership record: it loads as it is,
/// and the first write after it stores both.
pub(crate) const SM_META_KEY: &[u8] = b"state";
pub(crate) const SM_MEMBERSHIP_KEY: &[u8] = b"membership";

pub(crate) fn load_meta(ks: &Keyspaces) -> Result<SmMeta, StoreError> {
    meta_from(
        ks.sm_meta.get(SM_META_KEY)?,
        ks.sm_meta.get(SM_MEMBERSHIP_KEY)?,
    )
}

/// `SmMeta` from its two records at rest (read by the caller, from one view).
pub(crate) fn meta_from(
    state: Option<Slice>,
    membership: Option<Slice>,
) -> Result<SmMeta, StoreError> {
    let Some(state) = state else {
        return Ok(SmMeta::default());
    };
    let mut meta: SmMeta = decode("state machine meta", &state)?;
    if let Some(bytes) = membership {
        meta.membership = decode("state machine membership", &bytes)?;
    }
    Ok(meta)
}

/// Stages `meta` at rest in `batch`; the membership record only `with_membership` (it must
/// be, whenever the membership changed or may not be on disk yet).
pub(crate) fn stage_meta(
    ks: &Keyspaces,
    batch: &mut WriteBatch,
    meta: &mut SmMeta,
    with_membership: bool,
) -> Result<(), StoreError> {
    if with_membership {
        batch.insert(&ks.sm_meta, SM_MEMBERSHIP_KEY, encode(&meta.membership)?);
    }
    // Taken out for the encode, not cloned: `take` leaves an empty membership in place.
    let membership = std::mem::take(&mut meta.membership);
    let state = encode(meta);
    meta.membership = membership;
    batch.insert(&ks.sm_meta, SM_META_KEY, state?);
    Ok(())
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

fn current_revision(ks: &Keyspaces, key: &[u8], ns: &[u8]) -> Result<Option<u64>, StoreError> {
    ks.kv
        .get([ns, key].concat())?
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
    match &command.op {
        Op::Batch { writes } => {
            return apply_batch(ks, meta, batch, writes.iter().map(BatchItem::from));
        }
        Op::ClientBatch { writes } => {
            return apply_batch(ks, meta, batch, writes.iter().map(BatchItem::from));
        }
        _ => {}
    }
    meta.hlc = meta.hlc.tick(command.proposed_ms);
    let now_ms = meta.hlc.physical_ms();
    meta.retention_ms = meta.retention_ms.max(command.elapsed_ms);
    let retention_ms = meta.retention_ms;

    if let Some(idem) = &command.idempotency {
        if let Some(response) = stored_response(ks, idem, retention_ms)? {
            return Ok(response);
        }
    }

    let mut writer = match (&command.site, &command.op) {
        (Some(site), Op::Put { .. } | Op::Delete { .. } | Op::Append { .. }) => {
            let record = load_site(ks, site)?;
            if record.owner != SiteOwner::Hub {
                return Ok(CommandResponse::NotOwner {
                    owner: record.owner,
                });
            }
            Writer::Site {
                ns: site_namespace(site),
                name: site.clone(),
                record,
            }
        }
        _ => Writer::Edge,
    };
    let response = match &command.op {
        Op::Put {
            key,
            value,
            if_revision,
        } => {
            // Only a conditional put needs the key's revision: an unconditional one skips
            // the point read (~5% of a leader's CPU under a write load).
            if let Some(expected) = *if_revision {
                let current = current_revision(ks, key, writer.ns())?;
                if current.unwrap_or(0) != expected {
                    return finish(
                        ks,
                        meta,
                        batch,
                        command,
                        retention_ms,
                        CommandResponse::RevisionMismatch { current },
                    );
                }
            }
            let kind = EventKind::Put {
                key: key.clone(),
                value: value.clone(),
            };
            match admit_event(ks, meta, batch, command, &mut writer, kind)? {
                Ok(seq) => CommandResponse::Put { seq, revision: seq },
                Err(refused) => return Ok(refused),
            }
        }
        Op::Delete { key, if_revision } => {
            let current = current_revision(ks, key, writer.ns())?;
            match (current, *if_revision) {
                (None, _) => CommandResponse::NotFound,
                (Some(revision), Some(expected)) if revision != expected => {
                    CommandResponse::RevisionMismatch { current }
                }
                (Some(_), _) => {
                    let kind = EventKind::Delete { key: key.clone() };
                    match admit_event(ks, meta, batch, command, &mut writer, kind)? {
                        Ok(seq) => CommandResponse::Deleted { seq },
                        Err(refused) => return Ok(refused),
                    }
                }
            }
        }
        Op::Append { stream, data } => {
            let kind = EventKind::Append {
                stream: stream.clone(),
                data: data.clone(),
            };
            match admit_event(ks, meta, batch, command, &mut writer, kind)? {
                Ok(seq) => CommandResponse::Appended {
                    seq,
                    hlc: meta.hlc.0,
                },
                Err(refused) => return Ok(refused),
            }
        }
        Op::Shipped { through } => {
            meta.shipped_through = meta.shipped_through.max((*through).min(meta.last_seq));
            CommandResponse::Empty
        }
        Op::Fence {
            epoch,
            shipped_through,
        } => {
            if *epoch > meta.epoch && meta.fenced.is_none_or(|f| *epoch > f) {
                meta.fenced = Some(*epoch);
                let held = (*shipped_through).min(meta.last_seq);
                meta.shipped_through = meta.shipped_through.max(held);
            }
            CommandResponse::Empty
        }
        Op::Ingest { batch: bytes } => {
            CommandResponse::Ship(ingest(ks, meta, batch, now_ms, bytes)?)
        }
        Op::Promote { site } => change_owner(ks, batch, site, |r| {
            if r.owner != SiteOwner::Hub {
                // From the edge: a new generation fences the old group. From handing-back
                // (a failback abandoned): the hub simply takes writes again.
                if r.owner == SiteOwner::Edge {
                    r.next_epoch();
                }
                r.owner = SiteOwner::Hub;
            }
        })?,
        Op::BeginFailback { site } => change_owner(ks, batch, site, |r| {
            if r.owner == SiteOwner::Hub {
                r.owner = SiteOwner::HandingBack;
            }
        })?,
        Op::CompleteFailback { site } => change_owner(ks, batch, site, |r| {
            if r.owner == SiteOwner::HandingBack {
                r.next_epoch();
                r.owner = SiteOwner::Edge;
            }
        })?,
        Op::Activate => {
            meta.awaiting_handback = false;
            CommandResponse::Empty
        }
        // Applied by `apply_batch` above, before this command's own clock tick.
        Op::Batch { .. } | Op::ClientBatch { .. } => CommandResponse::Empty,
    };
    if let Writer::Site { name, record, .. } = &writer {
        batch.insert(&ks.sites, name.as_bytes(), encode(record)?);
    }
    compact_outbox(ks, meta, batch, OUTBOX_COMPACT_PER_APPLY)?;
    finish(ks, meta, batch, command, retention_ms, response)
}

/// One write of a batch entry as `apply_batch` reads it (`Op::Batch`, `Op::ClientBatch`).
struct BatchItem<'a> {
    idempotency: Option<&'a IdempotencyKey>,
    proposed_ms: u64,
    elapsed_ms: u64,
    backlog_limit: Option<u64>,
    op: ItemOp<'a>,
}

enum ItemOp<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
        if_revision: Option<u64>,
    },
    Delete {
        key: &'a [u8],
        if_revision: Option<u64>,
    },
    Append {
        stream: &'a str,
        data: &'a [u8],
    },
}

impl<'a> From<&'a BlindWrite> for BatchItem<'a> {
    fn from(write: &'a BlindWrite) -> Self {
        BatchItem {
            idempotency: None,
            proposed_ms: write.proposed_ms,
            elapsed_ms: write.elapsed_ms,
            backlog_limit: write.backlog_limit,
            op: match &write.op {
                BlindOp::Put { key, value } => ItemOp::Put {
                    key,
                    value,
                    if_revision: None,
                },
                BlindOp::Append { stream, data } => ItemOp::Append { stream, data },
            },
        }
    }
}

impl<'a> From<&'a BatchedWrite> for BatchItem<'a> {
    fn from(write: &'a BatchedWrite) -> Self {
        BatchItem {
            idempotency: write.idempotency.as_ref(),
            proposed_ms: write.proposed_ms,
            elapsed_ms: write.elapsed_ms,
            backlog_limit: write.backlog_limit,
            op: match &write.op {
                BatchedOp::Put {
                    key,
                    value,
                    if_revision,
                } => ItemOp::Put {
                    key,
                    value,
                    if_revision: *if_revision,
                },
                BatchedOp::Delete { key, if_revision } => ItemOp::Delete {
                    key,
                    if_revision: *if_revision,
                },
                BatchedOp::Append { stream, data } => ItemOp::Append { stream, data },
            },
        }
    }
}

/// What a write of a batch comes to before it takes a seq.
enum WriteDecision {
    /// Answered without an event (a failed condition, a delete of nothing); remembered
    /// under its key like an applied write.
    Answer(CommandResponse),
    Admit(EventKind),
}

/// Applies a batch entry's writes in order, with the effects each would have had as its own
/// entry: the same seqs, HLCs, refusals and responses, and the last admitted write of a key
/// is the key's value. What a write reads besides `meta` (its key's idempotency record, a
/// conditional write's revision) comes from the writes before it in the entry where they
/// touched it (`recorded`, `last_write`), else from the store: nothing reads the batch's own
/// staged writes. The bounded housekeeping (outbox compaction, idempotency expiry) runs
/// once, with the budget of all the writes, and leaves the keys this batch records alone.
fn apply_batch<'a>(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    writes: impl ExactSizeIterator<Item = BatchItem<'a>>,
) -> Result<CommandResponse, StoreError> {
    let applies = writes.len().max(1);
    let mut responses = Vec::with_capacity(writes.len());
    let mut admitted = Vec::with_capacity(writes.len());
    // Idempotency keys answered by this batch: their records' expiry and responses.
    let mut recorded: HashMap<&[u8], (u64, CommandResponse)> = HashMap::new();
    // KV keys written by admitted writes of this batch: the seq of the last one, and whether
    // it was a put (its seq is the key's revision) or a delete. Conditional writes read the
    // revision here; staging keeps only that last write of each key.
    let mut last_write: HashMap<&[u8], (u64, bool)> = HashMap::new();
    for write in writes {
        meta.hlc = meta.hlc.tick(write.proposed_ms);
        meta.retention_ms = meta.retention_ms.max(write.elapsed_ms);
        if let Some(idem) = write.idempotency {
            if let Some(response) = remembered(ks, &recorded, idem, meta.retention_ms)? {
                responses.push(response);
                continue;
            }
        }
        let revision = |key: &[u8]| match last_write.get(key) {
            Some(&(seq, put)) => Ok(put.then_some(seq)),
            None => current_revision(ks, key, &[]),
        };
        let decision = match write.op {
            ItemOp::Put {
                key,
                value,
                if_revision,
            } => {
                let current = match if_revision {
                    Some(_) => revision(key)?,
                    None => None,
                };
                match if_revision {
                    Some(expected) if current.unwrap_or(0) != expected => {
                        WriteDecision::Answer(CommandResponse::RevisionMismatch { current })
                    }
                    _ => WriteDecision::Admit(EventKind::Put {
                        key: key.to_vec(),
                        value: value.to_vec(),
                    }),
                }
            }
            ItemOp::Delete { key, if_revision } => {
                let current = revision(key)?;
                match (current, if_revision) {
                    (None, _) => WriteDecision::Answer(CommandResponse::NotFound),
                    (Some(revision), Some(expected)) if revision != expected => {
                        WriteDecision::Answer(CommandResponse::RevisionMismatch { current })
                    }
                    (Some(_), _) => WriteDecision::Admit(EventKind::Delete { key: key.to_vec() }),
                }
            }
            ItemOp::Append { stream, data } => WriteDecision::Admit(EventKind::Append {
                stream: stream.to_owned(),
                data: data.to_vec(),
            }),
        };
        let response = match decision {
            WriteDecision::Answer(response) => response,
            WriteDecision::Admit(kind) => {
                match admit_edge_event(ks, meta, batch, write.backlog_limit, &kind)? {
                    Ok(seq) => {
                        let hlc = meta.hlc.0;
                        let response = match &kind {
                            EventKind::Put { .. } => CommandResponse::Put { seq, revision: seq },
                            EventKind::Delete { .. } => CommandResponse::Deleted { seq },
                            EventKind::Append { .. } => CommandResponse::Appended { seq, hlc },
                        };
                        if let ItemOp::Put { key, .. } | ItemOp::Delete { key, .. } = write.op {
                            let put = matches!(kind, EventKind::Put { .. });
                            last_write.insert(key, (seq, put));
                        }
                        admitted.push((seq, hlc, kind));
                        response
                    }
                    // A refused write is not remembered under its key, as on its own.
                    Err(refused) => {
                        responses.push(refused);
                        continue;
                    }
                }
            }
        };
        if let Some(idem) = write.idempotency {
            let expires_ms = idem_expiry(meta.retention_ms, idem);
            recorded.insert(idem.key.as_bytes(), (expires_ms, response.clone()));
        }
        responses.push(response);
    }
    // One fjall batch must not hold a key twice (its items share one seqno, so which one a
    // read sees is undefined): a put or delete that a later admitted one of its key
    // supersedes is left out, which is what applying them one by one would leave on disk.
    for (seq, hlc, kind) in &admitted {
        if let EventKind::Put { key, .. } | EventKind::Delete { key } = kind {
            if last_write.get(key.as_slice()).map(|&(last, _)| last) != Some(*seq) {
                continue;
            }
        }
        apply_event(ks, batch, &[], *seq, *hlc, kind);
    }
    compact_outbox(ks, meta, batch, OUTBOX_COMPACT_PER_APPLY * applies)?;
    let now_ms = meta.retention_ms;
    if now_ms >= meta.idem_expiry_floor_ms {
        let rewritten = |key: &[u8]| recorded.contains_key(key);
        expire_idempotency(
            ks,
            meta,
            batch,
            &rewritten,
            now_ms,
            IDEMPOTENCY_EXPIRE_PER_APPLY * applies,
        )?;
    }
    for (key, (expires_ms, response)) in recorded {
        record_idempotency(ks, meta, batch, key, expires_ms, response)?;
    }
    Ok(CommandResponse::Batch(responses))
}

/// The response remembered under `idem` at `retention_ms`: staged by this batch
/// (`recorded`), else stored and not yet expired.
fn remembered(
    ks: &Keyspaces,
    recorded: &HashMap<&[u8], (u64, CommandResponse)>,
    idem: &IdempotencyKey,
    retention_ms: u64,
) -> Result<Option<CommandResponse>, StoreError> {
    if let Some((_, response)) = recorded.get(idem.key.as_bytes()) {
        return Ok(Some(response.clone()));
    }
    stored_response(ks, idem, retention_ms)
}

/// The stored response under `idem`, unless its record expired by `retention_ms`.
fn stored_response(
    ks: &Keyspaces,
    idem: &IdempotencyKey,
    retention_ms: u64,
) -> Result<Option<CommandResponse>, StoreError> {
    let Some(bytes) = ks.idem.get(idem.key.as_bytes())? else {
        return Ok(None);
    };
    let record: IdemRecord = decode("idempotency record", &bytes)?;
    Ok((record.expires_ms > retention_ms).then_some(record.response))
}

/// When a record made at `retention_ms` for `idem` expires.
fn idem_expiry(retention_ms: u64, idem: &IdempotencyKey) -> u64 {
    retention_ms.saturating_add(u64::from(idem.window_secs) * 1000)
}

/// Where a client write lands: the edge's own state, or a promoted site's namespace at the
/// hub (whose log continues from the site's shipped-through).
enum Writer {
    Edge,
    Site {
        name: String,
        ns: Vec<u8>,
        record: SiteRecord,
    },
}

impl Writer {
    fn ns(&self) -> &[u8] {
        match self {
            Writer::Edge => &[],
            Writer::Site { ns, .. } => ns,
        }
    }
}

fn load_site(ks: &Keyspaces, site: &str) -> Result<SiteRecord, StoreError> {
    match ks.sites.get(site.as_bytes())? {
        Some(bytes) => decode("site record", &bytes),
        None => Ok(SiteRecord::default()),
    }
}

/// Applies a DR transition to a site's record (a no-op where it does not apply, so retries
/// are harmless) and answers the resulting ownership.
fn change_owner(
    ks: &Keyspaces,
    batch: &mut WriteBatch,
    site: &str,
    change: impl FnOnce(&mut SiteRecord),
) -> Result<CommandResponse, StoreError> {
    let mut record = load_site(ks, site)?;
    change(&mut record);
    batch.insert(&ks.sites, site.as_bytes(), encode(&record)?);
    Ok(CommandResponse::Site {
        epoch: record.epoch,
        owner: record.owner,
        shipped_through: record.shipped_through,
    })
}

/// A hub write to a promoted site: the next seq of the site's log, written under its
/// namespace and appended to the merged feed like a shipped event.
fn admit_site_event(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    name: &str,
    ns: &[u8],
    record: &mut SiteRecord,
    kind: &EventKind,
) -> Result<u64, StoreError> {
    let seq = record.shipped_through + 1;
    let event = FeedEventRef {
        site: name,
        epoch: record.epoch,
        seq,
        hlc: meta.hlc.0,
        kind,
    };
    write_site_event(ks, meta, batch, ns, &event)?;
    record.shipped_through = seq;
    record.head_seq = seq;
    record.last_event_ms = meta.hlc.physical_ms();
    Ok(seq)
}

/// Gives a new event its seq and writes it (and, in a shipping group, its outbox record),
/// or says why it is refused. Refusals change nothing and are not remembered under the
/// Idempotency-Key: a retry after the backlog drains must be able to succeed.
fn admit_event(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    command: &Command,
    writer: &mut Writer,
    kind: EventKind,
) -> Result<Result<u64, CommandResponse>, StoreError> {
    if let Writer::Site { name, ns, record } = writer {
        return admit_site_event(ks, meta, batch, name, ns, record, &kind).map(Ok);
    }
    let admitted = admit_edge_event(ks, meta, batch, command.backlog_limit, &kind)?;
    if let Ok(seq) = admitted {
        apply_event(ks, batch, &[], seq, meta.hlc.0, &kind);
    }
    Ok(admitted)
}

/// `ShippedEvent` as encoded, borrowing its kind (postcard writes a reference as the value).
#[derive(Serialize)]
struct ShippedEventRef<'a> {
    seq: u64,
    hlc: u64,
    kind: &'a EventKind,
}

/// Gives a new event of this edge group its seq and its outbox record (when the group
/// ships), or says why it is refused; the caller writes the event's effect. Reads only
/// `meta`.
fn admit_edge_event(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    backlog_limit: Option<u64>,
    kind: &EventKind,
) -> Result<Result<u64, CommandResponse>, StoreError> {
    if let Some(epoch) = meta.fenced {
        return Ok(Err(CommandResponse::Fenced { epoch }));
    }
    if meta.awaiting_handback {
        return Ok(Err(CommandResponse::AwaitingHandback));
    }
    let seq = meta.last_seq + 1;
    let hlc = meta.hlc.0;
    if let Some(limit) = backlog_limit {
        let record = encode(&ShippedEventRef { seq, hlc, kind })?;
        let bytes = (8 + record.len()) as u64;
        if meta.outbox_bytes.saturating_add(bytes) > limit {
            return Ok(Err(CommandResponse::BacklogFull {
                bytes: meta.outbox_bytes,
                limit,
            }));
        }
        batch.insert(&ks.outbox, u64_key(seq), record);
        meta.outbox_bytes += bytes;
    } else {
        // Nothing to ship: the outbox never holds this seq.
        meta.compacted_through = seq;
        meta.shipped_through = seq;
    }
    meta.last_seq = seq;
    Ok(Ok(seq))
}

/// Writes one event's effect on the KV and stream keyspaces under namespace `ns` (empty at
/// the edge; `site ‖ 0x00` at the hub).
fn apply_event(
    ks: &Keyspaces,
    batch: &mut WriteBatch,
    ns: &[u8],
    seq: u64,
    hlc: u64,
    kind: &EventKind,
) {
    match kind {
        EventKind::Put { key, value } => {
            batch.insert(&ks.kv, [ns, key].concat(), kv_value(seq, value));
        }
        EventKind::Delete { key } => batch.remove(&ks.kv, [ns, key].concat()),
        EventKind::Append { stream, data } => batch.insert(
            &ks.streams,
            [ns, &stream_key(stream, seq)].concat(),
            kv_value(hlc, data),
        ),
    }
}

/// Removes outbox entries the hub holds, at most `budget` (`OUTBOX_COMPACT_PER_APPLY` per
/// applied write).
fn compact_outbox(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    budget: usize,
) -> Result<(), StoreError> {
    if meta.compacted_through >= meta.shipped_through {
        return Ok(());
    }
    let start = u64_key(meta.compacted_through + 1);
    let end = u64_key(meta.shipped_through);
    let mut removed = 0;
    for guard in ks.outbox.range(start..=end).take(budget) {
        let (key, record) = guard.into_inner()?;
        meta.outbox_bytes = meta
            .outbox_bytes
            .saturating_sub((key.len() + record.len()) as u64);
        meta.compacted_through = read_u64("outbox key", &key)?;
        batch.remove(&ks.outbox, key);
        removed += 1;
    }
    if removed < budget {
        // Everything up to shipped-through is gone (seqs without a record never had one).
        meta.compacted_through = meta.shipped_through;
    }
    Ok(())
}

/// A site's state at the hub (part of the hub group's replicated state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// Ownership generation; batches stamped older are fenced.
    pub epoch: u64,
    /// Highest seq committed here.
    pub shipped_through: u64,
    /// The edge's newest seq as last reported (lag = head_seq − shipped_through).
    pub head_seq: u64,
    /// Hub clock (ms) of the last batch or session opening from the site.
    pub last_contact_ms: u64,
    /// HLC time (ms) of the newest event committed here.
    pub last_event_ms: u64,
    /// Who takes the site's writes now.
    pub owner: SiteOwner,
    /// (epoch, last seq) of each ended epoch, oldest first (at most `MAX_EPOCH_HISTORY`):
    /// tells a fenced group which of its events are held here.
    pub epoch_ends: Vec<(u64, u64)>,
}

/// Ended epochs a site record remembers (epochs change only by operator action).
const MAX_EPOCH_HISTORY: usize = 64;

impl SiteRecord {
    /// Starts the next epoch, remembering where this one ended.
    fn next_epoch(&mut self) {
        if self.epoch_ends.len() == MAX_EPOCH_HISTORY {
            self.epoch_ends.remove(0);
        }
        self.epoch_ends.push((self.epoch, self.shipped_through));
        self.epoch += 1;
    }

    /// Where `epoch` ended (0 if it is not remembered).
    fn end_of(&self, epoch: u64) -> u64 {
        self.epoch_ends
            .iter()
            .find(|(e, _)| *e == epoch)
            .map_or(0, |(_, end)| *end)
    }
}

/// One entry of the hub's merged feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    pub site: String,
    pub epoch: u64,
    pub seq: u64,
    pub hlc: u64,
    pub kind: EventKind,
}

/// `FeedEvent` as encoded, borrowing its site and kind: the hub writes one per shipped event,
/// and cloning both cost three allocations and copies each.
#[derive(Serialize)]
struct FeedEventRef<'a> {
    site: &'a str,
    epoch: u64,
    seq: u64,
    hlc: u64,
    kind: &'a EventKind,
}

/// Writes one event of a site's log at the hub (shipped, or written there after a
/// promotion): its effect under the site's namespace, its feed entry and its site-log index.
fn write_site_event(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    ns: &[u8],
    event: &FeedEventRef<'_>,
) -> Result<(), StoreError> {
    apply_event(ks, batch, ns, event.seq, event.hlc, event.kind);
    meta.feed_last += 1;
    batch.insert(&ks.feed, u64_key(meta.feed_last), encode(event)?);
    batch.insert(
        &ks.site_log,
        site_log_key(ns, event.seq),
        u64_key(meta.feed_last),
    );
    Ok(())
}

fn site_log_key(ns: &[u8], seq: u64) -> Vec<u8> {
    [ns, &u64_key(seq)].concat()
}

/// How far a point-in-time replay goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Every event with seq ≤ this.
    Seq(u64),
    /// Every event whose HLC time is ≤ this (unix ms).
    TimeMs(u64),
}

/// Hub: replays `site`'s log from `src` (its per-site index into the merged feed) into the
/// empty keyspaces `dst`, up to `as_of`, exactly as the site's writers applied it. Returns
/// the state machine bookkeeping of the result (last seq, HLC).
pub(crate) fn replay_site(
    src: &Keyspaces,
    site: &str,
    as_of: AsOf,
    dst: &Keyspaces,
) -> Result<SmMeta, StoreError> {
    let ns = site_namespace(site);
    let mut meta = SmMeta::default();
    let mut batch = dst.db.batch();
    for guard in src.site_log.prefix(&ns) {
        let (key, cursor) = guard.into_inner()?;
        let seq = read_u64("site log key", &key[ns.len()..])?;
        let Some(record) = src.feed.get(cursor)? else {
            return Err(StoreError::Corrupt {
                what: "site log".into(),
                message: format!("{site} seq {seq} points at a missing feed entry"),
            });
        };
        let event: FeedEvent = decode("feed entry", &record)?;
        let past = match as_of {
            AsOf::Seq(last) => seq > last,
            AsOf::TimeMs(ms) => Hlc(event.hlc).physical_ms() > ms,
        };
        if past {
            break;
        }
        apply_event(dst, &mut batch, &[], seq, event.hlc, &event.kind);
        meta.last_seq = seq;
        meta.hlc = meta.hlc.max(Hlc(event.hlc));
        if batch.len() >= REPLAY_BATCH_EVENTS {
            std::mem::replace(&mut batch, dst.db.batch()).commit()?;
        }
    }
    batch.commit()?;
    meta.shipped_through = meta.last_seq;
    meta.compacted_through = meta.last_seq;
    Ok(meta)
}

/// Events per write batch of a replay.
const REPLAY_BATCH_EVENTS: usize = 1024;

/// Namespace of a site's keys at the hub: site ids never contain 0x00.
pub fn site_namespace(site: &str) -> Vec<u8> {
    let mut ns = Vec::with_capacity(site.len() + 1);
    ns.extend_from_slice(site.as_bytes());
    ns.push(0);
    ns
}

/// Applies a shipping batch by the rules of `ship::rules`: exactly once, in order, fenced by
/// epoch. Bytes that do not decode are answered `Rejected` (they were checked before being
/// proposed, so this only guards against a buggy or hostile proposer).
fn ingest(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    now_ms: u64,
    bytes: &[u8],
) -> Result<ShipReply, StoreError> {
    let shipped = match crate::ship::codec::decode(bytes) {
        Ok(shipped) => shipped,
        Err(e) => return Ok(ShipReply::Rejected(e.to_string())),
    };
    let mut site = load_site(ks, &shipped.site)?;
    if site.owner == SiteOwner::HandingBack
        && shipped.epoch == site.epoch + 1
        && shipped.events.is_empty()
        && shipped.head_seq == site.shipped_through
    {
        // The failback's last step (DESIGN.md §3.5): the hub stopped taking writes, and a
        // group reseeded from its frozen copy now proves it holds exactly that state. Commit
        // epoch + 1 with it as the writer; it accepts writes once it hears this answer.
        site.next_epoch();
        site.owner = SiteOwner::Edge;
    }
    if shipped.events.is_empty()
        && shipped.epoch == site.epoch
        && shipped.head_seq < site.shipped_through
    {
        // An opening from a group whose log is behind what this epoch already shipped: not
        // the group that wrote it (e.g. restored from an old backup). Its new seqs would
        // collide with events the hub holds; refuse loudly instead of acking them as dups.
        site.last_contact_ms = now_ms;
        batch.insert(&ks.sites, shipped.site.as_bytes(), encode(&site)?);
        return Ok(ShipReply::Rejected(format!(
            "this group's log ends at seq {} but the hub holds seq {} of epoch {}: it is not \
             the site's writer (reseed it from the hub instead)",
            shipped.head_seq, site.shipped_through, site.epoch
        )));
    }
    let state = SiteShipState {
        epoch: site.epoch,
        shipped_through: site.shipped_through,
    };
    let decision = decide(
        state,
        shipped.epoch,
        shipped.first_seq,
        shipped.events.len(),
    );
    site.last_contact_ms = now_ms;
    let reply = match decision {
        Decision::Apply { skip, through } => {
            let ns = site_namespace(&shipped.site);
            for event in &shipped.events[skip..] {
                let event = FeedEventRef {
                    site: &shipped.site,
                    epoch: shipped.epoch,
                    seq: event.seq,
                    hlc: event.hlc,
                    kind: &event.kind,
                };
                write_site_event(ks, meta, batch, &ns, &event)?;
                site.last_event_ms = Hlc(event.hlc).physical_ms();
            }
            site.shipped_through = through;
            ShipReply::ShippedThrough(through)
        }
        Decision::Answer(ShipReply::Fenced { epoch, .. }) => ShipReply::Fenced {
            epoch,
            shipped_through: site.end_of(shipped.epoch),
        },
        Decision::Answer(reply) => reply,
    };
    if !matches!(reply, ShipReply::Fenced { .. } | ShipReply::Rejected(_)) {
        site.head_seq = site
            .head_seq
            .max(shipped.head_seq)
            .max(site.shipped_through);
    }
    batch.insert(&ks.sites, shipped.site.as_bytes(), encode(&site)?);
    Ok(reply)
}

/// Remembers the response under the idempotency key and expires a bounded number of old
/// records (deterministically: by the log's retention clock, `now_ms` here, not the local
/// wall clock).
fn finish(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    command: &Command,
    now_ms: u64,
    response: CommandResponse,
) -> Result<CommandResponse, StoreError> {
    let own_key = command.idempotency.as_ref().map(|i| i.key.as_bytes());
    if now_ms >= meta.idem_expiry_floor_ms {
        expire_idempotency(
            ks,
            meta,
            batch,
            &|key: &[u8]| Some(key) == own_key,
            now_ms,
            IDEMPOTENCY_EXPIRE_PER_APPLY,
        )?;
    }
    if let Some(idem) = &command.idempotency {
        let expires_ms = idem_expiry(now_ms, idem);
        record_idempotency(
            ks,
            meta,
            batch,
            idem.key.as_bytes(),
            expires_ms,
            response.clone(),
        )?;
    }
    Ok(response)
}

/// Stages the record of `key` (its response until `expires_ms`) and its expiry index entry.
fn record_idempotency(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    key: &[u8],
    expires_ms: u64,
    response: CommandResponse,
) -> Result<(), StoreError> {
    let record = IdemRecord {
        expires_ms,
        response,
    };
    batch.insert(&ks.idem, key, encode(&record)?);
    let mut index_key = u64_key(expires_ms).to_vec();
    index_key.extend_from_slice(key);
    batch.insert(&ks.idem_exp, index_key, Vec::new());
    meta.idem_expiry_floor_ms = meta.idem_expiry_floor_ms.min(expires_ms);
    Ok(())
}

/// Removes up to `budget` (`IDEMPOTENCY_EXPIRE_PER_APPLY` per applied write) expired
/// idempotency records, oldest first, and sets the floor to the earliest index entry left.
/// It stops at a key the apply records anew (`rewritten`): one fjall batch never removes and
/// inserts one key.
fn expire_idempotency(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    batch: &mut WriteBatch,
    rewritten: &dyn Fn(&[u8]) -> bool,
    now_ms: u64,
    budget: usize,
) -> Result<(), StoreError> {
    meta.idem_expiry_floor_ms = u64::MAX;
    // `removed` counts the entries removed before this one: each earlier pass removed one.
    for (removed, item) in ks.idem_exp.iter().enumerate() {
        let index_key = item.key()?;
        let expires_ms = read_u64("idempotency expiry", &index_key)?;
        let idem_key = &index_key[8..];
        // Stop at the first entry this apply leaves: unexpired, over budget, or a key it
        // records anew (never remove and insert one key in one batch).
        if expires_ms > now_ms || removed == budget || rewritten(idem_key) {
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

/// Shipping state of the applied log, published after every apply (edge status, shipper).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShipStatus {
    pub last_seq: u64,
    pub epoch: u64,
    pub fenced: Option<u64>,
    pub awaiting_handback: bool,
    pub shipped_through: u64,
    pub outbox_bytes: u64,
}

impl ShipStatus {
    pub(crate) fn of(meta: &SmMeta) -> Self {
        ShipStatus {
            last_seq: meta.last_seq,
            epoch: meta.epoch,
            fenced: meta.fenced,
            awaiting_handback: meta.awaiting_handback,
            shipped_through: meta.shipped_through,
            outbox_bytes: meta.outbox_bytes,
        }
    }
}

/// What the state machine publishes for readers: the applied seq (read on every request,
/// lock-free) and the shipping state, whose changes wake the shipper (so an idle one
/// sleeps instead of polling).
pub(crate) struct Published {
    applied_seq: AtomicU64,
    retention_ms: AtomicU64,
    ship: tokio::sync::watch::Sender<ShipStatus>,
}

impl Published {
    pub(crate) fn new(meta: &SmMeta) -> Arc<Self> {
        Arc::new(Published {
            applied_seq: AtomicU64::new(meta.last_seq),
            retention_ms: AtomicU64::new(meta.retention_ms),
            ship: tokio::sync::watch::Sender::new(ShipStatus::of(meta)),
        })
    }

    pub(crate) fn set(&self, meta: &SmMeta) {
        self.applied_seq.store(meta.last_seq, Ordering::Release);
        self.retention_ms
            .store(meta.retention_ms, Ordering::Release);
        let status = ShipStatus::of(meta);
        self.ship.send_if_modified(|ship| {
            let changed = *ship != status;
            *ship = status;
            changed
        });
    }
}

/// Read access to the applied state, for the client API (any task, any time). At the hub,
/// `for_site` narrows it to one site's namespace.
#[derive(Clone)]
pub struct StateReader {
    pub(crate) ks: Arc<Keyspaces>,
    pub(crate) published: Arc<Published>,
    /// Prefix of every KV and stream key read (empty at the edge).
    ns: Arc<[u8]>,
}

impl StateReader {
    pub(crate) fn new(ks: Arc<Keyspaces>, published: Arc<Published>) -> Self {
        StateReader {
            ks,
            published,
            ns: Arc::from(&[][..]),
        }
    }

    /// The same reader over one site's namespace at the hub.
    pub fn for_site(&self, site: &str) -> StateReader {
        StateReader {
            ks: self.ks.clone(),
            published: self.published.clone(),
            ns: Arc::from(site_namespace(site)),
        }
    }

    /// Seq of the last event applied on this node (edge; at the hub, 0).
    pub fn applied_seq(&self) -> u64 {
        self.published.applied_seq.load(Ordering::Acquire)
    }

    /// The group's retention clock as of the last apply (`Command.elapsed_ms`).
    pub fn retention_ms(&self) -> u64 {
        self.published.retention_ms.load(Ordering::Acquire)
    }

    /// The shipping state as of the last apply.
    pub fn ship_status(&self) -> ShipStatus {
        *self.published.ship.borrow()
    }

    /// The shipping state, marked changed whenever an apply changes it.
    pub fn ship_changes(&self) -> tokio::sync::watch::Receiver<ShipStatus> {
        self.published.ship.subscribe()
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<KvItem>, StoreError> {
        match self.ks.kv.get([&self.ns[..], key].concat())? {
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
        for guard in self.ks.kv.prefix([&self.ns[..], prefix].concat()) {
            let (key, record) = guard.into_inner()?;
            let key = Slice::from(&key[self.ns.len()..]);
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
        let start = [&self.ns[..], &stream_key(stream, from)].concat();
        let end = [&self.ns[..], &stream_key(stream, u64::MAX)].concat();
        let mut events = Vec::new();
        for guard in self.ks.streams.range(start..=end).take(limit) {
            let (key, record) = guard.into_inner()?;
            let seq = read_u64("stream key", &key[key.len().saturating_sub(8)..])?;
            let hlc = Hlc(read_u64("stream record", &record)?);
            events.push(StreamEvent { seq, hlc, record });
        }
        Ok(events)
    }

    /// Edge: outbox events from seq `from` on, contiguous, until `max_events` or until they
    /// pass `max_bytes` (at least one event when there is one). Stops early at a missing seq.
    pub fn outbox(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<ShippedEvent>, StoreError> {
        let mut events = Vec::new();
        self.outbox_append(from, max_events, max_bytes, &mut events)?;
        Ok(events)
    }

    /// Edge: `outbox`, appending to `events`; returns the stored bytes of what it appended
    /// (the measure `max_bytes` limits).
    pub fn outbox_append(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: usize,
        events: &mut Vec<ShippedEvent>,
    ) -> Result<usize, StoreError> {
        let mut bytes = 0;
        for (i, guard) in self
            .ks
            .outbox
            .range(u64_key(from)..)
            .take(max_events)
            .enumerate()
        {
            let (_, record) = guard.into_inner()?;
            let event: ShippedEvent = decode("outbox record", &record)?;
            if event.seq != from + i as u64 {
                break;
            }
            bytes += record.len();
            events.push(event);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(bytes)
    }

    /// Edge: the HLC of the oldest outbox event with seq ≥ `from`, if any.
    pub fn outbox_oldest_hlc(&self, from: u64) -> Result<Option<Hlc>, StoreError> {
        match self.ks.outbox.range(u64_key(from)..).next() {
            Some(guard) => {
                let (_, record) = guard.into_inner()?;
                let event: ShippedEvent = decode("outbox record", &record)?;
                Ok(Some(Hlc(event.hlc)))
            }
            None => Ok(None),
        }
    }

    /// Hub: every site's record, by site id.
    pub fn sites(&self) -> Result<Vec<(String, SiteRecord)>, StoreError> {
        let mut sites = Vec::new();
        for guard in self.ks.sites.iter() {
            let (key, record) = guard.into_inner()?;
            let site = String::from_utf8_lossy(&key).into_owned();
            sites.push((site, decode("site record", &record)?));
        }
        Ok(sites)
    }

    /// Hub: one site's record (None: never heard from).
    pub fn site(&self, site: &str) -> Result<Option<SiteRecord>, StoreError> {
        self.ks
            .sites
            .get(site.as_bytes())?
            .map(|bytes| decode("site record", &bytes))
            .transpose()
    }

    /// Hub: up to `limit` merged-feed entries after `cursor`, each with its own cursor.
    pub fn feed(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, FeedEvent)>, StoreError> {
        let mut entries = Vec::new();
        let Some(start) = cursor.checked_add(1) else {
            return Ok(entries);
        };
        for guard in self.ks.feed.range(u64_key(start)..).take(limit) {
            let (key, record) = guard.into_inner()?;
            entries.push((read_u64("feed key", &key)?, decode("feed entry", &record)?));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageSection;
    use crate::store::Store;

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
            self.apply_limited(ms, idem, None, op)
        }

        fn apply_limited(
            &mut self,
            ms: u64,
            idem: Option<&str>,
            backlog_limit: Option<u64>,
            op: Op,
        ) -> CommandResponse {
            self.apply_clocked(ms, ms, idem, backlog_limit, op)
        }

        /// With the proposer's wall clock and retention clock given apart.
        fn apply_clocked(
            &mut self,
            wall_ms: u64,
            elapsed_ms: u64,
            idem: Option<&str>,
            backlog_limit: Option<u64>,
            op: Op,
        ) -> CommandResponse {
            let command = Command {
                proposed_ms: wall_ms,
                elapsed_ms,
                idempotency: idem.map(|k| IdempotencyKey {
                    key: k.into(),
                    window_secs: 600,
                }),
                backlog_limit,
                site: None,
                op,
            };
            let ks = &self.store.ks;
            let mut batch = ks.db.batch();
            let response = apply_command(ks, &mut self.meta, &mut batch, &command).expect("apply");
            batch.commit().expect("commit");
            response
        }

        fn reader(&self) -> StateReader {
            StateReader::new(self.store.ks.clone(), Published::new(&self.meta))
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
    fn wall_clock_jumps_neither_reorder_events_nor_move_retention() {
        let mut f = Fixture::new();
        let day = 86_400_000;
        let hlc = |r: &CommandResponse, f: &Fixture| match r {
            CommandResponse::Appended { seq, .. } => {
                f.reader().stream("s", *seq, 1).expect("read")[0].hlc
            }
            other => panic!("{other:?}"),
        };
        let append = |d: &str| Op::Append {
            stream: "s".into(),
            data: d.as_bytes().to_vec(),
        };
        // A gateway booted without RTC (clock at 1970 + 1 s), then NTP jumps it forward a
        // day, then a bad sync jumps it back an hour; the monotonic clock moves 1 s each time.
        let a = f.apply_clocked(1_000, 1_000, Some("k1"), None, append("a"));
        let ha = hlc(&a, &f);
        let b = f.apply_clocked(1_000 + day, 2_000, None, None, append("b"));
        let hb = hlc(&b, &f);
        let c = f.apply_clocked(1_000 + day - 3_600_000, 3_000, None, None, append("c"));
        let hc = hlc(&c, &f);
        assert!(
            ha < hb && hb < hc,
            "HLC order follows seq order: {ha} {hb} {hc}"
        );
        // Two seconds of real time later, the key from before the forward jump is still
        // remembered: a retry is answered with the first result and writes nothing.
        let retry = f.apply_clocked(2_000 + day, 3_000, Some("k1"), None, append("a"));
        assert_eq!(retry, a);
        assert_eq!(f.meta.last_seq, 3);
        // And it expires after its window of real time, however the wall clock moved.
        let later = f.apply_clocked(1_000, 1_000 + 601_000, Some("k1"), None, append("a2"));
        assert!(
            matches!(later, CommandResponse::Appended { seq: 4, .. }),
            "{later:?}"
        );
        // The retention clock never goes back either.
        f.apply_clocked(5_000, 10, None, None, append("d"));
        assert_eq!(f.meta.retention_ms, 602_000);
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

    fn append(data: &str) -> Op {
        Op::Append {
            stream: "s".into(),
            data: data.as_bytes().to_vec(),
        }
    }

    fn blind(ms: u64, backlog_limit: Option<u64>, op: Op) -> BatchedWrite {
        let command = Command {
            proposed_ms: ms,
            elapsed_ms: ms,
            idempotency: None,
            backlog_limit,
            site: None,
            op,
        };
        BatchedWrite::from_command(command).expect("a blind write")
    }

    fn dump_all(f: &Fixture) -> Vec<(Vec<u8>, Vec<u8>)> {
        let ks = &f.store.ks;
        [&ks.kv, &ks.streams, &ks.outbox, &ks.idem, &ks.idem_exp]
            .into_iter()
            .flat_map(|k| k.iter().map(|g| g.into_inner().expect("read")))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Applies `writes` one entry each on `one_by_one` and as one batch entry on `batched`;
    /// both must answer and hold the same.
    fn assert_batch_applies_as_one_by_one(
        one_by_one: &mut Fixture,
        batched: &mut Fixture,
        writes: Vec<BatchedWrite>,
    ) -> Vec<CommandResponse> {
        let singles: Vec<CommandResponse> = writes
            .iter()
            .map(|w| {
                let ks = &one_by_one.store.ks;
                let mut batch = ks.db.batch();
                let command = w.clone().into_command();
                let r = apply_command(ks, &mut one_by_one.meta, &mut batch, &command);
                batch.commit().expect("commit");
                r.expect("apply")
            })
            .collect();
        let ks = &batched.store.ks;
        let mut batch = ks.db.batch();
        let response = apply_command(ks, &mut batched.meta, &mut batch, &Command::batch(writes))
            .expect("apply batch");
        batch.commit().expect("commit");
        assert_eq!(response, CommandResponse::Batch(singles.clone()));
        assert_eq!(dump_all(batched), dump_all(one_by_one));
        let fields = |m: &SmMeta| (m.last_seq, m.hlc, m.outbox_bytes, m.retention_ms);
        assert_eq!(fields(&batched.meta), fields(&one_by_one.meta));
        singles
    }

    #[test]
    fn a_batch_entry_applies_as_its_writes_would_one_by_one() {
        let (mut a, mut b) = (Fixture::new(), Fixture::new());
        let big = "x".repeat(300);
        let limit = Some(1_000);
        let responses = assert_batch_applies_as_one_by_one(
            &mut a,
            &mut b,
            vec![
                blind(100, limit, put("k", "first", None)),
                blind(100, limit, put("k", "second", None)),
                blind(90, limit, append("clock went back")),
                blind(120, limit, put("j", &big, None)),
                blind(120, limit, put("j", &big, None)),
                // Over the backlog: refused, so "j" keeps the admitted value above …
                blind(130, limit, put("j", &format!("{big}{big}"), None)),
                // … while a smaller write after it still fits.
                blind(130, limit, put("k", "third", None)),
                blind(140, None, append("not shipped")),
            ],
        );
        assert!(responses
            .iter()
            .any(|r| matches!(r, CommandResponse::BacklogFull { .. })));
        let k = b.reader().get(b"k").expect("get").expect("k");
        assert_eq!(k.value(), b"third");
        assert_eq!(
            b.reader().get(b"j").expect("get").expect("j").value(),
            big.as_bytes()
        );

        // A second batch after the hub took some events: compaction runs once, with the
        // budget of every write, and leaves the same outbox.
        for f in [&mut a, &mut b] {
            f.apply(150, None, Op::Shipped { through: 3 });
        }
        assert_batch_applies_as_one_by_one(
            &mut a,
            &mut b,
            vec![
                blind(160, limit, put("k", "fourth", None)),
                blind(160, limit, append("y")),
            ],
        );

        // Fenced: every write of a batch is refused, as each alone would be.
        for f in [&mut a, &mut b] {
            f.apply(
                170,
                None,
                Op::Fence {
                    epoch: 2,
                    shipped_through: 0,
                },
            );
        }
        let refused = assert_batch_applies_as_one_by_one(
            &mut a,
            &mut b,
            vec![
                blind(180, limit, put("k", "late", None)),
                blind(180, None, append("z")),
            ],
        );
        assert!(refused
            .iter()
            .all(|r| *r == CommandResponse::Fenced { epoch: 2 }));
    }

    /// `blind` with an Idempotency-Key remembered for `window_secs`.
    fn keyed(ms: u64, key: &str, window_secs: u32, op: Op) -> BatchedWrite {
        BatchedWrite {
            idempotency: Some(IdempotencyKey {
                key: key.into(),
                window_secs,
            }),
            ..blind(ms, Some(10_000), op)
        }
    }

    #[test]
    fn a_keyed_batch_entry_applies_as_its_writes_would_one_by_one() {
        let (mut a, mut b) = (Fixture::new(), Fixture::new());
        // A key recorded before the batch: its retry inside the batch is a duplicate.
        for f in [&mut a, &mut b] {
            f.apply(10, Some("earlier"), append("e0"));
        }
        let writes = vec![
            keyed(20, "one", 600, append("e1")),
            blind(20, Some(10_000), put("k", "plain", None)),
            keyed(21, "earlier", 600, append("retried, not applied")),
            keyed(22, "two", 600, put("k", "keyed", None)),
            // The same key again in the same entry: answered as the first, not applied.
            keyed(23, "one", 600, append("retried in the same entry")),
            keyed(24, "three", 600, append("e3")),
        ];
        assert!(matches!(
            Command::batch(writes.clone()).op,
            Op::ClientBatch { .. }
        ));
        let responses = assert_batch_applies_as_one_by_one(&mut a, &mut b, writes);
        assert_eq!(
            responses[4], responses[0],
            "the repeat gets the first's answer"
        );
        assert!(
            matches!(responses[2], CommandResponse::Appended { seq: 1, .. }),
            "the retry gets the earlier answer: {:?}",
            responses[2]
        );
        let stream: Vec<Vec<u8>> = b
            .reader()
            .stream("s", 1, 10)
            .expect("stream")
            .iter()
            .map(|e| e.data().to_vec())
            .collect();
        assert_eq!(stream, [&b"e0"[..], b"e1", b"e3"]);
        assert_eq!(
            b.reader().get(b"k").expect("get").expect("k").value(),
            b"keyed"
        );

        // A batch of plain writes only is still the entry older nodes read.
        assert!(matches!(
            Command::batch(vec![blind(30, None, append("x"))]).op,
            Op::Batch { .. }
        ));
    }

    #[test]
    fn a_keyed_batch_reuses_an_expired_key_and_expires_other_records() {
        let mut f = Fixture::new();
        let first = f.apply_clocked(1_000, 1_000, Some("reused"), None, append("old"));
        // Expiring at 1_000 + 600_000 (the fixture's window): the batch below runs later.
        let late = 1_000 + 600_000 + 1;
        let writes = vec![
            keyed(late, "reused", 600, append("new")),
            keyed(late, "reused", 600, append("retried")),
            keyed(late, "fresh", 600, append("fresh")),
        ];
        let ks = &f.store.ks;
        let mut batch = ks.db.batch();
        let response = apply_command(ks, &mut f.meta, &mut batch, &Command::batch(writes))
            .expect("apply batch");
        // Had the expiry pass removed the old "reused" record in the batch that inserts the
        // new one, which of the two a read sees would be undefined (checked below).
        batch.commit().expect("commit");
        let CommandResponse::Batch(responses) = response else {
            panic!("not a batch response: {response:?}");
        };
        assert_ne!(responses[0], first, "an expired key applies anew");
        assert_eq!(responses[1], responses[0]);
        // Both keys are remembered with the new answers, and a retry after the batch (one
        // entry of its own) gets them.
        for (key, expected) in [("reused", &responses[0]), ("fresh", &responses[2])] {
            assert_eq!(f.apply(late + 1, Some(key), append("again")), *expected);
        }
        // The old record's index entry was left (as a single write of the key leaves it),
        // so the floor is its expiry; the next write's pass removes it, not the new record.
        assert_eq!(f.meta.idem_expiry_floor_ms, 1_000 + 600_000);
        f.apply(late + 2, Some("other"), append("other"));
        assert_eq!(
            f.store.ks.idem_exp.iter().count(),
            3,
            "reused, fresh, other"
        );
        assert_eq!(f.meta.idem_expiry_floor_ms, late + 600_000);
        assert_eq!(
            f.apply(late + 3, Some("reused"), append("again")),
            responses[0]
        );
        assert_eq!(f.reader().stream("s", 1, 10).expect("stream").len(), 4);
    }

    /// A write of the batch as its command would be: `op` at `ms`, backlog limit 10,000.
    fn client(ms: u64, op: Op) -> BatchedWrite {
        blind(ms, Some(10_000), op)
    }

    fn delete(key: &str, if_revision: Option<u64>) -> Op {
        Op::Delete {
            key: key.into(),
            if_revision,
        }
    }

    #[test]
    fn conditional_writes_and_deletes_in_a_batch_see_the_writes_before_them() {
        let (mut a, mut b) = (Fixture::new(), Fixture::new());
        for f in [&mut a, &mut b] {
            assert_eq!(
                f.apply(10, None, put("k", "v1", None)),
                CommandResponse::Put {
                    seq: 1,
                    revision: 1
                }
            );
            f.apply(10, None, put("gone", "x", None));
        }
        let writes = vec![
            // k is at revision 1: this holds and makes it 3 …
            client(20, put("k", "v2", Some(1))),
            // … so the same condition no longer holds, and says the revision it saw.
            client(20, put("k", "v3", Some(1))),
            client(21, put("k", "v4", Some(3))),
            // Put-if-absent on a key a delete in the same entry took away.
            client(22, delete("gone", Some(2))),
            client(22, put("gone", "back", Some(0))),
            client(23, delete("never", None)),
            client(23, put("new", "n1", Some(0))),
            client(24, put("new", "n2", Some(0))),
            // Deleted after its last put: the delete is what the store keeps.
            client(25, delete("new", None)),
            keyed(26, "once", 600, put("k", "keyed-cas", Some(5))),
            keyed(26, "once", 600, put("k", "repeat", Some(5))),
            client(27, append("between")),
        ];
        assert!(matches!(
            Command::batch(writes.clone()).op,
            Op::ClientBatch { .. }
        ));
        let responses = assert_batch_applies_as_one_by_one(&mut a, &mut b, writes);
        assert_eq!(
            responses[..3],
            [
                CommandResponse::Put {
                    seq: 3,
                    revision: 3
                },
                CommandResponse::RevisionMismatch { current: Some(3) },
                CommandResponse::Put {
                    seq: 4,
                    revision: 4
                },
            ]
        );
        assert_eq!(responses[5], CommandResponse::NotFound);
        assert_eq!(responses[10], responses[9], "a key repeated in the entry");
        let reader = b.reader();
        assert_eq!(
            reader.get(b"gone").expect("get").expect("gone").value(),
            b"back"
        );
        assert!(reader.get(b"new").expect("get").is_none());
        assert_eq!(reader.get(b"k").expect("get").expect("k").value(), b"v4");
    }

    #[test]
    fn writes_that_batch_entries_carry() {
        let command = |idem: Option<&str>, op: Op| Command {
            proposed_ms: 1,
            elapsed_ms: 1,
            idempotency: idem.map(|k| IdempotencyKey {
                key: k.into(),
                window_secs: 600,
            }),
            backlog_limit: None,
            site: None,
            op,
        };
        for write in [
            command(None, put("k", "v", None)),
            command(None, append("v")),
            command(Some("once"), put("k", "v", None)),
            command(Some("once"), append("v")),
            command(None, put("k", "v", Some(3))),
            command(Some("once"), put("k", "v", Some(0))),
            command(None, delete("k", None)),
            command(Some("once"), delete("k", Some(2))),
        ] {
            let batched = BatchedWrite::from_command(write.clone()).expect("batched");
            assert_eq!(batched.into_command(), write);
        }
        for alone in [
            command(None, Op::Shipped { through: 1 }),
            command(None, Op::Activate),
            Command {
                site: Some("site-1".into()),
                ..command(None, append("v"))
            },
        ] {
            let back = BatchedWrite::from_command(alone.clone()).expect_err("not batched");
            assert_eq!(*back, alone);
        }
        // Only blind writes without keys make the entry older binaries read.
        let batch = |writes: Vec<Command>| {
            let writes = writes
                .into_iter()
                .map(|w| BatchedWrite::from_command(w).expect("batched"))
                .collect();
            Command::batch(writes).op
        };
        assert!(matches!(
            batch(vec![
                command(None, put("k", "v", None)),
                command(None, append("v"))
            ]),
            Op::Batch { writes } if writes.len() == 2
        ));
        for other in [
            command(None, put("k", "v", Some(1))),
            command(None, delete("k", None)),
            command(Some("once"), append("v")),
        ] {
            let op = batch(vec![command(None, append("first")), other.clone()]);
            let Op::ClientBatch { writes } = op else {
                panic!("{other:?} in an Op::Batch");
            };
            let commands: Vec<Command> = writes.into_iter().map(|w| w.into_command()).collect();
            assert_eq!(commands, vec![command(None, append("first")), other]);
        }
    }

    #[test]
    fn an_outbox_record_is_encoded_as_a_shipped_event() {
        let kind = EventKind::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let borrowed = encode(&ShippedEventRef {
            seq: 7,
            hlc: 9,
            kind: &kind,
        })
        .expect("encode");
        let owned = encode(&ShippedEvent {
            seq: 7,
            hlc: 9,
            kind,
        })
        .expect("encode");
        assert_eq!(borrowed, owned);
    }

    #[test]
    fn a_feed_entry_is_encoded_as_a_feed_event() {
        let kind = EventKind::Append {
            stream: "s".to_owned(),
            data: b"d".to_vec(),
        };
        let borrowed = encode(&FeedEventRef {
            site: "site-1",
            epoch: 3,
            seq: 7,
            hlc: 9,
            kind: &kind,
        })
        .expect("encode");
        let owned = encode(&FeedEvent {
            site: "site-1".to_owned(),
            epoch: 3,
            seq: 7,
            hlc: 9,
            kind,
        })
        .expect("encode");
        assert_eq!(borrowed, owned);
    }

    #[test]
    fn outbox_keeps_events_until_shipped_and_bounds_the_backlog() {
        let mut f = Fixture::new();
        let limit = Some(400);
        let mut acked = 0;
        let full = loop {
            match f.apply_limited(10, Some(&format!("i{acked}")), limit, append("0123456789")) {
                CommandResponse::Appended { seq, .. } => acked = seq,
                other => break other,
            }
        };
        assert!(matches!(
            full,
            CommandResponse::BacklogFull { limit: 400, .. }
        ));
        assert!(acked > 3);
        let outbox = f.reader().outbox(1, 100, usize::MAX).expect("outbox");
        assert_eq!(outbox.len() as u64, acked, "every acked event is kept");
        assert!(outbox.iter().map(|e| e.seq).eq(1..=acked));
        assert!(f.meta.outbox_bytes <= 400);
        // The refusal was not remembered: the same key succeeds once the hub has events.
        f.apply(20, None, Op::Shipped { through: 2 });
        assert_eq!(f.meta.shipped_through, 2);
        assert_eq!(
            f.reader().outbox(3, 100, usize::MAX).expect("outbox")[0].seq,
            3
        );
        assert!(matches!(
            f.apply_limited(30, Some(&format!("i{acked}")), limit, append("x")),
            CommandResponse::Appended { .. }
        ));
        // A claim beyond the log is clamped; everything goes, the byte count returns to 0.
        f.apply(40, None, Op::Shipped { through: 1_000 });
        assert_eq!(f.meta.shipped_through, f.meta.last_seq);
        assert_eq!(f.meta.outbox_bytes, 0);
        assert_eq!(f.store.ks.outbox.iter().count(), 0);
    }

    #[test]
    fn a_fenced_group_refuses_every_write_after_the_fence() {
        let mut f = Fixture::new();
        f.apply_limited(1, None, Some(1 << 20), append("a"));
        f.apply(
            2,
            None,
            Op::Fence {
                epoch: 0,
                shipped_through: 0,
            },
        ); // not newer than ours: ignored
        assert_eq!(f.meta.fenced, None);
        f.apply(
            3,
            None,
            Op::Fence {
                epoch: 2,
                shipped_through: 1,
            },
        );
        assert_eq!(f.meta.shipped_through, 1);
        assert_eq!(
            f.apply_limited(4, Some("k"), Some(1 << 20), append("b")),
            CommandResponse::Fenced { epoch: 2 }
        );
        assert_eq!(
            f.apply(5, None, put("x", "1", None)),
            CommandResponse::Fenced { epoch: 2 }
        );
        assert_eq!(f.meta.last_seq, 1);
    }

    fn batch_bytes(site: &str, epoch: u64, seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let events = seqs
            .clone()
            .map(|seq| ShippedEvent {
                seq,
                hlc: Hlc::from_ms(1_000 + seq).0,
                kind: if seq % 2 == 0 {
                    EventKind::Put {
                        key: format!("k{}", seq % 3).into_bytes(),
                        value: format!("v{seq}").into_bytes(),
                    }
                } else {
                    EventKind::Append {
                        stream: "t".into(),
                        data: format!("e{seq}").into_bytes(),
                    }
                },
            })
            .collect();
        crate::ship::codec::encode(&crate::ship::codec::ShipBatch {
            site: site.into(),
            epoch,
            first_seq: *seqs.start(),
            head_seq: *seqs.end() + 5,
            events,
        })
        .expect("encode")
    }

    fn ingest(
        f: &mut Fixture,
        site: &str,
        epoch: u64,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> ShipReply {
        match f.apply(
            50,
            None,
            Op::Ingest {
                batch: batch_bytes(site, epoch, seqs),
            },
        ) {
            CommandResponse::Ship(reply) => reply,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn hub_ingests_each_site_exactly_once_into_its_namespace_and_the_feed() {
        let mut f = Fixture::new();
        assert_eq!(ingest(&mut f, "a", 0, 1..=4), ShipReply::ShippedThrough(4));
        assert_eq!(ingest(&mut f, "b", 0, 1..=2), ShipReply::ShippedThrough(2));
        assert_eq!(
            ingest(&mut f, "a", 0, 2..=4),
            ShipReply::ShippedThrough(4),
            "duplicate"
        );
        assert_eq!(
            ingest(&mut f, "a", 0, 7..=8),
            ShipReply::Gap { expected: 5 }
        );
        assert_eq!(
            ingest(&mut f, "a", 0, 3..=6),
            ShipReply::ShippedThrough(6),
            "overlap"
        );
        let hub = f.reader();
        let a = hub.for_site("a");
        assert_eq!(a.get(b"k1").expect("get").expect("k1").value(), b"v4");
        assert_eq!(a.get(b"k1").expect("get").expect("k1").revision, 4);
        assert!(
            hub.get(b"k1").expect("get").is_none(),
            "no key outside a namespace"
        );
        let seqs: Vec<u64> = a
            .stream("t", 1, 10)
            .expect("stream")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 3, 5]);
        let (items, _) = a.list(b"k", None, 10).expect("list");
        assert_eq!(
            items.iter().map(|i| i.key.to_vec()).collect::<Vec<_>>(),
            vec![b"k0".to_vec(), b"k1".to_vec(), b"k2".to_vec()]
        );
        assert_eq!(
            hub.for_site("b").stream("t", 1, 10).expect("stream").len(),
            1
        );
        let feed = hub.feed(0, 100).expect("feed");
        let order: Vec<(String, u64)> = feed.iter().map(|(_, e)| (e.site.clone(), e.seq)).collect();
        let expected: Vec<(String, u64)> = [
            ("a", 1),
            ("a", 2),
            ("a", 3),
            ("a", 4),
            ("b", 1),
            ("b", 2),
            ("a", 5),
            ("a", 6),
        ]
        .iter()
        .map(|(s, q)| (s.to_string(), *q))
        .collect();
        assert_eq!(order, expected);
        assert!(feed.windows(2).all(|w| w[0].0 < w[1].0), "cursors increase");
        assert_eq!(hub.feed(feed[5].0, 100).expect("feed").len(), 2);
        let site_a = hub.site("a").expect("site").expect("known");
        assert_eq!((site_a.shipped_through, site_a.head_seq), (6, 13));
        assert_eq!(hub.sites().expect("sites").len(), 2);
        // A group whose log is behind what this epoch shipped is refused, not acked.
        let behind = crate::ship::codec::encode(&crate::ship::codec::ShipBatch {
            site: "a".into(),
            epoch: 0,
            first_seq: 1,
            head_seq: 3,
            events: Vec::new(),
        })
        .expect("encode");
        assert!(matches!(
            f.apply(55, None, Op::Ingest { batch: behind }),
            CommandResponse::Ship(ShipReply::Rejected(_))
        ));
        // Fencing: once the hub's epoch for a site is newer, older batches are refused.
        let mut record = site_a;
        record.epoch = 3;
        f.store
            .ks
            .sites
            .insert("a", encode(&record).expect("encode"))
            .expect("insert");
        assert_eq!(
            ingest(&mut f, "a", 0, 7..=7),
            ShipReply::Fenced {
                epoch: 3,
                shipped_through: 0
            }
        );
        assert!(matches!(
            f.apply(
                60,
                None,
                Op::Ingest {
                    batch: b"garbage".to_vec()
                }
            ),
            CommandResponse::Ship(ShipReply::Rejected(_))
        ));
    }
}
