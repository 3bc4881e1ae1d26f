//! A short run of the fault rig in CI: partitions, leader kill -9, pauses, packet loss, a
//! membership change (a node added and removed), an uplink cut and a hub kill -9 under a
//! concurrent KV
//! workload and stream appends shipped to a hub; every key's history must be linearizable,
//! every acknowledged append present once at its seq on every replica and at the hub, and the
//! replicas must converge. Longer runs:
//! `openclaw-rig --seconds N`.

use std::time::Duration;

use openclaw_hil_tests::rig::{group_options, hub_options, run, RigConfig};
use openclaw_hil_tests::{GroupOptions, LabGroup, UplinkOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_fault_run_finds_no_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hub = LabGroup::start_ready(&dir.path().join("hub"), 1, hub_options())
        .await
        .expect("hub");
    let options = GroupOptions {
        ca_dir: Some(hub.dir.join("certs")),
        uplink: Some(UplinkOptions::to(&hub)),
        ..group_options()
    };
    let mut group = LabGroup::start_ready(&dir.path().join("site"), 3, options)
        .await
        .expect("start");
    let config = RigConfig {
        clients: 6,
        keys: 4,
        duration: Duration::from_secs(32),
        fault_interval: Duration::from_secs(4),
        seed: 42,
    };
    let report = run(&mut group, Some(&mut hub), &config).await.expect("rig");
    eprintln!("{report:#?}");
    assert!(
        report.faults.len() >= 4,
        "faults injected: {:?}",
        report.faults
    );
    assert!(
        report.operations > 200,
        "too few operations: {}",
        report.operations
    );
    assert_eq!(
        report.violations, 0,
        "linearizability violations: {:#?}",
        report.verdicts
    );
    assert!(
        report
            .verdicts
            .values()
            .all(|v| v.starts_with("Linearizable")),
        "undecided keys: {:#?}",
        report.verdicts
    );
    assert!(report.converged, "replicas did not converge");
    assert!(
        report.appends_acked > 20,
        "too few appends: {}",
        report.appends_acked
    );
    assert_eq!(report.appends_lost, 0, "acknowledged appends lost");
    assert_eq!(
        report.appends_duplicated, 0,
        "appends duplicated or out of order"
    );
    for family in [
        "partition",
        "kill -9",
        "pause",
        "10% loss",
        "add node",
        "cut the uplink",
        "kill -9 hub leader",
    ] {
        assert!(
            report.faults.iter().any(|f| f.starts_with(family)),
            "no '{family}' fault in {:?}",
            report.faults
        );
    }
}
