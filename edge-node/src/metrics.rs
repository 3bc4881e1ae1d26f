//! The edge's `/metrics` page: the group member's metrics, then the uplink's.

use std::fmt::Write as _;

use crate::edge::Edge;

/// The whole `/metrics` page.
pub fn render(edge: &Edge) -> String {
    let mut out = String::new();
    shared::group::render_metrics(&edge.group, &mut out);
    let uplink = crate::uplink::snapshot(edge);
    let gauges: [(&str, &str, u64); 8] = [
        (
            "openclaw_uplink_connected",
            "1 while this node ships to the hub over an open session",
            u64::from(uplink.connected),
        ),
        (
            "openclaw_uplink_shipped_through",
            "Highest seq the hub has committed",
            uplink.shipped_through,
        ),
        (
            "openclaw_uplink_backlog_events",
            "Committed events the hub does not have yet",
            uplink.backlog_events,
        ),
        (
            "openclaw_uplink_backlog_bytes",
            "Bytes the outbox holds (unshipped events)",
            uplink.backlog_bytes,
        ),
        (
            "openclaw_uplink_lag_seconds",
            "Age of the oldest event the hub does not have",
            uplink.lag_seconds,
        ),
        (
            "openclaw_uplink_retries_total",
            "Shipping sessions that failed to open or broke",
            uplink.retries,
        ),
        (
            "openclaw_uplink_epoch",
            "This group's ownership epoch of its site",
            uplink.epoch,
        ),
        (
            "openclaw_uplink_fenced",
            "1 once the hub has fenced this group (writes refused)",
            u64::from(uplink.fenced.is_some()),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP openclaw_uplink_bytes_sent_total Shipping bytes sent on the wire\n# TYPE openclaw_uplink_bytes_sent_total counter\nopenclaw_uplink_bytes_sent_total {}",
        uplink.bytes_sent
    );
    out
}
