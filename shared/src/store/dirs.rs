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

#[cfg(test)]
mod tests {
    use super::*;

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
