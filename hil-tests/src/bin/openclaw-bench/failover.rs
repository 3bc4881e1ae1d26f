//! Leader kill -9 → first acknowledged write: how long writes stop when the leader dies
//! without warning. Runs its own 3-node group (in-process lab harness, so the killed node
//! can be restarted between kills) and writes at both survivors from the instant of the
//! kill; the first 200 ends the outage.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use openclaw_hil_tests::{GroupOptions, LabGroup};

use super::{Figures, Table};

/// Longest an outage may last before the measurement gives up.
const OUTAGE_LIMIT: Duration = Duration::from_secs(30);

/// Election timing a failover row is measured with.
pub struct Timing {
    pub label: &'static str,
    pub heartbeat: &'static str,
    pub election_timeout: &'static str,
    pub election_timeout_max: &'static str,
}

/// The shipped defaults (shared/src/config.rs `defaults`, configs/edge.toml), and the defaults
/// before 2026-12-01 (etcd's heartbeat and election timeout) for comparison.
pub const TIMINGS: [Timing; 2] = [
    Timing {
        label: "defaults: heartbeat 50ms, election 150-300ms",
        heartbeat: "50ms",
        election_timeout: "150ms",
        election_timeout_max: "300ms",
    },
    Timing {
        label: "heartbeat 100ms, election 1-2s",
        heartbeat: "100ms",
        election_timeout: "1s",
        election_timeout_max: "2s",
    },
];

/// Kills the leader `kills` times and adds p50/p99/max of the write outage to `table`.
pub async fn measure(
    dir: &Path,
    kills: usize,
    timing: &Timing,
    table: &mut Table,
) -> anyhow::Result<()> {
    let options = GroupOptions {
        heartbeat: timing.heartbeat,
        election_timeout: timing.election_timeout,
        election_timeout_max: Some(timing.election_timeout_max),
        ..GroupOptions::default()
    };
    let mut group = LabGroup::start_ready(dir, 3, options).await?;
    let ids = group.ids();
    let mut outages = Vec::with_capacity(kills);
    for kill in 0..kills {
        let leader = group.leader(&ids).await?;
        let survivors: Vec<String> = ids
            .iter()
            .filter(|id| **id != leader)
            .map(|id| group.url(*id))
            .collect();
        let killed_at = Instant::now();
        group.kill9(leader)?;
        first_write(&group.http, &survivors, kill, killed_at).await?;
        outages.push(killed_at.elapsed());
        group.restart(leader)?;
        group.wait_ready(&[leader]).await?;
    }
    let outages = Figures {
        latencies_us: outages.iter().map(|d| d.as_micros() as u64).collect(),
        ..Figures::default()
    };
    if !outages.latencies_us.is_empty() {
        let label = format!(
            "writes resume after leader kill -9 ({}, {kills} kills)",
            timing.label
        );
        table.insert(format!("{label} p50 ms"), outages.percentile_ms(50.0));
        table.insert(format!("{label} p99 ms"), outages.percentile_ms(99.0));
        table.insert(format!("{label} max ms"), outages.percentile_ms(100.0));
    }
    Ok(())
}

/// Writes at every survivor until one write is acknowledged.
async fn first_write(
    http: &reqwest::Client,
    survivors: &[String],
    kill: usize,
    killed_at: Instant,
) -> anyhow::Result<()> {
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let writes = survivors.iter().map(|url| {
            let request = http
                .put(format!("{url}/v1/kv/failover-{kill}"))
                .body(format!("attempt {attempt}"))
                .send();
            Box::pin(async move {
                match request.await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(anyhow::anyhow!("{}", r.status())),
                    Err(e) => Err(e.into()),
                }
            })
        });
        if futures::future::select_ok(writes).await.is_ok() {
            return Ok(());
        }
        if killed_at.elapsed() > OUTAGE_LIMIT {
            bail!("no write acknowledged within {OUTAGE_LIMIT:?} of the leader's kill");
        }
    }
}
