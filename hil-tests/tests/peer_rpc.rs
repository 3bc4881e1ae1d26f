//! A real `openclaw-edge` node's peer surface, dialled by a test caller that holds a
//! certificate of the node's own site and the product's transport:
//! - dials over a link slower than the first handshake deadline (the lab's UDP relay delays
//!   every datagram): a fixed deadline shorter than the handshake would abandon and restart
//!   every dial the same way and never connect; the deadline's longer turns
//!   (`transport::handshake_deadline`) must get through;
//! - the leader's bound on a forwarded batch (`MAX_FORWARD_BATCH_COMMANDS`): one command
//!   over it refuses the whole batch before anything is proposed; the applied batch then
//!   shows in the store's memory gauges on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use openclaw_hil_tests::relay::Faults;
use openclaw_hil_tests::{GroupOptions, LabGroup};
use shared::config::{SiteId, TlsSection};
use shared::identity::{ca_paths, create_node_cert, node_paths, NodeIdentity};
use shared::limits::MAX_FORWARD_BATCH_COMMANDS;
use shared::tls::TlsMaterial;
use shared::transport::{Transport, TransportTiming};
use shared::types::{Command, CommandResponse, Op};
use shared::wire::{RemoteError, Request, Response};

/// Each way: a round trip takes twice this, a handshake at least one round trip.
const ONE_WAY_DELAY: Duration = Duration::from_millis(400);
/// The first dial's deadline: well under one round trip, so it cannot be met.
const FIRST_DEADLINE: Duration = Duration::from_millis(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One edge node of a fresh site (behind a relay), a caller of the same site, and node 1's
/// identity and peer address.
async fn node_and_caller(
    dir: &std::path::Path,
    handshake_timeout: Duration,
) -> (LabGroup, Arc<Transport>, NodeIdentity, String) {
    let group = LabGroup::start_ready(
        &dir.join("site"),
        1,
        GroupOptions {
            relays: true,
            ..GroupOptions::fast()
        },
    )
    .await
    .expect("one edge node behind a relay");
    let certs = group.dir.join("certs");
    let site = SiteId::parse(&group.options.site).expect("site");
    let caller_id = NodeIdentity::edge(site.clone(), 9);
    create_node_cert(&certs, &caller_id).expect("caller certificate");
    let (cert, key) = node_paths(&certs, 9);
    let tls = TlsMaterial::load(&TlsSection {
        ca: ca_paths(&certs).0,
        cert,
        key,
    })
    .expect("tls");
    let caller = Transport::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &tls,
        caller_id,
        TransportTiming {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout,
        },
    )
    .expect("bind");
    let addr = group.node(1).expect("node 1").raft_advertise.to_string();
    (group, caller, NodeIdentity::edge(site, 1), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_slower_than_the_first_deadline_connects_on_a_longer_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (group, caller, node, addr) = node_and_caller(dir.path(), FIRST_DEADLINE).await;
    group
        .set_faults(Faults {
            delay: ONE_WAY_DELAY,
            ..Faults::default()
        })
        .expect("faults");

    let first = caller.connection(&node, &addr).await;
    let error = first.expect_err("a handshake cannot finish within one way's delay");
    assert!(error.to_string().contains("no handshake within"), "{error}");

    let mut abandoned = 1;
    let connected = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match caller.connection(&node, &addr).await {
                Ok(conn) => break conn,
                Err(e) if e.to_string().contains("no handshake within") => abandoned += 1,
                Err(e) => panic!("dial failed otherwise: {e}"),
            }
        }
    })
    .await
    .expect("a longer turn of the deadline lets the slow handshake finish");
    assert!(connected.close_reason().is_none());
    assert!(
        abandoned < 4,
        "one turn (0.3, 0.6, 1.2 s…) is enough: {abandoned} abandoned"
    );

    // The connection carries requests: the node answers (a refusal is an answer too).
    caller
        .call(&node, &addr, &Request::ReadIndex, CALL_TIMEOUT)
        .await
        .expect("an answer over the slow link");
}

fn put(key: &str) -> Command {
    Command {
        proposed_ms: 1,
        elapsed_ms: 1,
        idempotency: None,
        backlog_limit: None,
        site: None,
        op: Op::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            if_revision: None,
        },
    }
}

async fn status_of(group: &LabGroup, key: &str) -> u16 {
    let url = format!("{}/v1/kv/{key}?consistency=linearizable", group.url(1));
    let response = group.http.get(url).send().await.expect("GET");
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_over_the_bound_is_refused_whole_and_one_at_it_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (group, caller, leader, addr) =
        node_and_caller(dir.path(), shared::transport::HANDSHAKE_TIMEOUT).await;

    let send_batch = |prefix: &'static str, commands: usize| {
        let batch = (0..commands)
            .map(|i| put(&format!("{prefix}-{i}")))
            .collect();
        let (caller, leader, addr) = (caller.clone(), leader.clone(), addr.clone());
        async move {
            let request = Request::ClientWriteBatch(batch);
            let answer = caller.call(&leader, &addr, &request, CALL_TIMEOUT).await;
            answer.expect("an answer")
        }
    };

    match send_batch("over", MAX_FORWARD_BATCH_COMMANDS + 1).await {
        Response::Error(RemoteError::Rejected(message)) => {
            assert!(
                message.contains(&format!("at most {MAX_FORWARD_BATCH_COMMANDS}")),
                "{message}"
            )
        }
        other => {
            let answer: String = format!("{other:?}").chars().take(200).collect();
            panic!("a batch over the bound must be refused: {answer}…")
        }
    }
    for key in ["over-0", &format!("over-{MAX_FORWARD_BATCH_COMMANDS}")] {
        assert_eq!(
            status_of(&group, key).await,
            404,
            "{key} of the refused batch"
        );
    }

    let answer = send_batch("at", MAX_FORWARD_BATCH_COMMANDS).await;
    let Response::ClientWriteBatch(results) = answer else {
        panic!("a batch at the bound is proposed: {answer:?}");
    };
    assert_eq!(results.len(), MAX_FORWARD_BATCH_COMMANDS);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let last = format!("at-{}", MAX_FORWARD_BATCH_COMMANDS - 1);
    for key in ["at-0", last.as_str()] {
        assert_eq!(
            status_of(&group, key).await,
            200,
            "{key} of the applied batch"
        );
    }

    // The store's memory is on the node's /metrics: the applied writes sit in memtables,
    // the block cache stays within its default size.
    let memtables = group.metric(1, "openclaw_store_memtable_bytes").await;
    assert!(memtables.expect("memtable gauge") > 0.0);
    let cache = group.metric(1, "openclaw_store_block_cache_bytes").await;
    let default_cache = shared::config::defaults::cache_size().0 as f64;
    assert!(cache.expect("block cache gauge") <= default_cache);
    let pending = group.metric(1, "openclaw_store_pending_flushes").await;
    assert!(pending.is_ok(), "{pending:?}");
}

/// The leader proposes concurrent blind writes as batch entries (`group/proposer.rs`): a
/// forwarded batch of 256 puts takes far fewer log entries than writes, and every write
/// still gets its own seq (consecutive, revision = seq) and is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_blind_writes_share_log_entries_and_keep_their_own_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (group, caller, leader, addr) =
        node_and_caller(dir.path(), shared::transport::HANDSHAKE_TIMEOUT).await;
    let log_index = |status: serde_json::Value| status["last_log_index"].as_u64();
    let before = log_index(group.status(1).await.expect("status")).expect("log index");

    let writes = MAX_FORWARD_BATCH_COMMANDS;
    let batch = (0..writes).map(|i| put(&format!("b-{i}"))).collect();
    let request = Request::ClientWriteBatch(batch);
    let answer = caller.call(&leader, &addr, &request, CALL_TIMEOUT).await;
    let Response::ClientWriteBatch(results) = answer.expect("an answer") else {
        panic!("the batch is proposed");
    };
    let mut seqs: Vec<u64> = results
        .iter()
        .map(|r| match r {
            Ok(CommandResponse::Put { seq, revision }) if seq == revision => *seq,
            other => panic!("each write answers its own put: {other:?}"),
        })
        .collect();
    seqs.sort_unstable();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "distinct, consecutive seqs: {seqs:?}"
    );

    let after = log_index(group.status(1).await.expect("status")).expect("log index");
    assert!(
        after - before <= (writes / 4) as u64,
        "{writes} concurrent writes took {} log entries",
        after - before
    );
    let batched = group.metric(1, "openclaw_batched_writes_total").await;
    assert!(batched.expect("batched writes counter") >= (writes / 2) as f64);
    for key in ["b-0", &format!("b-{}", writes - 1)] {
        assert_eq!(status_of(&group, key).await, 200, "{key}");
    }
}
