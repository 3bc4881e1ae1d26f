//! Snapshot and backup files (`shared::store::Store::describe_backup`): magic, bounded
//! header, records (each length bounded before allocation), end tag and crc32, then the
//! committed Raft log entries a backup carries (index order, decoded entries). This is the
//! reader behind `backup`, `restore --from-backup` and the seed download check.
//!
//! Input: a mode byte, then the file. Even mode: the crc of the rest is appended, so
//! mutations reach the parser behind the checksum; odd mode: the file as is. Checks: no
//! panic, bounded allocation, and a described log range is ordered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openclaw_fuzz::{scratch_file, snapshot_input};
use shared::store::Store;

fuzz_target!(|data: &[u8]| {
    let Some(file) = snapshot_input(data) else {
        return;
    };
    let path = scratch_file("snapshot_file.snap", &file);
    if let Ok(info) = Store::describe_backup(&path) {
        if let Some((first, last)) = info.log {
            assert!(first <= last, "log range {first}..={last}");
        }
    }
});
