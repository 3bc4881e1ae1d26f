//! The edge shipper (DESIGN.md §3.3): while this node leads its group, it streams the
//! outbox — committed events, in seq order — in compressed batches to the hub group that owns
//! the site, resuming from the hub's shipped-through on every (re)connect.
//!
//! The protocol decisions live in `shared::ship::session` (what to send, when to reconnect,
//! fencing); this module moves bytes and replicates two facts through the group's Raft log:
//! `Shipped{through}` (the outbox may drop what the hub has; every member learns it) and
//! `Fence{epoch}` (the hub says the site is owned elsewhere: every later write is refused).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::group::now_ms;
use shared::ship::codec::{self, ShipBatch};
use shared::ship::pending::PendingBatch;
use shared::ship::session::{Effect, Phase, ShipperSession};
use shared::ship::ShipReply;
use shared::types::Op;
use shared::wire::{read_frame, write_frame, Request, ShipFrame};
use tracing::{info, warn};

use crate::config::{HubEntry, UplinkSection};
use crate::edge::Edge;

/// Longest wait for a hub to accept a session and answer its opening.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the hub may take to answer a batch before the session counts as broken.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// `Shipped{through}` is replicated at most this often (it lets every member compact).
const RECORD_INTERVAL: Duration = Duration::from_millis(200);
/// How often a node that does not lead checks whether it has become the leader.
const FOLLOWER_POLL: Duration = Duration::from_millis(200);
/// How often an idle session (nothing to send, await or record) looks at its leadership
/// and the stop flag; new events wake it at once. It polled every `batch_delay` before:
/// 200 wakeups a second on an idle gateway, ~1% of a core (docs/benchmarks.md).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// What the shipper reports, shared with the API and metrics.
#[derive(Default)]
pub struct UplinkState {
    connected: AtomicBool,
    /// The hub's shipped-through as last heard on this node (ahead of the replicated one
    /// until the next `Shipped` record commits).
    hub_shipped_through: AtomicU64,
    retries: AtomicU64,
    bytes_sent: AtomicU64,
    stopping: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl UplinkState {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn failed(&self, error: String) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.connected.store(false, Ordering::Release);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }
}

/// The uplink's figures at one moment.
pub struct UplinkSnapshot {
    pub connected: bool,
    pub shipped_through: u64,
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    pub lag_seconds: u64,
    pub retries: u64,
    pub bytes_sent: u64,
    pub epoch: u64,
    pub fenced: Option<u64>,
    pub awaiting_handback: bool,
}

pub fn snapshot(edge: &Edge) -> UplinkSnapshot {
    let ship = edge.group.reader.ship_status();
    let state = &edge.uplink;
    let shipped_through = ship
        .shipped_through
        .max(state.hub_shipped_through.load(Ordering::Acquire))
        .min(ship.last_seq);
    let backlog_events = ship.last_seq - shipped_through;
    let lag_seconds = if backlog_events == 0 {
        0
    } else {
        match edge.group.reader.outbox_oldest_hlc(shipped_through + 1) {
            Ok(Some(hlc)) => now_ms().saturating_sub(hlc.physical_ms()) / 1000,
            _ => 0,
        }
    };
    UplinkSnapshot {
        connected: state.connected.load(Ordering::Acquire),
        shipped_through,
        backlog_events,
        backlog_bytes: ship.outbox_bytes,
        lag_seconds,
        retries: state.retries.load(Ordering::Relaxed),
        bytes_sent: state.bytes_sent.load(Ordering::Relaxed),
        epoch: ship.epoch,
        fenced: ship.fenced,
        awaiting_handback: ship.awaiting_handback,
    }
}

/// The `uplink` object of `/v1/status` (DESIGN.md §4.1).
pub fn status_json(edge: &Edge) -> Value {
    let s = snapshot(edge);
    let Some(config) = &edge.config.uplink else {
        // No hub to ship to, but whether this group may write is still its own state
        // (a restored point in time starts fenced).
        return json!({
            "configured": false,
            "epoch": s.epoch,
            "fenced": s.fenced.is_some(),
            "fenced_by_epoch": s.fenced,
            "awaiting_handback": s.awaiting_handback,
        });
    };
    let last_error = edge.uplink.last_error.lock().ok().and_then(|e| e.clone());
    json!({
        "configured": true,
        "hub_group": config.hub_group,
        // Only the leader ships: on other members this is false and the figures below
        // are the group's replicated ones.
        "connected": s.connected,
        "shipped_through": s.shipped_through,
        "backlog_events": s.backlog_events,
        "backlog_bytes": s.backlog_bytes,
        "max_unshipped_bytes": config.max_unshipped_bytes.0,
        "lag_seconds": s.lag_seconds,
        "epoch": s.epoch,
        "fenced": s.fenced.is_some(),
        "awaiting_handback": s.awaiting_handback,
        "fenced_by_epoch": s.fenced,
        "retries": s.retries,
        "bytes_sent": s.bytes_sent,
        "last_error": last_error,
    })
}

/// The shipper task: idles while this node follows, ships while it leads, stops for good
/// once the group is fenced or the node shuts down.
pub async fn run(edge: Arc<Edge>) {
    let Some(config) = edge.config.uplink.clone() else {
        return;
    };
    let mut next_hub = 0usize;
    while !edge.uplink.stopping() {
        if let Some(epoch) = edge.group.reader.ship_status().fenced {
            warn!(epoch, "this group is fenced by the hub; shipping stopped");
            edge.uplink.connected.store(false, Ordering::Release);
            return;
        }
        if !edge.group.is_leader() {
            edge.uplink.connected.store(false, Ordering::Release);
            tokio::time::sleep(FOLLOWER_POLL).await;
            continue;
        }
        lead(&edge, &config, &mut next_hub).await;
    }
}

/// Ships for as long as this node leads.
async fn lead(edge: &Arc<Edge>, config: &UplinkSection, next_hub: &mut usize) {
    let shipped = edge.group.reader.ship_status().shipped_through;
    let mut session = ShipperSession::new(shipped, Instant::now(), config.reconnect_max.0);
    let mut recorder = Recorder::new(shipped);
    info!(shipped_through = shipped, "leading: shipping to the hub");
    while edge.group.is_leader() && !edge.uplink.stopping() {
        if let Phase::Fenced { epoch } = *session.phase() {
            fence(edge, epoch, session.shipped_through()).await;
            return;
        }
        let now = Instant::now();
        if let Phase::Disconnected { retry_at } = *session.phase() {
            if now < retry_at {
                tokio::time::sleep((retry_at - now).min(FOLLOWER_POLL)).await;
                continue;
            }
        }
        let hub = &config.hubs[*next_hub % config.hubs.len()];
        let result = ship_session(edge, config, hub, &mut session, &mut recorder).await;
        edge.uplink.connected.store(false, Ordering::Release);
        if let Err(error) = result {
            if edge
                .uplink
                .retries
                .load(Ordering::Relaxed)
                .is_multiple_of(20)
            {
                warn!(hub = hub.id, addr = %hub.addr, %error, "shipping session failed; retrying with backoff");
            }
            edge.uplink.failed(format!("hub node {}: {error}", hub.id));
            *next_hub += 1;
        }
        session.on_disconnected(Instant::now(), rand::random());
    }
    recorder.flush(edge).await;
}

/// One session with one hub node: open, then stream batches and read replies until the
/// session breaks, this node stops leading, or the hub fences the site.
async fn ship_session(
    edge: &Arc<Edge>,
    config: &UplinkSection,
    hub: &HubEntry,
    session: &mut ShipperSession,
    recorder: &mut Recorder,
) -> Result<(), String> {
    let site = edge.group.site().as_str().to_owned();
    // A new leader may not have applied everything it committed yet: the head it announces
    // must include every event the hub could already hold.
    edge.group
        .linearize()
        .await
        .map_err(|e| format!("not ready to ship: {e}"))?;
    let status = edge.group.reader.ship_status();
    let epoch = status.epoch;
    let peer = hub.identity(&config.hub_group);
    let open = Request::ShipOpen {
        site: site.clone(),
        epoch,
        head_seq: status.last_seq,
    };
    let (mut send, mut recv) = edge
        .group
        .transport
        .open_stream(&peer, &hub.addr, &open, OPEN_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let opening = tokio::time::timeout(OPEN_TIMEOUT, read_frame::<_, ShipReply>(&mut recv))
        .await
        .map_err(|_| "no answer to the session opening".to_owned())?
        .map_err(|e| e.to_string())?;
    session.on_connected();
    if let Effect::Reconnect(reason) = session.on_reply(opening) {
        return Err(format!("hub refused the session: {reason}"));
    }
    if !matches!(session.phase(), Phase::Streaming) {
        return Ok(()); // fenced: the caller replicates it
    }
    edge.uplink.connected.store(true, Ordering::Release);
    note_progress(edge, session, recorder);
    if edge.group.reader.ship_status().awaiting_handback {
        // The hub accepted our (new) epoch: the site is ours again.
        let command = edge.group.command(Op::Activate, None, None);
        edge.group.write(command).await.map_err(|e| e.to_string())?;
        info!(epoch, "the hub handed the site back: accepting writes");
    }

    // Replies are read by their own task so that waiting for one never loses a half-read
    // frame when the loop wakes for new events instead.
    let (reply_tx, mut replies) = tokio::sync::mpsc::channel::<Result<ShipReply, String>>(64);
    let reader = tokio::spawn(async move {
        loop {
            let reply = read_frame::<_, ShipReply>(&mut recv)
                .await
                .map_err(|e| e.to_string());
            let failed = reply.is_err();
            if reply_tx.send(reply).await.is_err() || failed {
                return;
            }
        }
    });
    let mut changes = edge.group.reader.ship_changes();
    let result = async {
        let mut throttle = Throttle::new(config.max_bytes_per_second.0);
        let mut awaiting_since: Option<Instant> = None;
        let mut pending = PendingBatch::new();
        loop {
            if !edge.group.is_leader() || edge.uplink.stopping() {
                return Ok(());
            }
            let ship = *changes.borrow_and_update();
            while let Some(first) = session.sendable_from(ship.last_seq) {
                pending
                    .fill(first, ship.last_seq, |from, max_events, max_bytes, into| {
                        edge.group.reader.outbox_append(from, max_events, max_bytes, into)
                    })
                    .map_err(|e| e.to_string())?;
                if pending.is_empty() {
                    return Err(format!(
                        "the outbox no longer holds seq {first}, which the hub expects next"
                    ));
                }
                // Nagle: while a batch is in flight, only full batches follow it; the small
                // rest waits for the reply and goes as one batch (the hub commits batches one
                // after another, so many small ones would queue behind each other).
                if session.in_flight() > 0 && !pending.is_full() {
                    break;
                }
                let events = pending.take();
                session.next_batch(ship.last_seq, events.len() as u64);
                let batch = codec::encode(&ShipBatch {
                    site: site.clone(),
                    epoch: ship.epoch,
                    first_seq: first,
                    head_seq: ship.last_seq,
                    events,
                })
                .map_err(|e| e.to_string())?;
                throttle.wait(batch.len()).await;
                let len = batch.len() as u64;
                write_frame(&mut send, &ShipFrame { batch })
                    .await
                    .map_err(|e| e.to_string())?;
                edge.uplink.bytes_sent.fetch_add(len, Ordering::Relaxed);
                awaiting_since.get_or_insert_with(Instant::now);
            }
            // Busy: poll every batch_delay, which lets new events gather behind a batch in
            // flight. Idle: sleep until an apply changes the shipping state.
            let busy = session.in_flight() > 0 || recorder.behind(session.shipped_through());
            let wake = if busy {
                config.batch_delay.0.max(Duration::from_millis(1))
            } else {
                IDLE_POLL
            };
            tokio::select! {
                Ok(()) = changes.changed(), if !busy => {}
                reply = replies.recv() => {
                    let reply = reply.unwrap_or_else(|| Err("reply stream closed".into()))?;
                    match session.on_reply(reply) {
                        Effect::Continue => {}
                        Effect::Reconnect(reason) => return Err(format!("hub rejected a batch: {reason}")),
                        Effect::Fenced { .. } => return Ok(()),
                    }
                    awaiting_since = (session.in_flight() > 0).then(Instant::now);
                    note_progress(edge, session, recorder);
                }
                _ = tokio::time::sleep(wake) => {
                    recorder.maybe_record(edge, session.shipped_through());
                    if awaiting_since.is_some_and(|t| t.elapsed() > REPLY_TIMEOUT) {
                        return Err(format!("no reply from the hub in {REPLY_TIMEOUT:?}"));
                    }
                }
            }
        }
    }
    .await;
    reader.abort();
    let _ = send.finish();
    result
}

/// Publishes the hub's shipped-through and, now and then, replicates it.
fn note_progress(edge: &Arc<Edge>, session: &ShipperSession, recorder: &mut Recorder) {
    edge.uplink
        .hub_shipped_through
        .fetch_max(session.shipped_through(), Ordering::AcqRel);
    recorder.maybe_record(edge, session.shipped_through());
}

/// Replicates `Shipped{through}` at most every `RECORD_INTERVAL`, one proposal at a time.
struct Recorder {
    recorded: u64,
    last: Instant,
    busy: Arc<AtomicBool>,
}

impl Recorder {
    fn new(recorded: u64) -> Self {
        Recorder {
            recorded,
            last: Instant::now() - RECORD_INTERVAL,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether `through` still has to be recorded.
    fn behind(&self, through: u64) -> bool {
        through > self.recorded
    }

    fn maybe_record(&mut self, edge: &Arc<Edge>, through: u64) {
        if !self.behind(through)
            || self.last.elapsed() < RECORD_INTERVAL
            || self.busy.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.recorded = through;
        self.last = Instant::now();
        let (edge, busy) = (edge.clone(), self.busy.clone());
        tokio::spawn(async move {
            let command = edge.group.command(Op::Shipped { through }, None, None);
            if let Err(e) = edge.group.write(command).await {
                warn!(through, error = %e, "could not record the hub's shipped-through");
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Records the last value on the way out of leadership (best effort: the next leader
    /// learns it from the hub anyway).
    async fn flush(&mut self, edge: &Arc<Edge>) {
        let through = edge.uplink.hub_shipped_through.load(Ordering::Acquire);
        if through > edge.group.reader.ship_status().shipped_through && edge.group.is_leader() {
            let command = edge.group.command(Op::Shipped { through }, None, None);
            let _ = edge.group.write(command).await;
        }
    }
}

/// Replicates the fence: from its commit on, the group refuses every write.
async fn fence(edge: &Arc<Edge>, epoch: u64, shipped_through: u64) {
    warn!(
        epoch,
        "the hub holds a newer epoch for this site: fencing this group (writes refused)"
    );
    while edge.group.reader.ship_status().fenced.is_none() && !edge.uplink.stopping() {
        let op = Op::Fence {
            epoch,
            shipped_through,
        };
        let command = edge.group.command(op, None, None);
        match edge.group.write(command).await {
            Ok(_) => break,
            Err(e) => {
                warn!(error = %e, "could not replicate the fence yet; retrying");
                tokio::time::sleep(FOLLOWER_POLL).await;
            }
        }
    }
}

/// A bandwidth cap: each send waits until the bytes before it fit the rate.
struct Throttle {
    bytes_per_second: u64,
    next_free: Instant,
}

impl Throttle {
    fn new(bytes_per_second: u64) -> Self {
        Throttle {
            bytes_per_second,
            next_free: Instant::now(),
        }
    }

    async fn wait(&mut self, bytes: usize) {
        if self.bytes_per_second == 0 {
            return;
        }
        let now = Instant::now();
        if self.next_free > now {
            tokio::time::sleep(self.next_free - now).await;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        self.next_free = self.next_free.max(now) + cost;
    }
}
