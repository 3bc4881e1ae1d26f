//! A small Prometheus text-format registry: counters, gauges and latency histograms on
//! atomics, so the hot path records without locks or allocation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}",
            self.name,
            self.help,
            self.get()
        );
    }
}

#[derive(Debug)]
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Gauge {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }
    pub fn set(&self, v: u64) {
        self.value.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
    pub fn sub(&self, n: u64) {
        self.value.fetch_sub(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
    /// Raises the gauge to `v` if it is lower (a high-water mark).
    pub fn raise_to(&self, v: u64) {
        self.value.fetch_max(v, Ordering::Relaxed);
    }
    /// Counts one for as long as the returned guard lives (a drop on any path undoes it).
    pub fn hold(&'static self) -> GaugeHold {
        self.add(1);
        GaugeHold(self)
    }
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}",
            self.name,
            self.help,
            self.get()
        );
    }
}

/// See [`Gauge::hold`].
#[must_use = "the gauge counts only while this lives"]
pub struct GaugeHold(&'static Gauge);

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.sub(1);
    }
}

/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Histogram {
            name,
            help,
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_US.len()],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {0} {1}\n# TYPE {0} histogram",
            self.name, self.help
        );
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{{le=\"{}\"}} {cumulative}",
                self.name,
                *bound as f64 / 1e6
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{}_bucket{{le=\"+Inf\"}} {count}", self.name);
        let _ = writeln!(
            out,
            "{}_sum {}\n{}_count {count}",
            self.name,
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.name
        );
    }
}

/// Metrics of the shared layers (transport and storage), one set per process.
#[derive(Debug)]
pub struct SharedMetrics {
    pub peer_rejected: Counter,
    pub bad_frames: Counter,
    pub fsyncs: Counter,
    pub fsync_latency: Histogram,
    pub snapshots_built: Counter,
    pub snapshots_installed: Counter,
    pub runtime_workers: Gauge,
}

pub static SHARED: SharedMetrics = SharedMetrics {
    peer_rejected: Counter::new(
        "openclaw_peer_rejected_total",
        "QUIC peers refused: failed handshake (unknown CA) or a certificate for another site",
    ),
    bad_frames: Counter::new(
        "openclaw_bad_frames_total",
        "Connections closed for an oversize, truncated or undecodable frame",
    ),
    fsyncs: Counter::new(
        "openclaw_fsyncs_total",
        "Journal fsyncs (one per group commit)",
    ),
    fsync_latency: Histogram::new("openclaw_fsync_seconds", "Journal fsync latency"),
    snapshots_built: Counter::new("openclaw_snapshots_built_total", "Snapshots built locally"),
    snapshots_installed: Counter::new(
        "openclaw_snapshots_installed_total",
        "Snapshots received from a leader and installed",
    ),
    runtime_workers: Gauge::new(
        "openclaw_runtime_workers",
        "Worker threads of the async runtime (node.runtime_threads; 0 there: one per CPU core)",
    ),
};

/// Metrics of a Raft group member (`group::GroupNode`), edge or hub.
pub struct GroupMetrics {
    pub write_latency: Histogram,
    pub read_barrier_latency: Histogram,
    pub read_index_rounds: Counter,
    pub forwarded_writes: Counter,
    pub forwarded_batches: Counter,
    pub forward_latency: Histogram,
    pub proposal_latency: Histogram,
    pub batch_entries: Counter,
    pub batched_writes: Counter,
    pub batched_keyed_writes: Counter,
    pub elections: Counter,
    pub leader_changes: Counter,
    pub commits: Counter,
}

pub static GROUP: GroupMetrics = GroupMetrics {
    write_latency: Histogram::new(
        "openclaw_write_seconds",
        "Client write latency (accepted to answered)",
    ),
    read_barrier_latency: Histogram::new(
        "openclaw_read_barrier_seconds",
        "Time to confirm a linearizable read (read index)",
    ),
    read_index_rounds: Counter::new(
        "openclaw_read_index_rounds_total",
        "Read-index rounds this node ran (each serves every linearizable read waiting then)",
    ),
    forwarded_writes: Counter::new(
        "openclaw_forwarded_writes_total",
        "Writes forwarded to the leader",
    ),
    forwarded_batches: Counter::new(
        "openclaw_forwarded_batches_total",
        "RPCs that carried forwarded writes to the leader (several writes each under load)",
    ),
    forward_latency: Histogram::new(
        "openclaw_forward_seconds",
        "Forwarded batches, from sending them to the leader to its answer",
    ),
    proposal_latency: Histogram::new(
        "openclaw_proposal_seconds",
        "The leader's client-write entries (a batch or a lone write), from proposing to applied: \
         the commit cycle writes arriving meanwhile wait out",
    ),
    batch_entries: Counter::new(
        "openclaw_batch_entries_total",
        "Log entries this leader proposed that carry several clients' writes (Op::Batch, Op::ClientBatch)",
    ),
    batched_writes: Counter::new(
        "openclaw_batched_writes_total",
        "Client writes this leader proposed inside batch entries",
    ),
    batched_keyed_writes: Counter::new(
        "openclaw_batched_keyed_writes_total",
        "Of those, writes that carried an Idempotency-Key",
    ),
    elections: Counter::new(
        "openclaw_raft_elections_total",
        "Term changes seen by this node",
    ),
    leader_changes: Counter::new(
        "openclaw_raft_leader_changes_total",
        "Changes of the leader this node knows (including to none)",
    ),
    commits: Counter::new(
        "openclaw_writes_committed_total",
        "Writes this node proposed or forwarded that were committed",
    ),
};

impl SharedMetrics {
    pub fn render(&self, out: &mut String) {
        self.peer_rejected.render(out);
        self.bad_frames.render(out);
        self.fsyncs.render(out);
        self.fsync_latency.render(out);
        self.snapshots_built.render(out);
        self.snapshots_installed.render(out);
        self.runtime_workers.render(out);
        GROUP.write_latency.render(out);
        GROUP.read_barrier_latency.render(out);
        GROUP.read_index_rounds.render(out);
        GROUP.forwarded_writes.render(out);
        GROUP.forwarded_batches.render(out);
        GROUP.forward_latency.render(out);
        GROUP.proposal_latency.render(out);
        GROUP.batch_entries.render(out);
        GROUP.batched_writes.render(out);
        GROUP.batched_keyed_writes.render(out);
        GROUP.elections.render(out);
        GROUP.leader_changes.render(out);
        GROUP.commits.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::new("x_seconds", "x");
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        let mut out = String::new();
        h.render(&mut out);
        assert!(out.contains("x_seconds_bucket{le=\"0.0001\"} 1"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 2"), "{out}");
        assert!(out.contains("x_seconds_count 2"), "{out}");
    }
}
