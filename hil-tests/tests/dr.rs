//! Site disaster recovery (DESIGN.md §3.5) as one drill on real processes: a site ships,
//! loses its uplink, keeps writing (the unshipped tail), dies; the hub serves it, is promoted
//! and takes writes; the old group returns and is fenced (writes refused, tail exported); a
//! new group is reseeded from the hub and takes the site back; writes ship again. Every write
//! acknowledged by the hub, or by the edge before its last shipped batch, ends up at the hub
//! exactly once, in seq order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openclaw_hil_tests::lab::site_name;
use openclaw_hil_tests::{
    binary, request, wait_until, GroupOptions, Lab, LabGroup, LabOptions, UplinkOptions,
};
use reqwest::Method;
use serde_json::Value;

const CATCH_UP: Duration = Duration::from_secs(60);

async fn post(http: &reqwest::Client, url: &str, data: &str) -> (u16, Value) {
    match request(
        http,
        Method::POST,
        url,
        &[("Idempotency-Key", data)],
        Some(data.into()),
    )
    .await
    {
        Ok(a) => (a.status, a.json()),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// Appends `data` to stream `s` through `url_base` until acknowledged; returns its seq.
async fn append_acked(http: &reqwest::Client, url_base: &str, data: &str) -> u64 {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let (status, body) = post(http, &format!("{url_base}/streams/s"), data).await;
        if status == 200 {
            return body["seq"].as_u64().expect("seq");
        }
        assert!(
            Instant::now() < deadline,
            "{data} never acknowledged: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hub's record of site-1 (Null until it first shipped).
async fn site_status(hub: &LabGroup) -> Value {
    hub.get_json(hub.running()[0], "/v1/sites/site-1")
        .await
        .unwrap_or(Value::Null)
}

/// The hub's stream `s` of site-1: (seq, data) in order.
async fn hub_stream(hub: &LabGroup) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = hub
            .get_json(
                1,
                &format!("/v1/sites/site-1/streams/s?from={from}&limit=1000"),
            )
            .await
            .expect("stream");
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return out;
        }
        for e in &events {
            let data = base64::engine::general_purpose::STANDARD
                .decode(e["data_b64"].as_str().unwrap_or(""))
                .expect("b64");
            out.push((
                e["seq"].as_u64().expect("seq"),
                String::from_utf8(data).expect("utf8"),
            ));
        }
        from = page["next"].as_u64().expect("next");
    }
}

fn cli(bin: &str, env: &str, args: &[&str]) -> String {
    let out = Command::new(binary(bin, env).expect("binary"))
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn new_group_options(lab_dir: &Path, hub: &LabGroup) -> GroupOptions {
    GroupOptions {
        site: site_name(1),
        ip_base: 16 * 9,
        ca_dir: Some(lab_dir.join("ca")),
        uplink: Some(UplinkOptions::to(hub)),
        ..GroupOptions::fast()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disaster_recovery_drill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LabOptions {
        sites: 1,
        edge_nodes: 3,
        hub_nodes: 3,
        edge: GroupOptions::fast(),
        hub: GroupOptions {
            relays: true,
            ..GroupOptions::fast()
        },
        ..LabOptions::default()
    };
    let mut lab = Lab::start(dir.path(), options).await.expect("lab");
    let http = lab.sites[0].http.clone();
    let edge_url = |lab: &Lab, id: u64| format!("{}/v1", lab.sites[0].url(id));
    let hub_site = format!("{}/v1/sites/site-1", lab.hub().expect("hub").url(1));
    // Every write the drill must find at the hub in the end: seq → data.
    let mut kept: BTreeMap<u64, String> = BTreeMap::new();

    // 1. The site ships normally.
    for i in 0..40 {
        let data = format!("shipped-{i}");
        kept.insert(
            append_acked(&http, &edge_url(&lab, 1 + i % 3), &data).await,
            data,
        );
    }
    let hub = lab.hub().expect("hub");
    wait_until(CATCH_UP, "first events shipped", || async {
        site_status(hub).await["shipped_through"] == 40
    })
    .await
    .expect("shipped");

    // 2. Uplink cut; the site keeps writing: the unshipped tail.
    hub.block_sources(&lab.sites[0].ips(), true).expect("cut");
    let mut tail = BTreeMap::new();
    for i in 0..25 {
        let data = format!("tail-{i}");
        tail.insert(append_acked(&http, &edge_url(&lab, 1), &data).await, data);
    }

    // 3. The whole edge group dies.
    for id in lab.sites[0].ids() {
        lab.sites[0].kill9(id).expect("kill");
    }

    // 4. The lost site is readable at the hub as of shipped-through; status says how stale.
    let hub = lab.hub().expect("hub");
    let status = site_status(hub).await;
    assert_eq!(status["shipped_through"], 40);
    assert_eq!(status["owner"], "edge");
    assert!(
        status["last_contact_seconds_ago"].is_u64() && status["lag_events"].is_u64(),
        "{status}"
    );
    assert_eq!(hub_stream(hub).await.len(), 40);

    // 5. Promote; RTO = promote to the first acknowledged hub write.
    let hub_addr = hub.url(2);
    let promoted_at = Instant::now();
    let out = cli(
        "openclaw-hub",
        "OPENCLAW_HUB_BIN",
        &["promote", "site-1", "--addr", &hub_addr],
    );
    assert!(out.contains("\"owner\": \"hub\""), "{out}");
    let first = append_acked(&http, &hub_site, "hub-0").await;
    let rto = promoted_at.elapsed();
    assert_eq!(
        first, 41,
        "the hub continues the site's log from shipped-through"
    );
    kept.insert(first, "hub-0".into());
    for i in 1..15 {
        let data = format!("hub-{i}");
        kept.insert(append_acked(&http, &hub_site, &data).await, data);
    }

    // 6. The old group comes back (its uplink too) and is fenced: writes refused, reads go on.
    hub.block_sources(&lab.sites[0].ips(), false)
        .expect("restore");
    for id in lab.sites[0].ids() {
        lab.sites[0].restart(id).expect("restart");
    }
    let old = &lab.sites[0];
    wait_until(CATCH_UP, "old group fenced", || async {
        old.status(1)
            .await
            .ok()
            .is_some_and(|s| s["uplink"]["fenced"] == true)
            && old
                .status(2)
                .await
                .ok()
                .is_some_and(|s| s["uplink"]["fenced"] == true)
    })
    .await
    .expect("fenced");
    let (status, body) = post(
        &http,
        &format!("{}/streams/s", edge_url(&lab, 2)),
        "after-fence",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("fenced")),
        "{body}"
    );
    assert_eq!(
        old.metric(1, "openclaw_uplink_fenced")
            .await
            .expect("metric"),
        1.0
    );
    let page = old
        .get_json(3, "/v1/streams/s?from=41&limit=100&consistency=stale")
        .await
        .expect("reads still served");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(25));

    // 7. The unshipped tail, exported: exactly the events after shipped-through.
    let export = dir.path().join("tail.ndjson");
    let out = cli(
        "openclaw-edge",
        "OPENCLAW_EDGE_BIN",
        &[
            "export-unshipped",
            "--addr",
            &old.url(1),
            "--out",
            export.to_str().expect("path"),
        ],
    );
    assert!(out.contains("25 unshipped event(s)"), "{out}");
    let exported: BTreeMap<u64, String> = std::fs::read_to_string(&export)
        .expect("export")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["data_b64"].as_str().expect("data"))
                .expect("b64");
            (
                v["seq"].as_u64().expect("seq"),
                String::from_utf8(data).expect("utf8"),
            )
        })
        .collect();
    assert_eq!(
        exported, tail,
        "the export holds exactly the unshipped tail"
    );
    lab.sites[0].stop_all().await.expect("retire the old group");

    // 8. Failback: the hub stops taking writes; a new group is reseeded and takes the site back.
    let hub = lab.hub().expect("hub");
    let out = cli(
        "openclaw-hub",
        "OPENCLAW_HUB_BIN",
        &["failback", "site-1", "--addr", &hub_addr],
    );
    assert!(out.contains("handing-back"), "{out}");
    let (status, body) = post(
        &http,
        &format!("{hub_site}/streams/s"),
        "while-handing-back",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("handing_back")),
        "{body}"
    );
    let mut fresh = LabGroup::create(
        &dir.path().join("site-1-new"),
        3,
        new_group_options(dir.path(), hub),
    )
    .await
    .expect("new group");
    for node in &fresh.nodes {
        let out = cli(
            "openclaw-edge",
            "OPENCLAW_EDGE_BIN",
            &[
                "reseed",
                "--from-hub",
                &hub.url(3),
                "--config",
                node.config_path().to_str().expect("path"),
            ],
        );
        assert!(out.contains("seq 55, epoch 2"), "{out}");
    }
    for id in fresh.ids() {
        fresh.restart(id).expect("start");
    }
    fresh.wait_ready(&fresh.ids()).await.expect("ready");
    wait_until(CATCH_UP, "site handed back", || async {
        let s = site_status(hub).await;
        s["owner"] == "edge" && s["epoch"] == 2
    })
    .await
    .expect("handed back");
    let fresh_url = format!("{}/v1", fresh.url(2));
    let first_back = append_acked(&http, &fresh_url, "back-0").await;
    assert_eq!(
        first_back, 56,
        "the new group continues from the hub's last seq"
    );
    kept.insert(first_back, "back-0".into());
    for i in 1..10 {
        let data = format!("back-{i}");
        kept.insert(append_acked(&http, &fresh_url, &data).await, data);
    }
    let (status, _) = post(
        &http,
        &format!("{hub_site}/streams/s"),
        "hub-after-failback",
    )
    .await;
    assert_eq!(status, 409, "the hub no longer takes the site's writes");

    // 9. Everything kept is at the hub exactly once, in order; the tail is not.
    wait_until(CATCH_UP, "new group shipped", || async {
        site_status(hub).await["shipped_through"] == 65
    })
    .await
    .expect("shipped");
    let at_hub = hub_stream(hub).await;
    let seqs: Vec<u64> = at_hub.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=65).collect::<Vec<_>>());
    let at_hub: BTreeMap<u64, String> = at_hub.into_iter().collect();
    assert_eq!(at_hub, kept);
    println!(
        "DR drill: RPO {} events (the exported unshipped tail), RTO {:?} (promote to first hub write)",
        exported.len(),
        rto
    );
}

/// The state a replay of `ops` (seq-ordered) up to `last` yields: KV and stream `s`.
fn replay(ops: &[(u64, Op)], last: u64) -> (BTreeMap<String, String>, Vec<(u64, String)>) {
    let mut kv = BTreeMap::new();
    let mut stream = Vec::new();
    for (seq, op) in ops.iter().filter(|(seq, _)| *seq <= last) {
        match op {
            Op::Put(k, v) => {
                kv.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                kv.remove(k);
            }
            Op::Append(d) => stream.push((*seq, d.clone())),
        }
    }
    (kv, stream)
}

#[derive(Clone, Debug)]
enum Op {
    Put(String, String),
    Delete(String),
    Append(String),
}

/// A node's whole KV (stale read) and stream `s`.
async fn node_state(g: &LabGroup, id: u64) -> (BTreeMap<String, String>, Vec<(u64, String)>) {
    let b64 = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .expect("b64"),
        )
        .expect("utf8")
    };
    let items = g
        .get_json(id, "/v1/kv?prefix=&limit=1000&consistency=stale")
        .await
        .expect("kv");
    let kv = items["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap_or("").to_owned(),
                b64(&i["value_b64"]),
            )
        })
        .collect();
    let page = g
        .get_json(id, "/v1/streams/s?from=1&limit=1000&consistency=stale")
        .await
        .expect("stream");
    let stream = page["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap_or(0), b64(&e["data_b64"])))
        .collect();
    (kv, stream)
}

/// Starts a one-node group in `dir` after `prepare` filled its data directory.
async fn start_prepared(lab_dir: &Path, name: &str, ip_block: u32, prepare: &[&str]) -> LabGroup {
    let options = GroupOptions {
        site: site_name(1),
        ip_base: 16 * ip_block,
        ca_dir: Some(lab_dir.join("ca")),
        ..GroupOptions::fast()
    };
    let mut g = LabGroup::create(&lab_dir.join(name), 1, options)
        .await
        .expect("group");
    let config = g.nodes[0].config_path();
    let mut args: Vec<&str> = prepare.to_vec();
    args.extend(["--config", config.to_str().expect("path")]);
    cli("openclaw-edge", "OPENCLAW_EDGE_BIN", &args);
    g.restart(1).expect("start");
    g.wait_ready(&[1]).await.expect("ready");
    g
}

/// Point-in-time restore from the hub's copy reproduces exactly the state a replay of the
/// log up to that seq gives; a backup restores a node's exact state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn point_in_time_restore_and_backup_reproduce_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LabOptions {
        sites: 1,
        edge_nodes: 1,
        hub_nodes: 1,
        edge: GroupOptions::fast(),
        hub: GroupOptions::fast(),
        ..LabOptions::default()
    };
    let lab = Lab::start(dir.path(), options).await.expect("lab");
    let site = &lab.sites[0];
    let http = &site.http;
    let base = format!("{}/v1", site.url(1));
    let mut ops: Vec<(u64, Op)> = Vec::new();
    let mut early = None;
    for i in 0..60u64 {
        if i == 30 {
            let (path, at) = backup(dir.path(), site, "early");
            assert_eq!(Some(at), ops.last().map(|(s, _)| *s), "early backup's seq");
            early = Some((path, at));
        }
        let key = format!("k{}", i % 7);
        let (op, answer) = match i % 5 {
            0 | 1 => {
                let v = format!("v{i}");
                let a = request(
                    http,
                    Method::PUT,
                    &format!("{base}/kv/{key}"),
                    &[],
                    Some(v.clone().into()),
                )
                .await
                .expect("put");
                (Op::Put(key, v), a)
            }
            2 => {
                let a = request(http, Method::DELETE, &format!("{base}/kv/{key}"), &[], None)
                    .await
                    .expect("delete");
                (Op::Delete(key), a)
            }
            _ => {
                let d = format!("e{i}");
                let a = request(
                    http,
                    Method::POST,
                    &format!("{base}/streams/s"),
                    &[],
                    Some(d.clone().into()),
                )
                .await
                .expect("append");
                (Op::Append(d), a)
            }
        };
        match answer.status {
            200 => ops.push((answer.json()["seq"].as_u64().expect("seq"), op)),
            404 => {} // a delete of an absent key writes nothing
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    let last = ops.last().map(|(s, _)| *s).expect("writes");
    let hub = lab.hub().expect("hub");
    wait_until(CATCH_UP, "shipped", || async {
        site_status(hub).await["shipped_through"] == last
    })
    .await
    .expect("shipped");

    for (n, as_of) in [(20, 20), (last / 2, last / 2), (last, last)] {
        let restored = start_prepared(
            dir.path(),
            &format!("pitr-{n}"),
            20 + n as u32,
            &[
                "restore",
                "--from-hub",
                &hub.url(1),
                "--as-of-seq",
                &as_of.to_string(),
            ],
        )
        .await;
        assert_eq!(
            node_state(&restored, 1).await,
            replay(&ops, n),
            "as of seq {n}"
        );
        assert_eq!(restored.status(1).await.expect("status")["applied_seq"], n);
    }

    // As of a time: everything stamped up to an event's HLC time, and nothing after it.
    let feed = hub
        .get_json(1, "/v1/feed?cursor=0&limit=1000")
        .await
        .expect("feed");
    let from_hub = hub.url(1);
    restore_as_of_time(
        dir.path(),
        "pitr-time",
        90,
        &["--from-hub", &from_hub],
        &feed["events"][30],
        &ops,
    )
    .await;

    // A backup of the live node restores its exact state into a new directory.
    let (late, late_at) = backup(dir.path(), site, "late");
    assert_eq!(late_at, last);
    let restored = start_prepared(
        dir.path(),
        "from-backup",
        95,
        &["restore", "--from-backup", late.to_str().expect("path")],
    )
    .await;
    assert_eq!(node_state(&restored, 1).await, node_state(site, 1).await);
    assert_eq!(node_state(&restored, 1).await, replay(&ops, last));
    // Never over a live directory.
    let out = Command::new(binary("openclaw-edge", "OPENCLAW_EDGE_BIN").expect("bin"))
        .args([
            "restore",
            "--from-backup",
            late.to_str().expect("path"),
            "--config",
        ])
        .arg(site.nodes[0].config_path())
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "restore over a running node's directory was refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("never over a live one") || err.contains("opening"),
        "{err}"
    );

    // At the edge, while the log is retained: the early backup rolled forward through the
    // late backup's log reproduces any point after it, and starts fenced (read-only).
    let (early_path, early_at) = early.expect("early backup");
    let (early_str, late_str) = (
        early_path.to_str().expect("path"),
        late.to_str().expect("path"),
    );
    for (block, n) in [(100, early_at), (101, (early_at + last) / 2), (102, last)] {
        let restored = start_prepared(
            dir.path(),
            &format!("edge-pitr-{n}"),
            block,
            &[
                "restore",
                "--from-backup",
                early_str,
                "--log-from",
                late_str,
                "--as-of-seq",
                &n.to_string(),
            ],
        )
        .await;
        assert_eq!(
            node_state(&restored, 1).await,
            replay(&ops, n),
            "edge as of seq {n}"
        );
        let status = restored.status(1).await.expect("status");
        assert_eq!(status["applied_seq"], n);
        assert_eq!(status["uplink"]["fenced"], true, "{status}");
        let put = request(
            &restored.http,
            Method::PUT,
            &format!("{}/v1/kv/after", restored.url(1)),
            &[],
            Some("x".into()),
        )
        .await
        .expect("put");
        assert_eq!(
            put.status,
            503,
            "a point in time is read-only: {}",
            put.text()
        );
    }
    // As of a time, at the edge: everything stamped up to a later event's HLC time.
    let at = &feed["events"][45];
    assert!(
        at["seq"].as_u64().expect("seq") > early_at,
        "event {at} is after the early backup"
    );
    let restored = restore_as_of_time(
        dir.path(),
        "edge-pitr-time",
        103,
        &["--from-backup", early_str, "--log-from", late_str],
        at,
        &ops,
    )
    .await;

    // Points the files at hand do not cover are refused, name the range, and leave no store.
    let past_end = (last + 1).to_string();
    let (other, _) = backup(dir.path(), &restored, "other-group");
    let other_str = other.to_str().expect("path");
    let refused = [
        (
            vec!["--from-backup", early_str, "--log-from", other_str],
            "ends before the backup's state",
        ),
        (
            vec!["--from-backup", late_str, "--as-of-seq", "5"],
            "older backup",
        ),
        (
            vec!["--from-backup", early_str, "--as-of-seq", &past_end],
            "the log ends at seq",
        ),
    ];
    for (i, (args, expect)) in refused.iter().enumerate() {
        let options = GroupOptions {
            site: site_name(1),
            ip_base: 16 * (110 + i as u32),
            ca_dir: Some(dir.path().join("ca")),
            ..GroupOptions::fast()
        };
        let g = LabGroup::create(&dir.path().join(format!("refused-{i}")), 1, options)
            .await
            .expect("group");
        let out = Command::new(binary("openclaw-edge", "OPENCLAW_EDGE_BIN").expect("bin"))
            .arg("restore")
            .args(args)
            .arg("--config")
            .arg(g.nodes[0].config_path())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        let data = g.nodes[0].dir.join("data");
        assert!(
            !data.exists() || std::fs::read_dir(&data).expect("dir").next().is_none(),
            "a failed restore left files in {}",
            data.display()
        );
    }
}

/// Restores (`from`: where from) as of the HLC time of feed event `at` into a new one-node
/// group, and checks it holds exactly a replay of `ops` up to a seq at or after `at`'s.
async fn restore_as_of_time(
    lab_dir: &Path,
    name: &str,
    ip_block: u32,
    from: &[&str],
    at: &Value,
    ops: &[(u64, Op)],
) -> LabGroup {
    let ms: u64 = at["hlc"]
        .as_str()
        .and_then(|h| h.split('.').next())
        .and_then(|m| m.parse().ok())
        .expect("hlc ms");
    let last = ops.last().map(|(s, _)| *s).expect("writes");
    let ms_arg = ms.to_string();
    let mut args = vec!["restore"];
    args.extend_from_slice(from);
    args.extend(["--as-of-ms", &ms_arg]);
    let restored = start_prepared(lab_dir, name, ip_block, &args).await;
    let upto = restored.status(1).await.expect("status")["applied_seq"]
        .as_u64()
        .expect("seq");
    let at_seq = at["seq"].as_u64().expect("seq");
    assert!(upto >= at_seq && upto <= last, "as of {ms} ms: seq {upto}");
    assert_eq!(
        node_state(&restored, 1).await,
        replay(ops, upto),
        "{name}: as of {ms} ms"
    );
    restored
}

/// Takes a backup of node 1 of `g` into `dir/NAME.backup`; returns it and its state's seq.
fn backup(dir: &Path, g: &LabGroup, name: &str) -> (PathBuf, u64) {
    let path = dir.join(format!("{name}.backup"));
    let out = cli(
        "openclaw-edge",
        "OPENCLAW_EDGE_BIN",
        &[
            "backup",
            "--addr",
            &g.url(1),
            "--out",
            path.to_str().expect("path"),
        ],
    );
    let seq = out
        .split("state at seq ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("backup output: {out}"));
    (path, seq)
}
