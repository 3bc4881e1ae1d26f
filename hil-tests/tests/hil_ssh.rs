//! `openclaw-hil` against "devices" reached over real ssh: an sshd on loopback stands in for
//! three gateways (each node on its own loopback address and API port), so the real-device
//! path — files pushed over ssh, API tunnels, nodes run and power-cut through their ssh
//! sessions — runs in CI exactly as it would against hardware. Needs root and
//! openssh-server (installed by the test command).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openclaw_hil_tests::{binary, wait_until};

struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client)")
        .success();
    assert!(ok, "ssh-keygen failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openclaw_hil_runs_the_scenario_on_gateways_over_ssh() {
    let sshd_bin = Path::new("/usr/sbin/sshd");
    assert!(
        sshd_bin.exists(),
        "/usr/sbin/sshd is missing (apt-get install openssh-server)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    keygen(&d.join("host_key"));
    keygen(&d.join("id"));
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).expect("authorized_keys");
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let port = free_port();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
             AuthorizedKeysFile {keys}\nPermitRootLogin prohibit-password\nStrictModes no\n\
             UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            host = d.join("host_key").display(),
            pid = d.join("sshd.pid").display(),
            keys = d.join("authorized_keys").display(),
        ),
    )
    .expect("sshd_config");
    let _sshd = Sshd(
        Command::new(sshd_bin)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd"),
    );
    wait_until(Duration::from_secs(10), "sshd listening", || async {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await
    .expect("sshd");

    let edge = binary("openclaw-edge", "OPENCLAW_EDGE_BIN").expect("openclaw-edge");
    let ssh = format!(
        r#"["-p", "{port}", "-i", "{key}", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1"]"#,
        key = d.join("id").display()
    );
    let mut devices = format!(
        "hub_address = \"127.0.0.1\"\nedge_binary = \"{}\"\nremote_dir = \"{}\"\nper_phase = 10\n\
         [uplink]\ndelay_ms = 20\nloss = 0.01\n",
        edge.display(),
        d.join("remote").display()
    );
    for i in 1..=3 {
        devices.push_str(&format!(
            "[[gateway]]\nssh = {ssh}\naddress = \"127.0.0.{}\"\napi_port = {}\n",
            20 + i,
            free_port()
        ));
    }
    std::fs::write(d.join("devices.toml"), devices).expect("devices");

    let hil = binary("openclaw-hil", "OPENCLAW_HIL_BIN").expect("openclaw-hil");
    let out = tokio::task::spawn_blocking({
        let (hil, d) = (hil.clone(), d.to_owned());
        move || {
            Command::new(hil)
                .arg("--devices")
                .arg(d.join("devices.toml"))
                .arg("--dir")
                .arg(d.join("run"))
                .output()
                .expect("openclaw-hil")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openclaw-hil failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("exactly once and in order"), "{stdout}");
    println!("{stdout}");

    // A devices file that cannot work is refused with a reason and exit code 1.
    std::fs::write(
        d.join("two.toml"),
        "hub_address = \"127.0.0.1\"\n[[gateway]]\nssh = [\"x\"]\naddress = \"127.0.0.9\"\n",
    )
    .expect("devices");
    let out = Command::new(hil)
        .arg("--devices")
        .arg(d.join("two.toml"))
        .output()
        .expect("openclaw-hil");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("list 3 or 5 gateways"));
}
