//! The hub and the uplink (DESIGN.md §3.3–3.4), shown with real `openclaw-edge` and
//! `openclaw-hub` processes on loopback (real QUIC, mutual TLS, fjall): every acknowledged
//! event reaches the hub exactly once and in seq order through uplink cuts and leader kills
//! on both sides; the backlog bound; certificate-based authorization and hostile frames;
//! a whole-hub restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openclaw_hil_tests::lab::{make_ca, site_name};
use openclaw_hil_tests::{request, wait_until, GroupOptions, Lab, LabGroup, LabOptions};
use reqwest::Method;
use serde_json::Value;

const CATCH_UP: Duration = Duration::from_secs(60);

fn fast() -> GroupOptions {
    GroupOptions::fast()
}

fn lab_options(sites: u64, edge_nodes: u64, hub_nodes: u64) -> LabOptions {
    LabOptions {
        sites,
        edge_nodes,
        hub_nodes,
        edge: fast(),
        hub: GroupOptions {
            relays: true,
            ..fast()
        },
        ..LabOptions::default()
    }
}

/// Appends one event at `node`; status 0 is a transport error.
async fn append(g: &LabGroup, node: u64, data: &str, idem: &str) -> (u16, Value, String) {
    match request(
        &g.http,
        Method::POST,
        &format!("{}/v1/streams/s", g.url(node)),
        &[("Idempotency-Key", idem)],
        Some(data.as_bytes().to_vec()),
    )
    .await
    {
        Ok(a) => {
            let retry_after = a
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (a.status, a.json(), retry_after)
        }
        Err(e) => (0, Value::String(e.to_string()), String::new()),
    }
}

/// A running hub node that answers, for reads.
async fn hub_json(hub: &LabGroup, path: &str) -> anyhow::Result<Value> {
    let mut last = anyhow::anyhow!("no hub node running");
    for id in hub.running() {
        match hub.get_json(id, path).await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn shipped_through(hub: &LabGroup, site: &str) -> u64 {
    hub_json(hub, &format!("/v1/sites/{site}"))
        .await
        .ok()
        .and_then(|v| v["shipped_through"].as_u64())
        .unwrap_or(0)
}

/// The edge group's last seq, as its running nodes agree on it.
async fn edge_last_seq(g: &LabGroup) -> Option<u64> {
    let mut seqs = Vec::new();
    for id in g.running() {
        seqs.push(g.status(id).await.ok()?["applied_seq"].as_u64()?);
    }
    let first = *seqs.first()?;
    seqs.iter().all(|s| *s == first).then_some(first)
}

/// Waits until the hub holds everything the site has committed; returns that seq.
async fn wait_fully_shipped(hub: &LabGroup, site: &LabGroup) -> u64 {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        if let Some(last) = edge_last_seq(site).await {
            if shipped_through(hub, &site.options.site).await == last {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} not fully shipped within {CATCH_UP:?}",
            site.options.site
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of stream `s` of `site` at the hub, in order: (seq, data).
async fn hub_stream(hub: &LabGroup, site: &str) -> Vec<(u64, String)> {
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = hub_json(
            hub,
            &format!("/v1/sites/{site}/streams/s?from={from}&limit=1000"),
        )
        .await
        .expect("hub stream");
        let batch = page["events"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            return events;
        }
        for e in &batch {
            let data = base64::engine::general_purpose::STANDARD
                .decode(e["data_b64"].as_str().unwrap_or(""))
                .expect("base64");
            events.push((
                e["seq"].as_u64().expect("seq"),
                String::from_utf8(data).expect("utf8"),
            ));
        }
        from = page["next"].as_u64().expect("next");
    }
}

/// The merged feed: for each site, the seqs in feed order.
async fn hub_feed(hub: &LabGroup) -> BTreeMap<String, Vec<u64>> {
    let mut by_site: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut cursor = 0;
    loop {
        let page = hub_json(hub, &format!("/v1/feed?cursor={cursor}&limit=1000"))
            .await
            .expect("feed");
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return by_site;
        }
        for e in &events {
            by_site
                .entry(e["site"].as_str().expect("site").to_owned())
                .or_default()
                .push(e["seq"].as_u64().expect("seq"));
            assert!(e["epoch"].is_u64() && e["hlc"].is_string(), "{e}");
        }
        cursor = page["next"].as_u64().expect("next");
    }
}

/// The hub holds exactly the site's log: seqs 1..=last in order, once each, every
/// acknowledged event at its acknowledged seq.
async fn assert_exactly_once(hub: &LabGroup, site: &str, last: u64, acked: &BTreeMap<u64, String>) {
    let events = hub_stream(hub, site).await;
    let seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "{site}: hub stream is the whole log, once, in order"
    );
    let at: BTreeMap<u64, &String> = events.iter().map(|(s, d)| (*s, d)).collect();
    for (seq, data) in acked {
        assert_eq!(at.get(seq).copied(), Some(data), "{site}: acked seq {seq}");
    }
}

/// DESIGN.md issue scenario 1: two sites × 3 edge nodes + 3 hub nodes, a write stream at
/// both sites under repeated uplink cuts, edge leader kills and hub leader kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acked_event_reaches_the_hub_once_in_order_under_cuts_and_kills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::start(dir.path(), lab_options(2, 3, 3))
        .await
        .expect("lab");
    let lab = std::sync::Arc::new(tokio::sync::Mutex::new(lab));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // One writer per site, round-robin over its nodes; remembers what was acknowledged.
    let mut writers = Vec::new();
    for site in 0..2usize {
        let (lab, stop) = (lab.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acked: BTreeMap<u64, String> = BTreeMap::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let data = format!("site{site}-event{i}");
                let (status, body) = {
                    let lab = lab.lock().await;
                    let g = &lab.sites[site];
                    let running = g.running();
                    if running.is_empty() {
                        (0, Value::Null)
                    } else {
                        let node = running[i as usize % running.len()];
                        let (s, b, _) = append(g, node, &data, &data).await;
                        (s, b)
                    }
                };
                if status == 200 {
                    acked.insert(body["seq"].as_u64().expect("seq"), data);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            acked
        }));
    }

    // Nemesis: rotate uplink cuts, edge leader kills and hub leader kills.
    let nemesis_until = Instant::now() + Duration::from_secs(24);
    let mut round = 0;
    while Instant::now() < nemesis_until {
        round += 1;
        {
            let mut lab = lab.lock().await;
            match round % 3 {
                0 => {
                    let site = round % 2;
                    let ips = lab.sites[site].ips();
                    lab.hub()
                        .expect("hub")
                        .block_sources(&ips, true)
                        .expect("cut");
                }
                1 => {
                    let g = &mut lab.sites[round % 2];
                    let leader = g.leader(&g.running()).await.expect("edge leader");
                    g.kill9(leader).expect("kill edge leader");
                }
                _ => {
                    let hub = lab.hub_mut().expect("hub");
                    let leader = hub.leader(&hub.running()).await.expect("hub leader");
                    hub.kill9(leader).expect("kill hub leader");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        {
            let mut guard = lab.lock().await;
            let Lab { sites, hub, .. } = &mut *guard;
            let all: Vec<_> = sites.iter().flat_map(|g| g.ips()).collect();
            let hub = hub.as_mut().expect("hub");
            hub.block_sources(&all, false).expect("restore");
            for g in sites.iter_mut().chain(std::iter::once(hub)) {
                for id in g.ids() {
                    if !g.running().contains(&id) {
                        g.restart(id).expect("restart");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.expect("writer"));
    }
    let lab = lab.lock().await;
    let hub = lab.hub().expect("hub");
    let feed = hub_feed(hub).await;
    for (i, g) in lab.sites.iter().enumerate() {
        assert!(
            acked[i].len() > 20,
            "site {i}: only {} writes acknowledged",
            acked[i].len()
        );
        let last = wait_fully_shipped(hub, g).await;
        assert!(last >= acked[i].keys().last().copied().unwrap_or(0));
        assert_exactly_once(hub, &g.options.site, last, &acked[i]).await;
        // The feed may still be a little behind the stream read above; it is a prefix.
        let seqs = feed.get(&g.options.site).cloned().unwrap_or_default();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "feed order of {}",
            g.options.site
        );
    }
    let retries: f64 = {
        let mut total = 0.0;
        for g in &lab.sites {
            for id in g.running() {
                total += g
                    .metric(id, "openclaw_uplink_retries_total")
                    .await
                    .unwrap_or(0.0);
            }
        }
        total
    };
    assert!(retries > 0.0, "the nemesis broke shipping sessions");
}

/// Scenario 2: with the uplink down, writes continue until the backlog bound, then 503
/// "uplink backlog full" with Retry-After while reads keep working; once the uplink returns
/// the backlog drains and writes are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_backlog_refuses_writes_until_the_uplink_drains_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LabOptions {
        max_unshipped_bytes: "2MiB".into(),
        ..lab_options(1, 3, 1)
    };
    let lab = Lab::start(dir.path(), options).await.expect("lab");
    let (hub, site) = (lab.hub().expect("hub"), &lab.sites[0]);
    hub.block_sources(&site.ips(), true)
        .expect("cut the uplink");
    let payload = "x".repeat(16 * 1024);
    let mut acked = BTreeMap::new();
    let full = loop {
        let i = acked.len();
        let data = format!("{i}:{payload}");
        let (status, body, retry_after) = append(site, 1, &data, &format!("k{i}")).await;
        match status {
            200 => {
                acked.insert(body["seq"].as_u64().expect("seq"), data);
            }
            503 if body["error"]["code"] == "backlog_full" => break (body, retry_after),
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(acked.len() < 1000, "the backlog bound never applied");
    };
    assert!(
        acked.len() >= 100,
        "2 MiB holds over 100 events of 16 KiB: {}",
        acked.len()
    );
    assert!(full.0["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("uplink backlog full"));
    assert_eq!(full.1, "1", "Retry-After on a backlog-full refusal");
    // Reads keep working, stale and linearizable.
    for consistency in ["stale", "linearizable"] {
        let page = site
            .get_json(
                2,
                &format!("/v1/streams/s?from=1&limit=5&consistency={consistency}"),
            )
            .await
            .expect("read while full");
        assert_eq!(page["events"].as_array().map(Vec::len), Some(5));
    }
    let status = site.status(1).await.expect("status");
    assert!(
        status["uplink"]["backlog_bytes"].as_u64().unwrap_or(0) > 1024 * 1024,
        "{status}"
    );
    assert_eq!(
        status["uplink"]["backlog_events"].as_u64(),
        Some(acked.len() as u64)
    );
    // Uplink back: it drains, and a write is accepted again (the refused key too).
    hub.block_sources(&site.ips(), false).expect("restore");
    let last = wait_fully_shipped(hub, site).await;
    assert_eq!(last, acked.len() as u64);
    wait_until(CATCH_UP, "backlog compacted", || async {
        site.status(1)
            .await
            .ok()
            .and_then(|s| s["uplink"]["backlog_bytes"].as_u64())
            == Some(0)
    })
    .await
    .expect("compacted");
    assert_exactly_once(hub, &site.options.site, last, &acked).await;
    let (status, _, _) = append(site, 1, "after", &format!("k{}", acked.len())).await;
    assert_eq!(status, 200, "writes are accepted again");
}

/// Scenario 4: the whole hub group is killed -9 and restarted; shipped-through survives and
/// shipping resumes with no loss and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_restart_keeps_shipped_through_and_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::start(dir.path(), lab_options(1, 3, 3))
        .await
        .expect("lab");
    let mut acked = BTreeMap::new();
    for i in 0..150 {
        let data = format!("before-{i}");
        let (status, body, _) = append(&lab.sites[0], 1 + i % 3, &data, &data).await;
        assert_eq!(status, 200, "{body}");
        acked.insert(body["seq"].as_u64().expect("seq"), data);
    }
    let before = wait_fully_shipped(lab.hub().expect("hub"), &lab.sites[0]).await;
    let hub = lab.hub_mut().expect("hub");
    for id in hub.ids() {
        hub.kill9(id).expect("kill -9");
    }
    for i in 0..100 {
        let data = format!("during-{i}");
        let (status, body, _) = append(&lab.sites[0], 1 + i % 3, &data, &data).await;
        assert_eq!(
            status, 200,
            "edge writes continue with the hub down: {body}"
        );
        acked.insert(body["seq"].as_u64().expect("seq"), data);
    }
    let hub = lab.hub_mut().expect("hub");
    for id in hub.ids() {
        hub.restart(id).expect("restart");
    }
    hub.wait_ready(&hub.ids()).await.expect("hub ready");
    let hub = lab.hub().expect("hub");
    // Survived: the hub answers at least the old shipped-through (not 0) once it serves; had
    // it forgotten, the edge, which compacted its outbox up to it, could never catch up below.
    wait_until(CATCH_UP, "hub answers its shipped-through", || async {
        shipped_through(hub, &site_name(1)).await >= before
    })
    .await
    .expect("shipped-through survived the restart");
    let last = wait_fully_shipped(hub, &lab.sites[0]).await;
    assert_eq!(last, 250);
    assert_exactly_once(hub, &site_name(1), last, &acked).await;
}

mod hostile {
    //! Scenario 3: a site-B certificate shipping as site A is refused and logged; garbage,
    //! oversize frames and decompression bombs close the connection; the hub keeps serving.

    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use openclaw_hil_tests::lab::HUB_GROUP;
    use openclaw_hil_tests::{wait_until, Lab};
    use shared::config::{SiteId, TlsSection};
    use shared::identity::NodeIdentity;
    use shared::ship::codec::{encode, ShipBatch};
    use shared::ship::{EventKind, ShipReply, ShippedEvent};
    use shared::tls::TlsMaterial;
    use shared::transport::{Transport, TransportTiming};
    use shared::wire::{read_frame, write_frame, Request, ShipFrame};

    use super::{lab_options, wait_fully_shipped, CATCH_UP};

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A QUIC endpoint holding a genuine certificate (from the lab's CA) of `site`'s node 9.
    fn impostor(lab_dir: &Path, site: &str) -> Arc<Transport> {
        let certs = lab_dir.join("impostor");
        std::fs::create_dir_all(&certs).expect("dir");
        for file in ["ca.pem", "ca.key"] {
            std::fs::copy(lab_dir.join("ca").join(file), certs.join(file)).expect("copy CA");
        }
        let bin = openclaw_hil_tests::binary("openclaw-edge", "OPENCLAW_EDGE_BIN").expect("bin");
        let out = std::process::Command::new(bin)
            .args(["certs", "node", "--site", site, "--id", "9", "--dir"])
            .arg(&certs)
            .output()
            .expect("certs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tls = TlsMaterial::load(&TlsSection {
            ca: certs.join("ca.pem"),
            cert: certs.join("node-9.pem"),
            key: certs.join("node-9.key"),
        })
        .expect("tls");
        let site = SiteId::parse(site).expect("site");
        Transport::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &tls,
            NodeIdentity::edge(site, 9),
            TransportTiming {
                keep_alive: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(5),
                handshake_timeout: shared::transport::HANDSHAKE_TIMEOUT,
            },
        )
        .expect("bind")
    }

    async fn open(
        t: &Arc<Transport>,
        hub: (&NodeIdentity, SocketAddr),
        site: &str,
    ) -> (quinn::SendStream, quinn::RecvStream, ShipReply) {
        let request = Request::ShipOpen {
            site: site.into(),
            epoch: 0,
            head_seq: 0,
        };
        let (send, mut recv) = t
            .open_stream(hub.0, &hub.1.to_string(), &request, TIMEOUT)
            .await
            .expect("open");
        let reply = tokio::time::timeout(TIMEOUT, read_frame::<_, ShipReply>(&mut recv))
            .await
            .expect("reply in time")
            .expect("reply");
        (send, recv, reply)
    }

    /// Sends `bytes` as a batch frame (or raw, unframed) and expects the hub to drop the
    /// connection instead of answering.
    async fn expect_closed(
        t: &Arc<Transport>,
        hub: (&NodeIdentity, SocketAddr),
        site: &str,
        raw: Option<&[u8]>,
        batch: Vec<u8>,
    ) {
        let (mut send, mut recv, reply) = open(t, hub, site).await;
        assert!(matches!(reply, ShipReply::ShippedThrough(_)), "{reply:?}");
        match raw {
            Some(bytes) => send.write_all(bytes).await.expect("write raw"),
            None => write_frame(&mut send, &ShipFrame { batch })
                .await
                .expect("write frame"),
        }
        let answer = tokio::time::timeout(TIMEOUT, read_frame::<_, ShipReply>(&mut recv))
            .await
            .expect("the hub reacts in time");
        assert!(
            answer.is_err(),
            "the hub answered {answer:?} instead of closing"
        );
        t.forget(hub.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn forged_sites_and_hostile_frames_are_refused_and_the_hub_keeps_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lab = Lab::start(dir.path(), lab_options(2, 1, 1))
            .await
            .expect("lab");
        let hub = lab.hub().expect("hub");
        let hub_id = NodeIdentity::hub(SiteId::parse(HUB_GROUP).expect("group"), 1);
        let target = (&hub_id, hub.node(1).expect("hub node").raft_advertise);
        let site_b = impostor(dir.path(), "site-2");

        // A site-2 certificate asking to ship site-1: refused, counted, logged.
        let (_, _, reply) = open(&site_b, target, "site-1").await;
        match reply {
            ShipReply::Rejected(reason) => assert!(
                reason.contains("certificate is for site site-2"),
                "{reason}"
            ),
            other => panic!("forged session accepted: {other:?}"),
        }
        assert!(
            hub.metric(1, "openclaw_hub_ship_forbidden_total")
                .await
                .expect("metric")
                >= 1.0
        );
        let log =
            std::fs::read_to_string(hub.node(1).expect("node").dir.join("node.log")).expect("log");
        assert!(log.contains("tried to ship as another"), "refusal logged");

        // On its own site's session: a batch naming site-1, garbage, a decompression bomb,
        // and an oversize frame each close the connection before anything is proposed.
        let other_site = encode(&ShipBatch {
            site: "site-1".into(),
            epoch: 0,
            first_seq: 1,
            head_seq: 1,
            events: vec![ShippedEvent {
                seq: 1,
                hlc: 1,
                kind: EventKind::Delete { key: b"k".to_vec() },
            }],
        })
        .expect("encode");
        expect_closed(&site_b, target, "site-2", None, other_site).await;
        expect_closed(&site_b, target, "site-2", None, b"not zstd at all".to_vec()).await;
        let bomb = zstd::bulk::compress(&vec![0u8; 64 * 1024 * 1024], 19).expect("bomb");
        assert!(bomb.len() < 64 * 1024);
        expect_closed(&site_b, target, "site-2", None, bomb).await;
        let mut oversize = (5u32 * 1024 * 1024).to_be_bytes().to_vec();
        oversize.extend_from_slice(&[1u8; 1024]);
        expect_closed(&site_b, target, "site-2", Some(&oversize), Vec::new()).await;
        assert!(
            hub.metric(1, "openclaw_hub_ship_bad_batches_total")
                .await
                .expect("metric")
                >= 2.0
        );
        assert!(
            hub.metric(1, "openclaw_bad_frames_total")
                .await
                .expect("metric")
                >= 1.0
        );
        assert_eq!(
            super::shipped_through(hub, "site-1").await,
            0,
            "nothing of site-1 was applied"
        );

        // The hub keeps serving the genuine sites.
        for (i, site) in lab.sites.iter().enumerate() {
            let (status, body, _) =
                super::append(site, 1, &format!("real-{i}"), &format!("real-{i}")).await;
            assert_eq!(status, 200, "{body}");
        }
        for site in &lab.sites {
            assert_eq!(wait_fully_shipped(hub, site).await, 1);
        }
        // Query errors name the bad input, as JSON.
        for (path, status) in [
            ("/v1/sites/Bad_Site/kv/x", 400),
            ("/v1/sites/site-9", 404),
            ("/v1/sites/site-1/kv/missing", 404),
            ("/v1/feed?cursor=soon", 400),
            ("/v1/feed?limit=0", 400),
            ("/v1/nope", 404),
        ] {
            let a = openclaw_hil_tests::request(
                &hub.http,
                reqwest::Method::GET,
                &format!("{}{path}", hub.url(1)),
                &[],
                None,
            )
            .await
            .expect("request");
            assert_eq!(a.status, status, "{path}: {}", a.text());
            assert!(
                a.json()["error"]["message"].is_string(),
                "{path}: {}",
                a.text()
            );
        }
        wait_until(CATCH_UP, "hub still ready", || async {
            hub.get_json(1, "/readyz").await.is_ok()
        })
        .await
        .expect("ready");
    }
}

/// A hub cluster scales out by groups: each hub group owns some sites (static assignment),
/// ingests only those, and refuses a site it does not own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_groups_split_the_sites_and_refuse_sites_they_do_not_own() {
    use openclaw_hil_tests::{GroupKind, UplinkOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca(dir.path()).expect("ca");
    let mut hubs = Vec::new();
    for (g, owned) in [(1u32, "site-1"), (2, "site-2")] {
        let options = GroupOptions {
            kind: GroupKind::Hub,
            site: format!("hub-{g}"),
            ip_base: (1 << 16) + 16 * g,
            ca_dir: Some(ca.clone()),
            hub_sites: vec![owned.to_owned()],
            ..fast()
        };
        hubs.push(
            LabGroup::start(&dir.path().join(format!("hub-{g}")), 1, options)
                .await
                .expect("hub"),
        );
    }
    let mut sites = Vec::new();
    // site-3 is sent to hub-1, which does not own it.
    for (i, hub) in [(1u32, 0usize), (2, 1), (3, 0)] {
        let options = GroupOptions {
            site: format!("site-{i}"),
            ip_base: 16 * i,
            ca_dir: Some(ca.clone()),
            uplink: Some(UplinkOptions::to(&hubs[hub])),
            ..fast()
        };
        sites.push(
            LabGroup::start(&dir.path().join(format!("site-{i}")), 1, options)
                .await
                .expect("site"),
        );
    }
    for g in hubs.iter().chain(&sites) {
        g.wait_ready(&g.ids()).await.expect("ready");
    }
    for site in &sites {
        for i in 0..20 {
            let (status, body, _) = append(site, 1, &format!("e{i}"), &format!("e{i}")).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(wait_fully_shipped(&hubs[0], &sites[0]).await, 20);
    assert_eq!(wait_fully_shipped(&hubs[1], &sites[1]).await, 20);
    for (hub, foreign) in [
        (&hubs[0], "site-2"),
        (&hubs[1], "site-1"),
        (&hubs[0], "site-3"),
    ] {
        assert!(
            hub_json(hub, &format!("/v1/sites/{foreign}"))
                .await
                .is_err(),
            "{} holds nothing of {foreign}",
            hub.options.site
        );
    }
    wait_until(CATCH_UP, "site-3 reports the refusal", || async {
        sites[2].status(1).await.ok().is_some_and(|s| {
            s["uplink"]["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("not owned by hub group hub-1")
                && s["uplink"]["backlog_events"] == 20
        })
    })
    .await
    .expect("refusal visible in status");
}

/// Appends one event to each site (its node 1), recording what was acknowledged.
async fn append_to_each(sites: &[LabGroup], acked: &mut [BTreeMap<u64, String>], round: usize) {
    for (site, acked) in sites.iter().zip(acked.iter_mut()) {
        let data = format!("{}-{round}", site.options.site);
        let (status, body, _) = append(site, 1, &data, &data).await;
        assert_eq!(status, 200, "{body}");
        acked.insert(body["seq"].as_u64().expect("seq"), data);
    }
}

/// Ingest admission (`hub/src/ingest.rs: MAX_INGEST_PROPOSALS_PER_NODE`): six sites ship to
/// one hub node, the hub group's leader, while it cannot commit (cut off from the other two).
/// Four batches are proposed; the other two wait for a turn with their sessions open and no
/// timeout running. Healed, every event of every site lands once, in order, and the node
/// never had more than four proposals in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_node_proposes_four_batches_at_once_and_the_rest_wait_their_turn() {
    use openclaw_hil_tests::{GroupKind, UplinkOptions};
    const SITES: u32 = 6;
    /// `MAX_INGEST_PROPOSALS_PER_NODE` (hil-tests drives the binaries, not the hub crate).
    const TURNS: f64 = 4.0;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca(dir.path()).expect("ca");
    let hub_options = GroupOptions {
        kind: GroupKind::Hub,
        site: "hub".into(),
        ip_base: 1 << 16,
        ca_dir: Some(ca.clone()),
        relays: true,
        // Longer than the wait for the stalled state below: the four proposals in flight
        // must still be pending when it is looked at.
        write_timeout: "20s",
        ..fast()
    };
    let hub = LabGroup::start(&dir.path().join("hub"), 3, hub_options)
        .await
        .expect("hub");
    hub.wait_ready(&hub.ids()).await.expect("hub ready");
    let leader = hub.leader(&hub.ids()).await.expect("hub leader");
    let others: Vec<u64> = hub.ids().into_iter().filter(|id| *id != leader).collect();
    let mut uplink = UplinkOptions::to(&hub);
    uplink.hubs.retain(|(id, _)| *id == leader);
    let mut sites = Vec::new();
    for i in 1..=SITES {
        let options = GroupOptions {
            site: site_name(i.into()),
            ip_base: 16 * i,
            ca_dir: Some(ca.clone()),
            uplink: Some(uplink.clone()),
            ..fast()
        };
        let site = LabGroup::start(&dir.path().join(site_name(i.into())), 1, options)
            .await
            .expect("site");
        site.wait_ready(&site.ids()).await.expect("site ready");
        sites.push(site);
    }
    let mut acked = vec![BTreeMap::new(); sites.len()];
    append_to_each(&sites, &mut acked, 0).await;
    for site in &sites {
        assert_eq!(wait_fully_shipped(&hub, site).await, 1);
    }
    let sessions = hub
        .metric(leader, "openclaw_hub_ship_sessions_open")
        .await
        .expect("sessions");
    assert_eq!(sessions, f64::from(SITES), "one session per site");

    hub.partition(&[leader], &others).expect("partition");
    append_to_each(&sites, &mut acked, 1).await;
    let metric = |name: &'static str| hub.metric(leader, name);
    wait_until(CATCH_UP, "four batches proposed, two waiting", || async {
        let in_flight = metric("openclaw_hub_ingest_proposals_in_flight").await;
        let waiting = metric("openclaw_hub_ingest_proposals_waiting").await;
        matches!((in_flight, waiting), (Ok(f), Ok(w)) if f == TURNS && w == f64::from(SITES) - TURNS)
    })
    .await
    .expect("admission under contention");
    assert_eq!(
        metric("openclaw_hub_ship_sessions_open")
            .await
            .expect("sessions"),
        f64::from(SITES),
        "waiting sessions stay open"
    );

    hub.heal();
    for (site, acked) in sites.iter().zip(&acked) {
        let last = wait_fully_shipped(&hub, site).await;
        assert_eq!(last, 2);
        assert_exactly_once(&hub, &site.options.site, last, acked).await;
    }
    assert_eq!(
        metric("openclaw_hub_ingest_proposals_in_flight_max")
            .await
            .expect("max"),
        TURNS,
        "never more proposals in flight than turns"
    );
    assert!(
        metric("openclaw_hub_ingest_proposal_waits_total")
            .await
            .expect("waits")
            >= f64::from(SITES) - TURNS
    );
}
