//! Hardware in the loop, emulated: the ARM build of `openclaw-edge` runs under qemu-user as
//! three gateways, each in its own network namespace with its own address on a site LAN,
//! shipping to a hub through the fault relay shaped like a cellular link. The scenario
//! power-cuts a gateway (kill -9 of its whole emulated machine), flaps the uplink and reboots
//! the whole site while a writer keeps appending, then checks the fault rig's invariants:
//! every acknowledged append exactly once and in order at every gateway and at the hub, and
//! the replicas identical.
//!
//! Runs when `OPENCLAW_HIL_EDGE_BIN` names the cross-built binary (test.sh builds it with
//! cross/build.sh); `OPENCLAW_HIL_EMULATOR` is the emulator command (default: qemu-aarch64-static
//! with Debian's aarch64 glibc from libc6-arm64-cross).
//! Needs root (namespaces). Without the variable it says it is skipped.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use openclaw_hil_tests::lab::{site_name, HUB_GROUP};
use openclaw_hil_tests::netns::SiteNetwork;
use openclaw_hil_tests::relay::{Faults, Relay};
use openclaw_hil_tests::{
    request, wait_until, GroupKind, GroupOptions, LabGroup, UplinkOptions, HOST_HTTP_PORT,
};
use reqwest::Method;
use serde_json::Value;

/// qemu-user with Debian's aarch64 glibc (package libc6-arm64-cross) as the gateway's root.
const DEFAULT_EMULATOR: &str = "qemu-aarch64-static -L /usr/aarch64-linux-gnu";
/// Longest any step of the scenario may take under emulation.
const STEP: Duration = Duration::from_secs(120);
/// Acknowledged appends each phase waits for before its fault.
const PER_PHASE: u64 = 15;
const STREAM: &str = "telemetry";

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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let mut i = 0u64;
    let mut node = 0usize;
    while !stop.load(Ordering::Acquire) {
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
            match answer {
                Ok(a) if a.status == 200 => {
                    let seq = a.json()["seq"].as_u64().expect("seq");
                    acked
                        .events
                        .lock()
                        .expect("lock")
                        .insert(payload.clone(), seq);
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
        i += 1;
    }
}

async fn wait_for_acks(acked: &Acked, more: u64, what: &str) {
    let target = acked.count.load(Ordering::Acquire) + more;
    wait_until(STEP, what, || async {
        acked.count.load(Ordering::Acquire) >= target
    })
    .await
    .expect(what);
}

/// A whole stream from one node (stale reads, every page).
async fn stream_at(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut from = 1u64;
    loop {
        let a = request(
            http,
            Method::GET,
            &format!("{base}?from={from}&limit=1000&consistency=stale"),
            &[],
            None,
        )
        .await?;
        anyhow::ensure!(a.status == 200, "stream read: {} {}", a.status, a.text());
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

/// Resident memory of a process, in KiB.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emulated_gateways_survive_power_cut_uplink_flap_and_site_reboot() {
    let Some(bin) = std::env::var_os("OPENCLAW_HIL_EDGE_BIN").map(PathBuf::from) else {
        eprintln!("HIL scenario skipped: set OPENCLAW_HIL_EDGE_BIN to a cross-built openclaw-edge");
        return;
    };
    let emulator =
        std::env::var("OPENCLAW_HIL_EMULATOR").unwrap_or_else(|_| DEFAULT_EMULATOR.into());
    let launcher: Vec<String> = emulator.split_whitespace().map(str::to_owned).collect();
    assert!(
        SiteNetwork::available(),
        "the HIL scenario needs root and iproute2 (network namespaces)"
    );
    let started = Instant::now();
    let net = SiteNetwork::create(77, 3).expect("site network");
    for gw in 1..=3 {
        net.expose_loopback_port(gw, HOST_HTTP_PORT)
            .expect("API forwarder");
    }
    let dir = tempfile::tempdir().expect("tempdir");

    // The hub (native) and the cellular uplink in front of it, on the site LAN's router side.
    let hub = LabGroup::start_ready(
        &dir.path().join("hub"),
        1,
        GroupOptions {
            kind: GroupKind::Hub,
            site: HUB_GROUP.into(),
            ip_base: 16 * 3,
            ..GroupOptions::fast()
        },
    )
    .await
    .expect("hub");
    let uplink = Relay::start(
        SocketAddr::new(net.bridge_ip(), 0),
        hub.nodes[0].raft_listen,
    )
    .await
    .expect("relay");
    let cellular = Faults {
        loss: 0.01,
        delay: Duration::from_millis(40),
        jitter: Duration::from_millis(15),
        bandwidth_bytes_per_sec: 256 * 1024,
        ..Faults::default()
    };
    uplink.control.set_faults(cellular);

    // Three emulated gateways.
    let mut site = LabGroup::start(
        &dir.path().join("site"),
        3,
        GroupOptions {
            site: site_name(1),
            ca_dir: Some(hub.dir.join("certs")),
            uplink: Some(UplinkOptions {
                hubs: vec![(1, uplink.listen)],
                ..UplinkOptions::to(&hub)
            }),
            hosts: net.hosts(),
            launcher,
            binary: Some(bin.clone()),
            write_timeout: "10s",
            ..GroupOptions::default()
        },
    )
    .await
    .expect("site");
    if let Err(e) = site.wait_ready(&site.ids()).await {
        panic!("gateways ready: {e:#}\n{}", site.log_tail(1, 30));
    }
    site.leader(&site.ids()).await.expect("leader");
    let booted = started.elapsed();
    let idle_rss = max_rss_mib(&site);

    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = site.ids().iter().map(|id| site.url(*id)).collect();
    let writing = tokio::spawn(writer(urls, acked.clone(), stop.clone()));
    wait_for_acks(&acked, PER_PHASE, "first writes").await;
    let loaded_rss = max_rss_mib(&site);

    // 1. Power cut: the leader's whole machine goes (kill -9 of the emulator), then boots.
    let leader = site.leader(&site.ids()).await.expect("leader");
    site.kill9(leader).expect("power cut");
    wait_for_acks(&acked, PER_PHASE, "writes after the power cut").await;
    site.restart(leader).expect("boot");
    site.wait_ready(&[leader])
        .await
        .expect("rebooted gateway serves");

    // 2. Uplink flap: the cellular link drops for a while; the site keeps taking writes.
    for gw in 1..=3u8 {
        uplink.control.block(net.gateway_ip(gw));
    }
    wait_for_acks(&acked, PER_PHASE, "writes while the uplink is down").await;
    uplink.control.unblock_all();

    // 3. The whole site reboots (a site-wide power cut).
    for id in site.ids() {
        site.kill9(id).expect("site power cut");
    }
    for id in site.ids() {
        site.restart(id).expect("site boot");
    }
    site.wait_ready(&site.ids())
        .await
        .expect("site serves again");
    wait_for_acks(&acked, PER_PHASE, "writes after the site reboot").await;
    stop.store(true, Ordering::Release);
    writing.await.expect("writer");

    // Invariants. Every gateway converges on one stream holding every acknowledged append
    // exactly once, in seq order, gap-free.
    let acked_events = acked.events.lock().expect("lock").clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let leader = site.leader(&site.ids()).await.expect("leader");
    let reference = stream_at(&http, &format!("{}/v1/streams/{STREAM}", site.url(leader)))
        .await
        .expect("leader stream");
    let last_seq = reference.last().map(|(s, _)| *s).unwrap_or(0);
    for id in site.ids() {
        let url = format!("{}/v1/streams/{STREAM}", site.url(id));
        wait_until(STEP, &format!("gateway {id} converged"), || async {
            stream_at(&http, &url).await.ok().as_ref() == Some(&reference)
        })
        .await
        .expect("replicas identical");
    }
    let seqs: Vec<u64> = reference.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=last_seq).collect::<Vec<_>>(),
        "seqs gap-free, in order"
    );
    let mut seen = HashSet::new();
    for (_, payload) in &reference {
        assert!(seen.insert(payload.clone()), "{payload} appended twice");
    }
    let at: BTreeMap<&str, u64> = reference.iter().map(|(s, p)| (p.as_str(), *s)).collect();
    for (payload, seq) in &acked_events {
        assert_eq!(
            at.get(payload.as_str()),
            Some(seq),
            "acked {payload} lost or moved"
        );
    }

    // The hub holds the same stream once the backlog has crossed the cellular link.
    let site_url = format!("/v1/sites/{}", site_name(1));
    wait_until(STEP, "hub caught up", || async {
        hub.get_json(1, &site_url)
            .await
            .ok()
            .and_then(|v: Value| v["shipped_through"].as_u64())
            == Some(last_seq)
    })
    .await
    .expect("shipped");
    let at_hub = stream_at(&http, &format!("{}{site_url}/streams/{STREAM}", hub.url(1)))
        .await
        .expect("hub stream");
    assert_eq!(at_hub, reference, "the hub holds exactly the site's stream");

    println!(
        "HIL (qemu {emulator}, 3 gateways in namespaces, cellular uplink {}ms±{}ms {}% loss \
         {} KiB/s): boot {:.1?}; {} appends acked, seq {last_seq} at every gateway and the \
         hub after a power cut, an uplink flap and a site reboot; gateway RSS idle {idle_rss:.1} \
         MiB, loaded {loaded_rss:.1} MiB (max over the three, emulated); total {:.1?}",
        cellular.delay.as_millis(),
        cellular.jitter.as_millis(),
        cellular.loss * 100.0,
        cellular.bandwidth_bytes_per_sec / 1024,
        booted,
        acked_events.len(),
        started.elapsed()
    );
}
