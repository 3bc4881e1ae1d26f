//! The rig's nemesis: the fault families and how each is injected and healed.

use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;

use super::workload::Rng;
use super::{RigReport, BOOT_TIMEOUT};
use crate::relay::Faults;
use crate::LabGroup;

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
pub(super) enum Family {
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
pub(super) fn families(group: &LabGroup, hub: Option<&LabGroup>) -> Vec<Family> {
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

impl Family {
    /// The name `openclaw-rig --families` takes.
    pub(super) fn name(self) -> &'static str {
        match self {
            Family::Partition => "partition",
            Family::Bridge => "bridge",
            Family::OneWay => "one-way",
            Family::LeaderKill => "leader-kill",
            Family::Pause => "pause",
            Family::LossyLinks => "lossy",
            Family::Membership => "membership",
            Family::Overlap => "overlap",
            Family::PowerCutNode => "power-cut-node",
            Family::PowerCutSite => "power-cut-site",
            Family::UplinkCut => "uplink-cut",
            Family::HubLeaderKill => "hub-leader-kill",
            Family::HubPartition => "hub-partition",
            Family::HubPowerCut => "hub-power-cut",
        }
    }
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

pub(super) struct Nemesis {
    pub(super) rng: Rng,
    pub(super) next_joiner: u64,
    /// How long each fault lasts.
    pub(super) half: Duration,
    /// The group's original members.
    pub(super) ids: Vec<u64>,
}

impl Nemesis {
    fn victim(&mut self) -> u64 {
        self.ids[self.rng.next(self.ids.len() as u64) as usize]
    }

    /// Injects one fault of `family`, lets it last, heals it; returns what it did.
    pub(super) async fn inject(
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
                group.pause(victim)?;
                tokio::time::sleep(half).await;
                group.resume(victim)?;
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
