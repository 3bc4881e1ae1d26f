//! Power cuts: the power-cut disk itself, through the kernel (what a process fsynced
//! survives a cut, nothing else does), then edge nodes on such disks through cycles of
//! appends → whole-site power cut → restart, and the negative control that must fail them.

use std::fs::{File, OpenOptions};
use std::io::Write;

use openclaw_hil_tests::powercut::PowerCutDisk;

fn sync_dir(path: &std::path::Path) {
    File::open(path)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

#[test]
fn a_cut_keeps_exactly_what_was_fsynced() {
    if !PowerCutDisk::available_for_tests() {
        eprintln!("skipped: needs /dev/fuse and root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path().join("disk");
    let mut disk = PowerCutDisk::mount(&mount).expect("mount");

    let durable = mount.join("durable");
    let mut f = File::create(&durable).expect("create");
    f.write_all(b"synced").expect("write");
    f.sync_all().expect("fsync");
    sync_dir(&mount);
    f.write_all(b" and not").expect("write");
    drop(f);

    let sub = mount.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let mut g = File::create(sub.join("unlinked")).expect("create");
    g.write_all(b"data").expect("write");
    g.sync_data().expect("fdatasync");
    sync_dir(&sub); // but `sub` itself was never made durable in the root
    drop(g);
    std::fs::write(mount.join("never-synced"), b"x").expect("write");
    assert_eq!(std::fs::read(&durable).expect("read"), b"synced and not");

    let report = disk.power_cut().expect("power cut");
    assert_eq!(std::fs::read(&durable).expect("read after cut"), b"synced");
    assert!(
        !sub.exists(),
        "a directory never fsynced into its parent survived"
    );
    assert!(!mount.join("never-synced").exists());
    assert!(report.unsynced_bytes >= 8, "{report:?}");

    // The remounted disk works as before, and an atomic replace gives old or new.
    let tmp = mount.join("tmp");
    let mut t = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&tmp)
        .expect("create tmp");
    t.write_all(b"replaced").expect("write");
    t.sync_all().expect("fsync");
    drop(t);
    std::fs::rename(&tmp, &durable).expect("rename");
    disk.power_cut().expect("power cut");
    assert_eq!(std::fs::read(&durable).expect("read"), b"synced");
    std::fs::rename(mount.join("durable"), mount.join("moved")).expect("rename");
    sync_dir(&mount);
    disk.power_cut().expect("power cut");
    assert_eq!(std::fs::read(mount.join("moved")).expect("read"), b"synced");
    assert!(disk.stats().fsyncs >= 3);
}

mod nodes {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use openclaw_hil_tests::checker::check_stream;
    use openclaw_hil_tests::powercut::PowerCutDisk;
    use openclaw_hil_tests::rig::{appender, converged_seq, Appends, Retry, STREAM};
    use openclaw_hil_tests::{wait_until, GroupOptions, LabGroup};

    /// Concurrent appenders during each cycle.
    const APPENDERS: usize = 3;
    /// Appends acknowledged in a cycle before its cut.
    const APPENDS_PER_CYCLE: usize = 120;
    const CYCLE_TIMEOUT: Duration = Duration::from_secs(60);

    #[derive(Debug, Default)]
    struct Cycle {
        acked: usize,
        lost: usize,
        duplicated: usize,
        boot_failures: usize,
        unsynced_bytes: u64,
    }

    /// How a cycle takes the site down.
    #[derive(Clone, Copy, PartialEq)]
    enum Down {
        PowerCut,
        /// kill -9 only: what was written but not fsynced stays in the "page cache".
        Crash,
        /// kill -9 of the leader alone (its page cache stays), the others go on.
        LeaderCrash,
    }

    /// Appends until `APPENDS_PER_CYCLE` more are acknowledged, takes every node down at
    /// once with appends in flight, restarts them, and checks every node's stream against
    /// everything acknowledged so far.
    async fn cycle(group: &mut LabGroup, appends: &Arc<Appends>, n: usize, down: Down) -> Cycle {
        let ids = group.ids();
        let urls: Vec<String> = ids.iter().map(|id| group.url(*id)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let target = appends.acked_count() + APPENDS_PER_CYCLE;
        let tasks: Vec<_> = (0..APPENDERS)
            .map(|a| {
                // One appender sends Idempotency-Keys: their records are cut like the rest.
                let retry = if a == 0 { Retry::SameKey } else { Retry::Never };
                tokio::spawn(appender(
                    n * 10 + a,
                    urls.clone(),
                    (n * 10 + a) as u64 + 7,
                    retry,
                    stop.clone(),
                    appends.clone(),
                ))
            })
            .collect();
        wait_until(CYCLE_TIMEOUT, "appends acknowledged", || async {
            appends.acked_count() >= target
        })
        .await
        .expect("appends");
        let mut out = Cycle::default();
        let downed = match down {
            Down::PowerCut => {
                let report = group.power_cut(&ids).expect("power cut");
                eprintln!("cycle {n}: {report:?}");
                out.unsynced_bytes = report.unsynced_bytes;
                ids.clone()
            }
            Down::Crash => {
                for &id in &ids {
                    group.kill9(id).expect("kill");
                }
                ids.clone()
            }
            Down::LeaderCrash => {
                let leader = group.leader(&ids).await.expect("leader");
                group.kill9(leader).expect("kill");
                vec![leader]
            }
        };
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("appender");
        }
        for &id in &downed {
            group.restart(id).expect("restart");
        }
        for &id in &ids {
            if group.wait_ready(&[id]).await.is_err() {
                eprintln!("node {id} did not boot:\n{}", group.log_tail(id, 30));
                out.boot_failures += 1;
            }
        }
        let acked: BTreeMap<String, u64> = appends.acked();
        out.acked = acked.len();
        if out.boot_failures > 0 {
            return out;
        }
        converged_seq(group, &ids, CYCLE_TIMEOUT).await;
        for &id in &ids {
            let url = format!("{}/v1/streams/{STREAM}", group.url(id));
            let stream = openclaw_hil_tests::hil::stream_at(&group.http, &url)
                .await
                .unwrap_or_default(); // no stream at all: everything lost
            let verdict = check_stream(&acked, &stream);
            out.lost = out.lost.max(verdict.lost);
            out.duplicated = out.duplicated.max(verdict.duplicated);
            assert!(verdict.in_order, "node {id}'s stream is out of seq order");
        }
        out
    }

    /// A 3-node group on power-cut disks, or `None` (skipped) where they cannot be mounted.
    async fn site(unsafe_no_fsync: bool) -> Option<(tempfile::TempDir, LabGroup, Arc<Appends>)> {
        if !PowerCutDisk::available_for_tests() {
            eprintln!("skipped: needs /dev/fuse and root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let group = LabGroup::start_ready(dir.path(), 3, options(unsafe_no_fsync))
            .await
            .expect("group");
        Some((dir, group, Arc::new(Appends::default())))
    }

    fn assert_clean(c: Cycle) {
        eprintln!("{c:?}");
        assert_eq!(c.boot_failures, 0, "a node did not boot");
        assert_eq!(
            c.lost, 0,
            "acknowledged appends lost (or replicas diverged): {c:?}"
        );
        assert_eq!(c.duplicated, 0, "appends duplicated: {c:?}");
    }

    fn options(unsafe_no_fsync: bool) -> GroupOptions {
        GroupOptions {
            power_cut_disks: true,
            storage: if unsafe_no_fsync {
                vec![("unsafe_no_fsync".into(), "true".into())]
            } else {
                Vec::new()
            },
            ..GroupOptions::fast()
        }
    }

    /// Cycles of appends → power cut of the whole site (every node loses what it had not
    /// fsynced) → restart: every node boots, and no acknowledged append is lost or doubled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn site_power_cuts_lose_no_acknowledged_append() {
        let Some((_dir, mut group, appends)) = site(false).await else {
            return;
        };
        for n in 0..4 {
            assert_clean(cycle(&mut group, &appends, n, Down::PowerCut).await);
        }
        let stats = group.disk_stats();
        eprintln!("disks: {stats:?}");
        assert_eq!(stats.cuts, 12);
        assert!(stats.fsyncs > 0);
    }

    /// The negative control: with `unsafe_no_fsync` (acknowledged once in the OS's
    /// buffers) a crash of every node loses nothing (the page cache survives a process),
    /// and the power cut that follows loses acknowledged appends, which the check catches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledging_before_fsync_is_caught_by_a_power_cut() {
        let Some((_dir, mut group, appends)) = site(true).await else {
            return;
        };
        let crash = cycle(&mut group, &appends, 0, Down::Crash).await;
        eprintln!("crash: {crash:?}");
        assert_eq!(
            (crash.boot_failures, crash.lost),
            (0, 0),
            "kill -9 alone must lose nothing"
        );
        let cut = cycle(&mut group, &appends, 1, Down::PowerCut).await;
        eprintln!("power cut: {cut:?}");
        assert!(
            cut.lost > 0 || cut.boot_failures > 0,
            "acknowledged-before-fsync writes survived a power cut: the rig cannot see the bug"
        );
        assert!(cut.unsynced_bytes > 0);
    }

    /// The leader is killed (-9) and comes back, then the whole site loses power, again and
    /// again; every acknowledged append survives and the replicas' whole state is identical.
    /// (The rig found, with more load, that a leader resuming its term after a power cut
    /// rewrote entries its followers held; this short cycle did not reproduce that race on
    /// the old setting, so `group::tests` pins the setting and the rig covers the race.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leader_crashes_then_site_power_cuts_keep_replicas_identical() {
        let Some((_dir, mut group, appends)) = site(false).await else {
            return;
        };
        for n in 0..6 {
            let down = if n % 2 == 0 {
                Down::LeaderCrash
            } else {
                Down::PowerCut
            };
            assert_clean(cycle(&mut group, &appends, n, down).await);
        }
        let ids = group.ids();
        openclaw_hil_tests::rig::compare_digests(&group, &ids)
            .await
            .expect("replicas' whole state identical");
    }
}
