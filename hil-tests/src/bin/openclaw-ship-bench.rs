//! `openclaw-ship-bench`: edge → hub shipping under fixed workloads, printed as one table.
//!
//! Every row starts its own topology through the lab harness (real `openclaw-edge` and
//! `openclaw-hub` processes on loopback, the hub behind the project's UDP relay so uplinks can
//! be cut and shaped). Figures are measurements, never assertions.
//!
//! - hub ingest: S sites × 1 edge node build a backlog with the uplink cut; the time from
//!   restoring it to a 3-node hub holding every event gives events/s (S = 1, 10, 100), when
//!   half the sites' sessions and the last were back, and the CPU time the hub nodes and the
//!   edges spent per event meanwhile (on shared cores the rate says how they split the CPU;
//!   CPU per event says what an event costs each side).
//! - catch-up: one site × 3 nodes, a backlog of N events, then the same timing.
//! - lag: a paced writer at R events/s; each event's lag is the time from its edge ack to the
//!   first poll of the hub that shows it shipped.
//! - wire bytes per event: the edges' shipped bytes over the events shipped (zstd), and the
//!   same batch's size uncompressed (postcard), for JSON telemetry; the codec's CPU per event
//!   to encode and decode that batch, on one thread.
//! - slow link: catch-up and lag again with the site's uplink (its nodes' links to every hub
//!   node) shaped to 1 Mbit/s and 100 ms RTT; the hub's own links stay clean, as in a cloud.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use openclaw_hil_tests::relay::Faults;
use openclaw_hil_tests::{request, GroupOptions, Lab, LabGroup, LabOptions};
use reqwest::Method;
use serde_json::{json, Value};
use shared::ship::codec::{decode, encode, ShipBatch};
use shared::ship::{EventKind, ShippedEvent};

/// Longest any catch-up may take before the row is reported as unfinished.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1800);
/// Interval of the hub polls that time catch-up and lag.
const POLL: Duration = Duration::from_millis(5);
/// Concurrent writers that build a backlog.
const LOAD_CLIENTS: usize = 64;
/// Events of the offline batch the raw/compressed sizes are computed on.
const SIZE_SAMPLE_EVENTS: u64 = 1000;
/// Encodes and decodes of that batch timed for the codec rows.
const CODEC_ROUNDS: u32 = 200;

#[derive(Parser)]
#[command(
    name = "openclaw-ship-bench",
    about = "Benchmarks edge-to-hub shipping on a local lab"
)]
struct Args {
    /// Site counts of the hub-ingest rows.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    sites: Vec<u64>,
    /// Events each site writes for the hub-ingest rows.
    #[arg(long, default_value_t = 2000)]
    events_per_site: u64,
    /// Backlog of the catch-up row.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Edge write rate of the lag row (events/s).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Duration of the lag rows, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Backlog of the slow-link catch-up row.
    #[arg(long, default_value_t = 20_000)]
    slow_backlog: u64,
    /// Write rate of the slow-link lag row (events/s).
    #[arg(long, default_value_t = 100)]
    slow_rate: u64,
    /// Shrink every workload about tenfold (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// A JSON telemetry event, deterministic in `i`.
fn telemetry(i: u64) -> String {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    format!(
        r#"{{"sensor":"pump-{}","ts":{},"temperature_c":{}.{},"pressure_kpa":{}.{},"status":"{}"}}"#,
        x % 24,
        1_795_363_125_094 + i * 100,
        15 + x % 20,
        x % 10,
        95 + x % 12,
        (x >> 4) % 10,
        if x.is_multiple_of(50) { "warn" } else { "ok" }
    )
}

fn hub_options() -> GroupOptions {
    GroupOptions {
        relays: true,
        ..GroupOptions::default()
    }
}

/// The edges' `[uplink] reconnect_max` in every row. The rows cut the uplink while they build
/// a backlog; with the default (30 s) each site's next attempt after the cut is healed comes
/// up to that long later, and the timings would measure the jitter of the reconnects instead
/// of shipping (100 sites after a 30 s cut: most of a 10 s drain).
const BENCH_RECONNECT_MAX: &str = "200ms";

async fn lab(
    dir: &std::path::Path,
    sites: u64,
    edge_nodes: u64,
    hub_nodes: u64,
) -> anyhow::Result<Lab> {
    let options = LabOptions {
        sites,
        edge_nodes,
        hub_nodes,
        hub: hub_options(),
        reconnect_max: Some(BENCH_RECONNECT_MAX),
        ..LabOptions::default()
    };
    Lab::start(dir, options).await
}

/// Writes `per_site` telemetry events to every site with `clients` concurrent writers.
async fn load(lab: &Lab, per_site: u64, clients: usize) -> anyhow::Result<u64> {
    let targets: Vec<String> = lab
        .sites
        .iter()
        .map(|g| format!("{}/v1/streams/telemetry", g.url(1)))
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let total = per_site * targets.len() as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, next, targets) = (http.clone(), next.clone(), targets.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let url = &targets[(i % targets.len() as u64) as usize];
                let body = telemetry(i).into_bytes();
                loop {
                    let a = request(&http, Method::POST, url, &[], Some(body.clone())).await?;
                    match a.status {
                        200 => break,
                        503 => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => bail!("write answered {other}: {}", a.text()),
                    }
                }
                if i > 0 && i % 100_000 == 0 {
                    eprintln!("  loaded {i}/{total} in {:.0?}", started.elapsed());
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(total)
}

/// Every site's shipped-through at the hub (a stale read of one hub node).
async fn shipped(hub: &LabGroup) -> anyhow::Result<Vec<u64>> {
    let v = hub.get_json(1, "/v1/sites?consistency=stale").await?;
    Ok(v["sites"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x["shipped_through"].as_u64())
                .collect()
        })
        .unwrap_or_default())
}

/// How a backlog of `per_site` events at each of `sites` sites drained into the hub, from
/// the moment the uplink was restored (or the call, for a backlog not held back).
struct Drain {
    /// Half the sites had shipped something.
    half_resumed: Duration,
    /// Every site had shipped something (its session was back).
    all_resumed: Duration,
    /// Events still to ship at that moment.
    left_at_all_resumed: u64,
    /// The hub held every event.
    done: Duration,
}

/// Polls the hub until `sites` sites each hold `per_site` events.
async fn time_drain(hub: &LabGroup, sites: usize, per_site: u64) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let mut resumed: Option<(Duration, u64)> = None;
    let mut half_resumed = None;
    loop {
        let s = shipped(hub).await.unwrap_or_default();
        let elapsed = started.elapsed();
        if half_resumed.is_none() && 2 * s.iter().filter(|t| **t > 0).count() >= sites {
            half_resumed = Some(elapsed);
        }
        if resumed.is_none() && s.len() == sites && s.iter().all(|t| *t > 0) {
            let left = s.iter().map(|t| per_site.saturating_sub(*t)).sum();
            resumed = Some((elapsed, left));
        }
        if s.len() == sites && s.iter().all(|t| *t >= per_site) {
            let (all_resumed, left_at_all_resumed) = resumed.unwrap_or((elapsed, 0));
            return Ok(Drain {
                half_resumed: half_resumed.unwrap_or(elapsed),
                all_resumed,
                left_at_all_resumed,
                done: elapsed,
            });
        }
        if elapsed > CATCH_UP_TIMEOUT {
            bail!("not caught up within {CATCH_UP_TIMEOUT:?}: {s:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sum of a metric over every running node of a group.
async fn metric_sum(g: &LabGroup, name: &str) -> f64 {
    let mut total = 0.0;
    for id in g.running() {
        total += g.metric(id, name).await.unwrap_or(0.0);
    }
    total
}

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
}

fn row(rows: &mut Vec<Row>, name: impl Into<String>, value: f64, unit: &'static str) {
    let name = name.into();
    eprintln!("  {name}: {value:.2} {unit}");
    rows.push(Row { name, value, unit });
}

/// CPU seconds the processes of `groups` have used so far. On shared cores a rate says
/// how the CPU was split; CPU time per event says what an event costs each side.
fn cpu_seconds<'a>(groups: impl IntoIterator<Item = &'a LabGroup>) -> f64 {
    groups
        .into_iter()
        .flat_map(|g| g.nodes.iter().filter_map(|n| n.pid()))
        .filter_map(openclaw_hil_tests::cpu_seconds)
        .sum()
}

/// Hub nodes of the ingest rows: a hub is a 3-node Raft group in production.
const INGEST_HUB_NODES: u64 = 3;

/// Hub ingest from `sites` sites: backlog with the uplink cut, then time the drain.
async fn ingest(rows: &mut Vec<Row>, sites: u64, per_site: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lab = lab(dir.path(), sites, 1, INGEST_HUB_NODES).await?;
    let result = async {
        let hub = lab.hub()?;
        let edges: Vec<_> = lab.sites.iter().flat_map(|g| g.ips()).collect();
        hub.block_sources(&edges, true)?;
        let total = load(&lab, per_site, LOAD_CLIENTS.min(4 * sites as usize).max(8)).await?;
        let (hub_cpu, edge_cpu) = (cpu_seconds([hub]), cpu_seconds(&lab.sites));
        hub.block_sources(&edges, false)?;
        let drain = time_drain(hub, sites as usize, per_site).await?;
        let hub_cpu = cpu_seconds([hub]) - hub_cpu;
        let edge_cpu = cpu_seconds(&lab.sites) - edge_cpu;
        let label = format!(
            "hub ingest ({INGEST_HUB_NODES} hub nodes), {sites} site(s) x {per_site} events"
        );
        row(
            rows,
            format!("{label}: events/s"),
            total as f64 / drain.done.as_secs_f64(),
            "ev/s",
        );
        row(
            rows,
            format!("{label}: half the sessions resumed after"),
            drain.half_resumed.as_secs_f64(),
            "s",
        );
        row(
            rows,
            format!("{label}: last session resumed after"),
            drain.all_resumed.as_secs_f64(),
            "s",
        );
        row(
            rows,
            format!("{label}: hub CPU per event, all hub nodes"),
            hub_cpu * 1e6 / total as f64,
            "µs",
        );
        row(
            rows,
            format!("{label}: edge CPU per event"),
            edge_cpu * 1e6 / total as f64,
            "µs",
        );
        let after = drain.done.saturating_sub(drain.all_resumed).as_secs_f64();
        if drain.left_at_all_resumed > 0 && after > 0.0 {
            row(
                rows,
                format!("{label}: events/s once every session resumed"),
                drain.left_at_all_resumed as f64 / after,
                "ev/s",
            );
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    lab.stop_all().await?;
    result
}

/// One site × 3 with a backlog of `backlog` events; times its drain (and wire bytes).
async fn catch_up(
    rows: &mut Vec<Row>,
    label: &str,
    backlog: u64,
    faults: Option<Faults>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lab = lab(dir.path(), 1, 3, 3).await?;
    let result = async {
        let hub = lab.hub()?;
        let site = &lab.sites[0];
        hub.block_sources(&site.ips(), true)?;
        if let Some(f) = faults {
            hub.set_faults_from(&site.ips(), f)?;
        }
        eprintln!("{label}: loading a backlog of {backlog} events");
        load(&lab, backlog, LOAD_CLIENTS).await?;
        let status = site.status(1).await?;
        let backlog_bytes = status["uplink"]["backlog_bytes"].as_u64().unwrap_or(0);
        let sent_before = metric_sum(site, "openclaw_uplink_bytes_sent_total").await;
        hub.block_sources(&site.ips(), false)?;
        let took = time_drain(hub, 1, backlog).await?.done;
        let sent = metric_sum(site, "openclaw_uplink_bytes_sent_total").await - sent_before;
        row(
            rows,
            format!("{label}: backlog of {backlog} events, catch-up time"),
            took.as_secs_f64(),
            "s",
        );
        row(
            rows,
            format!("{label}: catch-up rate"),
            backlog as f64 / took.as_secs_f64(),
            "ev/s",
        );
        row(
            rows,
            format!("{label}: edge outbox bytes per event"),
            backlog_bytes as f64 / backlog as f64,
            "B",
        );
        row(
            rows,
            format!("{label}: wire bytes per event (zstd batches)"),
            sent / backlog as f64,
            "B",
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    lab.stop_all().await?;
    result
}

/// A paced writer at `rate`/s for `seconds`; each event's lag from edge ack to hub shipped.
async fn lag(
    rows: &mut Vec<Row>,
    label: &str,
    rate: u64,
    seconds: u64,
    faults: Option<Faults>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut lab = lab(dir.path(), 1, 3, 3).await?;
    let result = async {
        let hub = lab.hub()?;
        if let Some(f) = faults {
            hub.set_faults_from(&lab.sites[0].ips(), f)?;
        }
        let url = format!("{}/v1/streams/telemetry", lab.sites[0].url(1));
        let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
        let polls: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let (polls, stop) = (polls.clone(), stop.clone());
            // The leader's own state: a follower learns commits a heartbeat later.
            let leader = hub.leader(&hub.running()).await?;
            let hub_url = format!("{}/v1/sites/site-1?consistency=stale", hub.url(leader));
            let http = reqwest::Client::new();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(a) = request(&http, Method::GET, &hub_url, &[], None).await {
                        if let Some(s) = a.json()["shipped_through"].as_u64() {
                            if let Ok(mut p) = polls.lock() {
                                p.push((Instant::now(), s));
                            }
                        }
                    }
                    tokio::time::sleep(POLL).await;
                }
            })
        };
        let http = reqwest::Client::new();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let mut writes = Vec::new();
        for i in 0..rate * seconds {
            ticks.tick().await;
            let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
            writes.push(tokio::spawn(async move {
                if let Ok(a) = request(
                    &http,
                    Method::POST,
                    &url,
                    &[],
                    Some(telemetry(i).into_bytes()),
                )
                .await
                {
                    if let Some(seq) = a.json()["seq"].as_u64() {
                        if let Ok(mut v) = acked.lock() {
                            v.push((seq, Instant::now()));
                        }
                    }
                }
            }));
        }
        for w in writes {
            let _ = w.await;
        }
        let last = acked
            .lock()
            .map(|v| v.iter().map(|(s, _)| *s).max().unwrap_or(0))
            .unwrap_or(0);
        time_drain(hub, 1, last).await?;
        tokio::time::sleep(POLL * 4).await; // one more poll recorded after the last
        stop.store(true, Ordering::Relaxed);
        let _ = poller.await;
        let polls = polls.lock().map(|p| p.clone()).unwrap_or_default();
        let mut lags: Vec<f64> = acked
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|(seq, at)| {
                let seen = polls.iter().find(|(when, s)| *s >= *seq && when >= at)?;
                Some(seen.0.duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        lags.sort_by(f64::total_cmp);
        if lags.is_empty() {
            bail!("no lag samples");
        }
        let pct = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
        row(
            rows,
            format!("{label}: lag at {rate} ev/s p50"),
            pct(0.50),
            "ms",
        );
        row(
            rows,
            format!("{label}: lag at {rate} ev/s p99"),
            pct(0.99),
            "ms",
        );
        row(
            rows,
            format!("{label}: lag at {rate} ev/s max"),
            pct(1.0),
            "ms",
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    lab.stop_all().await?;
    result
}

/// Raw and compressed bytes per event of one batch of telemetry (offline, same codec).
fn sizes(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let events: Vec<ShippedEvent> = (0..SIZE_SAMPLE_EVENTS)
        .map(|i| ShippedEvent {
            seq: i + 1,
            hlc: (1_795_363_125_094 + i) << 16,
            kind: EventKind::Append {
                stream: "telemetry".into(),
                data: telemetry(i).into_bytes(),
            },
        })
        .collect();
    let payload: usize = (0..SIZE_SAMPLE_EVENTS).map(|i| telemetry(i).len()).sum();
    let batch = ShipBatch {
        site: "site-1".into(),
        epoch: 0,
        first_seq: 1,
        head_seq: SIZE_SAMPLE_EVENTS,
        events,
    };
    let raw = postcard::to_stdvec(&batch).context("postcard")?.len();
    let compressed = encode(&batch).context("encode")?.len();
    let n = SIZE_SAMPLE_EVENTS as f64;
    row(
        rows,
        "JSON telemetry payload per event",
        payload as f64 / n,
        "B",
    );
    row(
        rows,
        "batch bytes per event, uncompressed (postcard)",
        raw as f64 / n,
        "B",
    );
    row(
        rows,
        "batch bytes per event, zstd",
        compressed as f64 / n,
        "B",
    );
    // CPU of the codec alone, one thread: what the edge pays per event to encode a batch,
    // and each hub node to decode it (once to check it, then once per node to apply it).
    let wire = encode(&batch).context("encode")?;
    let started = Instant::now();
    for _ in 0..CODEC_ROUNDS {
        std::hint::black_box(encode(std::hint::black_box(&batch)).context("encode")?);
    }
    let per_event = started.elapsed().as_secs_f64() * 1e6 / (CODEC_ROUNDS as f64 * n);
    row(rows, "batch encode CPU per event (edge)", per_event, "µs");
    let started = Instant::now();
    for _ in 0..CODEC_ROUNDS {
        std::hint::black_box(decode(std::hint::black_box(&wire)).context("decode")?);
    }
    let per_event = started.elapsed().as_secs_f64() * 1e6 / (CODEC_ROUNDS as f64 * n);
    row(rows, "batch decode CPU per event (hub)", per_event, "µs");
    Ok(())
}

fn slow_link() -> Faults {
    Faults {
        delay: Duration::from_millis(50),
        bandwidth_bytes_per_sec: 125_000,
        ..Faults::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.events_per_site = (args.events_per_site / 10).max(50);
        args.backlog = (args.backlog / 10).max(1000);
        args.seconds = (args.seconds / 5).max(2);
        args.slow_backlog = (args.slow_backlog / 10).max(200);
    }
    let mut rows = Vec::new();
    sizes(&mut rows)?;
    for &s in &args.sites {
        eprintln!("hub ingest from {s} site(s)");
        ingest(&mut rows, s, args.events_per_site).await?;
    }
    catch_up(&mut rows, "catch-up", args.backlog, None).await?;
    eprintln!("lag");
    lag(&mut rows, "lag", args.rate, args.seconds, None).await?;
    catch_up(
        &mut rows,
        "1 Mbit/s 100 ms RTT",
        args.slow_backlog,
        Some(slow_link()),
    )
    .await?;
    lag(
        &mut rows,
        "1 Mbit/s 100 ms RTT",
        args.slow_rate,
        args.seconds,
        Some(slow_link()),
    )
    .await?;

    println!("{:<62} {:>12}  unit", "openclaw-ship-bench", "value");
    for r in &rows {
        println!("{:<62} {:>12.2}  {}", r.name, r.value, r.unit);
    }
    if let Some(path) = &args.json {
        let table: Vec<Value> = rows
            .iter()
            .map(|r| json!({"name": r.name, "value": r.value, "unit": r.unit}))
            .collect();
        std::fs::write(path, serde_json::to_vec_pretty(&table)?)?;
    }
    Ok(())
}
