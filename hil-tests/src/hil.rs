//! The hardware-in-the-loop scenario, on whatever gateways a lab group runs on (emulated
//! ARM in network namespaces, `tests/hil_qemu.rs`; real devices over ssh, `openclaw-hil`):
//! a writer keeps appending while a gateway loses power, the uplink flaps and the whole site
//! reboots; then the fault rig's invariants are checked — every acknowledged append exactly
//! once and in order at every gateway and at the hub, the replicas identical.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;

use crate::relay::Relay;
use crate::{request, wait_until, LabGroup};

const STREAM: &str = "telemetry";

/// The hub of a HIL run: one native node on this machine's loopback.
pub fn hub_options() -> crate::GroupOptions {
    crate::GroupOptions {
        kind: crate::GroupKind::Hub,
        site: crate::lab::HUB_GROUP.into(),
        ip_base: 16 * 3,
        ..crate::GroupOptions::fast()
    }
}

/// How long each step may take, and how much each phase writes.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioOptions {
    /// Acknowledged appends each phase waits for before its fault.
    pub per_phase: u64,
    /// Longest any step may take.
    pub step: Duration,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            per_phase: 15,
            step: Duration::from_secs(120),
        }
    }
}

/// What a run showed.
#[derive(Clone, Debug)]
pub struct HilReport {
    pub acked: usize,
    pub last_seq: u64,
    /// Largest gateway RSS before and during the load (MiB; local processes only).
    pub idle_rss_mib: f64,
    pub loaded_rss_mib: f64,
    pub elapsed: Duration,
}

/// The writer's record: payload → seq of each acknowledged append.
#[derive(Default)]
struct Acked {
    events: Mutex<BTreeMap<String, u64>>,
    count: AtomicU64,
}

/// Appends `e<i>` for i = 0.. to the site's gateways in turn until told to stop. Each event
/// carries an idempotency key and is retried (on any node) until acknowledged, so each is
/// acknowledged once; an event still unacknowledged at the stop is an unknown outcome.
async fn writer(site_urls: Vec<String>, acked: Arc<Acked>, stop: Arc<AtomicBool>) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    else {
        return;
    };
    let mut node = 0usize;
    for i in 0u64.. {
        let payload = format!("e{i}");
        let key = format!("hil-{i}");
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let url = format!("{}/v1/streams/{STREAM}", site_urls[node % site_urls.len()]);
            let answer = request(
                &http,
                Method::POST,
                &url,
                &[("Idempotency-Key", key.as_str())],
                Some(payload.clone().into_bytes()),
            )
            .await;
            match answer.map(|a| (a.status, a.json()["seq"].as_u64())) {
                Ok((200, Some(seq))) => {
                    if let Ok(mut events) = acked.events.lock() {
                        events.insert(payload.clone(), seq);
                    }
                    acked.count.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                _ => {
                    // Down, electing, forwarding failed: another node, after a breath.
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

async fn wait_for_acks(acked: &Acked, more: u64, step: Duration, what: &str) -> anyhow::Result<()> {
    let target = acked.count.load(Ordering::Acquire) + more;
    wait_until(step, what, || async {
        acked.count.load(Ordering::Acquire) >= target
    })
    .await
}

/// A whole stream from one node (stale reads, every page).
pub async fn stream_at(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut from = 1u64;
    loop {
        let a = request(
            http,
            Method::GET,
            &format!("{url}?from={from}&limit=1000&consistency=stale"),
            &[],
            None,
        )
        .await?;
        ensure!(a.status == 200, "stream read: {} {}", a.status, a.text());
        let page = a.json();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let data = base64::engine::general_purpose::STANDARD
                .decode(e["data_b64"].as_str().unwrap_or(""))?;
            out.push((
                e["seq"].as_u64().unwrap_or(0),
                String::from_utf8_lossy(&data).into_owned(),
            ));
        }
        let next = page["next"].as_u64().unwrap_or(from);
        if events.is_empty() || next == from {
            return Ok(out);
        }
        from = next;
    }
}

/// Resident memory of a local process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn max_rss_mib(g: &LabGroup) -> f64 {
    g.nodes
        .iter()
        .filter_map(|n| n.pid().and_then(rss_kib))
        .max()
        .unwrap_or(0) as f64
        / 1024.0
}

/// Runs the scenario on `site` (started, shipping to `hub` through `uplink`, whose gateways
/// send from `gateway_ips`).
pub async fn run(
    site: &mut LabGroup,
    hub: &LabGroup,
    uplink: &Relay,
    gateway_ips: &[IpAddr],
    options: ScenarioOptions,
) -> anyhow::Result<HilReport> {
    let started = Instant::now();
    let step = options.step;
    site.wait_ready(&site.ids())
        .await
        .with_context(|| site.log_tail(1, 30))?;
    site.leader(&site.ids()).await?;
    let idle_rss_mib = max_rss_mib(site);

    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = site.ids().iter().map(|id| site.url(*id)).collect();
    let writing = tokio::spawn(writer(urls, acked.clone(), stop.clone()));
    let result = async {
        wait_for_acks(&acked, options.per_phase, step, "first writes").await?;
        let loaded = max_rss_mib(site);

        // 1. Power cut: the leader's whole machine goes, then boots.
        let leader = site.leader(&site.ids()).await?;
        site.kill9(leader)?;
        wait_for_acks(
            &acked,
            options.per_phase,
            step,
            "writes after the power cut",
        )
        .await?;
        site.restart(leader)?;
        site.wait_ready(&[leader]).await?;

        // 2. Uplink flap: the link drops for a while; the site keeps taking writes.
        for ip in gateway_ips {
            uplink.control.block(*ip);
        }
        let down = wait_for_acks(&acked, options.per_phase, step, "writes, uplink down").await;
        uplink.control.unblock_all();
        down?;

        // 3. The whole site reboots (a site-wide power cut).
        for id in site.ids() {
            site.kill9(id)?;
        }
        for id in site.ids() {
            site.restart(id)?;
        }
        site.wait_ready(&site.ids()).await?;
        wait_for_acks(
            &acked,
            options.per_phase,
            step,
            "writes after the site reboot",
        )
        .await?;
        Ok::<f64, anyhow::Error>(loaded)
    }
    .await;
    stop.store(true, Ordering::Release);
    writing.await.context("writer task")?;
    let loaded_rss_mib = result?;

    let acked_events = acked
        .events
        .lock()
        .map_err(|_| anyhow::anyhow!("writer record poisoned"))?
        .clone();
    let last_seq = check(site, hub, &acked_events, step).await?;
    Ok(HilReport {
        acked: acked_events.len(),
        last_seq,
        idle_rss_mib,
        loaded_rss_mib,
        elapsed: started.elapsed(),
    })
}

/// The invariants: every gateway converges on one gap-free stream holding every
/// acknowledged append exactly once at its seq, and the hub holds exactly that stream.
/// Returns the stream's last seq.
async fn check(
    site: &LabGroup,
    hub: &LabGroup,
    acked: &BTreeMap<String, u64>,
    step: Duration,
) -> anyhow::Result<u64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let leader = site.leader(&site.ids()).await?;
    let reference = stream_at(&http, &format!("{}/v1/streams/{STREAM}", site.url(leader))).await?;
    let last_seq = reference.last().map(|(s, _)| *s).unwrap_or(0);
    for id in site.ids() {
        let url = format!("{}/v1/streams/{STREAM}", site.url(id));
        wait_until(step, &format!("gateway {id} converged"), || async {
            stream_at(&http, &url).await.ok().as_ref() == Some(&reference)
        })
        .await?;
    }
    let seqs: Vec<u64> = reference.iter().map(|(s, _)| *s).collect();
    ensure!(
        seqs == (1..=last_seq).collect::<Vec<_>>(),
        "seqs not gap-free and in order"
    );
    let mut seen = HashSet::new();
    for (_, payload) in &reference {
        ensure!(seen.insert(payload.clone()), "{payload} appended twice");
    }
    let at: BTreeMap<&str, u64> = reference.iter().map(|(s, p)| (p.as_str(), *s)).collect();
    for (payload, seq) in acked {
        if at.get(payload.as_str()) != Some(seq) {
            bail!("acknowledged {payload} (seq {seq}) lost or moved");
        }
    }

    let site_path = format!("/v1/sites/{}", site.options.site);
    wait_until(step, "hub caught up", || async {
        hub.get_json(1, &site_path)
            .await
            .ok()
            .and_then(|v: Value| v["shipped_through"].as_u64())
            == Some(last_seq)
    })
    .await?;
    let at_hub = stream_at(
        &http,
        &format!("{}{site_path}/streams/{STREAM}", hub.url(1)),
    )
    .await?;
    ensure!(
        at_hub == reference,
        "the hub's copy differs from the site's stream"
    );
    Ok(last_seq)
}
