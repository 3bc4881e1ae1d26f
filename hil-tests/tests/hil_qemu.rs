//! Hardware in the loop, emulated: the ARM build of `openclaw-edge` runs under qemu-user as
//! three gateways, each in its own network namespace with its own address on a site LAN,
//! shipping to a hub through the fault relay shaped like a cellular link; `hil::run` power-
//! cuts a gateway (kill -9 of its whole emulated machine), flaps the uplink and reboots the
//! whole site under a writer, then checks the fault rig's invariants.
//!
//! Runs when `OPENCLAW_HIL_EDGE_BIN` names the cross-built binary (test.sh builds it with
//! cross/build.sh); `OPENCLAW_HIL_EMULATOR` is the emulator command (default: qemu-aarch64-static
//! with Debian's aarch64 glibc from libc6-arm64-cross). Needs root (namespaces) and socat.
//! Without the variable it says it is skipped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use openclaw_hil_tests::hil::{self, ScenarioOptions};
use openclaw_hil_tests::lab::site_name;
use openclaw_hil_tests::netns::SiteNetwork;
use openclaw_hil_tests::relay::{Faults, Relay};
use openclaw_hil_tests::{GroupOptions, LabGroup, UplinkOptions, HOST_HTTP_PORT};

/// qemu-user with Debian's aarch64 glibc (package libc6-arm64-cross) as the gateway's root.
const DEFAULT_EMULATOR: &str = "qemu-aarch64-static -L /usr/aarch64-linux-gnu";

/// A cellular uplink: 2 Mbit/s, 40 ± 15 ms each way, 1% loss.
pub const CELLULAR: Faults = Faults {
    loss: 0.01,
    delay: Duration::from_millis(40),
    jitter: Duration::from_millis(15),
    duplicate: 0.0,
    bandwidth_bytes_per_sec: 256 * 1024,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emulated_gateways_survive_power_cut_uplink_flap_and_site_reboot() {
    let Some(bin) = std::env::var_os("OPENCLAW_HIL_EDGE_BIN").map(PathBuf::from) else {
        eprintln!("HIL scenario skipped: set OPENCLAW_HIL_EDGE_BIN to a cross-built openclaw-edge");
        return;
    };
    let emulator =
        std::env::var("OPENCLAW_HIL_EMULATOR").unwrap_or_else(|_| DEFAULT_EMULATOR.into());
    assert!(
        SiteNetwork::available(),
        "the HIL scenario needs root and iproute2 (network namespaces)"
    );
    let net = SiteNetwork::create(77, 3).expect("site network");
    for gw in 1..=3 {
        net.expose_loopback_port(gw, HOST_HTTP_PORT)
            .expect("API forwarder");
    }
    let dir = tempfile::tempdir().expect("tempdir");

    // The hub (native) and the cellular uplink in front of it, on the site LAN's router side.
    let hub = LabGroup::start_ready(&dir.path().join("hub"), 1, hil::hub_options())
        .await
        .expect("hub");
    let uplink = Relay::start(
        SocketAddr::new(net.bridge_ip(), 0),
        hub.nodes[0].raft_listen,
    )
    .await
    .expect("relay");
    uplink.control.set_faults(CELLULAR);

    let mut site = LabGroup::start(
        &dir.path().join("site"),
        3,
        GroupOptions {
            site: site_name(1),
            ca_dir: Some(hub.dir.join("certs")),
            uplink: Some(UplinkOptions {
                hubs: vec![(1, uplink.listen)],
                ..UplinkOptions::to(&hub)
            }),
            hosts: net.hosts(),
            launcher: emulator.split_whitespace().map(str::to_owned).collect(),
            binary: Some(bin),
            write_timeout: "10s",
            ..GroupOptions::default()
        },
    )
    .await
    .expect("site");
    let gateways: Vec<_> = (1..=3).map(|i| net.gateway_ip(i)).collect();
    let report = hil::run(
        &mut site,
        &hub,
        &uplink,
        &gateways,
        ScenarioOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("HIL scenario: {e:#}\n{}", site.log_tail(1, 20)));
    println!(
        "HIL ({emulator}; 3 gateways in namespaces; cellular uplink {:?}±{:?}, {}% loss, {} \
         KiB/s): {} appends acked, seq {} at every gateway and the hub after a power cut, an \
         uplink flap and a site reboot; gateway RSS idle {:.1} MiB, loaded {:.1} MiB (largest, \
         emulator included); {:.1?}",
        CELLULAR.delay,
        CELLULAR.jitter,
        CELLULAR.loss * 100.0,
        CELLULAR.bandwidth_bytes_per_sec / 1024,
        report.acked,
        report.last_seq,
        report.idle_rss_mib,
        report.loaded_rss_mib,
        report.elapsed
    );
}
