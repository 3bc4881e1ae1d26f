//! A small Jepsen-style rig: concurrent clients on a few keys record every invocation and
//! completion (unknown outcomes as such), and appenders add events to a stream, while a
//! nemesis injects faults (partitions, leader kill -9, pauses, lossy links, membership
//! changes, power cuts of one node or the whole site, uplink cuts, hub kills and hub
//! partitions, and several of them at once); at the end the group is healed, each key's
//! history is checked for linearizability, every acknowledged append must be in the stream
//! exactly once at its seq on every replica (and the hub), and every replica must hold the
//! same state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;

use crate::checker::{check, check_stream, Op, Operation, Outcome, Verdict};
use crate::relay::Faults;
use crate::LabGroup;

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
}

#[derive(Debug, Default)]
pub struct RigReport {
    pub operations: usize,
    pub unknown: usize,
    pub faults: Vec<String>,
    pub verdicts: BTreeMap<String, String>,
    pub violations: usize,
    pub converged: bool,
    /// Stream appends acknowledged, and with unknown outcome.
    pub appends_acked: usize,
    pub appends_unknown: usize,
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

/// The stream the appenders write.
pub const STREAM: &str = "rig-events";
/// Concurrent appenders.
const APPENDERS: usize = 2;

/// Acknowledged appends (payload → seq) and the count of unknown outcomes.
#[derive(Default)]
pub struct Appends {
    acked: Mutex<BTreeMap<String, u64>>,
    unknown: AtomicUsize,
}

impl Appends {
    pub fn acked(&self) -> BTreeMap<String, u64> {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn unknown(&self) -> usize {
        self.unknown.load(Ordering::Relaxed)
    }
}

/// One appender to [`STREAM`]: unique payloads (`a{id}-{n}`) at random nodes, each sent
/// once without an idempotency key (a retry could legitimately apply twice); a failure is
/// an unknown outcome. Runs until `stop`.
pub async fn appender(
    id: usize,
    urls: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    out: Arc<Appends>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut rng = Rng(seed | 1);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let payload = format!("a{id}-{n}");
        let url = format!(
            "{}/v1/streams/{STREAM}",
            urls[rng.next(urls.len() as u64) as usize]
        );
        let answer = crate::request(
            &http,
            Method::POST,
            &url,
            &[],
            Some(payload.clone().into_bytes()),
        )
        .await;
        match answer {
            Ok(a) if a.status == 200 => match a.json()["seq"].as_u64() {
                Some(seq) => {
                    out.acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(payload, seq);
                }
                None => {
                    out.unknown.fetch_add(1, Ordering::Relaxed);
                }
            },
            // Refused before it was sent, or answered with a definite refusal: not applied.
            Err(e)
                if e.downcast_ref::<reqwest::Error>()
                    .is_some_and(|e| e.is_connect()) => {}
            Ok(a) if a.status == 400 || a.status == 404 || a.status == 413 => {}
            _ => {
                out.unknown.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

type History = Arc<Mutex<BTreeMap<String, Vec<Operation>>>>;

/// One client's loop: random operations on random keys at random nodes.
async fn client(
    id: usize,
    urls: Vec<String>,
    keys: usize,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    history: History,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut rng = Rng(seed | 1);
    let mut counter = 0u64;
    let now = || started.elapsed().as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        counter += 1;
        let key = format!("rig/{}", rng.next(keys as u64));
        let url = format!("{}/v1/kv/{key}", urls[rng.next(urls.len() as u64) as usize]);
        let value = format!("c{id}-{counter}");
        let kind = rng.next(10);
        let mut call = now();
        let (op, outcome) = match kind {
            0..=3 => {
                let r = http.put(&url).body(value.clone()).send().await;
                (
                    Op::Put { value },
                    write_outcome(r, |_| Outcome::Written).await,
                )
            }
            4 => {
                let r = http.delete(&url).send().await;
                (
                    Op::Delete,
                    write_outcome(r, |s| Outcome::Flag(s == 200)).await,
                )
            }
            5 | 6 => {
                // Read, then compare-and-set on what was read (values are unique, so the
                // revision read names the value read).
                let Ok(read) = http.get(&url).send().await else {
                    continue;
                };
                let status = read.status().as_u16();
                let revision = read
                    .headers()
                    .get("x-revision")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let Ok(body) = read.text().await else {
                    continue;
                };
                let (expected, if_match) = match (status, revision) {
                    (200, Some(rev)) => (Some(body), rev),
                    (404, _) => (None, "0".to_string()),
                    _ => continue,
                };
                call = now(); // the CAS itself starts here, after its read
                let r = http
                    .put(&url)
                    .header("If-Match", if_match)
                    .body(value.clone())
                    .send()
                    .await;
                let outcome = write_outcome(r, |s| Outcome::Flag(s == 200)).await;
                (Op::Cas { expected, value }, outcome)
            }
            _ => {
                let r = http.get(&url).send().await;
                let outcome = match r {
                    Ok(resp) if resp.status() == 200 => match resp.text().await {
                        Ok(text) => Outcome::Read(Some(text)),
                        Err(_) => continue,
                    },
                    Ok(resp) if resp.status() == 404 => Outcome::Read(None),
                    _ => continue, // a failed read says nothing
                };
                (Op::Get, Some(outcome))
            }
        };
        if let Some(outcome) = outcome {
            let ret = now();
            record(
                &history,
                key,
                Operation {
                    op,
                    outcome,
                    call,
                    ret,
                },
            );
        }
    }
}

/// Maps a write's HTTP result to an outcome; `None` when the request provably never left.
async fn write_outcome(
    result: Result<reqwest::Response, reqwest::Error>,
    ok: impl Fn(u16) -> Outcome,
) -> Option<Outcome> {
    match result {
        Err(e) if e.is_connect() => None,
        Err(_) => Some(Outcome::Unknown),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            match status {
                200 | 404 | 412 => Some(ok(status)),
                _ => Some(Outcome::Unknown), // 503: may or may not have been applied
            }
        }
    }
}

fn record(history: &History, key: String, operation: Operation) {
    history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .push(operation);
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status();
}

/// Adds node `joiner` to the group (learner, caught up, promoted to voter) while writes go
/// on, keeps it for `hold`, then removes it and stops it. Each step is retried until it
/// succeeds or `MEMBERSHIP_STEP` passes.
async fn membership_change(
    group: &mut LabGroup,
    joiner: u64,
    hold: Duration,
) -> anyhow::Result<String> {
    group.spawn_joiner(joiner).await?;
    let node = group.node(joiner)?;
    let body = serde_json::json!({
        "id": joiner,
        "raft": node.raft_advertise.to_string(),
        "http": node.http,
    })
    .to_string();
    let base = group.url(1);
    let steps = [
        (Method::POST, format!("{base}/v1/members"), Some(body)),
        (
            Method::POST,
            format!("{base}/v1/members/{joiner}/promote"),
            None,
        ),
    ];
    for (method, url, body) in steps {
        membership_step(group, method, &url, body).await?;
    }
    tokio::time::sleep(hold).await;
    membership_step(
        group,
        Method::DELETE,
        &format!("{base}/v1/members/{joiner}"),
        None,
    )
    .await?;
    group.stop(joiner).await?;
    Ok(format!(
        "add node {joiner} (learner, then voter), remove it"
    ))
}

/// Longest one membership step may be retried (elections in between are fine).
const MEMBERSHIP_STEP: Duration = Duration::from_secs(30);

async fn membership_step(
    group: &LabGroup,
    method: Method,
    url: &str,
    body: Option<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + MEMBERSHIP_STEP;
    loop {
        let answer = crate::request(
            &group.http,
            method.clone(),
            url,
            &[],
            body.clone().map(String::into_bytes),
        )
        .await;
        match answer {
            Ok(a) if a.status == 200 => return Ok(()),
            other if Instant::now() > deadline => {
                let why = match other {
                    Ok(a) => format!("{} {}", a.status, a.text()),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("{method} {url}: {why}");
            }
            _ => tokio::time::sleep(crate::POLL).await,
        }
    }
}

/// A kind of fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// A random minority (one node of three; one or two of five) cut from the rest.
    Partition,
    /// Two nodes cut from each other while a third still reaches both (a partial partition:
    /// the bridge must not let the two sides depose each other forever).
    Bridge,
    /// An asymmetric partition: one node's datagrams to the others are dropped while theirs
    /// reach it (either the leader, deaf to acks but heard, or a follower, heard by nobody).
    OneWay,
    LeaderKill,
    Pause,
    LossyLinks,
    Membership,
    /// Several at once: lossy links, a node partitioned away and the leader killed (power
    /// cut when the nodes run on power-cut disks).
    Overlap,
    PowerCutNode,
    PowerCutSite,
    UplinkCut,
    HubLeaderKill,
    HubPartition,
    /// Every hub node loses power at once: what the hub acknowledged to the shipper (which
    /// then compacted its outbox) must survive.
    HubPowerCut,
}

/// The families this topology supports, in rotation order.
fn families(group: &LabGroup, hub: Option<&LabGroup>) -> Vec<Family> {
    use Family::*;
    let mut out = vec![
        Partition, LeaderKill, Pause, LossyLinks, Membership, Bridge, OneWay,
    ];
    if group.has_power_cut_disks() {
        out.extend([PowerCutNode, PowerCutSite]);
    }
    out.push(Overlap);
    if let Some(hub) = hub {
        out.extend([UplinkCut, HubLeaderKill]);
        if hub.ids().len() >= 3 {
            out.push(HubPartition);
        }
        if hub.has_power_cut_disks() {
            out.push(HubPowerCut);
        }
    }
    out
}

/// The links every lossy-link fault sets.
fn lossy() -> Faults {
    Faults {
        loss: 0.1,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(20),
        duplicate: 0.05,
        bandwidth_bytes_per_sec: 0,
    }
}

struct Nemesis {
    rng: Rng,
    next_joiner: u64,
    /// How long each fault lasts.
    half: Duration,
    /// The group's original members.
    ids: Vec<u64>,
}

impl Nemesis {
    fn victim(&mut self) -> u64 {
        self.ids[self.rng.next(self.ids.len() as u64) as usize]
    }

    /// Injects one fault of `family`, lets it last, heals it; returns what it did.
    async fn inject(
        &mut self,
        family: Family,
        group: &mut LabGroup,
        hub: Option<&mut LabGroup>,
        report: &mut RigReport,
    ) -> anyhow::Result<String> {
        let ids = self.ids.clone();
        let half = self.half;
        let victim = self.victim();
        let others = |of: u64| -> Vec<u64> { ids.iter().copied().filter(|i| *i != of).collect() };
        Ok(match family {
            Family::Partition => {
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, self.rng.next(i as u64 + 1) as usize);
                }
                let size = 1 + self.rng.next((ids.len() as u64 / 2).max(1)) as usize;
                let (minority, majority) = shuffled.split_at(size.min(ids.len() - 1));
                group.partition(minority, majority)?;
                tokio::time::sleep(half).await;
                group.heal();
                format!("partition nodes {minority:?} from {majority:?}")
            }
            Family::Bridge => {
                let bridge = victim;
                let sides = others(bridge);
                let (a, b) = (sides[0], sides[sides.len() - 1]);
                group.partition(&[a], &[b])?;
                tokio::time::sleep(half).await;
                group.heal();
                format!("bridge: nodes {a} and {b} cut from each other, node {bridge} reaches both")
            }
            Family::OneWay => {
                let (who, muted) = if self.rng.next(2) == 0 {
                    let leader = group.leader(&ids).await.unwrap_or(victim);
                    (format!("leader {leader}"), leader)
                } else {
                    (format!("node {victim}"), victim)
                };
                let rest = others(muted);
                group.cut_one_way(&rest, &[muted])?;
                tokio::time::sleep(half).await;
                group.heal();
                format!("one-way cut: {who} hears nobody, {rest:?} still hear it")
            }
            Family::LeaderKill => {
                let leader = group.leader(&ids).await.unwrap_or(victim);
                group.kill9(leader)?;
                tokio::time::sleep(half).await;
                group.restart(leader)?;
                booted(group, &[leader], report).await;
                format!("kill -9 leader {leader}, restart")
            }
            Family::Pause => {
                let pid = group.node(victim)?.pid().context("no pid")?;
                signal(pid, "-STOP");
                tokio::time::sleep(half).await;
                signal(pid, "-CONT");
                format!("pause node {victim}")
            }
            Family::LossyLinks => {
                group.set_faults(lossy())?;
                tokio::time::sleep(half).await;
                group.heal();
                "10% loss, 20±20 ms, 5% duplication on every link".to_string()
            }
            Family::Membership => {
                let joiner = self.next_joiner;
                self.next_joiner += 1;
                membership_change(group, joiner, half).await?
            }
            Family::PowerCutNode => {
                let lost = power_cut(group, &[victim], report)?;
                tokio::time::sleep(half).await;
                group.restart(victim)?;
                booted(group, &[victim], report).await;
                format!("power cut node {victim} ({lost}), restart")
            }
            Family::PowerCutSite => {
                let lost = power_cut(group, &ids, report)?;
                tokio::time::sleep(half).await;
                for &id in &ids {
                    group.restart(id)?;
                }
                booted(group, &ids, report).await;
                format!("power cut the whole site ({lost}), restart every node")
            }
            Family::Overlap => {
                let leader = group.leader(&ids).await.unwrap_or(victim);
                let cut_off = others(leader)[self.rng.next(ids.len() as u64 - 1) as usize];
                group.set_faults(lossy())?;
                group.partition(&[cut_off], &others(cut_off))?;
                let how = if group.has_power_cut_disks() {
                    let lost = power_cut(group, &[leader], report)?;
                    format!("power cut leader {leader} ({lost})")
                } else {
                    group.kill9(leader)?;
                    format!("kill -9 leader {leader}")
                };
                tokio::time::sleep(half).await;
                group.heal();
                group.restart(leader)?;
                booted(group, &[leader], report).await;
                format!("overlap: 10% loss on every link + partition node {cut_off} + {how}")
            }
            Family::UplinkCut => {
                let hub = hub.context("uplink cut without a hub")?;
                let sources = group.ips();
                hub.block_sources(&sources, true)?;
                tokio::time::sleep(half).await;
                hub.block_sources(&sources, false)?;
                "cut the uplink to the hub".to_string()
            }
            Family::HubLeaderKill => {
                let hub = hub.context("hub fault without a hub")?;
                let hub_ids = hub.ids();
                let leader = hub.leader(&hub_ids).await.unwrap_or(hub_ids[0]);
                hub.kill9(leader)?;
                tokio::time::sleep(half).await;
                hub.restart(leader)?;
                booted(hub, &[leader], report).await;
                format!("kill -9 hub leader {leader}, restart")
            }
            Family::HubPartition => {
                let hub = hub.context("hub partition without a hub")?;
                let hub_ids = hub.ids();
                let cut_off = hub_ids[self.rng.next(hub_ids.len() as u64) as usize];
                let rest: Vec<u64> = hub_ids.iter().copied().filter(|i| *i != cut_off).collect();
                hub.partition(&[cut_off], &rest)?;
                tokio::time::sleep(half).await;
                hub.heal();
                format!("hub partition: hub node {cut_off} from {rest:?}")
            }
            Family::HubPowerCut => {
                let hub = hub.context("hub power cut without a hub")?;
                let hub_ids = hub.ids();
                let lost = power_cut(hub, &hub_ids, report)?;
                tokio::time::sleep(half).await;
                for &id in &hub_ids {
                    hub.restart(id)?;
                }
                booted(hub, &hub_ids, report).await;
                format!("power cut every hub node ({lost}), restart")
            }
        })
    }
}

/// Power-cuts `ids` (they stay down) and counts it; says what the cut threw away.
fn power_cut(group: &mut LabGroup, ids: &[u64], report: &mut RigReport) -> anyhow::Result<String> {
    let cut = group.power_cut(ids)?;
    report.power_cuts += ids.len();
    report.unsynced_bytes_dropped += cut.unsynced_bytes;
    Ok(format!(
        "{} B unsynced lost, {} files and {} names reverted",
        cut.unsynced_bytes, cut.files_reverted, cut.entries_reverted
    ))
}

/// Waits for restarted nodes to serve again; one that does not within [`BOOT_TIMEOUT`] is a
/// boot failure (with its log's tail in the report).
async fn booted(group: &LabGroup, ids: &[u64], report: &mut RigReport) {
    for &id in ids {
        if group.wait_ready(&[id]).await.is_err() {
            report.boot_failures += 1;
            report.faults.push(format!(
                "node {id} did not serve within {BOOT_TIMEOUT:?} of its restart; log tail:\n{}",
                group.log_tail(id, 20)
            ));
        }
    }
}

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
    let history: History = Arc::default();
    let mut clients = Vec::new();
    for c in 0..config.clients {
        clients.push(tokio::spawn(client(
            c,
            urls.clone(),
            config.keys,
            config.seed.wrapping_add(c as u64 * 7919),
            started,
            stop.clone(),
            history.clone(),
        )));
    }
    let appends = Arc::new(Appends::default());
    for a in 0..APPENDERS {
        clients.push(tokio::spawn(appender(
            a,
            urls.clone(),
            config.seed.wrapping_add(1_000_003 + a as u64),
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
    let families = families(group, hub.as_deref());
    // Families rotate (from a seed-chosen start) so even a short run sees each of them;
    // victims are drawn at random.
    let mut turn = config.seed as usize;
    while started.elapsed() + config.fault_interval <= config.duration {
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

    // Every acknowledged append exactly once at its seq, on every replica, in seq order.
    let acked = appends.acked();
    report.appends_acked = acked.len();
    report.appends_unknown = appends.unknown();
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
                report
                    .faults
                    .push(format!("{name}'s stream differs from node {}'s", ids[0]));
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

    let history = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
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
