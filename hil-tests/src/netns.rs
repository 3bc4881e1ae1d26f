//! Test hosts with their own addresses: one network namespace per emulated gateway, joined
//! by a bridge in the test's namespace (as gateways share a site LAN). Needs root and
//! iproute2; everything is removed on drop.
//!
//! Layout for site network `n` (1..=200): bridge `ocbr<n>` holds 10.<n>.0.1/24 on the
//! test's side; gateway `i` is namespace `oc<n>g<i>` with veth `oc<n>v<i>` and address
//! 10.<n>.0.(10 + i), default route via the bridge. The hub and relays stay in the test's
//! namespace; a relay listening on the bridge address is how gateways reach them.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use anyhow::{bail, Context};

use crate::NodeHost;

/// Highest gateway count of one site network (addresses .11 to .(10 + MAX)).
pub const MAX_GATEWAYS: u8 = 9;

/// A bridge and a namespace per gateway.
pub struct SiteNetwork {
    n: u8,
    gateways: u8,
    /// TCP forwarders from a gateway's LAN address to its loopback-only client API.
    forwarders: std::sync::Mutex<Vec<std::process::Child>>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl SiteNetwork {
    /// Whether namespaces can be made here (root and iproute2).
    pub fn available() -> bool {
        // The effective uid (third field of Uid:) is what `ip netns add` checks.
        std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2))
                    == Some("0")
            })
            .unwrap_or(false)
            && Command::new("ip").arg("-V").output().is_ok()
    }

    /// Creates network `n` with `gateways` namespaces; a leftover of the same name from a
    /// crashed run is removed first.
    pub fn create(n: u8, gateways: u8) -> anyhow::Result<SiteNetwork> {
        if n == 0 || n > 200 || gateways == 0 || gateways > MAX_GATEWAYS {
            bail!("site network {n} with {gateways} gateways is out of range");
        }
        let net = SiteNetwork {
            n,
            gateways,
            forwarders: std::sync::Mutex::new(Vec::new()),
        };
        net.remove();
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.bridge_ip()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=gateways {
            let ns = net.namespace(i);
            let (host_end, ns_end) = (format!("oc{n}v{i}"), format!("oc{n}p{i}"));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["link", "set", &ns_end, "netns", &ns])?;
            let addr = format!("{}/24", net.gateway_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &ns_end])?;
            ip(&["-n", &ns, "link", "set", &ns_end, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &net.bridge_ip().to_string(),
            ])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("ocbr{}", self.n)
    }

    /// The test side's address on the site LAN (where relays to the hub listen).
    pub fn bridge_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.n, 0, 1))
    }

    pub fn gateway_ip(&self, i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, self.n, 0, 10 + i))
    }

    pub fn namespace(&self, i: u8) -> String {
        format!("oc{}g{i}", self.n)
    }

    /// The hosts of a lab group running one node per gateway.
    pub fn hosts(&self) -> Vec<NodeHost> {
        (1..=self.gateways)
            .map(|i| NodeHost {
                ip: Some(self.gateway_ip(i)),
                netns: Some(self.namespace(i)),
                ..NodeHost::default()
            })
            .collect()
    }

    /// Makes `port` on gateway `i`'s loopback reachable at its LAN address, as the apps on a
    /// gateway reach its client API locally (socat, installed by the test command).
    pub fn expose_loopback_port(&self, i: u8, port: u16) -> anyhow::Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(i), "socat"])
            .arg(format!(
                "TCP-LISTEN:{port},bind={},reuseaddr,fork",
                self.gateway_ip(i)
            ))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting socat (package socat)")?;
        self.forwarders
            .lock()
            .map_err(|_| anyhow::anyhow!("forwarder list poisoned"))?
            .push(child);
        Ok(())
    }

    fn remove(&self) {
        for i in 1..=MAX_GATEWAYS {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
            let _ = ip(&["link", "del", &format!("oc{}v{i}", self.n)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for SiteNetwork {
    fn drop(&mut self) {
        if let Ok(forwarders) = self.forwarders.get_mut() {
            for child in forwarders.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.remove();
    }
}
