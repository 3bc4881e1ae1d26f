//! The project's UDP relay: sits in front of a node's QUIC port so tests can cut links.
//!
//! One relay per node listens on the node's advertised address and forwards to its real
//! listen address, with one upstream socket per client source (NAT-like) so replies find
//! their way back. Every node binds its QUIC socket on its own loopback IP (127.0.0.x), so
//! the source IP of a datagram names the sending node: blocking by IP cuts a link.
//! Only blocking is implemented; loss, delay, duplication and shaping come with the fault rig.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Largest datagram relayed (QUIC keeps below 1500; loopback allows more).
const MAX_DATAGRAM_BYTES: usize = 65_536;
/// Most client sources one relay tracks (each has its own upstream socket and task).
const MAX_UPSTREAMS: usize = 64;

/// Which sources a relay drops, shared with the test.
#[derive(Clone, Default)]
pub struct RelayControl {
    blocked: Arc<Mutex<HashSet<IpAddr>>>,
}

impl RelayControl {
    pub fn block(&self, ip: IpAddr) {
        self.lock().insert(ip);
    }
    pub fn unblock_all(&self) {
        self.lock().clear();
    }
    fn is_blocked(&self, ip: &IpAddr) -> bool {
        self.lock().contains(ip)
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<IpAddr>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Relay {
    pub listen: SocketAddr,
    pub control: RelayControl,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Starts a relay on `listen` (port 0 picks one) forwarding to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let listen = front.local_addr()?;
        let control = RelayControl::default();
        let ctl = control.clone();
        let task = tokio::spawn(async move {
            let mut upstreams: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> =
                HashMap::new();
            let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
            loop {
                let Ok((n, source)) = front.recv_from(&mut buf).await else {
                    return;
                };
                if ctl.is_blocked(&source.ip()) {
                    continue;
                }
                if !upstreams.contains_key(&source) {
                    if upstreams.len() >= MAX_UPSTREAMS {
                        if let Some(k) = upstreams.keys().next().copied() {
                            if let Some((_, t)) = upstreams.remove(&k) {
                                t.abort();
                            }
                        }
                    }
                    let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                        continue;
                    };
                    let up = Arc::new(up);
                    let (back, up2, ctl2) = (front.clone(), up.clone(), ctl.clone());
                    let t = tokio::spawn(async move {
                        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
                        while let Ok((n, _)) = up2.recv_from(&mut buf).await {
                            // Replies to a blocked source are dropped too: both directions cut.
                            if !ctl2.is_blocked(&source.ip()) {
                                let _ = back.send_to(&buf[..n], source).await;
                            }
                        }
                    });
                    upstreams.insert(source, (up, t));
                }
                if let Some((up, _)) = upstreams.get(&source) {
                    let _ = up.send_to(&buf[..n], target).await;
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
