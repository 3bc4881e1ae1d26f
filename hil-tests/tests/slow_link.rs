//! QUIC dials over a link slower than the first handshake deadline: a real `openclaw-edge`
//! node behind the lab's UDP relay, which delays every datagram, and a caller with the
//! product's transport. A fixed deadline shorter than the handshake would abandon and restart
//! every dial the same way and never connect; the deadline's longer turns
//! (`transport::handshake_deadline`) must get through.

use std::time::Duration;

use openclaw_hil_tests::relay::Faults;
use openclaw_hil_tests::{GroupOptions, LabGroup};
use shared::config::{SiteId, TlsSection};
use shared::identity::{ca_paths, create_node_cert, node_paths, NodeIdentity};
use shared::tls::TlsMaterial;
use shared::transport::{Transport, TransportTiming};
use shared::wire::Request;

/// Each way: a round trip takes twice this, a handshake at least one round trip.
const ONE_WAY_DELAY: Duration = Duration::from_millis(400);
/// The first dial's deadline: well under one round trip, so it cannot be met.
const FIRST_DEADLINE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_slower_than_the_first_deadline_connects_on_a_longer_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = LabGroup::start_ready(
        &dir.path().join("site"),
        1,
        GroupOptions {
            relays: true,
            ..GroupOptions::fast()
        },
    )
    .await
    .expect("one edge node behind a relay");
    group
        .set_faults(Faults {
            delay: ONE_WAY_DELAY,
            ..Faults::default()
        })
        .expect("faults");

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
            handshake_timeout: FIRST_DEADLINE,
        },
    )
    .expect("bind");
    let node = NodeIdentity::edge(site, 1);
    let addr = group.node(1).expect("node 1").raft_advertise.to_string();

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
        .call(&node, &addr, &Request::ReadIndex, Duration::from_secs(10))
        .await
        .expect("an answer over the slow link");
}
