//! A small Jepsen-style rig: concurrent clients on a few keys record every invocation and
//! completion (unknown outcomes as such), and appenders add events to a stream, while a
//! nemesis injects faults (partitions, leader kill -9, pauses, lossy links, membership
//! changes, power cuts of one node or the whole site, uplink cuts, hub kills and hub
//! partitions, and several of them at once); at the end the group is healed, each key's
//! history is checked for linearizability (half the puts are retried with their
//! Idempotency-Key after an unknown outcome, each one operation from its first send), every
//! acknowledged append (keyed ones retried alike) must be in the stream exactly once at its
//! seq on every replica (and the hub), and every replica must hold the same state.

mod nemesis;
mod workload;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::checker::{check, check_stream, Outcome, Verdict};
use crate::LabGroup;
use nemesis::{families, Nemesis};
pub use workload::{appender, Appends, Retry, STREAM};
use workload::{client, Recorded, Rng, APPENDERS, KEYED_APPENDERS};

/// Search budget of the checker per key.
const CHECK_STEPS: u64 = 5_000_000;
/// How long the group may take to converge after the last fault is healed.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct RigConfig {
    pub clients: usize,
    pub keys: usize,
    pub duration: Duration,
    /// Time between fault starts; each fault lasts about half of it.
    pub fault_interval: Duration,
    pub seed: u64,
    /// Go on past `duration` until every fault family this topology supports was injected
    /// at least once (a short CI run must cover them all, however slow the machine).
    pub every_family: bool,
    /// Only these fault families (by name, e.g. `power-cut-site`); empty: all that the
    /// topology supports.
    pub only: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RigReport {
    pub operations: usize,
    pub unknown: usize,
    /// Keyed puts acknowledged by a retry after an unknown outcome (checked as one
    /// operation from the first send).
    pub puts_retried: usize,
    pub faults: Vec<String>,
    pub verdicts: BTreeMap<String, String>,
    pub violations: usize,
    pub converged: bool,
    /// Stream appends acknowledged, and with unknown outcome.
    pub appends_acked: usize,
    pub appends_unknown: usize,
    /// Keyed appends acknowledged by a retry after an unknown outcome (each must still be in
    /// the stream once).
    pub appends_retried: usize,
    /// Acknowledged appends missing from (or at another seq in) some replica's stream.
    pub appends_lost: usize,
    /// Appends present more than once in some replica's stream.
    pub appends_duplicated: usize,
    /// Node power cuts (a site cut counts each node), and the bytes they threw away
    /// unsynced.
    pub power_cuts: usize,
    pub unsynced_bytes_dropped: u64,
    /// Nodes that did not serve again within [`BOOT_TIMEOUT`] of a restart.
    pub boot_failures: usize,
    /// The state digest each group's replicas agreed on at the end.
    pub digests: Vec<String>,
}

impl RigReport {
    /// Whether every check passed.
    pub fn clean(&self) -> bool {
        self.violations == 0
            && self.converged
            && self.appends_lost == 0
            && self.appends_duplicated == 0
            && self.boot_failures == 0
    }
}

/// How long a restarted (or power-cut) node may take to serve again
/// ([`LabGroup::wait_ready`]'s limit).
pub const BOOT_TIMEOUT: Duration = crate::START_TIMEOUT;

/// Waits (up to `timeout`) until every node in `ids` reports the same applied seq; returns it.
pub async fn converged_seq(group: &LabGroup, ids: &[u64], timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(seq) = common_applied_seq(group, ids).await {
            return Some(seq);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(crate::POLL).await;
    }
}

/// Waits until every node in `ids` has applied the same log index, then compares their
/// state digests (`/v1/admin/digest`); says how they differ, if they do.
pub async fn compare_digests(group: &LabGroup, ids: &[u64]) -> Result<String, String> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let mut seen = Vec::new();
        for &id in ids {
            match group.get_json(id, "/v1/admin/digest").await {
                Ok(v) => seen.push((id, v["applied_index"].as_u64(), v["digest"].clone())),
                Err(e) => seen.push((id, None, serde_json::Value::String(e.to_string()))),
            }
        }
        let index = seen[0].1;
        if index.is_some() && seen.iter().all(|(_, i, _)| *i == index) {
            return if seen.iter().all(|(_, _, d)| *d == seen[0].2) {
                Ok(format!("{} at index {}", seen[0].2, index.unwrap_or(0)))
            } else {
                Err(format!("state digests differ at index {index:?}: {seen:?}"))
            };
        }
        if Instant::now() > deadline {
            return Err(format!("nodes never applied the same index: {seen:?}"));
        }
        tokio::time::sleep(crate::POLL).await;
    }
}

/// The applied seq every node reports, if they all report the same.
async fn common_applied_seq(group: &LabGroup, ids: &[u64]) -> Option<u64> {
    let mut seqs = Vec::new();
    for &id in ids {
        seqs.push(group.status(id).await.ok()?["applied_seq"].as_u64()?);
    }
    let first = *seqs.first()?;
    seqs.iter().all(|s| *s == first).then_some(first)
}

/// Timing of a group under the rig: fast elections, short write deadlines, relays on.
pub fn group_options() -> crate::GroupOptions {
    crate::GroupOptions {
        relays: true,
        heartbeat: "50ms",
        election_timeout: "500ms",
        write_timeout: "2s",
        ..crate::GroupOptions::default()
    }
}

/// A hub group for the rig: relays on, so the nemesis can cut the uplink; its addresses apart
/// from the site's.
pub fn hub_options() -> crate::GroupOptions {
    crate::GroupOptions {
        kind: crate::GroupKind::Hub,
        site: crate::lab::HUB_GROUP.into(),
        ip_base: 16 * 6,
        ..group_options()
    }
}

/// Runs the workload and the nemesis on `group` (started with relays), then checks. With a
/// `hub` (started with relays, `group` shipping to it), the nemesis also cuts the uplink,
/// and the hub's copy of the stream must equal every replica's.
pub async fn run(
    group: &mut LabGroup,
    mut hub: Option<&mut LabGroup>,
    config: &RigConfig,
) -> anyhow::Result<RigReport> {
    let ids = group.ids();
    let urls: Vec<String> = ids.iter().map(|id| group.url(*id)).collect();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let recorded: Arc<Recorded> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..config.clients {
        clients.push(tokio::spawn(client(
            c,
            urls.clone(),
            config.keys,
            config.seed.wrapping_add(c as u64 * 7919),
            started,
            stop.clone(),
            recorded.clone(),
        )));
    }
    let appends = Arc::new(Appends::default());
    for a in 0..APPENDERS + KEYED_APPENDERS {
        let retry = if a < APPENDERS {
            Retry::Never
        } else {
            Retry::SameKey
        };
        clients.push(tokio::spawn(appender(
            a,
            urls.clone(),
            config.seed.wrapping_add(1_000_003 + a as u64),
            retry,
            stop.clone(),
            appends.clone(),
        )));
    }
    let mut report = RigReport::default();
    let mut nemesis = Nemesis {
        rng: Rng(config.seed | 1),
        next_joiner: ids.iter().max().copied().unwrap_or(0) + 1,
        half: config.fault_interval / 2,
        ids: ids.clone(),
    };
    let families: Vec<_> = families(group, hub.as_deref())
        .into_iter()
        .filter(|f| config.only.is_empty() || config.only.iter().any(|n| n == f.name()))
        .collect();
    anyhow::ensure!(
        !families.is_empty(),
        "no fault family of this topology is named in {:?}",
        config.only
    );
    // Families rotate (from a seed-chosen start) so even a short run sees each of them;
    // victims are drawn at random.
    let mut turn = config.seed as usize;
    let mut injected = 0;
    while started.elapsed() + config.fault_interval <= config.duration
        || (config.every_family && injected < families.len())
    {
        injected += 1;
        tokio::time::sleep(nemesis.half).await;
        turn += 1;
        let family = families[turn % families.len()];
        let fault = nemesis
            .inject(family, group, hub.as_deref_mut(), &mut report)
            .await?;
        report.faults.push(fault);
    }
    let remaining = config.duration.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    group.heal();

    // Convergence: every replica reaches the same applied seq and the same values.
    let converged_seq = converged_seq(group, &ids, CONVERGE_TIMEOUT).await;
    let converged = converged_seq.is_some_and(|s| s > 0);
    let mut same_values = converged;
    if converged {
        for k in 0..config.keys {
            let mut seen = Vec::new();
            for &id in &ids {
                let url = format!("{}/v1/kv/rig/{k}?consistency=stale", group.url(id));
                let a = crate::request(&group.http, Method::GET, &url, &[], None).await?;
                seen.push((a.status, a.body));
            }
            same_values &= seen.windows(2).all(|w| w[0] == w[1]);
        }
    }
    report.converged = same_values;
    // Whole-state comparison: every keyspace of every replica (idempotency records, outbox,
    // bookkeeping included), at the same applied index.
    let mut digest_groups = vec![("site", &*group, ids.clone())];
    if let Some(hub) = hub.as_deref() {
        digest_groups.push(("hub", hub, hub.ids()));
    }
    for (name, g, members) in digest_groups {
        match compare_digests(g, &members).await {
            Ok(digest) => report.digests.push(format!("{name}: {digest}")),
            Err(why) => {
                report.converged = false;
                report.faults.push(format!("{name}: {why}"));
            }
        }
    }

    // Every acknowledged append exactly once at its seq, on every replica, in seq order.
    let acked = appends.acked();
    report.appends_acked = acked.len();
    report.appends_unknown = appends.unknown();
    report.appends_retried = appends.retried();
    report.puts_retried = recorded.puts_retried.load(Ordering::Relaxed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut copies: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            (
                format!("node {id}"),
                format!("{}/v1/streams/{STREAM}", group.url(*id)),
            )
        })
        .collect();
    if let Some(hub) = hub.as_deref() {
        // The hub holds the site's log once it has shipped through the replicas' last seq.
        let site = group.options.site.clone();
        let last = converged_seq.unwrap_or(0);
        let path = format!("/v1/sites/{site}");
        let shipped = crate::wait_until(CONVERGE_TIMEOUT, "the hub caught up", || async {
            hub.get_json(1, &path)
                .await
                .ok()
                .and_then(|v| v["shipped_through"].as_u64())
                .is_some_and(|s| s >= last)
        })
        .await;
        if shipped.is_err() {
            report.converged = false;
            report
                .faults
                .push(format!("the hub did not reach seq {last}"));
        }
        copies.push((
            "the hub".into(),
            format!("{}/v1/sites/{site}/streams/{STREAM}", hub.url(1)),
        ));
    }
    let mut reference: Option<Vec<(u64, String)>> = None;
    for (name, url) in &copies {
        let stream = crate::hil::stream_at(&http, url).await?;
        match &reference {
            None => reference = Some(stream.clone()),
            Some(r) if *r != stream => {
                report.converged = false;
                let first = r.iter().zip(&stream).position(|(a, b)| a != b);
                let at = |s: &[(u64, String)], i: Option<usize>| {
                    i.and_then(|i| s.get(i..(i + 3).min(s.len())).map(<[_]>::to_vec))
                };
                report.faults.push(format!(
                    "{name}'s stream differs from node {}'s ({} vs {} events; first difference \
                     {:?} vs {:?})",
                    ids[0],
                    stream.len(),
                    r.len(),
                    at(&stream, first),
                    at(r, first),
                ));
            }
            Some(_) => {}
        }
        let verdict = check_stream(&acked, &stream);
        report.appends_lost = report.appends_lost.max(verdict.lost);
        report.appends_duplicated = report.appends_duplicated.max(verdict.duplicated);
        if !verdict.in_order {
            report.appends_duplicated = report.appends_duplicated.max(1);
            report
                .faults
                .push(format!("{name}'s stream is not in seq order"));
        }
    }

    let history = std::mem::take(&mut *recorded.history.lock().unwrap_or_else(|p| p.into_inner()));
    for (key, ops) in history {
        report.operations += ops.len();
        report.unknown += ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
        let verdict = check(&ops, None, CHECK_STEPS);
        if verdict == Verdict::Violation {
            report.violations += 1;
            // Outside the group's (temporary) directory, so it outlives the test.
            let out = std::env::temp_dir().join("openclaw-rig");
            let _ = std::fs::create_dir_all(&out);
            let path = out.join(format!(
                "violation-{}-{}.txt",
                config.seed,
                key.replace('/', "_")
            ));
            let mut sorted = ops.clone();
            sorted.sort_by_key(|o| o.call);
            // The shortest violating prefix (by invocation) points at the anomaly.
            let (mut good, mut bad) = (0, sorted.len());
            while bad - good > 1 {
                let mid = (good + bad) / 2;
                match check(&sorted[..mid], None, CHECK_STEPS) {
                    Verdict::Violation => bad = mid,
                    _ => good = mid,
                }
            }
            let mut text = format!("shortest violating prefix: {bad} operations; its last 40:\n");
            for o in &sorted[bad.saturating_sub(40)..bad] {
                text.push_str(&format!("{o:?}\n"));
            }
            text.push_str("\nwhole history:\n");
            text.extend(sorted.iter().map(|o| format!("{o:?}\n")));
            let _ = std::fs::write(&path, text);
            report
                .faults
                .push(format!("violating history written to {}", path.display()));
        }
        report
            .verdicts
            .insert(key, format!("{verdict:?} ({} ops)", ops.len()));
    }
    Ok(report)
}
