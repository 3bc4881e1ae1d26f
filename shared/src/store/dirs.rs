//! Directories that survive power loss. A new directory's name lives in its parent, and
//! only an fsync of the parent makes it durable (POSIX; ext4 happens to order it, other
//! filesystems do not): without it a node can fsync every write into a database whose
//! directory is gone after a power cut.

use std::fs::File;
use std::path::Path;

use super::StoreError;

/// fsync of a directory: makes its entries (creates, renames, unlinks) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// `create_dir_all` that fsyncs the parent of every directory it creates.
pub(crate) fn create_dir_durable(path: &Path) -> Result<(), StoreError> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => {}
        // Created meanwhile by someone else: its creator syncs it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            })
        }
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// The file fjall writes (and fsyncs, with its directory) as the last step of creating a
/// database, before anything can be written into it (fjall 3.1 `file::VERSION_MARKER`).
const FJALL_VERSION_MARKER: &str = "version";

/// Empties a fjall database directory whose creation was interrupted, so it can be created
/// again; `true` if it did. fjall 3.1 creates `lock`, `keyspaces/` and the journal `0.jnl`
/// (with `File::create_new`) before its `version` marker, and opens a directory without
/// the marker as a new database: one killed or power-cut in between can never be opened
/// again ("File exists" on `0.jnl`), though it never held data. Found by
/// `hil-tests/tests/fjall_power_cut.rs` killing its writer during its first open. A node
/// that hit it would fail to start until its directory was wiped by hand.
pub fn clear_interrupted_creation(db_dir: &Path) -> Result<bool, StoreError> {
    let io = |source| StoreError::Io {
        path: db_dir.to_owned(),
        source,
    };
    if db_dir.join(FJALL_VERSION_MARKER).exists() || !db_dir.is_dir() {
        return Ok(false);
    }
    let mut entries = std::fs::read_dir(db_dir).map_err(io)?;
    if entries.next().is_none() {
        return Ok(false);
    }
    std::fs::remove_dir_all(db_dir).map_err(io)?;
    create_dir_durable(db_dir)?;
    Ok(true)
}

/// Tests: `db_dir` as fjall leaves it when killed after creating its journal, before its
/// version marker.
#[cfg(test)]
pub(crate) fn leave_as_interrupted_creation(db_dir: &Path) {
    std::fs::create_dir_all(db_dir.join("keyspaces")).expect("mkdir");
    std::fs::write(db_dir.join("lock"), b"").expect("lock");
    std::fs::write(db_dir.join("0.jnl"), b"").expect("journal");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_creation_is_cleared_and_a_database_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        leave_as_interrupted_creation(&db);
        assert!(clear_interrupted_creation(&db).expect("clear"));
        assert!(db.is_dir() && std::fs::read_dir(&db).expect("ls").next().is_none());
        // Empty, missing, or a real database: left alone.
        assert!(!clear_interrupted_creation(&db).expect("empty"));
        assert!(!clear_interrupted_creation(&dir.path().join("none")).expect("missing"));
        std::fs::write(db.join("0.jnl"), b"x").expect("journal");
        std::fs::write(db.join(FJALL_VERSION_MARKER), b"x").expect("marker");
        assert!(!clear_interrupted_creation(&db).expect("database"));
        assert!(db.join("0.jnl").exists());
    }

    #[test]
    fn creates_every_missing_level_and_accepts_an_existing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        create_dir_durable(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_durable(&deep).expect("again");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            create_dir_durable(&file.join("sub")),
            Err(StoreError::Io { .. })
        ));
    }
}
