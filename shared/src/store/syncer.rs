//! Group commit: one thread fsyncs the journal for every durability request queued while
//! the previous fsync ran, then completes them all.
//!
//! Requests are completed strictly after the fsync that covers them. A failed fsync poisons
//! fjall and fails every waiting request; the node then stops (openraft turns a failed log
//! write into a fatal error) rather than acknowledge anything it cannot prove durable.

use std::sync::mpsc;
use std::time::Instant;

use fjall::{Database, PersistMode};
use tracing::{error, warn};

use crate::metrics::SHARED;

type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Handle to the group-commit thread. The queue is unbounded on purpose: its producers
/// (openraft's log IO and vote saves) are themselves bounded by openraft's pipeline.
#[derive(Clone)]
pub struct Syncer {
    queue: mpsc::Sender<Done>,
}

impl Syncer {
    /// Starts the thread; without `fsync` (`storage.unsafe_no_fsync`) it completes requests
    /// once the journal is in the OS's buffers, which loses acknowledged writes on power
    /// loss.
    pub(crate) fn start(db: Database, fsync: bool) -> Self {
        let (queue, requests) = mpsc::channel::<Done>();
        if !fsync {
            warn!("storage.unsafe_no_fsync is set: writes are acknowledged before they are durable, a power cut will lose them");
        }
        let spawned = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || run(db, fsync, requests));
        if let Err(e) = spawned {
            // Without the thread every durability request fails (see `after_sync`).
            error!(error = %e, "cannot start the group-commit thread");
        }
        Syncer { queue }
    }

    /// Calls `done` once everything written before this call is durable.
    pub fn after_sync(&self, done: impl FnOnce(std::io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError(done)) = self.queue.send(Box::new(done)) {
            done(Err(std::io::Error::other("group-commit thread is gone")));
        }
    }

    /// Waits until everything written before this call is durable.
    pub async fn sync(&self) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_sync(move |result| {
            let _ = tx.send(result);
        });
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("group-commit thread is gone")))
    }
}

fn run(db: Database, fsync: bool, requests: mpsc::Receiver<Done>) {
    let mut waiting: Vec<Done> = Vec::new();
    while let Ok(first) = requests.recv() {
        waiting.push(first);
        waiting.extend(requests.try_iter());
        let started = Instant::now();
        // Unsafe mode still hands the journal to the OS, so it survives a crash of the
        // process; only a power cut loses it, exactly what the rig's control must show.
        let mode = if fsync {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        };
        let result = db.persist(mode);
        SHARED.fsyncs.inc();
        SHARED.fsync_latency.observe(started.elapsed());
        if let Err(e) = &result {
            error!(error = %e, "journal fsync failed; failing {} waiting writes", waiting.len());
        }
        for done in waiting.drain(..) {
            done(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}
