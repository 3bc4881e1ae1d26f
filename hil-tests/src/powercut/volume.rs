//! The power-cut volume's state: every file and directory twice, as processes see it
//! (volatile: what the page cache would hold) and as it would be found after a power cut
//! (durable). Plain code, no FUSE: the mount in `fuse.rs` drives it, and so do the tests.
//!
//! Durability follows POSIX at its strictest, the rules fsync-correct software must
//! assume (and ext4/xfs without their extra ordering guarantees give):
//! - a file's contents and size become durable when that file is fsynced (fsync or
//!   fdatasync);
//! - a directory's entries (create, unlink, rename, mkdir, rmdir in it) become durable when
//!   that directory is fsynced; a file fsynced but never linked durably is lost;
//! - nothing else is ever durable: a cut makes every file and directory what it last was
//!   when fsynced, and inodes no durable entry reaches vanish.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

/// The root directory's inode (FUSE's fixed root number).
pub const ROOT: u64 = 1;
/// Largest file the volume holds, so a runaway writer fails with EFBIG instead of eating
/// the machine's memory (the volume lives in RAM twice over).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// An errno, as the FUSE layer returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub const ENOENT: Errno = Errno(2);
pub const EEXIST: Errno = Errno(17);
pub const ENOTDIR: Errno = Errno(20);
pub const EISDIR: Errno = Errno(21);
pub const EINVAL: Errno = Errno(22);
pub const EFBIG: Errno = Errno(27);
pub const ENOTEMPTY: Errno = Errno(39);
pub const EOPNOTSUPP: Errno = Errno(95);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What `stat` shows of an inode.
#[derive(Clone, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

#[derive(Clone, Debug, Default)]
struct FileData {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// The byte span written (or resized) since the last fsync, so an fsync copies only
    /// that: a journal appended to and fsynced a thousand times costs its appends, not its
    /// length each time.
    dirty: Option<(u64, u64)>,
}

impl FileData {
    fn touch(&mut self, from: u64, to: u64) {
        self.dirty = Some(match self.dirty {
            Some((a, b)) => (a.min(from), b.max(to)),
            None => (from, to),
        });
    }

    fn sync(&mut self) {
        if let Some((from, to)) = self.dirty.take() {
            let len = self.data.len();
            self.durable.resize(len, 0);
            let (from, to) = ((from as usize).min(len), (to as usize).min(len));
            self.durable[from..to].copy_from_slice(&self.data[from..to]);
        }
    }
}

#[derive(Clone, Debug, Default)]
struct DirData {
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Clone, Debug)]
enum Content {
    File(FileData),
    Dir(DirData),
}

#[derive(Clone, Debug)]
struct Inode {
    content: Content,
    perm: u16,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Open handles (files and directories): an unlinked inode stays readable while open.
    open: u32,
}

impl Inode {
    fn new(content: Content, perm: u16) -> Self {
        let now = SystemTime::now();
        Inode {
            content,
            perm,
            mtime: now,
            ctime: now,
            open: 0,
        }
    }
}

/// What a power cut threw away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose contents or size differed from their last fsync.
    pub files_reverted: usize,
    /// Bytes written but never fsynced (the dirty spans of those files).
    pub unsynced_bytes: u64,
    /// Directory entries (names) created, removed or renamed but never made durable.
    pub entries_reverted: usize,
}

/// Counters of what the volume did, for the rig's summary.
#[derive(Clone, Debug, Default)]
pub struct VolumeStats {
    pub fsyncs: u64,
    pub dir_fsyncs: u64,
    pub bytes_written: u64,
    pub cuts: u64,
}

/// The whole volume, in memory.
#[derive(Debug)]
pub struct Volume {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    pub stats: VolumeStats,
}

impl Default for Volume {
    fn default() -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(ROOT, Inode::new(Content::Dir(DirData::default()), 0o755));
        Volume {
            inodes,
            next_ino: ROOT + 1,
            stats: VolumeStats::default(),
        }
    }
}

impl Volume {
    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirData, Errno> {
        match &self.inode(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirData, Errno> {
        match &mut self.inode_mut(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match &mut self.inode_mut(ino)?.content {
            Content::File(f) => Ok(f),
            Content::Dir(_) => Err(EISDIR),
        }
    }

    pub fn attr(&self, ino: u64) -> Result<Attr, Errno> {
        let inode = self.inode(ino)?;
        let (kind, size, nlink) = match &inode.content {
            Content::File(f) => (Kind::File, f.data.len() as u64, 1),
            Content::Dir(d) => (Kind::Dir, d.entries.len() as u64, 2),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            perm: inode.perm,
            nlink,
            mtime: inode.mtime,
            ctime: inode.ctime,
        })
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(ENOENT)?;
        self.attr(ino)
    }

    fn add(
        &mut self,
        parent: u64,
        name: &OsStr,
        content: Content,
        perm: u16,
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(content, perm));
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    fn touch_dir(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            inode.mtime = now;
            inode.ctime = now;
        }
    }

    pub fn mkdir(&mut self, parent: u64, name: &OsStr, perm: u16) -> Result<Attr, Errno> {
        let ino = self.add(parent, name, Content::Dir(DirData::default()), perm)?;
        self.attr(ino)
    }

    /// Creates and opens a file.
    pub fn create(&mut self, parent: u64, name: &OsStr, perm: u16) -> Result<Attr, Errno> {
        let ino = self.add(parent, name, Content::File(FileData::default()), perm)?;
        self.open(ino)?;
        self.attr(ino)
    }

    pub fn open(&mut self, ino: u64) -> Result<(), Errno> {
        self.inode_mut(ino)?.open += 1;
        Ok(())
    }

    pub fn release(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open = inode.open.saturating_sub(1);
        }
        self.collect_garbage();
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<&[u8], Errno> {
        match &self.inode(ino)?.content {
            Content::File(f) => {
                let len = f.data.len() as u64;
                let from = offset.min(len) as usize;
                let to = offset.saturating_add(u64::from(size)).min(len) as usize;
                Ok(&f.data[from..to])
            }
            Content::Dir(_) => Err(EISDIR),
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|end| *end <= MAX_FILE_BYTES)
            .ok_or(EFBIG)?;
        let file = self.file_mut(ino)?;
        if (file.data.len() as u64) < end {
            file.data.resize(end as usize, 0);
        }
        file.data[offset as usize..end as usize].copy_from_slice(bytes);
        file.touch(offset, end);
        self.stats.bytes_written += bytes.len() as u64;
        self.touch_dir(ino);
        u32::try_from(bytes.len()).map_err(|_| EINVAL)
    }

    /// Sets a file's size (truncate or extend with zeros).
    pub fn set_size(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        if size > MAX_FILE_BYTES {
            return Err(EFBIG);
        }
        let file = self.file_mut(ino)?;
        let old = file.data.len() as u64;
        file.data.resize(size as usize, 0);
        file.touch(old.min(size), old.max(size));
        self.touch_dir(ino);
        Ok(())
    }

    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Result<(), Errno> {
        self.inode_mut(ino)?.perm = perm;
        Ok(())
    }

    /// `fallocate` mode 0 (allocate, extending the size); other modes are not supported.
    pub fn allocate(&mut self, ino: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        if mode != 0 {
            return Err(EOPNOTSUPP);
        }
        let end = offset.checked_add(length).ok_or(EFBIG)?;
        let current = self.attr(ino)?.size;
        if end > current {
            self.set_size(ino, end)?;
        }
        Ok(())
    }

    /// fsync/fdatasync of a file, or of a directory (its entries).
    pub fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.inode_mut(ino)?.content {
            Content::File(f) => {
                f.sync();
                self.stats.fsyncs += 1;
            }
            Content::Dir(d) => {
                d.durable = d.entries.clone();
                self.stats.dir_fsyncs += 1;
                self.collect_garbage();
            }
        }
        Ok(())
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(ENOENT)?;
        if matches!(self.inode(ino)?.content, Content::Dir(_)) {
            return Err(EISDIR);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.touch_dir(parent);
        self.collect_garbage();
        Ok(())
    }

    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(ENOENT)?;
        if !self.dir(ino)?.entries.is_empty() {
            return Err(ENOTEMPTY);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.touch_dir(parent);
        self.collect_garbage();
        Ok(())
    }

    /// rename(2), replacing the target (`no_replace`: RENAME_NOREPLACE).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(ENOENT)?;
        if let Some(&target) = self.dir(new_parent)?.entries.get(new_name) {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(EEXIST);
            }
            match (&self.inode(ino)?.content, &self.inode(target)?.content) {
                (Content::Dir(_), Content::File(_)) => return Err(ENOTDIR),
                (Content::File(_), Content::Dir(_)) => return Err(EISDIR),
                (Content::Dir(_), Content::Dir(t)) if !t.entries.is_empty() => {
                    return Err(ENOTEMPTY)
                }
                _ => {}
            }
        }
        if matches!(self.inode(ino)?.content, Content::Dir(_)) && self.is_within(new_parent, ino) {
            return Err(EINVAL);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        self.collect_garbage();
        Ok(())
    }

    /// Whether directory `dir` is `ancestor` or lies below it (a directory may not be moved
    /// into itself).
    fn is_within(&self, dir: u64, ancestor: u64) -> bool {
        let mut stack = vec![ancestor];
        let mut seen = HashSet::new();
        while let Some(d) = stack.pop() {
            if d == dir {
                return true;
            }
            if seen.insert(d) {
                if let Ok(data) = self.dir(d) {
                    stack.extend(data.entries.values().copied());
                }
            }
        }
        false
    }

    /// A directory's entries (without `.` and `..`), in name order.
    pub fn entries(&self, ino: u64) -> Result<Vec<(OsString, u64, Kind)>, Errno> {
        let dir = self.dir(ino)?;
        Ok(dir
            .entries
            .iter()
            .map(|(name, child)| {
                let kind = match self.inodes.get(child).map(|i| &i.content) {
                    Some(Content::Dir(_)) => Kind::Dir,
                    _ => Kind::File,
                };
                (name.clone(), *child, kind)
            })
            .collect())
    }

    /// Bytes held (volatile and durable copies), for statfs.
    pub fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|i| match &i.content {
                Content::File(f) => f.data.len().max(f.durable.len()) as u64,
                Content::Dir(_) => 0,
            })
            .sum()
    }

    /// Power loss: every file and directory goes back to its last fsync, open handles are
    /// gone, and inodes that no durable entry reaches vanish. Call only once nothing uses
    /// the volume (its processes are dead and it is unmounted).
    pub fn cut(&mut self) -> CutReport {
        let mut report = CutReport::default();
        for inode in self.inodes.values_mut() {
            inode.open = 0;
            match &mut inode.content {
                Content::File(f) => {
                    if f.dirty.is_some() || f.data.len() != f.durable.len() {
                        report.files_reverted += 1;
                        report.unsynced_bytes += f.dirty.map_or(0, |(a, b)| b - a);
                    }
                    f.data = f.durable.clone();
                    f.dirty = None;
                }
                Content::Dir(d) => {
                    let changed = d
                        .entries
                        .iter()
                        .filter(|(k, v)| d.durable.get(*k) != Some(v))
                        .count()
                        + d.durable
                            .keys()
                            .filter(|k| !d.entries.contains_key(*k))
                            .count();
                    report.entries_reverted += changed;
                    d.entries = d.durable.clone();
                }
            }
        }
        self.collect_garbage();
        self.stats.cuts += 1;
        report
    }

    /// Drops inodes reachable neither from the root (through volatile or durable entries)
    /// nor through an open handle: an unlinked file still durable in its directory must
    /// come back after a cut, and an open one must stay readable.
    fn collect_garbage(&mut self) {
        let mut live: HashSet<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| i.open > 0)
            .map(|(ino, _)| *ino)
            .collect();
        live.insert(ROOT);
        let mut stack: Vec<u64> = live.iter().copied().collect();
        while let Some(ino) = stack.pop() {
            if let Some(Inode {
                content: Content::Dir(d),
                ..
            }) = self.inodes.get(&ino)
            {
                for child in d.entries.values().chain(d.durable.values()) {
                    if live.insert(*child) {
                        stack.push(*child);
                    }
                }
            }
        }
        self.inodes.retain(|ino, _| live.contains(ino));
    }

    /// Inodes held (for tests: garbage is collected).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn contents(v: &Volume, parent: u64, file: &str) -> Option<Vec<u8>> {
        let ino = v.lookup(parent, name(file)).ok()?.ino;
        Some(v.read(ino, 0, u32::MAX).ok()?.to_vec())
    }

    /// A durable file: created, written, fsynced, its directory fsynced.
    fn durable_file(v: &mut Volume, file: &str, bytes: &[u8]) -> u64 {
        let ino = v.create(ROOT, name(file), 0o644).expect("create").ino;
        v.write(ino, 0, bytes).expect("write");
        v.fsync(ino).expect("fsync");
        v.fsync(ROOT).expect("fsync dir");
        v.release(ino);
        ino
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let mut v = Volume::default();
        let ino = durable_file(&mut v, "journal", b"hello");
        v.open(ino).expect("open");
        v.write(ino, 5, b" world").expect("write");
        assert_eq!(
            contents(&v, ROOT, "journal").as_deref(),
            Some(&b"hello world"[..])
        );
        let report = v.cut();
        assert_eq!(
            contents(&v, ROOT, "journal").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(report.files_reverted, 1);
        assert_eq!(report.unsynced_bytes, 6);

        v.open(ino).expect("open");
        v.write(ino, 5, b"!").expect("write");
        v.fsync(ino).expect("fsync");
        v.cut();
        assert_eq!(
            contents(&v, ROOT, "journal").as_deref(),
            Some(&b"hello!"[..])
        );
    }

    #[test]
    fn a_new_file_needs_its_directory_fsynced() {
        let mut v = Volume::default();
        let ino = v.create(ROOT, name("a"), 0o644).expect("create").ino;
        v.write(ino, 0, b"x").expect("write");
        v.fsync(ino).expect("fsync");
        v.release(ino);
        let report = v.cut();
        assert_eq!(contents(&v, ROOT, "a"), None, "entry was never durable");
        assert_eq!(report.entries_reverted, 1);
        assert_eq!(v.inode_count(), 1, "the orphan inode is collected");

        durable_file(&mut v, "b", b"y");
        v.cut();
        assert_eq!(contents(&v, ROOT, "b").as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn truncation_and_extension_follow_fsync() {
        let mut v = Volume::default();
        let ino = durable_file(&mut v, "f", b"0123456789");
        v.set_size(ino, 4).expect("truncate");
        v.cut();
        assert_eq!(contents(&v, ROOT, "f").as_deref(), Some(&b"0123456789"[..]));
        v.set_size(ino, 4).expect("truncate");
        v.fsync(ino).expect("fsync");
        v.set_size(ino, 6).expect("extend");
        v.fsync(ino).expect("fsync");
        v.cut();
        assert_eq!(contents(&v, ROOT, "f").as_deref(), Some(&b"0123\0\0"[..]));
    }

    #[test]
    fn rename_and_unlink_are_undone_unless_the_directory_is_fsynced() {
        let mut v = Volume::default();
        durable_file(&mut v, "old", b"1");
        v.rename(ROOT, name("old"), ROOT, name("new"), false)
            .expect("rename");
        v.cut();
        assert_eq!(contents(&v, ROOT, "old").as_deref(), Some(&b"1"[..]));
        assert_eq!(contents(&v, ROOT, "new"), None);

        v.rename(ROOT, name("old"), ROOT, name("new"), false)
            .expect("rename");
        v.fsync(ROOT).expect("fsync dir");
        v.cut();
        assert_eq!(contents(&v, ROOT, "new").as_deref(), Some(&b"1"[..]));

        v.unlink(ROOT, name("new")).expect("unlink");
        assert_eq!(contents(&v, ROOT, "new"), None);
        v.cut();
        assert_eq!(
            contents(&v, ROOT, "new").as_deref(),
            Some(&b"1"[..]),
            "unlink undone"
        );
        v.unlink(ROOT, name("new")).expect("unlink");
        v.fsync(ROOT).expect("fsync dir");
        v.cut();
        assert_eq!(contents(&v, ROOT, "new"), None);
        assert_eq!(v.inode_count(), 1);
    }

    #[test]
    fn an_atomic_replace_keeps_old_or_new_never_neither() {
        let mut v = Volume::default();
        durable_file(&mut v, "current", b"old");
        let tmp = v.create(ROOT, name("tmp"), 0o644).expect("create").ino;
        v.write(tmp, 0, b"new").expect("write");
        v.fsync(tmp).expect("fsync");
        v.release(tmp);
        v.rename(ROOT, name("tmp"), ROOT, name("current"), false)
            .expect("rename");
        v.cut();
        assert_eq!(contents(&v, ROOT, "current").as_deref(), Some(&b"old"[..]));
        assert_eq!(contents(&v, ROOT, "tmp"), None);
    }

    #[test]
    fn directories_and_their_entries_are_durable_separately() {
        let mut v = Volume::default();
        let d = v.mkdir(ROOT, name("d"), 0o755).expect("mkdir").ino;
        let f = v.create(d, name("f"), 0o644).expect("create").ino;
        v.write(f, 0, b"z").expect("write");
        v.fsync(f).expect("fsync");
        v.fsync(d).expect("fsync d");
        v.release(f);
        v.cut();
        assert!(
            v.lookup(ROOT, name("d")).is_err(),
            "d itself was never linked durably"
        );
        let d = v.mkdir(ROOT, name("d"), 0o755).expect("mkdir").ino;
        v.fsync(ROOT).expect("fsync root");
        let f = v.create(d, name("f"), 0o644).expect("create").ino;
        v.fsync(f).expect("fsync");
        v.fsync(d).expect("fsync d");
        v.release(f);
        v.cut();
        assert!(v.lookup(d, name("f")).is_ok());
        assert_eq!(v.rmdir(ROOT, name("d")), Err(ENOTEMPTY));
    }

    #[test]
    fn bad_requests_get_errnos_not_panics() {
        let mut v = Volume::default();
        assert_eq!(v.lookup(ROOT, name("none")).err(), Some(ENOENT));
        assert_eq!(v.write(99, 0, b"x"), Err(ENOENT));
        let f = durable_file(&mut v, "f", b"1");
        assert_eq!(v.write(f, u64::MAX, b"x"), Err(EFBIG));
        assert_eq!(v.write(f, MAX_FILE_BYTES, b"x"), Err(EFBIG));
        assert_eq!(v.set_size(f, MAX_FILE_BYTES + 1), Err(EFBIG));
        assert_eq!(v.read(f, u64::MAX, u32::MAX).map(<[u8]>::len), Ok(0));
        assert_eq!(v.create(f, name("x"), 0o644).err(), Some(ENOTDIR));
        assert_eq!(v.create(ROOT, name("f"), 0o644).err(), Some(EEXIST));
        let d = v.mkdir(ROOT, name("d"), 0o755).expect("mkdir").ino;
        assert_eq!(
            v.rename(ROOT, name("d"), d, name("inside"), false),
            Err(EINVAL)
        );
        assert_eq!(
            v.rename(ROOT, name("f"), ROOT, name("d"), false),
            Err(EISDIR)
        );
        assert_eq!(
            v.rename(ROOT, name("f"), ROOT, name("d"), true),
            Err(EEXIST)
        );
        assert_eq!(v.unlink(ROOT, name("d")), Err(EISDIR));
        assert_eq!(v.allocate(f, 0, 10, 1), Err(EOPNOTSUPP));
    }

    #[test]
    fn an_open_unlinked_file_stays_readable_until_released() {
        let mut v = Volume::default();
        let f = v.create(ROOT, name("f"), 0o644).expect("create").ino;
        v.write(f, 0, b"data").expect("write");
        v.unlink(ROOT, name("f")).expect("unlink");
        assert_eq!(v.read(f, 0, 10).map(<[u8]>::to_vec), Ok(b"data".to_vec()));
        v.release(f);
        assert_eq!(v.read(f, 0, 10).err(), Some(ENOENT));
    }
}
