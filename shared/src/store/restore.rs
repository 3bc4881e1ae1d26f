//! Restore: a backup's state rolled forward through committed Raft log entries, to the end
//! of the log or to a point in time (DESIGN.md §3.5, "at the edge while the log is retained").
//!
//! The base is a backup's state machine at its applied index A. The log comes from the same
//! backup or from a later one of the same group; it must hold entry A itself, with the same
//! log id, before anything is applied: by Raft's log matching property the entries after it
//! are then exactly the ones the group applied after A. Each entry goes through the state
//! machine's own `apply_command`, one committed batch per entry (as the live node does, so
//! reads inside apply see earlier writes), so the result is the state the group had.

use std::ops::ControlFlow;
use std::path::Path;

use openraft::EntryPayload;

use super::state::{apply_command, stage_meta, AsOf, SmMeta};
use super::{snapshot, Keyspaces, StoreError};
use crate::types::StoredMembership;

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
fn roll_forward(
    ks: &Keyspaces,
    meta: &mut SmMeta,
    entry: &crate::types::Entry,
    as_of: Option<AsOf>,
    entries_applied: &mut u64,
) -> Result<ControlFlow<()>, StoreError> {
    if matches!(as_of, Some(AsOf::Seq(seq)) if meta.last_seq >= seq) {
        return Ok(ControlFlow::Break(()));
    }
    let mut next = meta.clone();
    let mut batch = ks.db.batch();
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(command) => {
            apply_command(ks, &mut next, &mut batch, command)?;
        }
        EntryPayload::Membership(membership) => {
            next.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
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
    next.applied = Some(entry.log_id);
    stage_meta(ks, &mut batch, &mut next, true)?;
    batch.commit()?;
    *meta = next;
    *entries_applied += 1;
    Ok(ControlFlow::Continue(()))
}
