//! Helpers shared by the fuzz targets (and the seed generator, `examples/gen_corpus.rs`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A scratch directory for this process: `openclaw-fuzz-<pid>` under `$OPENCLAW_FUZZ_SCRATCH`
/// (run.sh sets it and removes it afterwards), else under /dev/shm when there is one (the
/// snapshot and config decoders read files, and a run writes one per input). libFuzzer ends
/// a process without running destructors, so directories of processes that are gone are
/// swept when a new one starts.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = match std::env::var_os("OPENCLAW_FUZZ_SCRATCH") {
            Some(dir) => PathBuf::from(dir),
            None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
            None => std::env::temp_dir(),
        };
        sweep_stale(&base);
        let dir = base.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

const SCRATCH_PREFIX: &str = "openclaw-fuzz-";

/// Removes scratch directories whose process no longer exists.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

/// `body ‖ crc32(body)`: the checksum trailer of snapshot and backup files, so a target can
/// reach the parser behind the checksum with a mutated body.
pub fn with_crc(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out
}

/// A snapshot-file input: the first byte chooses whether the checksum is appended (even) or
/// the rest is the whole file as is (odd: the checksum check itself is fuzzed).
pub fn snapshot_input(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, body) = data.split_first()?;
    Some(if mode & 1 == 0 {
        with_crc(body)
    } else {
        body.to_vec()
    })
}

/// The inverse of [`snapshot_input`] for a real file: the seed that reproduces it.
pub fn snapshot_seed(file: &[u8]) -> Vec<u8> {
    let mut seed = vec![0u8];
    seed.extend_from_slice(&file[..file.len().saturating_sub(4)]);
    seed
}
