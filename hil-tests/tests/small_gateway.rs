//! A small gateway: the leader of a three-node edge group runs inside a 256 MiB memory cgroup
//! (swap counted) under a 256-client write load plus reads, with the default (gateway)
//! storage settings, and must not be OOM-killed. Prints its peak memory. Needs root.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_hil_tests::memcg::MemoryCgroup;
use openclaw_hil_tests::{request, wait_until, GroupOptions, LabGroup};
use reqwest::Method;

/// The device's memory.
const DEVICE_BYTES: u64 = 256 * 1024 * 1024;
/// Concurrent clients of the load.
const CLIENTS: usize = 256;
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(10);

/// A field of /proc/PID/status, as its first word.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

fn rss_mib(pid: u32) -> f64 {
    status_field(pid, "VmRSS:")
        .and_then(|kib| kib.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loaded_leader_fits_a_256_mib_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = LabGroup::start_ready(
        dir.path(),
        3,
        GroupOptions {
            ip_base: 16 * 12,
            // As on a four-core gateway (more workers, more per-thread memory), whatever this
            // machine has: the node must run the threads its config asks for.
            runtime_threads: Some(4),
            ..GroupOptions::fast()
        },
    )
    .await
    .expect("group");
    let cgroup = MemoryCgroup::create(
        &format!("openclaw-small-gateway-{}", std::process::id()),
        DEVICE_BYTES,
    )
    .expect("memory cgroup (needs root)");
    let pid = g.nodes[0].pid().expect("node 1 runs");
    cgroup.add(pid).expect("into the cgroup");
    // Transparent huge pages would make each region the allocator touches 2 MiB of RSS,
    // whatever the host's THP setting (`disable_transparent_huge_pages` in the daemon).
    if let Some(thp) = status_field(pid, "THP_enabled:") {
        assert_eq!(
            thp, "0",
            "the node runs with transparent huge pages allowed"
        );
    }

    assert_eq!(
        g.metric(1, "openclaw_runtime_workers")
            .await
            .expect("metric"),
        4.0,
        "the node runs the runtime threads its config asks for"
    );

    // Node 1 leads: it holds the replication buffers and answers every client.
    let leader = g.leader(&g.ids()).await.expect("leader");
    if leader != 1 {
        let a = request(
            &g.http,
            Method::POST,
            &format!("{}/v1/admin/transfer-leader", g.url(leader)),
            &[("Content-Type", "application/json")],
            Some(br#"{"to":1}"#.to_vec()),
        )
        .await
        .expect("transfer");
        assert_eq!(a.status, 200, "transfer-leader: {}", a.text());
        wait_until(Duration::from_secs(30), "node 1 leads", || async {
            g.leader(&g.ids()).await.ok() == Some(1)
        })
        .await
        .expect("node 1 leads");
    }
    let idle = rss_mib(pid);

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let base = g.url(1);
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let until = Instant::now() + LOAD;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, base, ok, failed) = (http.clone(), base.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; 256];
            let mut i = 0u64;
            while Instant::now() < until {
                let (method, url, body) = match i % 4 {
                    0 => (
                        Method::POST,
                        format!("{base}/v1/streams/s{}", c % 8),
                        Some(value.clone()),
                    ),
                    1 => (Method::GET, format!("{base}/v1/kv/k{c}-{}", i / 4), None),
                    _ => (
                        Method::PUT,
                        format!("{base}/v1/kv/k{c}-{}", i / 4),
                        Some(value.clone()),
                    ),
                };
                match request(&http, method, &url, &[], body).await {
                    Ok(a) if a.status == 200 || a.status == 404 => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    let mut loaded: f64 = 0.0;
    while Instant::now() < until {
        loaded = loaded.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in tasks {
        t.await.expect("client");
    }

    assert_eq!(
        cgroup.oom_kills().expect("oom count"),
        0,
        "the node was OOM-killed"
    );
    assert!(
        g.running().contains(&1) && g.status(1).await.is_ok(),
        "node 1 stopped serving inside {} MiB",
        DEVICE_BYTES >> 20
    );
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok > 0, "no request succeeded");
    println!(
        "small gateway ({} MiB cgroup, {CLIENTS} clients for {LOAD:?}): {ok} requests ok, {} \
         failed; leader RSS idle {idle:.1} MiB, loaded peak {loaded:.1} MiB; cgroup peak {} \
         MiB (page cache included)",
        DEVICE_BYTES >> 20,
        failed.load(Ordering::Relaxed),
        cgroup.peak_bytes().unwrap_or(0) >> 20,
    );
    g.stop_all().await.expect("stop");
}
