//! QUIC transport between nodes: one mutually authenticated connection per peer, one
//! bidirectional stream per RPC.
//!
//! The transport authenticates (chain to the deployment CA, then the certificate's
//! [`NodeIdentity`]) and asks a [`PeerPolicy`] whether that identity may connect at all.
//! Whether a peer may make a particular request (e.g. vote as the node it claims) is the
//! [`RpcHandler`]'s decision. A peer that sends an oversize or undecodable frame loses its
//! connection; the node keeps serving everyone else.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncRead;
use tracing::{debug, info, warn, Instrument};

use crate::identity::NodeIdentity;
use crate::in_flight::InFlight;
use crate::limits::{
    MAX_CONCURRENT_RPC_STREAMS, QUIC_CONNECTION_WINDOW_BYTES, QUIC_STREAM_WINDOW_BYTES,
    SNAPSHOT_CHUNK_BYTES,
};
use crate::metrics::SHARED;
use crate::tls::{TlsError, TlsMaterial};
use crate::wire::{read_frame, write_frame, Request, Response, WireError};

/// QUIC application close codes.
const CLOSE_BAD_FRAME: u32 = 1;
const CLOSE_FORBIDDEN: u32 = 2;
const CLOSE_SHUTDOWN: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot bind QUIC on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot resolve peer address `{0}`")]
    Resolve(String),
    #[error("cannot connect to {peer} at {addr}: {message}")]
    Connect {
        peer: String,
        addr: SocketAddr,
        message: String,
    },
    #[error("connection to {peer} lost: {source}")]
    Connection {
        peer: String,
        source: quinn::ConnectionError,
    },
    #[error("stream to {peer}: {message}")]
    Stream { peer: String, message: String },
    #[error("RPC to {peer}: {source}")]
    Wire { peer: String, source: WireError },
    #[error("RPC to {peer} timed out after {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
}

impl TransportError {
    /// The peer could not be reached at all (worth a backoff), as opposed to a failure
    /// in the middle of an exchange.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Resolve(_) | TransportError::Connect { .. }
        )
    }
}

/// Decides whether an authenticated identity may connect to this node.
pub type PeerPolicy = Arc<dyn Fn(&NodeIdentity) -> bool + Send + Sync>;

/// Serves requests from authenticated peers.
pub trait RpcHandler: Send + Sync + 'static {
    /// Answers one request. `data` is the rest of the stream (snapshot bytes follow an
    /// `InstallSnapshot` header; unary requests leave it alone).
    fn handle(
        &self,
        peer: NodeIdentity,
        request: Request,
        data: &mut RecvStream,
    ) -> impl Future<Output = Response> + Send;

    /// Serves a streaming request (`Request::is_streaming`) on its own stream until done.
    fn handle_stream(
        &self,
        peer: NodeIdentity,
        request: Request,
        recv: RecvStream,
        send: SendStream,
    ) -> impl Future<Output = StreamEnd> + Send;
}

/// How a streaming request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    Finished,
    /// The peer sent something malformed or forbidden: close its whole connection.
    Misbehaved,
}

/// Timing of QUIC connections.
#[derive(Clone, Copy, Debug)]
pub struct TransportTiming {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    /// A dial without a completed handshake by then fails, and the next dial starts afresh.
    pub handshake_timeout: Duration,
}

/// The handshake deadline of a first dial (`TransportTiming::handshake_timeout`; never longer
/// than the idle timeout). Without one a dial to an unreachable peer lived until the idle
/// timeout, resending its first packet ever more rarely (QUIC's probe timeout doubles: 1, 2,
/// 4, 8 s), and every later call to that peer waited for it: a site could go on waiting up to
/// the idle timeout (15 s by default) after its hub came back. Enough for a handshake over a
/// slow, lossy uplink (a few round trips and ~4 KiB of certificates); a link slower still is
/// served by `handshake_deadline`'s longer turns.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline of the next dial to a peer after `abandoned_in_a_row` dials to it ran out of
/// time: `base`, then doubled per abandoned dial up to `cap` (the idle timeout), then `base`
/// again. A fixed deadline could never connect over a link whose handshake takes longer than
/// it (every dial abandoned and restarted the same way); always growing would bring back long
/// dials into silence, which notice a peer's return late. The cycle gives a slow link a long
/// enough dial once per turn, and a returning peer a short dial most of the time.
pub fn handshake_deadline(base: Duration, cap: Duration, abandoned_in_a_row: u32) -> Duration {
    if base.is_zero() || base >= cap {
        return cap;
    }
    // A turn is base·2^0, base·2^1, … while below the cap, then the cap.
    let below_cap = (0..MAX_HANDSHAKE_DOUBLINGS)
        .take_while(|&k| base.saturating_mul(1 << k) < cap)
        .count() as u32;
    let step = abandoned_in_a_row % (below_cap + 1);
    base.saturating_mul(1 << step).min(cap)
}

/// Bounds a turn of `handshake_deadline` (and the shift in it) whatever the timing.
const MAX_HANDSHAKE_DOUBLINGS: u32 = 16;

/// One peer's dialing: one dial at a time (the others wait for its result), and how many
/// dials in a row ran out of time (`handshake_deadline`).
#[derive(Default)]
struct PeerDial {
    one_at_a_time: tokio::sync::Mutex<()>,
    abandoned_in_a_row: AtomicU32,
}

pub struct Transport {
    endpoint: Endpoint,
    local: NodeIdentity,
    /// Established connections, one per peer.
    connections: Mutex<HashMap<NodeIdentity, Connection>>,
    dialing: Mutex<HashMap<NodeIdentity, Arc<PeerDial>>>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    /// Requests being answered, until the peer has their whole answer.
    serving: Arc<InFlight>,
}

impl Transport {
    /// Binds the QUIC endpoint (server and client on one socket, so a peer sees our
    /// packets come from the address we listen on).
    pub fn bind(
        listen: SocketAddr,
        tls: &TlsMaterial,
        local: NodeIdentity,
        timing: TransportTiming,
    ) -> Result<Arc<Self>, TransportError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(timing.keep_alive))
            .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_RPC_STREAMS))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            // quinn's connection window is unbounded by default: a peer could make us buffer
            // up to (streams × stream window). Bounded, so memory fits a small gateway.
            .receive_window(VarInt::from_u32(QUIC_CONNECTION_WINDOW_BYTES))
            .stream_receive_window(VarInt::from_u32(QUIC_STREAM_WINDOW_BYTES))
            .send_window(u64::from(QUIC_CONNECTION_WINDOW_BYTES));
        if let Ok(idle) = quinn::IdleTimeout::try_from(timing.idle_timeout) {
            transport.max_idle_timeout(Some(idle));
        }
        let transport = Arc::new(transport);

        let server_tls = QuicServerConfig::try_from(tls.server_config()?)
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(transport.clone());
        let client_tls = QuicClientConfig::try_from(tls.client_config()?)
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);

        let mut endpoint =
            Endpoint::server(server, listen).map_err(|source| TransportError::Bind {
                addr: listen,
                source,
            })?;
        endpoint.set_default_client_config(client);
        Ok(Arc::new(Transport {
            endpoint,
            local,
            connections: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            handshake_timeout: timing.handshake_timeout,
            idle_timeout: timing.idle_timeout,
            serving: Arc::default(),
        }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    pub fn local_identity(&self) -> &NodeIdentity {
        &self.local
    }

    /// Accepts connections until the endpoint closes.
    pub fn serve<H: RpcHandler>(
        self: &Arc<Self>,
        handler: Arc<H>,
        policy: PeerPolicy,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(incoming) = this.endpoint.accept().await {
                let handler = handler.clone();
                let policy = policy.clone();
                let serving = this.serving.clone();
                let remote = incoming.remote_address();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => serve_connection(conn, handler, policy, serving).await,
                        Err(e) => {
                            SHARED.peer_rejected.inc();
                            warn!(%remote, error = %e, "refused QUIC peer: handshake failed");
                        }
                    }
                });
            }
        })
    }

    async fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
        if let Ok(addr) = addr.parse() {
            return Ok(addr);
        }
        tokio::net::lookup_host(addr)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| TransportError::Resolve(addr.to_owned()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeIdentity, Connection>> {
        // A poisoned map of cached connections is still a valid cache.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, peer: &NodeIdentity) -> Option<Connection> {
        self.lock()
            .get(peer)
            .filter(|conn| conn.close_reason().is_none())
            .cloned()
    }

    /// The cached connection to `peer`, dialled if there is none or it has closed.
    ///
    /// The dial runs in its own task: an RPC deadline shorter than a handshake (heartbeats)
    /// abandons the wait, not the dial, and the next RPC finds the connection ready.
    pub async fn connection(
        self: &Arc<Self>,
        peer: &NodeIdentity,
        addr: &str,
    ) -> Result<Connection, TransportError> {
        if let Some(conn) = self.cached(peer) {
            return Ok(conn);
        }
        let peer_dial = self
            .dialing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(peer.clone())
            .or_default()
            .clone();
        let _dialing = peer_dial.one_at_a_time.lock().await;
        if let Some(conn) = self.cached(peer) {
            return Ok(conn);
        }
        let addr = Self::resolve(addr).await?;
        let this = self.clone();
        let target = peer.clone();
        let handshake_timeout = handshake_deadline(
            self.handshake_timeout,
            self.idle_timeout,
            peer_dial.abandoned_in_a_row.load(Ordering::Relaxed),
        );
        let dial_state = peer_dial.clone();
        let dial = tokio::spawn(async move {
            let connect_err = |message: String| TransportError::Connect {
                peer: target.to_string(),
                addr,
                message,
            };
            let connecting = this
                .endpoint
                .connect(addr, &target.dns_name())
                .map_err(|e| connect_err(e.to_string()))?;
            // Dropping `connecting` abandons the handshake.
            let Ok(handshake) = tokio::time::timeout(handshake_timeout, connecting).await else {
                dial_state
                    .abandoned_in_a_row
                    .fetch_add(1, Ordering::Relaxed);
                return Err(connect_err(format!(
                    "no handshake within {handshake_timeout:?}"
                )));
            };
            let conn = handshake.map_err(|e| connect_err(e.to_string()))?;
            dial_state.abandoned_in_a_row.store(0, Ordering::Relaxed);
            debug!(peer = %target, %addr, "connected");
            this.lock().insert(target, conn.clone());
            Ok(conn)
        });
        dial.await.unwrap_or_else(|e| {
            Err(TransportError::Connect {
                peer: peer.to_string(),
                addr,
                message: format!("dial task failed: {e}"),
            })
        })
    }

    /// Drops the cached connection to `peer` so the next call redials. Calls in flight on
    /// it keep their handle.
    pub fn forget(&self, peer: &NodeIdentity) {
        self.lock().remove(peer);
    }

    /// One unary RPC with a deadline.
    pub async fn call(
        self: &Arc<Self>,
        peer: &NodeIdentity,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        self.call_with_data(peer, addr, request, None::<tokio::io::Empty>, timeout)
            .await
    }

    /// An RPC whose request frame is followed by the bytes of `data` (a snapshot file).
    pub async fn call_with_data<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        peer: &NodeIdentity,
        addr: &str,
        request: &Request,
        data: Option<R>,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        self.with_deadline(peer, timeout, self.exchange(peer, addr, request, data))
            .await
    }

    /// Runs `work` against `peer` under a deadline; any failure drops the cached connection.
    async fn with_deadline<T>(
        &self,
        peer: &NodeIdentity,
        timeout: Duration,
        work: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let result = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Timeout {
                    peer: peer.to_string(),
                    timeout,
                })
            });
        if result.is_err() {
            // Includes timeouts: a peer that restarted leaves a connection that looks open
            // but answers nothing until the idle timeout. Redialling costs one handshake.
            self.forget(peer);
        }
        result
    }

    async fn exchange<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        peer: &NodeIdentity,
        addr: &str,
        request: &Request,
        data: Option<R>,
    ) -> Result<Response, TransportError> {
        let stream_err = |message: String| TransportError::Stream {
            peer: peer.to_string(),
            message,
        };
        let (mut send, mut recv) = self.open_with_header(peer, addr, request).await?;
        if let Some(mut data) = data {
            copy_in_chunks(&mut data, &mut send)
                .await
                .map_err(|e| stream_err(e.to_string()))?;
        }
        send.finish().map_err(|e| stream_err(e.to_string()))?;
        read_frame(&mut recv)
            .await
            .map_err(|source| TransportError::Wire {
                peer: peer.to_string(),
                source,
            })
    }

    /// Opens a stream to `peer` and sends a streaming request's header on it.
    pub async fn open_stream(
        self: &Arc<Self>,
        peer: &NodeIdentity,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<(SendStream, RecvStream), TransportError> {
        self.with_deadline(peer, timeout, self.open_with_header(peer, addr, request))
            .await
    }

    /// A new stream to `peer` (dialling if needed) with `request`'s frame written on it.
    async fn open_with_header(
        self: &Arc<Self>,
        peer: &NodeIdentity,
        addr: &str,
        request: &Request,
    ) -> Result<(SendStream, RecvStream), TransportError> {
        let conn = self.connection(peer, addr).await?;
        let (mut send, recv) =
            conn.open_bi()
                .await
                .map_err(|source| TransportError::Connection {
                    peer: peer.to_string(),
                    source,
                })?;
        write_frame(&mut send, request)
            .await
            .map_err(|source| TransportError::Wire {
                peer: peer.to_string(),
                source,
            })?;
        Ok((send, recv))
    }

    /// Closes every connection and the endpoint, once the answers under way have reached
    /// their peers (at most `SHUTDOWN_ANSWER_WAIT`).
    pub async fn shutdown(&self) {
        let _ = tokio::time::timeout(SHUTDOWN_ANSWER_WAIT, self.serving.idle()).await;
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Longest a stopping transport waits for the answers it is sending to be acknowledged.
const SHUTDOWN_ANSWER_WAIT: Duration = Duration::from_secs(1);

async fn copy_in_chunks<R: AsyncRead + Unpin>(
    data: &mut R,
    send: &mut SendStream,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    loop {
        let n = data.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        send.write_all(&buf[..n])
            .await
            .map_err(std::io::Error::other)?;
    }
}

fn peer_identity(conn: &Connection) -> Option<NodeIdentity> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let leaf = certs.first()?;
    match NodeIdentity::from_certificate(leaf) {
        Ok(id) => Some(id),
        Err(e) => {
            warn!(remote = %conn.remote_address(), error = %e, "peer certificate names no node");
            None
        }
    }
}

async fn serve_connection<H: RpcHandler>(
    conn: Connection,
    handler: Arc<H>,
    policy: PeerPolicy,
    serving: Arc<InFlight>,
) {
    let remote = conn.remote_address();
    let Some(peer) = peer_identity(&conn).filter(|id| policy(id)) else {
        SHARED.peer_rejected.inc();
        warn!(%remote, "refused QUIC peer: its certificate is not for this group");
        conn.close(
            VarInt::from_u32(CLOSE_FORBIDDEN),
            b"certificate not accepted here",
        );
        return;
    };
    info!(%peer, %remote, "peer connected");
    let span = tracing::info_span!("peer", %peer);
    async move {
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => {
                    debug!(error = %e, "peer connection ended");
                    return;
                }
            };
            let handler = handler.clone();
            let peer = peer.clone();
            let conn = conn.clone();
            let serving = serving.clone();
            tokio::spawn(
                async move { serve_stream(conn, peer, handler, send, recv, &serving).await }
                    .in_current_span(),
            );
        }
    }
    .instrument(span)
    .await
}

async fn serve_stream<H: RpcHandler>(
    conn: Connection,
    peer: NodeIdentity,
    handler: Arc<H>,
    mut send: SendStream,
    mut recv: RecvStream,
    serving: &Arc<InFlight>,
) {
    let request: Request = match read_frame(&mut recv).await {
        Ok(request) => request,
        Err(WireError::Io(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            debug!(error = %e, "stream reset before a request");
            return;
        }
        Err(e) => {
            SHARED.bad_frames.inc();
            warn!(error = %e, "bad frame from peer; closing its connection");
            conn.close(VarInt::from_u32(CLOSE_BAD_FRAME), b"bad frame");
            return;
        }
    };
    if request.is_streaming() {
        if handler.handle_stream(peer, request, recv, send).await == StreamEnd::Misbehaved {
            conn.close(VarInt::from_u32(CLOSE_BAD_FRAME), b"bad frame");
        }
        return;
    }
    let _serving = serving.enter();
    let response = handler.handle(peer, request, &mut recv).await;
    if let Err(e) = write_frame(&mut send, &response).await {
        debug!(error = %e, "could not send response");
        return;
    }
    let _ = send.finish();
    // Counted until the peer has acknowledged the whole answer (or the connection ends):
    // closing the endpoint drops what it has not yet sent.
    let _ = send.stopped().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn handshake_deadlines_double_to_the_idle_timeout_then_start_again() {
        let turn: Vec<Duration> = (0..8)
            .map(|abandoned| handshake_deadline(secs(5), secs(15), abandoned))
            .collect();
        assert_eq!(
            turn,
            [5, 10, 15, 5, 10, 15, 5, 10].map(secs),
            "a turn is 5, 10, then the 15 s cap"
        );
        let exact: Vec<Duration> = (0..4)
            .map(|abandoned| handshake_deadline(secs(5), secs(20), abandoned))
            .collect();
        assert_eq!(
            exact,
            [5, 10, 20, 5].map(secs),
            "a doubling that reaches the cap is the cap"
        );
    }

    #[test]
    fn handshake_deadlines_stay_within_the_cap_for_any_timing() {
        assert_eq!(handshake_deadline(secs(30), secs(15), 0), secs(15));
        assert_eq!(handshake_deadline(Duration::ZERO, secs(15), 3), secs(15));
        let tiny = Duration::from_nanos(1);
        for abandoned in [0, 1, 16, 17, u32::MAX] {
            let deadline = handshake_deadline(tiny, Duration::MAX, abandoned);
            assert!(deadline >= tiny && deadline <= tiny * (1 << MAX_HANDSHAKE_DOUBLINGS));
        }
    }
}
