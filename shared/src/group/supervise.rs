//! Background duties of a running node that watch it rather than serve it: the systemd
//! watchdog and the leadership metrics.
//!
//! The watchdog pings only while the node is healthy: its Raft core answers and the async
//! runtime runs this task at all. A stuck event loop or a dead Raft core stops the pings, and
//! systemd restarts the service after `WatchdogSec`.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::metrics::RaftServerMetrics;
use tracing::{info, warn};

use super::GroupNode;
use crate::metrics::GROUP;
use crate::types::{NodeId, TypeConfig};

/// Longest a health probe of the Raft core may take before the node counts as stuck.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The watchdog deadline systemd asked for, per sd_watchdog_enabled(3): `WATCHDOG_USEC`,
/// for this process if `WATCHDOG_PID` names it or is unset.
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (usec > 0).then_some(usec),
    }
}

/// Starts the watchdog task if systemd asked for one.
pub fn start_watchdog(node: Arc<GroupNode>) {
    let Some(usec) = watchdog_usec() else {
        return;
    };
    // Ping at half the deadline, as sd_watchdog_enabled(3) recommends.
    let interval = Duration::from_micros(usec / 2);
    info!(?interval, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            let healthy = tokio::time::timeout(HEALTH_PROBE_TIMEOUT, node.raft.is_initialized())
                .await
                .is_ok_and(|r| r.is_ok());
            if healthy {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            } else {
                warn!("raft core unresponsive; withholding the watchdog ping");
            }
        }
    });
}

/// Counts leader changes and elections (term changes) for `/metrics`, and logs each
/// change of leader.
pub fn start_leadership_metrics(node: Arc<GroupNode>) {
    tokio::spawn(async move {
        // Raft's server metrics change with the vote, the leader, the role or the membership
        // only; its full metrics change with every log entry, and woke this task for each.
        let mut server = node.raft.server_metrics();
        let (mut term, mut leader) = term_and_leader(&server.borrow_watched());
        while server.changed().await.is_ok() {
            let (now_term, now_leader) = term_and_leader(&server.borrow_watched());
            if now_term != term {
                GROUP.elections.inc();
                term = now_term;
            }
            if now_leader != leader {
                GROUP.leader_changes.inc();
                leader = now_leader;
                match leader {
                    Some(id) => info!(leader = id, term, "the group has a new leader"),
                    None => info!(term, "the group has no leader now"),
                }
            }
        }
    });
}

fn term_and_leader(metrics: &RaftServerMetrics<TypeConfig>) -> (u64, Option<NodeId>) {
    (metrics.vote.leader_id.term, metrics.current_leader)
}
