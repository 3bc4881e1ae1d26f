//! openraft keeps runtime statistics in `base2histogram` histograms, created in `Raft::new`.
//! Upstream base2histogram 0.2.3 builds the lookup tables of all 16 widths on the first
//! `Histogram::new()` — 26.7 MiB resident in every node, two thirds of an idle edge node's RSS.
//! The workspace patches it (shared/vendor/base2histogram) to build one width at a time; this
//! fails if the patch is lost (a `cargo update`, a dropped `[patch.crates-io]`).
//!
//! Its own test binary: the tables are process-wide statics, built once per process.

use base2histogram::Histogram;

/// What creating openraft's histograms may add to the resident set. Width 3 needs a few KiB;
/// the unpatched crate adds ~27 MiB.
const MAX_RSS_GROWTH_BYTES: u64 = 4 << 20;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm: resident pages");
    // Every Linux target we build for (x86_64, aarch64, armv7) uses 4 KiB pages.
    pages * 4096
}

#[test]
fn openraft_histograms_do_not_build_every_width() {
    let before = resident_bytes();
    let mut histograms: Vec<Histogram> = (0..8).map(|_| Histogram::new()).collect();
    for (i, h) in histograms.iter_mut().enumerate() {
        h.record(i as u64 * 1_000);
    }
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < MAX_RSS_GROWTH_BYTES,
        "creating openraft's histograms grew the resident set by {grown} bytes \
         (limit {MAX_RSS_GROWTH_BYTES}): is base2histogram's [patch.crates-io] in effect?"
    );
}
