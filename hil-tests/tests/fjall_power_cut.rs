//! fjall alone on a power-cut disk: a child process writes atomic batches across keyspaces
//! and fsyncs after each, printing what was acknowledged; it is killed (-9) at random
//! moments, sometimes with a power cut after. Every acknowledged batch must be there, and
//! every batch must be all or nothing across keyspaces.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openclaw_hil_tests::powercut::PowerCutDisk;

const KEYSPACES: [&str; 3] = ["a", "b", "c"];
/// Batches per fsync in the writer.
const GROUP_COMMIT: u64 = 10;
/// Kill rounds (about half of them followed by a power cut).
const ROUNDS: usize = 20;

fn open(dir: &std::path::Path) -> (fjall::Database, Vec<fjall::Keyspace>) {
    // A writer killed during its first open leaves a database fjall cannot open again ("File
    // exists" on its journal) though nothing was acknowledged; openclaw's Store::open clears
    // it the same way (`store::clear_interrupted_creation`).
    shared::store::clear_interrupted_creation(dir).expect("clear an interrupted creation");
    let db = fjall::Database::builder(dir)
        .manual_journal_persist(true)
        .open()
        .expect("open");
    let ks = KEYSPACES
        .iter()
        .map(|n| {
            db.keyspace(n, || {
                fjall::KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(1 << 20)
            })
            .expect("keyspace")
        })
        .collect();
    // As openclaw's Store::open does: fjall does not fsync its new keyspace folders' names.
    std::fs::File::open(dir.join("keyspaces"))
        .and_then(|d| d.sync_all())
        .expect("fsync keyspaces/");
    for d in [dir, dir.parent().expect("parent")] {
        std::fs::File::open(d)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
    }
    (db, ks)
}

/// The child: batch i writes key i (value = 200 bytes of i) to every keyspace, fsyncs,
/// prints i.
fn writer(dir: &std::path::Path, from: u64) {
    let (db, ks) = open(dir);
    let mut i = from;
    loop {
        let mut batch = db.batch();
        for k in &ks {
            batch.insert(k, i.to_be_bytes(), vec![(i % 251) as u8; 200]);
        }
        batch.commit().expect("commit");
        // Group commit, as the node's syncer does: an fsync covers several batches, and
        // between fsyncs the written ones sit in the OS's buffers only.
        if i % GROUP_COMMIT == GROUP_COMMIT - 1 {
            db.persist(fjall::PersistMode::SyncData).expect("persist");
            println!("{i}");
        }
        i += 1;
    }
}

#[test]
fn fjall_keeps_every_fsynced_batch_through_crashes_and_power_cuts() {
    if let Ok(dir) = std::env::var("FJALL_WRITER_DIR") {
        let from = std::env::var("FJALL_WRITER_FROM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        writer(std::path::Path::new(&dir), from);
        return;
    }
    if !PowerCutDisk::available_for_tests() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mount = tmp.path().join("disk");
    let mut disk = PowerCutDisk::mount(&mount).expect("mount");
    let db_dir = mount.join("db");
    let mut acked: Option<u64> = None;
    let mut rng = 12345u64;
    for round in 0..ROUNDS {
        let from = acked.map_or(0, |a| a + 1);
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "fjall_keeps_every_fsynced_batch_through_crashes_and_power_cuts",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FJALL_WRITER_DIR", &db_dir)
            .env("FJALL_WRITER_FROM", from.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(200 + rng % 1500);
        let started = Instant::now();
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                if let Some(i) = line.ok().and_then(|l| l.trim().parse::<u64>().ok()) {
                    last = Some(i);
                }
            }
            last
        });
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        if let Some(last) = reader.join().expect("reader") {
            acked = Some(acked.map_or(last, |a| a.max(last)));
        }
        let cut = rng.is_multiple_of(2);
        if cut {
            disk.power_cut().expect("cut");
        }
        let (_db, ks) = open(&db_dir);
        let upto = acked.map_or(0, |a| a + 1);
        for i in 0..upto {
            for (k, name) in ks.iter().zip(KEYSPACES) {
                let v = k.get(i.to_be_bytes()).expect("get");
                assert!(
                    v.as_deref() == Some(&vec![(i % 251) as u8; 200][..]),
                    "round {round} (cut {cut}): acknowledged batch {i} missing or wrong in {name}"
                );
            }
        }
        // All or nothing past the acknowledged ones.
        let mut i = upto;
        loop {
            let present: Vec<bool> = ks
                .iter()
                .map(|k| k.get(i.to_be_bytes()).expect("get").is_some())
                .collect();
            assert!(
                present.iter().all(|p| *p == present[0]),
                "round {round}: batch {i} torn: {present:?}"
            );
            if !present[0] {
                break;
            }
            i += 1;
        }
        eprintln!(
            "round {round}: cut {cut}, acked through {acked:?}, present through {}",
            i as i64 - 1
        );
        // What survived is the new baseline.
        acked = if i == 0 { None } else { Some(i - 1) };
    }
}
