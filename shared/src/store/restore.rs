//! Restore: a backup's state rolled forward through committed Raft log entries, to the end
//! of the log or to a point in time (DESIGN.md §3.5, "at the edge while the log is retained").
//!
//! The base is a backup's state machine at its applied index A. The log comes from the same
//! backup or from a later one of the same group; it must hold entry A itself, with the same
//! log id, before anything is applied: by Raft's log matching property the entries after it
//! are then exactly the ones the group applied after A. Each entry goes through the state
//! machine's own `apply_command`, one committed batch per entry (as the live node does, so
//! reads inside apply see earlier writes), so the result is the state the group had. To
//! reach a point inside a batch entry (`Op::Batch`), its writes are applied one at a time.

use std::ops::ControlFlow;
use std::path::Path;

use openraft::alias::EntryPayloadOf;
use openraft::EntryPayload;

use super::state::{apply_command, stage_meta, AsOf, SmMeta};
use super::{snapshot, Keyspaces, StoreError};
use crate::types::{Command, Entry, LogId, Op, StoredMembership, TypeConfig};

/// What a restore produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Seq of the backup's state.
    pub base_seq: u64,
    /// Seq of the restored state.
    pub last_seq: u64,
    /// Log entries applied on top of the base.
    pub entries_applied: u64,
    /// The restored state is an earlier point of the site and starts fenced (read-only).
    pub fenced: bool,
}

fn out_of_range(message: String) -> StoreError {
    StoreError::OutOfRange(message)
}

/// Makes the empty keyspaces `ks` the state of `base` rolled forward through the log of
/// `log` (default: `base`'s own), up to `as_of` or the log's end; the result is the start
/// of a new group (no applied log id, no membership). A point in time starts fenced.
pub(crate) fn restore(
    ks: &Keyspaces,
    base: &Path,
    log: Option<&Path>,
    as_of: Option<AsOf>,
) -> Result<Restored, StoreError> {
    let mut meta = snapshot::install_seed(ks, base)?;
    let base_seq = meta.last_seq;
    match as_of {
        Some(AsOf::Seq(seq)) if seq < base_seq => {
            return Err(out_of_range(format!(
                "the backup is at seq {base_seq}, after seq {seq}: restore from an older backup"
            )))
        }
        Some(AsOf::TimeMs(ms)) if meta.hlc.physical_ms() > ms && base_seq > 0 => {
            return Err(out_of_range(format!(
                "the backup holds writes stamped after {ms} ms (its last at {} ms): restore \
                 from an older backup",
                meta.hlc.physical_ms()
            )))
        }
        _ => {}
    }
    let log_path = log.unwrap_or(base);
    let base_applied = meta.applied;
    // A backup's own log is from the same view as its state: it continues it by construction.
    let mut linked = log.is_none();
    let mut entries_applied = 0u64;
    let mut log_end: Option<u64> = None;
    let wanted = !matches!(as_of, Some(AsOf::Seq(seq)) if seq == base_seq);
    snapshot::for_each_log_entry(log_path, |index, entry| {
        if !wanted {
            return Ok(ControlFlow::Break(()));
        }
        log_end = Some(index);
        let Some(applied) = base_applied else {
            // A new group's state (e.g. itself restored): its log must start at the start.
            if !linked && index > 1 {
                return Err(out_of_range(format!(
                    "the log in {} starts at entry {index}: it does not reach back to the \
                     start of the group the backup began",
                    log_path.display()
                )));
            }
            linked = true;
            return roll_forward(ks, &mut meta, &entry, as_of, &mut entries_applied);
        };
        if linked && index <= applied.index {
            return Ok(ControlFlow::Continue(()));
        }
        if index < applied.index {
            return Ok(ControlFlow::Continue(()));
        }
        if index == applied.index {
            if entry.log_id != applied {
                return Err(out_of_range(format!(
                    "{} is the log of another group or history: its entry {index} is {}, the \
                     backup's state was applied through {applied}",
                    log_path.display(),
                    entry.log_id
                )));
            }
            linked = true;
            return Ok(ControlFlow::Continue(()));
        }
        if !linked {
            return Err(out_of_range(format!(
                "the log in {} starts at entry {index}, after the backup's state (entry {}): \
                 it was not retained that far back (raise log_entries_kept_after_snapshot)",
                log_path.display(),
                applied.index
            )));
        }
        roll_forward(ks, &mut meta, &entry, as_of, &mut entries_applied)
    })?;
    if !linked && log_end.is_some() {
        return Err(out_of_range(format!(
            "the log in {} ends before the backup's state (entry {:?}): use a later backup",
            log_path.display(),
            base_applied.map(|a| a.index)
        )));
    }
    if let Some(AsOf::Seq(seq)) = as_of {
        if meta.last_seq < seq {
            return Err(out_of_range(format!(
                "the log ends at seq {} (entry {}), before seq {seq}: use a later backup's log",
                meta.last_seq,
                log_end.unwrap_or(0)
            )));
        }
    }
    meta.applied = None;
    meta.membership = StoredMembership::default();
    let fenced = as_of.is_some();
    if fenced {
        // A copy of the past is for reading (or re-applying elsewhere), never the site's
        // writer: its new seqs would collide with what the site wrote since.
        meta.fenced = Some(meta.fenced.unwrap_or(meta.epoch).max(meta.epoch) + 1);
    }
    let mut batch = ks.db.batch();
    stage_meta(ks, &mut batch, &mut meta, true)?;
    batch.commit()?;
    ks.db.persist(fjall::PersistMode::SyncData)?;
    Ok(Restored {
        base_seq,
        last_seq: meta.last_seq,
        entries_applied,
        fenced,
    })
}

/// Applies one entry unless it would take the state past `as_of`; breaks once it is there.
/// A point in time may fall inside a batch entry: its writes then go one at a time, each as
/// the command it was before it was batched.
fn roll_forward(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    entry: &Entry,
    as_of: Option<AsOf>,
    entries_applied: &mut u64,
) -> Result<ControlFlow<()>, StoreError> {
    if let (Some(_), EntryPayload::Normal(command)) = (as_of, &entry.payload) {
        let singles: Option<Vec<Command>> = match &command.op {
            Op::Batch { writes } => Some(writes.iter().map(|w| w.clone().into_command()).collect()),
            Op::ClientBatch { writes } => {
                Some(writes.iter().map(|w| w.clone().into_command()).collect())
            }
            _ => None,
        };
        if let Some(singles) = singles {
            for single in singles {
                let single = EntryPayload::Normal(single);
                if roll_forward_payload(ks, meta, entry.log_id, &single, as_of)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            *entries_applied += 1;
            return Ok(ControlFlow::Continue(()));
        }
    }
    let flow = roll_forward_payload(ks, meta, entry.log_id, &entry.payload, as_of)?;
    if flow.is_continue() {
        *entries_applied += 1;
    }
    Ok(flow)
}

/// Applies `payload` (of the entry `log_id`) in one committed batch unless it would take the
/// state past `as_of`.
fn roll_forward_payload(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    log_id: LogId,
    payload: &EntryPayloadOf<TypeConfig>,
    as_of: Option<AsOf>,
) -> Result<ControlFlow<()>, StoreError> {
    if matches!(as_of, Some(AsOf::Seq(seq)) if meta.last_seq >= seq) {
        return Ok(ControlFlow::Break(()));
    }
    let mut next = meta.clone();
    let mut batch = ks.db.batch();
    match payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(command) => {
            apply_command(ks, &mut next, &mut batch, command)?;
        }
        EntryPayload::Membership(membership) => {
            next.membership = StoredMembership::new(Some(log_id), membership.clone());
        }
    }
    let past = match as_of {
        Some(AsOf::Seq(seq)) => next.last_seq > seq,
        Some(AsOf::TimeMs(ms)) => next.last_seq > meta.last_seq && next.hlc.physical_ms() > ms,
        None => false,
    };
    if past {
        return Ok(ControlFlow::Break(()));
    }
    next.applied = Some(log_id);
    stage_meta(ks, &mut batch, &mut next, true)?;
    batch.commit()?;
    *meta = next;
    Ok(ControlFlow::Continue(()))
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::config::StorageSection;
    use crate::store::codec::{encode, u64_key};
    use crate::store::log::COMMITTED_KEY;
    use crate::store::Store;
    use crate::types::BatchedWrite;

    fn write(ms: u64, key: &str, value: &str) -> BatchedWrite {
        let command = Command {
            proposed_ms: ms,
            elapsed_ms: ms,
            idempotency: None,
            backlog_limit: None,
            site: None,
            op: Op::Put {
                key: key.into(),
                value: value.into(),
                if_revision: None,
            },
        };
        BatchedWrite::from_command(command).expect("blind")
    }

    fn keyed(write: BatchedWrite) -> BatchedWrite {
        BatchedWrite {
            idempotency: Some(crate::types::IdempotencyKey {
                key: "once".into(),
                window_secs: 600,
            }),
            ..write
        }
    }

    /// A backup of a group whose committed log is two batch entries (seqs 1–3 and 4–5, the
    /// second with a keyed write):
    /// nothing applied yet, so a restore rolls forward from the log's start.
    fn backup_of_batches(dir: &Path) -> std::path::PathBuf {
        let store = Store::open(&dir.join("source"), &StorageSection::default()).expect("open");
        let ks = &store.ks;
        let entries: [Vec<BatchedWrite>; 2] = [
            vec![
                write(1, "a", "a1"),
                write(2, "b", "b1"),
                write(3, "a", "a2"),
            ],
            // Keyed: an `Op::ClientBatch`, split the same way.
            vec![keyed(write(4, "c", "c1")), write(5, "b", "b2")],
        ];
        let mut batch = ks.db.batch();
        let mut last = None;
        for (i, writes) in entries.into_iter().enumerate() {
            let log_id = openraft::testing::log_id::<TypeConfig>(1, 1, i as u64 + 1);
            let entry = Entry::new_normal(log_id, Command::batch(writes));
            batch.insert(
                &ks.log,
                u64_key(log_id.index),
                encode(&entry).expect("encode"),
            );
            last = Some(log_id);
        }
        batch.insert(&ks.raft_meta, COMMITTED_KEY, encode(&last).expect("encode"));
        batch.commit().expect("commit");
        store.backup().expect("backup").path
    }

    fn restored_kv(store: &Store) -> Vec<(String, String)> {
        store
            .ks
            .kv
            .iter()
            .map(|g| g.into_inner().expect("read"))
            .map(|(k, v)| {
                let k = String::from_utf8_lossy(&k).into_owned();
                (k, String::from_utf8_lossy(&v[8..]).into_owned())
            })
            .collect()
    }

    #[test]
    fn a_point_in_time_inside_a_batch_entry_is_reached_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backup = backup_of_batches(dir.path());
        let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cases = [
            (1, kv(&[("a", "a1")])),
            (2, kv(&[("a", "a1"), ("b", "b1")])),
            (4, kv(&[("a", "a2"), ("b", "b1"), ("c", "c1")])),
            (5, kv(&[("a", "a2"), ("b", "b2"), ("c", "c1")])),
        ];
        for (seq, expected) in cases {
            let target = Store::open(
                &dir.path().join(format!("at-{seq}")),
                &StorageSection::default(),
            )
            .expect("open");
            let restored = target
                .restore_backup(&backup, None, Some(AsOf::Seq(seq)))
                .expect("restore");
            assert_eq!(restored.last_seq, seq, "as of seq {seq}");
            assert!(restored.fenced);
            assert_eq!(restored_kv(&target), expected, "as of seq {seq}");
        }
        // To the log's end, both entries apply whole.
        let target =
            Store::open(&dir.path().join("to-end"), &StorageSection::default()).expect("open");
        let restored = target.restore_backup(&backup, None, None).expect("restore");
        assert_eq!((restored.last_seq, restored.entries_applied), (5, 2));
        assert_eq!(
            restored_kv(&target),
            kv(&[("a", "a2"), ("b", "b2"), ("c", "c1")])
        );
    }
}
