//! Installing a snapshot file into a store (`Store::install_seed`): what a node does with
//! the bytes a leader streamed to it after an `InstallSnapshot` header (the chunks are raw
//! file bytes with no framing of their own: they are counted against the announced size and
//! written to a file, and `install` runs checksum, header and records through the same
//! `replace_state` as this target), and with a seed downloaded from the hub.
//!
//! Input: as `snapshot_file` (a mode byte; even: crc appended). One store is opened per
//! process on tmpfs and reused. Checks: no panic, and every install that succeeds
//! round-trips: a backup of the installed state describes, installs, and backs up to the
//! identical file.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use openclaw_fuzz::{scratch_dir, scratch_file, snapshot_input};
use shared::config::StorageSection;
use shared::store::Store;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        Store::open(&scratch_dir().join("store"), &StorageSection::default()).expect("store")
    })
}

fn backup(store: &Store) -> (std::path::PathBuf, Vec<u8>) {
    let file = store.backup().expect("a backup of an installed state");
    let bytes = std::fs::read(&file.path).expect("read backup");
    (file.path.clone(), bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some(file) = snapshot_input(data) else {
        return;
    };
    let path = scratch_file("snapshot_install.snap", &file);
    let store = store();
    if store.install_seed(&path).is_err() {
        return;
    }
    let installed = store.seed_status();
    let (first_path, first) = backup(store);
    let info = Store::describe_backup(&first_path).expect("a backup describes");
    assert_eq!(
        info.last_seq, installed.last_seq,
        "backup of the installed state"
    );
    store
        .install_seed(&first_path)
        .expect("a backup of an installed state installs");
    let (second_path, second) = backup(store);
    assert!(
        first == second,
        "install(backup(state)) backs up identically"
    );
    let _ = std::fs::remove_file(first_path);
    let _ = std::fs::remove_file(second_path);
});
