//! The project's UDP relay: sits in front of a node's QUIC port so tests can cut, slow down
//! and damage links (tc netem does not exist in this kernel).
//!
//! One relay per node listens on the node's advertised address and forwards to its real
//! listen address, with one upstream socket per client source (NAT-like) so replies find
//! their way back. Every node binds its QUIC socket on its own loopback IP (127.0.0.x), so
//! the source IP of a datagram names the sending node: blocking by IP cuts a link. Faults
//! apply per datagram and per direction: loss, delay with jitter (which also reorders),
//! duplication, and a bandwidth cap (a token bucket per direction).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest datagram relayed (QUIC keeps below 1500; loopback allows more).
const MAX_DATAGRAM_BYTES: usize = 65_536;
/// Most client sources one relay tracks (each has its own upstream socket and task). Above
/// the largest lab (a hub node reached by 100 sites' nodes): past it a new source evicts one,
/// which moves that client to a new upstream port mid-connection. At 64, the 100-site rows of
/// openclaw-ship-bench measured this thrash (handshakes timing out for ~30 s), not the hub.
const MAX_UPSTREAMS: usize = 512;
/// Longest delay a fault may add; bounds the datagrams held in flight.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// An upstream socket that receives nothing from the node for this long is closed (its
/// task ends); the next datagram from that client opens a fresh one.
const UPSTREAM_IDLE: Duration = Duration::from_secs(120);

/// Damage applied to datagrams in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Fraction of datagrams dropped, 0.0..=1.0.
    pub loss: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Extra uniform random delay in [0, jitter]; reorders datagrams.
    pub jitter: Duration,
    /// Fraction of datagrams delivered twice.
    pub duplicate: f64,
    /// Bytes per second (0: unlimited).
    pub bandwidth_bytes_per_sec: u64,
}

#[derive(Default)]
struct Shared {
    /// Sources whose datagrams to the node are dropped.
    blocked_in: HashSet<IpAddr>,
    /// Sources that receive nothing back from the node.
    blocked_out: HashSet<IpAddr>,
    /// Faults on datagrams to the node (`inbound`) and back to clients (`outbound`).
    inbound: Faults,
    outbound: Faults,
    /// Peers the faults apply to; `None`: every peer.
    fault_peers: Option<HashSet<IpAddr>>,
    /// When each direction's bandwidth bucket is next free.
    next_free_in: Option<Instant>,
    next_free_out: Option<Instant>,
}

/// Controls one relay; shared with the test.
#[derive(Clone, Default)]
pub struct RelayControl {
    shared: Arc<Mutex<Shared>>,
    rng: Arc<AtomicU64>,
}

/// Direction of a datagram through a relay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToNode,
    ToClient,
}

impl RelayControl {
    /// Cuts both directions between `ip` and this relay's node.
    pub fn block(&self, ip: IpAddr) {
        let mut s = self.lock();
        s.blocked_in.insert(ip);
        s.blocked_out.insert(ip);
    }
    /// Cuts only `ip` → node (the node's replies still reach `ip`).
    pub fn block_inbound(&self, ip: IpAddr) {
        self.lock().blocked_in.insert(ip);
    }
    /// Cuts only node → `ip`.
    pub fn block_outbound(&self, ip: IpAddr) {
        self.lock().blocked_out.insert(ip);
    }
    /// Restores both directions between `ip` and this relay's node.
    pub fn unblock(&self, ip: IpAddr) {
        let mut s = self.lock();
        s.blocked_in.remove(&ip);
        s.blocked_out.remove(&ip);
    }
    pub fn unblock_all(&self) {
        let mut s = self.lock();
        s.blocked_in.clear();
        s.blocked_out.clear();
    }
    /// Sets the faults of both directions, for every peer.
    pub fn set_faults(&self, faults: Faults) {
        self.set_faults_for(None, faults);
    }
    /// Sets the faults of both directions for datagrams from and to `peers` only (`None`:
    /// every peer); the others pass clean. Shapes one kind of link (e.g. a site's uplink at
    /// the hub) and not the others through the same relay (the hub's own Raft links).
    pub fn set_faults_for(&self, peers: Option<HashSet<IpAddr>>, faults: Faults) {
        let mut s = self.lock();
        s.inbound = faults;
        s.outbound = faults;
        s.fault_peers = peers;
    }
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn random(&self) -> f64 {
        // xorshift64*: test randomness, no dependency.
        let mut x = self.rng.load(Ordering::Relaxed) | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// What to do with one datagram: `None` drops it, else the delays of each copy.
    fn plan(&self, direction: Direction, peer: IpAddr, bytes: usize) -> Option<Vec<Duration>> {
        let (faults, blocked) = {
            let s = self.lock();
            let (faults, blocked) = match direction {
                Direction::ToNode => (s.inbound, s.blocked_in.contains(&peer)),
                Direction::ToClient => (s.outbound, s.blocked_out.contains(&peer)),
            };
            match &s.fault_peers {
                Some(peers) if !peers.contains(&peer) => (Faults::default(), blocked),
                _ => (faults, blocked),
            }
        };
        if blocked || (faults.loss > 0.0 && self.random() < faults.loss) {
            return None;
        }
        let mut delay = faults.delay + faults.jitter.mul_f64(self.random());
        if faults.bandwidth_bytes_per_sec > 0 {
            let now = Instant::now();
            let mut s = self.lock();
            let next_free = match direction {
                Direction::ToNode => &mut s.next_free_in,
                Direction::ToClient => &mut s.next_free_out,
            };
            let start = next_free.map_or(now, |t| t.max(now));
            let done = start
                + Duration::from_secs_f64(bytes as f64 / faults.bandwidth_bytes_per_sec as f64);
            if done - now > MAX_DELAY {
                return None; // the link's queue is full: tail drop
            }
            *next_free = Some(done);
            delay += done - now;
        }
        let delay = delay.min(MAX_DELAY);
        let mut copies = vec![delay];
        if faults.duplicate > 0.0 && self.random() < faults.duplicate {
            copies.push(delay + faults.jitter.mul_f64(self.random()));
        }
        Some(copies)
    }
}

pub struct Relay {
    pub listen: SocketAddr,
    pub control: RelayControl,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Aborting the front task drops its upstream table, whose guards abort every
        // upstream task in turn.
        self.task.abort();
    }
}

/// One client's upstream socket and the task relaying the node's replies back; the task is
/// aborted when this is dropped (a plain `JoinHandle` would only detach it).
struct Upstream {
    socket: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `payload` to `to` after each planned delay (undelayed copies inline, so a clean
/// link keeps its order).
async fn deliver(socket: &Arc<UdpSocket>, payload: &[u8], to: SocketAddr, delays: Vec<Duration>) {
    for delay in delays {
        if delay.is_zero() {
            let _ = socket.send_to(payload, to).await;
        } else {
            let (socket, payload) = (socket.clone(), payload.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&payload, to).await;
            });
        }
    }
}

impl Relay {
    /// Starts a relay on `listen` (port 0 picks one) forwarding to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let listen = front.local_addr()?;
        let control = RelayControl::default();
        control.rng.store(
            u64::from(listen.port()) | 0x9e37_79b9_0000_0000,
            Ordering::Relaxed,
        );
        let ctl = control.clone();
        let task = tokio::spawn(async move {
            let mut upstreams: HashMap<SocketAddr, Upstream> = HashMap::new();
            let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
            loop {
                let Ok((n, source)) = front.recv_from(&mut buf).await else {
                    return;
                };
                if upstreams.get(&source).is_some_and(|u| u.task.is_finished()) {
                    upstreams.remove(&source); // idle-closed: open a fresh one below
                }
                if !upstreams.contains_key(&source) {
                    if upstreams.len() >= MAX_UPSTREAMS {
                        // Evict one (dropping it aborts its task).
                        if let Some(k) = upstreams.keys().next().copied() {
                            upstreams.remove(&k);
                        }
                    }
                    let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                        continue;
                    };
                    let up = Arc::new(up);
                    let (back, up2, ctl2) = (front.clone(), up.clone(), ctl.clone());
                    let task = tokio::spawn(async move {
                        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
                        while let Ok(Ok((n, _))) =
                            tokio::time::timeout(UPSTREAM_IDLE, up2.recv_from(&mut buf)).await
                        {
                            if let Some(delays) = ctl2.plan(Direction::ToClient, source.ip(), n) {
                                deliver(&back, &buf[..n], source, delays).await;
                            }
                        }
                    });
                    upstreams.insert(source, Upstream { socket: up, task });
                }
                if let Some(delays) = ctl.plan(Direction::ToNode, source.ip(), n) {
                    if let Some(up) = upstreams.get(&source) {
                        deliver(&up.socket, &buf[..n], target, delays).await;
                    }
                }
            }
        });
        Ok(Relay {
            listen,
            control,
            task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    /// Sends `count` numbered datagrams through the relay, returns the numbers echoed back
    /// within `wait`.
    async fn round_trip(relay: &Relay, count: u32, wait: Duration) -> Vec<u32> {
        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let receiver = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 16];
                while let Ok(Ok(n)) = tokio::time::timeout(wait, client.recv(&mut buf)).await {
                    if n == 4 {
                        got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                    }
                }
                got
            })
        };
        for i in 0..count {
            client
                .send_to(&i.to_be_bytes(), relay.listen)
                .await
                .expect("send");
            if i % 50 == 49 {
                // Paced: socket buffers on the way hold a few hundred datagrams, no more.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        receiver.await.expect("receiver")
    }

    #[tokio::test]
    async fn clean_link_delivers_everything_in_order() {
        let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), echo_server().await)
            .await
            .expect("relay");
        let got = round_trip(&relay, 200, Duration::from_millis(300)).await;
        assert_eq!(got, (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn loss_duplication_and_jitter_are_applied() {
        let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), echo_server().await)
            .await
            .expect("relay");
        relay.control.set_faults(Faults {
            loss: 0.3,
            ..Faults::default()
        });
        let lossy = round_trip(&relay, 1000, Duration::from_millis(300)).await;
        // Two lossy hops: ~49% arrive.
        assert!(
            (300..700).contains(&lossy.len()),
            "{} of 1000 arrived",
            lossy.len()
        );

        relay.control.set_faults(Faults {
            duplicate: 1.0,
            ..Faults::default()
        });
        let doubled = round_trip(&relay, 100, Duration::from_millis(300)).await;
        assert!(
            doubled.len() >= 300,
            "duplicated on both hops: {}",
            doubled.len()
        );

        relay.control.set_faults(Faults {
            jitter: Duration::from_millis(50),
            ..Faults::default()
        });
        let jittered = round_trip(&relay, 200, Duration::from_millis(300)).await;
        assert_eq!(jittered.len(), 200);
        assert!(jittered.windows(2).any(|w| w[0] > w[1]), "jitter reorders");
    }

    #[tokio::test]
    async fn block_and_unblock_one_source() {
        let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), echo_server().await)
            .await
            .expect("relay");
        let me: IpAddr = "127.0.0.1".parse().expect("ip");
        relay.control.block(me);
        assert!(round_trip(&relay, 10, Duration::from_millis(200))
            .await
            .is_empty());
        relay.control.unblock(me);
        assert_eq!(
            round_trip(&relay, 10, Duration::from_millis(200))
                .await
                .len(),
            10
        );
    }

    #[tokio::test]
    async fn dropping_the_relay_stops_every_task_and_frees_its_port() {
        let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), echo_server().await)
            .await
            .expect("relay");
        assert_eq!(
            round_trip(&relay, 5, Duration::from_millis(200))
                .await
                .len(),
            5
        );
        let listen = relay.listen;
        drop(relay);
        // The upstream task held the front socket too: the port is free only once every
        // task is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while UdpSocket::bind(listen).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "relay port {listen} still bound after drop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn one_direction_cuts_and_bandwidth_cap() {
        let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), echo_server().await)
            .await
            .expect("relay");
        let me: IpAddr = "127.0.0.1".parse().expect("ip");
        relay.control.block_outbound(me);
        assert!(round_trip(&relay, 10, Duration::from_millis(200))
            .await
            .is_empty());
        relay.control.unblock_all();
        relay.control.block_inbound(me);
        assert!(round_trip(&relay, 10, Duration::from_millis(200))
            .await
            .is_empty());
        relay.control.unblock_all();

        // 20 datagrams of 4 bytes at 40 B/s each way take about 2 s + 2 s queued.
        relay.control.set_faults(Faults {
            bandwidth_bytes_per_sec: 40,
            ..Faults::default()
        });
        let started = std::time::Instant::now();
        let got = round_trip(&relay, 20, Duration::from_millis(1500)).await;
        assert_eq!(got.len(), 20, "nothing lost below the queue limit");
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "shaped: {:?}",
            started.elapsed()
        );
    }
}
