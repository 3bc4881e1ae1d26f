//! Edge-node metrics, rendered with the shared ones and Raft's own state.

use shared::metrics::{Counter, Histogram, SHARED};

use crate::node::Node;

pub struct EdgeMetrics {
    pub write_latency: Histogram,
    pub read_barrier_latency: Histogram,
    pub forwarded_writes: Counter,
    pub http_requests: Counter,
    pub elections: Counter,
    pub leader_changes: Counter,
    pub commits: Counter,
}

pub static EDGE: EdgeMetrics = EdgeMetrics {
    write_latency: Histogram::new(
        "openclaw_write_seconds",
        "Client write latency (accepted to answered)",
    ),
    read_barrier_latency: Histogram::new(
        "openclaw_read_barrier_seconds",
        "Time to confirm a linearizable read (read index)",
    ),
    forwarded_writes: Counter::new(
        "openclaw_forwarded_writes_total",
        "Writes forwarded to the leader",
    ),
    http_requests: Counter::new("openclaw_http_requests_total", "Client API requests"),
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
        "Client writes this node proposed or forwarded that were committed",
    ),
};

/// The whole `/metrics` page.
pub fn render(node: &Node) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    SHARED.render(&mut out);
    EDGE.write_latency.render(&mut out);
    EDGE.read_barrier_latency.render(&mut out);
    EDGE.forwarded_writes.render(&mut out);
    EDGE.http_requests.render(&mut out);
    EDGE.elections.render(&mut out);
    EDGE.leader_changes.render(&mut out);
    EDGE.commits.render(&mut out);
    let m = node.raft_metrics();
    let is_leader = u8::from(m.current_leader == Some(node.id));
    let gauges: [(&str, &str, u64); 6] = [
        ("openclaw_raft_term", "Current Raft term", m.current_term),
        (
            "openclaw_raft_is_leader",
            "1 if this node leads its group",
            u64::from(is_leader),
        ),
        (
            "openclaw_raft_leader_id",
            "Leader's node id (0: none known)",
            m.current_leader.unwrap_or(0),
        ),
        (
            "openclaw_raft_applied_index",
            "Last applied log index",
            m.last_applied.as_ref().map_or(0, |l| l.index),
        ),
        (
            "openclaw_applied_seq",
            "Seq of the last applied event",
            node.reader.applied_seq(),
        ),
        (
            "openclaw_disk_bytes",
            "Bytes the store occupies on disk",
            node.store.disk_bytes(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out
}
