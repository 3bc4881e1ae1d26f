//! A memory cgroup the size of a small gateway, for running a node inside it: cgroup v2
//! (`memory.max`, `memory.events`) or v1 (`memory.limit_in_bytes`, `memory.oom_control`),
//! whichever this kernel mounts. Needs root; removed on drop (after its processes exit).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";

/// One cgroup with a hard memory limit (swap included where the kernel accounts it).
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {}", path.display()))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The value of `key` in a `key value` per line file.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

impl MemoryCgroup {
    /// Creates `name` with a limit of `bytes`.
    pub fn create(name: &str, bytes: u64) -> anyhow::Result<MemoryCgroup> {
        let v2 = std::fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|x| x == "memory"))
            .unwrap_or(false);
        let group = if v2 {
            let dir = Path::new(V2_ROOT).join(name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            write(&dir.join("memory.max"), &bytes.to_string())?;
            let _ = write(&dir.join("memory.swap.max"), "0");
            MemoryCgroup { dir, v2 }
        } else if Path::new(V1_MEMORY_ROOT).is_dir() {
            let dir = Path::new(V1_MEMORY_ROOT).join(name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // Swap counted too where the kernel does (memsw); and charges move with a process.
            let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
            let _ = write(&dir.join("memory.move_charge_at_immigrate"), "3");
            MemoryCgroup { dir, v2 }
        } else {
            bail!("no memory cgroup controller mounted (neither v2 nor v1)");
        };
        Ok(group)
    }

    /// Moves a process into the group.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Times the kernel's OOM killer killed a process of this group.
    pub fn oom_kills(&self) -> anyhow::Result<u64> {
        if self.v2 {
            Ok(field(&read(&self.dir.join("memory.events"))?, "oom_kill ").unwrap_or(0))
        } else {
            Ok(field(&read(&self.dir.join("memory.oom_control"))?, "oom_kill ").unwrap_or(0))
        }
    }

    /// The group's peak memory use (page cache included), if the kernel reports it.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        read(&self.dir.join(file)).ok()?.trim().parse().ok()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
