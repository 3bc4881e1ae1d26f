//! A power-cut disk: a FUSE filesystem, mounted under a node's data directory, that holds
//! everything in memory and keeps apart what was fsynced from what was only written. A
//! power cut ([`PowerCutDisk::power_cut`], after the node was killed) unmounts it, throws
//! away every write, create, rename and unlink that no fsync made durable, and mounts the
//! survivors again: the node restarts on what a real disk would have kept, without its
//! page cache. The durability rules are in `volume.rs`.
//!
//! Needs /dev/fuse and root (the mount is made with mount(2) directly, no fusermount).

mod fuse;
pub mod volume;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use fuser::{BackgroundSession, Config, MountOption};

use volume::Volume;
pub use volume::{CutReport, VolumeStats};

/// One mounted power-cut volume.
pub struct PowerCutDisk {
    mountpoint: PathBuf,
    volume: Arc<Mutex<Volume>>,
    session: Option<BackgroundSession>,
}

impl PowerCutDisk {
    /// Whether this machine can mount one (a FUSE device and root).
    pub fn available() -> bool {
        Path::new("/dev/fuse").exists()
            && std::fs::metadata("/proc/self")
                .map(|m| m.uid() == 0)
                .unwrap_or(false)
    }

    /// For tests: whether to run power cuts here. Where they cannot run they are skipped,
    /// unless `OPENCLAW_REQUIRE_POWER_CUTS` is set (CI's test command sets it), which turns
    /// a missing /dev/fuse into a failure instead of a silent skip.
    pub fn available_for_tests() -> bool {
        let available = Self::available();
        assert!(
            available || std::env::var_os("OPENCLAW_REQUIRE_POWER_CUTS").is_none(),
            "OPENCLAW_REQUIRE_POWER_CUTS is set but power-cut disks cannot be mounted here \
             (need /dev/fuse and root)"
        );
        available
    }

    /// Mounts a new, empty volume at `mountpoint` (created if missing, must be empty).
    pub fn mount(mountpoint: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(mountpoint)
            .with_context(|| format!("creating {}", mountpoint.display()))?;
        let mut disk = PowerCutDisk {
            mountpoint: mountpoint.to_owned(),
            volume: Arc::default(),
            session: None,
        };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&mut self) -> anyhow::Result<()> {
        let owner = std::fs::metadata(&self.mountpoint)?;
        let fs = fuse::PowerCutFs {
            volume: self.volume.clone(),
            uid: owner.uid(),
            gid: owner.gid(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("openclaw-powercut".into()),
            MountOption::Subtype("openclaw-powercut".into()),
            MountOption::RW,
        ];
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config).with_context(|| {
            format!("mounting a power-cut disk at {}", self.mountpoint.display())
        })?;
        self.session = Some(session);
        Ok(())
    }

    fn detach(&mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            // The kernel ends the session's read of /dev/fuse with ENODEV after an
            // unmount, but with ECONNABORTED when the unmount tore the connection down
            // while a request was being handed over (fs/fuse/dev.c, fuse_dev_do_read;
            // seen once in CI under load). Either way the mount is gone and the volume,
            // which lives in this process, is whole: the cut can go on.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => Ok(()),
            result => result.with_context(|| format!("unmounting {}", self.mountpoint.display())),
        }
    }

    /// Power loss and reboot of the disk: unmount (the kernel drops its page cache with the
    /// mount), lose everything not fsynced, mount again. The process using the disk must be
    /// dead already: a cut under a live writer would race its in-flight requests.
    pub fn power_cut(&mut self) -> anyhow::Result<CutReport> {
        self.detach()?;
        let report = self.volume.lock().unwrap_or_else(|p| p.into_inner()).cut();
        self.attach()?;
        Ok(report)
    }

    pub fn stats(&self) -> VolumeStats {
        self.volume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone()
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for PowerCutDisk {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("power-cut disk: {e:#}");
        }
    }
}
