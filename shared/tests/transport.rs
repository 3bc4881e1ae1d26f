//! The QUIC transport with real TLS on loopback: mutual authentication, site isolation,
//! and a peer that sends bad frames losing its connection while the node keeps serving.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::RecvStream;
use shared::config::{SiteId, TlsSection};
use shared::identity::{ca_paths, create_dev_ca, create_node_cert, node_paths, NodeIdentity, Role};
use shared::metrics::SHARED;
use shared::tls::TlsMaterial;
use shared::transport::{RpcHandler, Transport, TransportTiming};
use shared::wire::{Request, Response};

const TIMING: TransportTiming = TransportTiming {
    keep_alive: Duration::from_secs(1),
    idle_timeout: Duration::from_secs(5),
    handshake_timeout: shared::transport::HANDSHAKE_TIMEOUT,
};
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct Echo;

impl RpcHandler for Echo {
    async fn handle(
        &self,
        peer: NodeIdentity,
        request: Request,
        _data: &mut RecvStream,
    ) -> Response {
        match request {
            Request::ReadIndex => Response::ReadIndex(peer.node_id * 100),
            _ => Response::Error(shared::wire::RemoteError::Rejected("echo only".into())),
        }
    }

    async fn handle_stream(
        &self,
        _: NodeIdentity,
        _: Request,
        _: RecvStream,
        _: quinn::SendStream,
    ) -> shared::transport::StreamEnd {
        shared::transport::StreamEnd::Finished
    }
}

fn site(s: &str) -> SiteId {
    SiteId::parse(s).expect("site")
}

fn material(dir: &Path, id: u64) -> TlsMaterial {
    let (ca, _) = ca_paths(dir);
    let (cert, key) = node_paths(dir, id);
    TlsMaterial::load(&TlsSection { ca, cert, key }).expect("tls material")
}

fn issue(dir: &Path, site_id: &str, ids: &[u64]) {
    if !ca_paths(dir).0.exists() {
        create_dev_ca(dir).expect("ca");
    }
    for &id in ids {
        create_node_cert(dir, &NodeIdentity::edge(site(site_id), id)).expect("cert");
    }
}

fn serve(dir: &Path, site_id: &str, id: u64) -> (Arc<Transport>, SocketAddr) {
    serve_at(dir, site_id, id, "127.0.0.1:0".parse().expect("addr"))
}

fn serve_at(dir: &Path, site_id: &str, id: u64, at: SocketAddr) -> (Arc<Transport>, SocketAddr) {
    let transport = Transport::bind(
        at,
        &material(dir, id),
        NodeIdentity::edge(site(site_id), id),
        TIMING,
    )
    .expect("bind");
    let own = site(site_id);
    transport.serve(
        Arc::new(Echo),
        Arc::new(move |peer: &NodeIdentity| peer.role == Role::Edge && peer.site == own),
    );
    let addr = transport.local_addr().expect("local addr");
    (transport, addr)
}

fn client(dir: &Path, site_id: &str, id: u64) -> Arc<Transport> {
    Transport::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &material(dir, id),
        NodeIdentity::edge(site(site_id), id),
        TIMING,
    )
    .expect("bind")
}

#[tokio::test]
async fn same_site_peers_talk() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "s1", &[1, 2]);
    let (_server, addr) = serve(dir.path(), "s1", 1);
    let peer = NodeIdentity::edge(site("s1"), 1);
    let caller = client(dir.path(), "s1", 2);
    let response = caller
        .call(&peer, &addr.to_string(), &Request::ReadIndex, CALL_TIMEOUT)
        .await
        .expect("call");
    assert!(matches!(response, Response::ReadIndex(200)), "{response:?}");
}

#[tokio::test]
async fn foreign_ca_and_other_site_are_refused() {
    let good = tempfile::tempdir().expect("tempdir");
    issue(good.path(), "s1", &[1]);
    let (_server, addr) = serve(good.path(), "s1", 1);
    let peer = NodeIdentity::edge(site("s1"), 1);

    // Same node id and site, but a certificate from another CA.
    let foreign = tempfile::tempdir().expect("tempdir");
    issue(foreign.path(), "s1", &[2]);
    let before = SHARED.peer_rejected.get();
    let rogue = client(foreign.path(), "s1", 2);
    let result = rogue
        .call(&peer, &addr.to_string(), &Request::ReadIndex, CALL_TIMEOUT)
        .await;
    assert!(result.is_err(), "foreign CA must not connect: {result:?}");

    // A genuine certificate of the same CA, but for another site.
    issue(good.path(), "s2", &[3]);
    let other_site = client(good.path(), "s2", 3);
    let result = other_site
        .call(&peer, &addr.to_string(), &Request::ReadIndex, CALL_TIMEOUT)
        .await;
    assert!(
        result.is_err(),
        "another site's certificate must be refused: {result:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while SHARED.peer_rejected.get() < before + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both refusals counted in openclaw_peer_rejected_total");
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "s1", &[1, 2, 3]);
    let (_server, addr) = serve(dir.path(), "s1", 1);
    let peer = NodeIdentity::edge(site("s1"), 1);
    let garbage: [&[u8]; 3] = [
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3], // announces a 4 GiB frame
        &[0, 0, 0, 5, 1, 0xde, 0xad, 0xbe, 0xef], // undecodable body
        &[0, 0, 0, 100, 1, 2],              // truncated: FIN before the body ends
    ];
    for bytes in garbage {
        let before = SHARED.bad_frames.get();
        let attacker = client(dir.path(), "s1", 2);
        let conn = attacker
            .connection(&peer, &addr.to_string())
            .await
            .expect("connect");
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        send.write_all(bytes).await.expect("write");
        send.finish().expect("finish");
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        assert!(closed.is_ok(), "connection not closed after {bytes:?}");
        assert!(SHARED.bad_frames.get() > before);

        let honest = client(dir.path(), "s1", 3);
        let response = honest
            .call(&peer, &addr.to_string(), &Request::ReadIndex, CALL_TIMEOUT)
            .await
            .expect("node still serves");
        assert!(matches!(response, Response::ReadIndex(300)));
    }
}

/// A dial to a peer that never answers gives up at the handshake timeout, well before the
/// idle timeout; once the peer answers, the next call connects.
#[tokio::test]
async fn a_dial_into_silence_gives_up_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "s1", &[1, 2]);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let timing = TransportTiming {
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(1),
    };
    let caller = Transport::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &material(dir.path(), 2),
        NodeIdentity::edge(site("s1"), 2),
        timing,
    )
    .expect("bind");
    let peer = NodeIdentity::edge(site("s1"), 1);
    let target = addr.to_string();
    let call = caller.call(
        &peer,
        &target,
        &Request::ReadIndex,
        Duration::from_secs(120),
    );
    let result = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the dial ended long before the 60 s idle timeout");
    let error = result.expect_err("nobody answered");
    assert!(error.to_string().contains("no handshake within"), "{error}");

    drop(silent);
    let (_server, served) = serve_at(dir.path(), "s1", 1, addr);
    assert_eq!(served, addr);
    let answer = caller
        .call(&peer, &addr.to_string(), &Request::ReadIndex, CALL_TIMEOUT)
        .await
        .expect("the peer answers now");
    assert!(matches!(answer, Response::ReadIndex(200)), "{answer:?}");
}

/// openraft waits out its backoff after a failed replication stream (200 ms) inside the
/// request stream it hands to `stream_append`, not before calling it. So the stream to a peer
/// is dialed only once its first request exists (`shared/src/network.rs`): dialed first, a
/// peer that refused at once (a certificate it rejects, an endpoint closing) was dialed again
/// with no pause, thousands of times a second (seen as ~6,000 warnings a second from a hub
/// leader whose followers were stopping).
#[tokio::test]
async fn a_replication_stream_is_dialed_only_once_its_first_request_exists() {
    use futures::StreamExt as _;
    use openraft::network::{RPCOption, RaftNetworkFactory};
    use openraft::raft::AppendEntriesRequest;
    use openraft::RaftNetworkV2;
    use shared::network::NetworkFactory;
    use shared::types::{NodeAddr, TypeConfig, Vote};

    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), "s1", &[1]);
    // Stands where the peer should be: every datagram a dial sends lands here.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let own = NodeIdentity::edge(site("s1"), 1);
    let mut factory = NetworkFactory::new(client(dir.path(), "s1", 1), own);
    let addr = NodeAddr {
        raft: silent.local_addr().expect("addr").to_string(),
        http: String::new(),
    };
    let mut peer = factory.new_client(2, &addr).await;
    let (requests, input) = futures::channel::mpsc::unbounded();
    let streaming = tokio::spawn(async move {
        let option = RPCOption::new(Duration::from_millis(50));
        match peer.stream_append(input, option).await {
            Ok(mut replies) => replies.next().await.map(|r| r.is_ok()),
            Err(_) => None,
        }
    });

    let mut datagram = [0u8; 2048];
    let early = tokio::time::timeout(Duration::from_secs(1), silent.recv_from(&mut datagram)).await;
    assert!(early.is_err(), "dialed before any request existed");

    requests
        .unbounded_send(AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        })
        .expect("send");
    tokio::time::timeout(CALL_TIMEOUT, silent.recv_from(&mut datagram))
        .await
        .expect("dialed once a request exists")
        .expect("recv");
    streaming.abort();
}
