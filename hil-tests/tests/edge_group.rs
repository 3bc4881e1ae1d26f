//! The edge group's guarantees, shown with real `openclaw-edge` processes on loopback
//! (real QUIC, mutual TLS, fjall directories): one test per scenario of the edge group issue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_hil_tests::checker::check_stream;
use openclaw_hil_tests::hil::stream_at;
use openclaw_hil_tests::{cpu_seconds, request, wait_until, Answer, GroupOptions, LabGroup};
use reqwest::Method;

fn fast() -> GroupOptions {
    GroupOptions::fast()
}

const CATCH_UP: Duration = Duration::from_secs(30);

async fn put(g: &LabGroup, node: u64, key: &str, value: &str, headers: &[(&str, &str)]) -> Answer {
    request(
        &g.http,
        Method::PUT,
        &format!("{}/v1/kv/{key}", g.url(node)),
        headers,
        Some(value.as_bytes().to_vec()),
    )
    .await
    .unwrap_or_else(|e| Answer {
        status: 0,
        body: e.to_string().into_bytes(),
        headers: Default::default(),
    })
}

async fn get(g: &LabGroup, node: u64, key: &str, consistency: &str) -> Answer {
    request(
        &g.http,
        Method::GET,
        &format!("{}/v1/kv/{key}?consistency={consistency}", g.url(node)),
        &[],
        None,
    )
    .await
    .unwrap_or_else(|e| Answer {
        status: 0,
        body: e.to_string().into_bytes(),
        headers: Default::default(),
    })
}

/// Writes `key=value` until acknowledged, retrying with one Idempotency-Key so a retry after
/// an unknown outcome cannot write twice. Returns the acknowledged seq.
async fn put_acked(g: &LabGroup, nodes: &[u64], key: &str, value: &str) -> u64 {
    let idem = format!("idem-{key}-{value}");
    let deadline = Instant::now() + CATCH_UP;
    let mut attempt = 0usize;
    loop {
        let node = nodes[attempt % nodes.len()];
        let a = put(g, node, key, value, &[("Idempotency-Key", &idem)]).await;
        if a.status == 200 {
            return a.json()["seq"].as_u64().expect("seq");
        }
        assert!(
            a.status == 503 || a.status == 0,
            "unexpected {} {}",
            a.status,
            a.text()
        );
        assert!(
            Instant::now() < deadline,
            "write {key} never acknowledged: {}",
            a.text()
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` (stale read) has every pair in `expected`.
async fn wait_has_all(g: &LabGroup, node: u64, expected: &BTreeMap<String, String>) {
    for (key, value) in expected {
        let what = format!("node {node} to have {key}={value}");
        wait_until(CATCH_UP, &what, || async {
            get(g, node, key, "stale").await.text() == *value
        })
        .await
        .expect("caught up");
    }
}

/// Asserts `node` caught up through at least one snapshot install.
async fn assert_installed_a_snapshot(g: &LabGroup, node: u64) {
    let installed = g
        .metric(node, "openclaw_snapshots_installed_total")
        .await
        .expect("metric");
    assert!(
        installed >= 1.0,
        "node {node} caught up without a snapshot install"
    );
}

/// A started group of `n` nodes, every node serving; the directory lives as long as the guard.
async fn group(n: u64, options: GroupOptions) -> (tempfile::TempDir, LabGroup) {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = LabGroup::start_ready(dir.path(), n, options)
        .await
        .expect("start");
    (dir, g)
}

/// Asserts a linearizable read at `node` returns every acknowledged pair.
async fn assert_reads(g: &LabGroup, node: u64, acked: &BTreeMap<String, String>) {
    for (key, value) in acked {
        let r = get(g, node, key, "linearizable").await;
        assert_eq!(
            (r.status, r.text()),
            (200, value.clone()),
            "{key} at node {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_every_node_are_read_linearizably_at_every_node() {
    let (_dir, g) = group(3, fast()).await;
    for round in 0..5 {
        for writer in [1, 2, 3] {
            let value = format!("v{round}-{writer}");
            let a = put(&g, writer, "shared", &value, &[]).await;
            assert_eq!(a.status, 200, "write at node {writer}: {}", a.text());
            for reader in [1, 2, 3] {
                let r = get(&g, reader, "shared", "linearizable").await;
                assert_eq!(
                    (r.status, r.text()),
                    (200, value.clone()),
                    "read at node {reader}"
                );
                assert!(r.headers.contains_key("x-revision") && r.headers.contains_key("x-seq"));
            }
        }
    }
}

/// A follower forwards its clients' concurrent writes in shared RPCs (`group/forward.rs`), and
/// every write still gets its own outcome: the puts are acknowledged with distinct seqs and
/// readable, the conditional puts that cannot hold are refused with 412, each on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_at_a_follower_share_forward_batches_with_their_own_outcomes() {
    const WRITERS: usize = 64;
    let (_dir, g) = group(3, fast()).await;
    let ids = g.ids();
    let leader = g.leader(&ids).await.expect("leader");
    let follower = *ids.iter().find(|id| **id != leader).expect("a follower");
    let batches_before = g
        .metric(follower, "openclaw_forwarded_batches_total")
        .await
        .expect("metric");
    let timed_before = g
        .metric(follower, "openclaw_forward_seconds_count")
        .await
        .expect("metric");
    let entries_before = g
        .metric(leader, "openclaw_proposal_seconds_count")
        .await
        .expect("metric");
    let writes = (0..WRITERS).map(|i| {
        let g = &g;
        async move {
            // Every fourth write is a put-if-absent on a key that exists: refused.
            let headers: &[(&str, &str)] = if i % 4 == 0 {
                &[("If-Match", "0")]
            } else {
                &[]
            };
            let key = if i % 4 == 0 {
                "taken".to_string()
            } else {
                format!("batch-{i}")
            };
            (i, put(g, follower, &key, &format!("v{i}"), headers).await)
        }
    });
    assert_eq!(put(&g, leader, "taken", "first", &[]).await.status, 200);
    let answers = futures::future::join_all(writes).await;
    let mut seqs = std::collections::BTreeSet::new();
    let mut acked = BTreeMap::new();
    for (i, a) in answers {
        if i % 4 == 0 {
            assert_eq!(a.status, 412, "conditional put {i}: {}", a.text());
        } else {
            assert_eq!(a.status, 200, "put {i}: {}", a.text());
            assert!(
                seqs.insert(a.json()["seq"].as_u64().expect("seq")),
                "seq reused"
            );
            acked.insert(format!("batch-{i}"), format!("v{i}"));
        }
    }
    assert_reads(&g, leader, &acked).await;
    let forwarded = g
        .metric(follower, "openclaw_forwarded_batches_total")
        .await
        .expect("metric")
        - batches_before;
    assert!(
        forwarded >= 1.0 && forwarded < WRITERS as f64,
        "{WRITERS} concurrent writes took {forwarded} forward RPCs"
    );
    // Each forward RPC and each of the leader's entries is timed.
    let timed = g
        .metric(follower, "openclaw_forward_seconds_count")
        .await
        .expect("metric")
        - timed_before;
    assert_eq!(timed, forwarded, "forward RPCs timed");
    let entries = g
        .metric(leader, "openclaw_proposal_seconds_count")
        .await
        .expect("metric")
        - entries_before;
    assert!(
        entries >= 1.0 && entries <= WRITERS as f64 + 1.0,
        "{entries} client-write entries timed at the leader"
    );
}

/// Concurrent appends with Idempotency-Keys share batch entries (`Op::ClientBatch`) and keep
/// exactly-once: every key sent three times at once, spread over the nodes, is written once,
/// and all three sends get its one seq; appends without a key in the same load each write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_keyed_appends_share_batch_entries_and_each_key_writes_once() {
    const KEYS: usize = 16;
    const SENDS_PER_KEY: usize = 3;
    const PLAIN: usize = 8;
    let (_dir, g) = group(3, fast()).await;
    let ids = g.ids();
    let leader = g.leader(&ids).await.expect("leader");
    let keyed_before = g
        .metric(leader, "openclaw_batched_keyed_writes_total")
        .await
        .expect("metric");
    let append = |node: u64, key: Option<String>, body: String| {
        let g = &g;
        async move {
            let headers: Vec<(&str, &str)> = key
                .as_deref()
                .map(|k| vec![("Idempotency-Key", k)])
                .unwrap_or_default();
            let a = request(
                &g.http,
                Method::POST,
                &format!("{}/v1/streams/keyed", g.url(node)),
                &headers,
                Some(body.into_bytes()),
            )
            .await
            .expect("append");
            assert_eq!(a.status, 200, "append: {}", a.text());
            (key, a.json()["seq"].as_u64().expect("seq"))
        }
    };
    let sends = (0..KEYS * SENDS_PER_KEY)
        .map(|i| {
            let node = ids[i % ids.len()];
            let key = i % KEYS;
            append(node, Some(format!("key-{key}")), format!("event {key}"))
        })
        .chain((0..PLAIN).map(|i| append(ids[i % ids.len()], None, format!("plain {i}"))));
    let answers = futures::future::join_all(sends).await;
    let mut seq_of_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut plain_seqs = Vec::new();
    for (key, seq) in answers {
        match key {
            Some(key) => {
                let first = *seq_of_key.entry(key.clone()).or_insert(seq);
                assert_eq!(seq, first, "{key} answered with two seqs");
            }
            None => plain_seqs.push(seq),
        }
    }
    let page = g
        .get_json(leader, "/v1/streams/keyed?from=1&limit=1000")
        .await
        .expect("stream");
    let events = page["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        events.len(),
        KEYS + PLAIN,
        "one event per key and per plain append: {events:?}"
    );
    let mut stored: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let mut answered: Vec<u64> = seq_of_key.values().copied().chain(plain_seqs).collect();
    stored.sort_unstable();
    answered.sort_unstable();
    assert_eq!(stored, answered, "the answered seqs are the stored events");
    let keyed = g
        .metric(leader, "openclaw_batched_keyed_writes_total")
        .await
        .expect("metric")
        - keyed_before;
    assert!(
        keyed >= 1.0,
        "{} concurrent keyed appends, none proposed in a batch entry",
        KEYS * SENDS_PER_KEY
    );
}

/// A 3-node group behind relays (so it can be partitioned) whose writes wait up to 60 s (so
/// a writer outlasts a partition and its heal), with `before=x` written: its directory
/// guard, the group, its leader and the other nodes.
async fn partitionable_group() -> (tempfile::TempDir, LabGroup, u64, Vec<u64>) {
    let options = GroupOptions {
        relays: true,
        write_timeout: "60s",
        ..fast()
    };
    let (dir, g) = group(3, options).await;
    let ids = g.ids();
    let leader = g.leader(&ids).await.expect("leader");
    let others = ids.iter().copied().filter(|id| *id != leader).collect();
    put_acked(&g, &[leader], "before", "x").await;
    (dir, g, leader, others)
}

/// A leader cut off just as its writes arrive appends their (batch) entry alone; the others
/// elect a new leader and write past it, and when the old leader comes back openraft drops
/// the entry from its log (`LogEntryDiscarded`). openraft cannot tell whether such an entry
/// committed elsewhere (an entry purged under a snapshot often has), so its writers must be
/// told the outcome is unknown: proposing the writes again behind their back could apply
/// each twice. Here the entry never left the old leader, so no write may be applied either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_deposed_leader_discards_are_answered_unknown_and_not_retried() {
    const WRITERS: usize = 16;
    let (_dir, g, old, others) = partitionable_group().await;
    let last_index = |status: serde_json::Value| status["last_log_index"].as_u64().unwrap_or(0);
    let index_before = last_index(g.status(old).await.expect("status"));

    // Within its lease the cut-off leader still appends what it is sent.
    g.partition(&[old], &others).expect("partition");
    let writes = (0..WRITERS).map(|i| {
        let g = &g;
        async move {
            (
                i,
                put(g, old, &format!("d{i}"), &format!("v{i}"), &[]).await,
            )
        }
    });
    let deposition = async {
        wait_until(CATCH_UP, "the old leader to append the writes", || async {
            last_index(g.status(old).await.unwrap_or_default()) > index_before
        })
        .await
        .expect("appended");
        let new = g.leader(&others).await.expect("a new leader");
        put_acked(&g, &[new], "after", "y").await;
        g.heal();
        new
    };
    let (answers, new) = tokio::join!(futures::future::join_all(writes), deposition);

    // Writes still queued behind the dropped entry were refused before being appended
    // anywhere: those are retried, and acknowledged once.
    let mut unknown = 0;
    for (i, a) in &answers {
        let r = get(&g, new, &format!("d{i}"), "linearizable").await;
        match (a.status, a.json()["error"]["code"].as_str()) {
            (200, _) => assert_eq!((r.status, r.text()), (200, format!("v{i}")), "d{i}"),
            (503, Some("outcome_unknown")) => {
                unknown += 1;
                assert_eq!(r.status, 404, "d{i} was applied: {}", r.text());
            }
            other => panic!("write {i}: {other:?} {}", a.text()),
        }
    }
    assert!(unknown > 0, "no write was in the dropped entry");
}

/// A leader cut off from its quorum refuses proposals and read barriers once its lease
/// lapses, and a write or linearizable read waiting there is tried again until its deadline.
/// It must wait for the leadership to change between tries: trying again at once took more
/// than both cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_waits_between_tries_instead_of_spinning() {
    const WATCHED: Duration = Duration::from_secs(3);
    let (_dir, g, old, others) = partitionable_group().await;
    let pid = g
        .nodes
        .iter()
        .find(|n| n.id == old)
        .and_then(|n| n.pid())
        .expect("the old leader's pid");
    g.partition(&[old], &others).expect("partition");
    // The others campaign only once the old leader's lease has lapsed.
    g.leader(&others).await.expect("a new leader");

    let before = cpu_seconds(pid).expect("cpu time");
    let write = put(&g, old, "waiting", "w", &[]);
    let read = get(&g, old, "before", "linearizable");
    let watch = async {
        // An observation window, not a synchronization: the write waits through it.
        tokio::time::sleep(WATCHED).await;
        let used = cpu_seconds(pid).expect("cpu time") - before;
        g.heal();
        used
    };
    let (answer, read, used) = tokio::join!(write, read, watch);
    assert!(
        used < WATCHED.as_secs_f64() / 3.0,
        "the cut-off leader used {used:.2} CPU seconds in {WATCHED:?} with a write and a read \
         waiting"
    );
    // The read's deadline (5 s) may pass before the heal: then it says so.
    assert!(
        read.status == 200 && read.text() == "x" || read.status == 503,
        "{} {}",
        read.status,
        read.text()
    );
    // Refused before it was appended anywhere: retried once healed, and acknowledged.
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_elects_a_new_leader_and_loses_nothing() {
    let (_dir, mut g) = group(3, fast()).await;
    let old = g.leader(&[1, 2, 3]).await.expect("leader");
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        put_acked(&g, &[1, 2, 3], &format!("a{i}"), &format!("v{i}")).await;
        acked.insert(format!("a{i}"), format!("v{i}"));
    }
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != old).collect();
    const COUNTERS: [&str; 2] = [
        "openclaw_raft_elections_total",
        "openclaw_raft_leader_changes_total",
    ];
    let mut before = Vec::new();
    for &node in &rest {
        for name in COUNTERS {
            before.push((node, name, g.metric(node, name).await.expect("metric")));
        }
    }
    g.kill9(old).expect("kill leader");
    let new = g.leader(&rest).await.expect("new leader");
    assert_ne!(new, old);
    // Every survivor counted the election and the change of leader.
    for (node, name, was) in before {
        wait_until(Duration::from_secs(10), name, || async {
            g.metric(node, name).await.is_ok_and(|now| now > was)
        })
        .await
        .unwrap_or_else(|e| panic!("node {node}: {e}"));
    }
    for i in 30..60 {
        put_acked(&g, &rest, &format!("a{i}"), &format!("v{i}")).await;
        acked.insert(format!("a{i}"), format!("v{i}"));
    }
    g.restart(old).expect("restart");
    wait_has_all(&g, old, &acked).await;
    for node in [1, 2, 3] {
        assert_reads(&g, node, &acked).await;
    }
}

/// One of a three-node group's members (1, 2, 3) other than `leader`.
fn a_follower_of_three(leader: u64) -> u64 {
    [1, 2, 3]
        .into_iter()
        .find(|n| *n != leader)
        .expect("three members have a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_purged_log_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = GroupOptions {
        snapshot_every_entries: 50,
        log_entries_kept_after_snapshot: 5,
        ..fast()
    };
    let mut g = LabGroup::start_ready(dir.path(), 3, options)
        .await
        .expect("start");
    let leader = g.leader(&[1, 2, 3]).await.expect("leader");
    let lagging = a_follower_of_three(leader);
    g.kill9(lagging).expect("kill");
    let mut expected = BTreeMap::new();
    for i in 0..300 {
        put_acked(&g, &[leader], &format!("s{i}"), &format!("v{i}")).await;
        expected.insert(format!("s{i}"), format!("v{i}"));
    }
    let status = g.status(leader).await.expect("status");
    assert!(
        status["snapshot_index"].as_u64().unwrap_or(0) > 100,
        "leader built no snapshot: {status}"
    );
    g.restart(lagging).expect("restart");
    wait_has_all(&g, lagging, &expected).await;
    assert_installed_a_snapshot(&g, lagging).await;
}

/// The log is bounded in bytes as well as entries: with entry counts that would keep every
/// entry, large entries still lead to snapshots and purges, on every node (down to the
/// minimum entries kept), so the log stays near a fraction of its memtable
/// (`store::LogByteBudget`). A follower killed meanwhile comes back past the purged log
/// (by snapshot) and nothing acknowledged is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_are_purged_by_bytes_not_only_by_count() {
    const VALUE_BYTES: usize = 32 * 1024;
    const WRITES: usize = 160; // 5 MiB: twenty times the snapshot budget of a 1 MiB memtable
    let options = GroupOptions {
        snapshot_every_entries: 100_000,
        log_entries_kept_after_snapshot: 100_000,
        storage: vec![("memtable_size".into(), "\"1MiB\"".into())],
        ..fast()
    };
    let (_dir, mut g) = group(3, options).await;
    let leader = g.leader(&[1, 2, 3]).await.expect("leader");
    let down = a_follower_of_three(leader);
    g.kill9(down).expect("kill");
    let mut acked = BTreeMap::new();
    for i in 0..WRITES {
        let (key, value) = (
            format!("big/{i}"),
            format!("{i:04}").repeat(VALUE_BYTES / 4),
        );
        // A put of the same value is safe to repeat (put_acked's Idempotency-Key holds the
        // value, too long here).
        wait_until(CATCH_UP, &format!("put {key}"), || async {
            put(&g, leader, &key, &value, &[]).await.status == 200
        })
        .await
        .expect("put acknowledged");
        acked.insert(key, value);
    }
    g.restart(down).expect("restart");
    for node in [1, 2, 3] {
        let what = format!("node {node} to purge its log by bytes");
        wait_until(CATCH_UP, &what, || async {
            let Ok(status) = g.status(node).await else {
                return false;
            };
            let field = |name: &str| status[name].as_u64().unwrap_or(0);
            // Without the byte bound nothing is purged: 100,000 entries are kept.
            field("purged_index") > 0
                && field("snapshot_index") > 0
                // `log_retention::MIN_ENTRIES_KEPT` (100) behind the snapshot, the snapshot
                // budget after it (256 KiB: 8 entries of 32 KiB), with room for the
                // entries written since the last look.
                && field("last_log_index").saturating_sub(field("purged_index")) <= 130
        })
        .await
        .expect("log purged by bytes");
    }
    assert_installed_a_snapshot(&g, down).await;
    for node in [1, 2, 3] {
        assert_reads(&g, node, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_group_kill9_keeps_every_acknowledged_write() {
    let (_dir, mut g) = group(3, fast()).await;
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (http, urls) = (g.http.clone(), [g.url(1), g.url(2), g.url(3)]);
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25 {
                let url = format!("{}/v1/kv/burst/{w}/{i}", urls[(w as usize + i) % 3]);
                let a = request(
                    &http,
                    Method::PUT,
                    &url,
                    &[],
                    Some(format!("{w}-{i}").into_bytes()),
                )
                .await;
                if a.map(|a| a.status == 200).unwrap_or(false) {
                    acked.push((format!("burst/{w}/{i}"), format!("{w}-{i}")));
                }
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(
        acked.len() >= 150,
        "only {} of 200 writes acknowledged",
        acked.len()
    );
    for id in [1, 2, 3] {
        g.kill9(id).expect("kill");
    }
    for id in [1, 2, 3] {
        g.restart(id).expect("restart");
    }
    g.wait_ready(&[1, 2, 3]).await.expect("ready after restart");
    assert_reads(&g, 1, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_serves_stale_reads_and_refuses_writes() {
    let (_dir, g) = group(
        3,
        GroupOptions {
            relays: true,
            ..fast()
        },
    )
    .await;
    let leader = g.leader(&[1, 2, 3]).await.expect("leader");
    assert_eq!(put(&g, leader, "k", "before", &[]).await.status, 200);
    let minority = a_follower_of_three(leader);
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != minority).collect();
    let m = minority;
    wait_until(CATCH_UP, "minority has the value", || async {
        get(&g, m, "k", "stale").await.text() == "before"
    })
    .await
    .expect("replicated");

    g.partition(&[minority], &majority).expect("partition");
    for i in 0..10 {
        let a = put(&g, leader, "k", &format!("after-{i}"), &[]).await;
        assert_eq!(a.status, 200, "majority write {i}: {}", a.text());
    }
    let stale = get(&g, minority, "k", "stale").await;
    assert_eq!(
        (stale.status, stale.text()),
        (200, "before".to_string()),
        "stale read on the minority"
    );
    let started = Instant::now();
    let refused = put(&g, minority, "k", "from-minority", &[]).await;
    assert_eq!(refused.status, 503, "minority write: {}", refused.text());
    assert!(refused.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "refusal took {:?}",
        started.elapsed()
    );
    let linearizable = get(&g, minority, "k", "linearizable").await;
    assert_eq!(
        linearizable.status, 503,
        "linearizable read on the minority must not answer"
    );

    g.heal();
    wait_until(CATCH_UP, "minority catches up", || async {
        get(&g, m, "k", "stale").await.text() == "after-9"
    })
    .await
    .expect("healed");
    let r = get(&g, leader, "k", "linearizable").await;
    assert_eq!(
        r.text(),
        "after-9",
        "the refused minority write must not have been applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_and_idempotent_retries() {
    let (_dir, g) = group(3, fast()).await;
    let first = put(&g, 1, "cas", "one", &[]).await.json();
    let revision = first["revision"].as_u64().expect("revision");
    let stale = put(
        &g,
        2,
        "cas",
        "two",
        &[("If-Match", &(revision + 99).to_string())],
    )
    .await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    assert_eq!(stale.json()["error"]["code"], "revision_mismatch");
    let ok = put(&g, 3, "cas", "two", &[("If-Match", &revision.to_string())]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        put(&g, 1, "fresh", "x", &[("If-Match", "0")]).await.status,
        200,
        "If-Match 0 creates"
    );
    assert_eq!(
        put(&g, 1, "fresh", "y", &[("If-Match", "0")]).await.status,
        412,
        "If-Match 0 on an existing key"
    );

    let a = put(&g, 1, "idem", "one", &[("Idempotency-Key", "req-1")]).await;
    let b = put(&g, 3, "idem", "two", &[("Idempotency-Key", "req-1")]).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(
        a.json()["seq"],
        b.json()["seq"],
        "retry returns the first result"
    );
    let r = get(&g, 2, "idem", "linearizable").await;
    assert_eq!(r.text(), "one", "the retry wrote nothing");
    let revision_after = r.headers["x-revision"]
        .to_str()
        .expect("header")
        .to_string();
    assert_eq!(revision_after, a.json()["revision"].to_string());
    let c = request(
        &g.http,
        Method::POST,
        &format!("{}/v1/streams/s", g.url(2)),
        &[("Idempotency-Key", "ev-1")],
        Some(b"e".to_vec()),
    )
    .await
    .expect("post");
    let d = request(
        &g.http,
        Method::POST,
        &format!("{}/v1/streams/s", g.url(1)),
        &[("Idempotency-Key", "ev-1")],
        Some(b"e".to_vec()),
    )
    .await
    .expect("post");
    assert_eq!(c.json()["seq"], d.json()["seq"]);
    let events = request(
        &g.http,
        Method::GET,
        &format!("{}/v1/streams/s?from=1", g.url(3)),
        &[],
        None,
    )
    .await
    .expect("read");
    assert_eq!(
        events.json()["events"].as_array().map(Vec::len),
        Some(1),
        "one event, not two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_to_five_and_shrinks_to_three_under_writes() {
    let (_dir, mut g) = group(1, fast()).await;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (http, url, stop, progress) =
            (g.http.clone(), g.url(1), stop.clone(), progress.clone());
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, value) = (format!("m{i}"), format!("v{i}"));
                let a = request(
                    &http,
                    Method::PUT,
                    &format!("{url}/v1/kv/{key}"),
                    &[("Idempotency-Key", &key)],
                    Some(value.clone().into_bytes()),
                )
                .await;
                if a.map(|a| a.status == 200).unwrap_or(false) {
                    acked.insert(key, value);
                    i += 1;
                    progress.store(i, Ordering::Relaxed);
                }
            }
            acked
        })
    };
    // Writes keep being acknowledged after every membership step.
    let writes_continue = || {
        let progress = progress.clone();
        async move {
            let from = progress.load(Ordering::Relaxed);
            wait_until(CATCH_UP, "writes to continue", || async {
                progress.load(Ordering::Relaxed) >= from + 5
            })
            .await
            .expect("writes continue");
        }
    };
    let members = |g: &LabGroup| {
        let url = format!("{}/v1/status", g.url(1));
        let http = g.http.clone();
        async move {
            let s: serde_json::Value = http
                .get(url)
                .send()
                .await
                .expect("status")
                .json()
                .await
                .expect("json");
            s["members"]
                .as_array()
                .expect("members")
                .iter()
                .filter_map(|v| v.as_u64())
                .collect::<Vec<_>>()
        }
    };
    for id in 2..=5 {
        g.spawn_joiner(id).await.expect("spawn joiner");
        let node = g.node(id).expect("node");
        let body = serde_json::json!({"id": id, "raft": node.raft_advertise.to_string(), "http": node.http});
        let add = request(
            &g.http,
            Method::POST,
            &format!("{}/v1/members", g.url(1)),
            &[],
            Some(body.to_string().into_bytes()),
        )
        .await
        .expect("add");
        assert_eq!(add.status, 200, "add {id}: {}", add.text());
        let listed = request(
            &g.http,
            Method::GET,
            &format!("{}/v1/members", g.url(1)),
            &[],
            None,
        )
        .await
        .expect("list members")
        .json();
        assert!(
            listed["learners"]
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v.as_u64() == Some(id))),
            "node {id} is a learner after the add: {listed}"
        );
        let promote = request(
            &g.http,
            Method::POST,
            &format!("{}/v1/members/{id}/promote", g.url(1)),
            &[],
            None,
        )
        .await
        .expect("promote");
        assert_eq!(promote.status, 200, "promote {id}: {}", promote.text());
        assert_eq!(members(&g).await, (1..=id).collect::<Vec<_>>());
        writes_continue().await;
    }
    for id in [5, 4] {
        let remove = request(
            &g.http,
            Method::DELETE,
            &format!("{}/v1/members/{id}", g.url(1)),
            &[],
            None,
        )
        .await
        .expect("remove");
        assert_eq!(remove.status, 200, "remove {id}: {}", remove.text());
        assert_eq!(members(&g).await, (1..id).collect::<Vec<_>>());
        g.stop(id).await.expect("stop removed node");
        writes_continue().await;
    }
    assert_eq!(members(&g).await, vec![1, 2, 3]);
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    for node in [1, 2, 3] {
        wait_has_all(&g, node, &acked).await;
    }
}

/// Writes a config for a rogue node that claims membership of the good group; returns the
/// config's path and the rogue's HTTP URL.
fn rogue_config(
    g: &LabGroup,
    dir: &std::path::Path,
    id: u64,
    site: &str,
    certs: &std::path::Path,
) -> (std::path::PathBuf, String) {
    let port = std::net::UdpSocket::bind(("127.0.0.1", 0))
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut text = format!(
        "[node]\nid = {id}\nsite = \"{site}\"\ndata_dir = \"{}\"\n[raft]\nlisten = \"127.0.0.{}:{port}\"\n\
         heartbeat_interval = \"50ms\"\nelection_timeout = \"300ms\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
         [tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n[cluster]\nbootstrap = true\n",
        dir.join(format!("rogue-{id}")).display(),
        10 + id,
        certs.join("ca.pem").display(),
        certs.join(format!("node-{id}.pem")).display(),
        certs.join(format!("node-{id}.key")).display(),
    );
    for n in &g.nodes {
        text.push_str(&format!(
            "[[cluster.members]]\nid = {}\nraft = \"{}\"\nhttp = \"{}\"\n",
            n.id, n.raft_advertise, n.http
        ));
    }
    text.push_str(&format!("[[cluster.members]]\nid = {id}\nraft = \"127.0.0.{}:{port}\"\nhttp = \"http://127.0.0.1:{http}\"\n", 10 + id));
    let path = dir.join(format!("rogue-{id}.toml"));
    std::fs::write(&path, text).expect("write config");
    (path, format!("http://127.0.0.1:{http}"))
}

/// Rogue processes, killed when the test ends, also when it fails.
struct Rogues(Vec<std::process::Child>);

impl Drop for Rogues {
    fn drop(&mut self) {
        for rogue in &mut self.0 {
            let _ = rogue.kill();
            let _ = rogue.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_foreign_or_other_site_certificates_cannot_join_or_vote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = LabGroup::start_ready(&dir.path().join("good"), 3, fast())
        .await
        .expect("start");
    let leader = g.leader(&[1, 2, 3]).await.expect("leader");
    let term = g.status(leader).await.expect("status")["term"]
        .as_u64()
        .expect("term");
    let rejected_before: f64 = {
        let mut sum = 0.0;
        for id in [1, 2, 3] {
            sum += g
                .metric(id, "openclaw_peer_rejected_total")
                .await
                .expect("metric");
        }
        sum
    };
    let bin = openclaw_hil_tests::binary("openclaw-edge", "OPENCLAW_EDGE_BIN").expect("binary");
    let certs = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .output()
            .expect("certs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Rogue 4: its own CA. Rogue 5: the real CA, but a certificate for another site.
    let foreign = dir.path().join("foreign-ca");
    certs(&["certs", "ca", "--dir", foreign.to_str().expect("utf8")]);
    certs(&[
        "certs",
        "node",
        "--dir",
        foreign.to_str().expect("utf8"),
        "--site",
        "site-1",
        "--id",
        "4",
    ]);
    let good_certs = dir.path().join("good/certs");
    certs(&[
        "certs",
        "node",
        "--dir",
        good_certs.to_str().expect("utf8"),
        "--site",
        "site-2",
        "--id",
        "5",
    ]);
    let mut rogues = Rogues(Vec::new());
    let mut rogue_urls = Vec::new();
    for (id, site, certs) in [
        (4, "site-1", foreign.clone()),
        (5, "site-2", good_certs.clone()),
    ] {
        let (config, url) = rogue_config(&g, dir.path(), id, site, &certs);
        rogue_urls.push((id, url));
        let log = std::fs::File::create(dir.path().join(format!("rogue-{id}.log"))).expect("log");
        rogues.0.push(
            std::process::Command::new(&bin)
                .args(["run", "--config"])
                .arg(config)
                .stderr(log)
                .spawn()
                .expect("spawn rogue"),
        );
    }
    // The rogues campaign (election timeout 300 ms); the refusals show up as counted rejections.
    wait_until(Duration::from_secs(20), "rejections counted", || async {
        let mut sum = 0.0;
        for id in [1, 2, 3] {
            sum += g
                .metric(id, "openclaw_peer_rejected_total")
                .await
                .unwrap_or(0.0);
        }
        sum >= rejected_before + 2.0
    })
    .await
    .expect("rogue connections refused");
    // Over many rogue election timeouts the good group keeps its leader and term, and no
    // rogue learns of the good group's leader (it never got a message through).
    let mut rogue_answers = BTreeMap::new();
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        for id in [1, 2, 3] {
            let s = g.status(id).await.expect("status");
            assert_eq!(
                s["term"].as_u64(),
                Some(term),
                "node {id}: the good group's term moved: {s}"
            );
            assert_eq!(s["leader_id"].as_u64(), Some(leader));
            assert_eq!(s["members"], serde_json::json!([1, 2, 3]));
        }
        for (id, url) in &rogue_urls {
            // A rogue may not serve yet; only answers are checked (and at least one is
            // required below).
            let Ok(answer) =
                request(&g.http, Method::GET, &format!("{url}/v1/status"), &[], None).await
            else {
                continue;
            };
            if answer.status != 200 {
                continue;
            }
            let s = answer.json();
            assert_ne!(
                s["leader_id"].as_u64(),
                Some(leader),
                "rogue {id} sees the good group's leader: {s}"
            );
            assert_ne!(s["role"], "leader", "rogue {id} became a leader: {s}");
            *rogue_answers.entry(*id).or_insert(0) += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (id, _) in &rogue_urls {
        assert!(
            rogue_answers.get(id).copied().unwrap_or(0) > 0,
            "rogue {id} never answered /v1/status (see rogue-{id}.log)"
        );
    }
    drop(rogues);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leadership_over_and_exits_cleanly() {
    let (_dir, mut g) = group(3, fast()).await;
    let old = g.leader(&[1, 2, 3]).await.expect("leader");
    put_acked(&g, &[old], "before-stop", "v").await;
    let code = g.stop(old).await.expect("stop");
    assert_eq!(code, Some(0), "SIGTERM must exit 0");
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != old).collect();
    let new = g.leader(&rest).await.expect("new leader");
    assert_ne!(new, old);
    let log =
        std::fs::read_to_string(g.node(old).expect("node").dir.join("node.log")).expect("log");
    assert!(
        log.contains("handing leadership over"),
        "no handover attempted:\n{log}"
    );
    let r = get(&g, new, "before-stop", "linearizable").await;
    assert_eq!(r.text(), "v");
    g.restart(old).expect("restart");
    g.wait_ready(&[old]).await.expect("rejoins");
}

/// One request a `Writers` task sent (to `path`, with `body`) and its answer.
struct Sent {
    path: String,
    body: String,
    status: u16,
    seq: Option<u64>,
    text: String,
}

/// Tasks that each send requests one after another (writer `w`'s `i`th: `request_of(w, i)`,
/// a path and a body, to node `node_of(w)`) until told to stop or until their node no
/// longer takes them (a transport error: it closed the connection or stopped listening).
struct Writers {
    tasks: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Writers {
    fn start(
        g: &LabGroup,
        count: usize,
        node_of: impl Fn(usize) -> u64,
        method: Method,
        request_of: fn(usize, u64) -> (String, String),
    ) -> Writers {
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|w| {
                let (http, url, method) = (g.http.clone(), g.url(node_of(w)), method.clone());
                let (acked, stop) = (acked.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let (path, body) = request_of(w, i);
                        let url = format!("{url}{path}");
                        let payload = Some(body.clone().into_bytes());
                        let Ok(a) = request(&http, method.clone(), &url, &[], payload).await else {
                            break;
                        };
                        if a.status == 200 {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        let (status, seq, text) = (a.status, a.json()["seq"].as_u64(), a.text());
                        sent.push(Sent {
                            path,
                            body,
                            status,
                            seq,
                            text,
                        });
                    }
                    sent
                })
            })
            .collect();
        Writers { tasks, acked, stop }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `count` requests were answered 200 in all.
    async fn wait_acked(&self, count: usize) {
        wait_until(
            CATCH_UP,
            &format!("{count} writes acknowledged"),
            || async { self.acked() >= count },
        )
        .await
        .expect("writes acknowledged");
    }

    /// Stops the tasks; every request they sent, with its answer.
    async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("writer"));
        }
        all
    }
}

/// A follower stopped with SIGTERM while its clients write (one step of a rolling restart)
/// answers every write it took: it stops taking requests, lets those under way finish
/// through the leader, and only then stops Raft. None is cut off as `outcome_unknown` (or
/// refused) by its own shutdown, and every acknowledged write is readable afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_a_follower_answers_the_writes_it_took() {
    const WRITERS: usize = 16;
    const ACKED_BEFORE_STOP: usize = 200;
    let (_dir, mut g) = group(3, fast()).await;
    let ids = g.ids();
    let leader = g.leader(&ids).await.expect("leader");
    let follower = *ids.iter().find(|id| **id != leader).expect("a follower");
    let writers = Writers::start(
        &g,
        WRITERS,
        |_| follower,
        Method::PUT,
        |w, i| (format!("/v1/kv/w{w}-{i}"), format!("v{i}")),
    );
    writers.wait_acked(ACKED_BEFORE_STOP).await;
    let code = g.stop(follower).await.expect("stop");
    assert_eq!(code, Some(0), "SIGTERM must exit 0");
    let mut written = BTreeMap::new();
    let mut refused = Vec::new();
    for sent in writers.finish().await {
        let key = sent.path.trim_start_matches("/v1/kv/").to_string();
        match sent.status {
            200 => {
                written.insert(key, sent.body);
            }
            status => refused.push(format!("{key}: {status} {}", sent.text)),
        }
    }
    assert!(
        refused.is_empty(),
        "writes the stopping follower answered with an error: {refused:#?}"
    );
    assert_reads(&g, leader, &written).await;
}

/// A follower cut off from the group, SIGTERMed while its writes wait for a leader: it
/// stops waiting for them after `DRAIN_TIMEOUT`, stops Raft, answers what it still
/// can as unavailable or unknown (none acknowledged), and exits 0 within the stop
/// deadline. A write it called unavailable was never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_a_cut_off_follower_stops_after_the_drain_deadline() {
    const WRITERS: usize = 4;
    let (_dir, mut g, leader, others) = partitionable_group().await;
    let follower = others[0];
    let rest: Vec<u64> = g.ids().into_iter().filter(|id| *id != follower).collect();
    g.partition(&[follower], &rest).expect("partition");
    // The node counts every request it takes, each read of this counter included.
    let requests = "openclaw_http_requests_total";
    let before = g.metric(follower, requests).await.expect("metric");
    let writers = Writers::start(
        &g,
        WRITERS,
        |_| follower,
        Method::PUT,
        |w, i| (format!("/v1/kv/cut-w{w}-{i}"), format!("v{i}")),
    );
    // Every writer's first write is under way (nothing can answer it) before the stop.
    let reads = AtomicUsize::new(0);
    wait_until(CATCH_UP, "writes under way at the follower", || async {
        let read = reads.fetch_add(1, Ordering::Relaxed) + 1;
        g.metric(follower, requests)
            .await
            .is_ok_and(|n| n >= before + (read + WRITERS) as f64)
    })
    .await
    .expect("writes under way");
    let code = g.stop(follower).await.expect("stop within STOP_TIMEOUT");
    assert_eq!(code, Some(0), "SIGTERM must exit 0");
    let log =
        std::fs::read_to_string(g.node(follower).expect("node").dir.join("node.log")).expect("log");
    assert!(
        log.contains("requests still under way after"),
        "the drain did not time out:\n{log}"
    );
    let sent = writers.finish().await;
    g.heal();
    // Raft's stop ends each wait at once, and the answers leave before the process exits.
    assert_eq!(sent.len(), WRITERS, "writes under way left unanswered");
    for s in &sent {
        assert_eq!(s.status, 503, "{}: {} {}", s.path, s.status, s.text);
        if s.text.contains("\"unavailable\"") {
            let key = s.path.trim_start_matches("/v1/kv/");
            let r = get(&g, leader, key, "linearizable").await;
            assert_eq!(r.status, 404, "{key} answered unavailable but applied");
        }
    }
}

/// The leader SIGTERMed under appends spread over every node (a rolling restart's step; the
/// appends carry no Idempotency-Key, so a write applied twice would show): it hands
/// leadership over while it still takes requests, then drains them, with the appends the
/// followers forwarded to it, which commit under its successor; the followers wait for its
/// answers instead of calling them unknown. Every append is answered 200, is in the stream
/// exactly once, at its seq; none is there twice (none was retried after its entry was
/// appended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_the_leader_under_appends_answers_all_and_loses_none() {
    const WRITERS: usize = 15;
    const ACKED_BEFORE_STOP: usize = 200;
    const ACKED_AFTER_STOP: usize = 100;
    let (_dir, mut g) = group(3, fast()).await;
    let ids = g.ids();
    let node_of = |w: usize| ids[w % ids.len()];
    let writers = Writers::start(&g, WRITERS, node_of, Method::POST, |w, i| {
        ("/v1/streams/handover".to_string(), format!("a{w}-{i}"))
    });
    writers.wait_acked(ACKED_BEFORE_STOP).await;
    let leader = g.leader(&ids).await.expect("leader");
    let code = g.stop(leader).await.expect("stop");
    assert_eq!(code, Some(0), "SIGTERM must exit 0");
    writers.wait_acked(writers.acked() + ACKED_AFTER_STOP).await;
    let mut seq_of = BTreeMap::new();
    let mut not_acknowledged = Vec::new();
    for sent in writers.finish().await {
        match (sent.status, sent.seq) {
            (200, Some(seq)) => {
                seq_of.insert(sent.body, seq);
            }
            (status, _) => not_acknowledged.push(format!("{}: {status} {}", sent.body, sent.text)),
        }
    }
    assert!(
        not_acknowledged.is_empty(),
        "appends not acknowledged: {not_acknowledged:#?}"
    );
    let survivor = *ids.iter().find(|id| **id != leader).expect("a survivor");
    // A linearizable read first: the survivor has applied everything acknowledged.
    let barrier = get(&g, survivor, "barrier", "linearizable").await;
    assert_eq!(barrier.status, 404, "read barrier: {}", barrier.text());
    let url = format!("{}/v1/streams/handover", g.url(survivor));
    let stream = stream_at(&g.http, &url).await.expect("stream");
    let verdict = check_stream(&seq_of, &stream);
    assert_eq!(
        (verdict.lost, verdict.duplicated, verdict.in_order),
        (0, 0, true),
        "acknowledged appends lost or moved, appends stored twice, or out of order ({} \
         acknowledged, {} stored)",
        seq_of.len(),
        stream.len()
    );
}

/// The other side of waiting for a leader that handed over: a leader that froze (SIGSTOP,
/// as good as dead to its followers) while a follower's forwarded write waits on it has been
/// silent for longer than `election_timeout_min` when its successor is elected, so the
/// follower answers the write `outcome_unknown` at once instead of waiting for an answer
/// that cannot come (`group/leader_contact.rs`). The write never reached the frozen
/// leader's Raft, so it is not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_by_a_frozen_leader_is_answered_unknown_at_its_successor() {
    // Room for the lease, the election and the answer within the write's deadline.
    let options = GroupOptions {
        write_timeout: "10s",
        ..fast()
    };
    let (_dir, g) = group(3, options).await;
    let ids = g.ids();
    let old = g.leader(&ids).await.expect("leader");
    let follower = *ids.iter().find(|id| **id != old).expect("a follower");
    // The follower's connection to the leader is up: the write is sent, not dialled.
    put_acked(&g, &[follower], "before", "b").await;
    g.pause(old).expect("SIGSTOP");
    let held = put(&g, follower, "held", "h", &[]).await;
    g.resume(old).expect("SIGCONT");
    assert_eq!(
        (held.status, held.json()["error"]["code"].as_str()),
        (503, Some("outcome_unknown")),
        "{}",
        held.text()
    );
    assert!(
        held.text()
            .contains("was replaced while it held the request"),
        "given up on at once, not waited for as a leader that handed over: {}",
        held.text()
    );
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != old).collect();
    let new = g.leader(&others).await.expect("a new leader");
    let read = get(&g, new, "held", "linearizable").await;
    assert_eq!(
        read.status,
        404,
        "the frozen leader applied it: {}",
        read.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_and_their_exit_codes() {
    let (dir, g) = group(1, fast()).await;
    let bin = openclaw_hil_tests::binary("openclaw-edge", "OPENCLAW_EDGE_BIN").expect("binary");
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .output()
            .expect("run")
    };
    let url = g.url(1);
    let status = run(&["status", "--addr", &url]);
    assert_eq!(status.status.code(), Some(0));
    let json: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status prints JSON");
    assert_eq!(json["role"], "leader");
    assert_eq!(
        run(&["members", "list", "--addr", &url]).status.code(),
        Some(0)
    );
    assert_eq!(run(&["snapshot", "--addr", &url]).status.code(), Some(0));
    let refused = run(&["transfer-leader", "--to", "9", "--addr", &url]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "transfer to a non-member is a runtime error"
    );
    assert_eq!(
        run(&["status", "--addr", "http://127.0.0.1:1"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run(&["status", "--bogus"]).status.code(),
        Some(2),
        "usage errors exit 2"
    );
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[node]\nid = 1\nsite = \"s\"\ndata_dir = \"d\"\nflavour = 1\n",
    )
    .expect("write");
    let out = run(&["run", "--config", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flavour") && stderr.contains("bad.toml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let (_dir, g) = group(1, fast()).await;
    let url = g.url(1);
    let long_key = "k".repeat(1025);
    type Case<'a> = (
        Method,
        String,
        Vec<(&'a str, &'a str)>,
        Option<Vec<u8>>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            format!("{url}/v1/kv/{long_key}"),
            vec![],
            Some(b"v".to_vec()),
            413,
        ),
        (
            Method::PUT,
            format!("{url}/v1/kv/big"),
            vec![],
            Some(vec![0; 1024 * 1024 + 1]),
            413,
        ),
        (
            Method::POST,
            format!("{url}/v1/streams/big"),
            vec![],
            Some(vec![0; 1024 * 1024 + 1]),
            413,
        ),
        (
            Method::PUT,
            format!("{url}/v1/kv/x"),
            vec![("If-Match", "abc")],
            Some(b"v".to_vec()),
            400,
        ),
        (
            Method::POST,
            format!("{url}/v1/streams/bad%20name"),
            vec![],
            Some(b"e".to_vec()),
            400,
        ),
        (
            Method::GET,
            format!("{url}/v1/kv?limit=0"),
            vec![],
            None,
            400,
        ),
        (
            Method::GET,
            format!("{url}/v1/kv?colour=red"),
            vec![],
            None,
            400,
        ),
        (
            Method::GET,
            format!("{url}/v1/streams/s?from=x"),
            vec![],
            None,
            400,
        ),
        (
            Method::POST,
            format!("{url}/v1/members"),
            vec![],
            Some(b"{not json".to_vec()),
            400,
        ),
        (Method::GET, format!("{url}/v2/anything"), vec![], None, 404),
        (
            Method::DELETE,
            format!("{url}/v1/kv/never-written"),
            vec![],
            None,
            404,
        ),
    ];
    for (method, target, headers, body, want) in cases {
        let a = request(&g.http, method.clone(), &target, &headers, body)
            .await
            .expect("request");
        assert_eq!(
            a.status,
            want,
            "{method} {}: {}",
            &target[..target.len().min(80)],
            a.text()
        );
        let error = a.json();
        assert!(
            error["error"]["code"].is_string() && error["error"]["message"].is_string(),
            "{}",
            a.text()
        );
    }
    // Nothing above was written; the node still serves.
    let status = g.status(1).await.expect("status");
    assert_eq!(status["applied_seq"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notifications_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let options = GroupOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), socket_path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..fast()
    };
    let mut g = LabGroup::start_ready(&dir.path().join("group"), 1, options)
        .await
        .expect("start");
    let mut buf = [0u8; 512];
    let mut next_message = || {
        let n = socket
            .recv(&mut buf)
            .expect("a notification within the timeout");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
    };
    assert_eq!(
        next_message(),
        "READY=1",
        "READY=1 first, once the node serves"
    );
    for _ in 0..3 {
        assert_eq!(next_message(), "WATCHDOG=1", "pings while healthy");
    }
    assert_eq!(g.stop(1).await.expect("stop"), Some(0));
    let mut rest = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
        if rest.last().is_some_and(|m| m == "STOPPING=1") {
            break;
        }
    }
    assert_eq!(
        rest.last().map(String::as_str),
        Some("STOPPING=1"),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_slow_duplicating_links_keep_writes_and_reads_correct() {
    use openclaw_hil_tests::relay::Faults;
    let (_dir, g) = group(
        3,
        GroupOptions {
            relays: true,
            ..fast()
        },
    )
    .await;
    g.set_faults(Faults {
        loss: 0.05,
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(10),
        duplicate: 0.02,
        bandwidth_bytes_per_sec: 0,
    })
    .expect("faults");
    let mut acked = BTreeMap::new();
    for i in 0..40 {
        let (key, value) = (format!("lossy/{}", i % 10), format!("v{i}"));
        put_acked(&g, &[1, 2, 3], &key, &value).await;
        acked.insert(key.clone(), value.clone());
        // Every acknowledged write is what a linearizable read at any node returns next.
        let node = 1 + (i % 3) as u64;
        let r = get(&g, node, &key, "linearizable").await;
        if r.status == 200 {
            assert_eq!(
                r.text(),
                value,
                "{key} at node {node} right after its write"
            );
        } else {
            assert_eq!(r.status, 503, "{}", r.text());
        }
    }
    g.heal();
    for node in [1, 2, 3] {
        wait_has_all(&g, node, &acked).await;
        assert_reads(&g, node, &acked).await;
    }
}

/// A write larger than a 1 Mbit/s link carries in a second still commits: the wait for a
/// replication reply grows with the bytes in flight (`shared/src/network.rs`). With a fixed
/// 1 s wait, the stream carrying the entry was given up before its reply could arrive and
/// the same request was sent again, indefinitely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_write_commits_over_a_one_megabit_link() {
    use openclaw_hil_tests::relay::Faults;
    let (_dir, g) = group(
        3,
        GroupOptions {
            relays: true,
            heartbeat: "100ms",
            // Bulk data queues in the link ahead of heartbeats: this test is about
            // replication, not about elections on a saturated link.
            election_timeout: "10s",
            write_timeout: "30s",
            ..GroupOptions::default()
        },
    )
    .await;
    let leader = g.leader(&[1, 2, 3]).await.expect("leader");
    g.set_faults(Faults {
        delay: Duration::from_millis(10),
        bandwidth_bytes_per_sec: 125_000,
        ..Faults::default()
    })
    .expect("faults");
    // ~3.3 s on the wire to each follower.
    let value = "x".repeat(400 * 1024);
    let a = put(&g, leader, "large", &value, &[]).await;
    assert_eq!(
        a.status,
        200,
        "{}\nleader {leader}:\n{}",
        a.text(),
        g.log_tail(leader, 30)
    );
    g.heal();
    for node in [1, 2, 3] {
        let what = format!("node {node} to hold the large value");
        wait_until(CATCH_UP, &what, || async {
            get(&g, node, "large", "stale").await.text() == value
        })
        .await
        .expect("caught up");
    }
}

/// A follower that stops answering while its connection stays up (SIGSTOP: a frozen VM, a
/// hung disk) holds no write back and misses none. ~3 MiB of writes commit with the other
/// two while it is frozen, its replication stream sitting with megabytes unanswered
/// (`shared/src/network.rs: Outstanding`), until the leader's log has moved past it; resumed,
/// it is sent a snapshot and holds every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_follower_holds_no_write_back_and_catches_up_when_it_resumes() {
    let (_dir, g) = group(3, fast()).await;
    let leader = g.leader(&[1, 2, 3]).await.expect("leader");
    let frozen = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let index = |status: &serde_json::Value, field: &str| status[field].as_u64().unwrap_or(0);
    let applied = index(&g.status(frozen).await.expect("status"), "applied_index");
    g.pause(frozen).expect("SIGSTOP");
    let values: BTreeMap<String, String> = (0..200)
        .map(|i| {
            (
                format!("frozen-{i}"),
                format!("{i}:{}", "v".repeat(16 * 1024)),
            )
        })
        .collect();
    for (key, value) in &values {
        let a = put(&g, leader, key, value, &[]).await;
        assert_eq!(
            a.status,
            200,
            "{key} while node {frozen} is frozen: {}",
            a.text()
        );
    }
    wait_until(
        CATCH_UP,
        "the leader's log to move past the frozen follower",
        || async {
            g.status(leader)
                .await
                .is_ok_and(|s| index(&s, "purged_index") > applied)
        },
    )
    .await
    .expect("purged");
    g.resume(frozen).expect("SIGCONT");
    wait_has_all(&g, frozen, &values).await;
    assert_installed_a_snapshot(&g, frozen).await;
}
