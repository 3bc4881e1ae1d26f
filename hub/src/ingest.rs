//! Ingest (DESIGN.md §3.3, hub side): serves shipping sessions from edge leaders. A session
//! is authorized by the site its client certificate names; each batch is decoded and
//! validated (bounded before and after decompression) before it is proposed, committed
//! through the hub group's Raft log (forwarded to the leader from a follower), applied by
//! `ship::rules` in the state machine — exactly once, in order, fenced by epoch — and only
//! then acknowledged.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use quinn::{RecvStream, SendStream};
use shared::group::{ExternalService, GroupNode};
use shared::identity::{NodeIdentity, Role};
use shared::metrics::{GaugeHold, SHARED};
use shared::ship::codec::{self, ShipBatch};
use shared::ship::ShipReply;
use shared::transport::StreamEnd;
use shared::types::{CommandResponse, Op};
use shared::wire::{read_frame, write_frame, Request, ShipFrame, WireError};
use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};
use tracing::{info, warn};

use crate::config::HubSection;
use crate::hub::HUB;

/// Shipped batches one hub node proposes at once, over all its sessions; the others wait
/// their turn (first come, first served) before their proposal starts. Unbounded, every
/// session of a 100-site drain proposed its batch at once: the leader's queue held a few
/// seconds of work, commits passed the write timeout, each timeout closed a session, and its
/// edge reconnected and sent its window again, which the queue then held too (128 sessions
/// closed that way in one 2M-event drain, docs/benchmarks.md 2026-12-07). Bounded, a batch
/// waits before it is proposed, where no timeout runs, and the queue at the leader stays
/// short (this many batches from each hub node, ~1 s of work for three nodes at 4,096-event
/// batches) while still holding enough to keep its log, replication and apply busy.
/// Session openings (empty batches) take no turn: queued behind a node's batches, an
/// opening could wait seconds in a drain of many sites, and the edge gives an opening 10 s.
pub const MAX_INGEST_PROPOSALS_PER_NODE: usize = 4;
const _: () = assert!(
    MAX_INGEST_PROPOSALS_PER_NODE >= 1,
    "no permit: ingest would stall"
);

pub struct IngestService {
    /// Weak: the group node owns the transport that owns this service.
    node: Weak<GroupNode>,
    owned: HubSection,
    /// `MAX_INGEST_PROPOSALS_PER_NODE` permits.
    proposals: Arc<Semaphore>,
}

impl IngestService {
    pub fn new(node: &Arc<GroupNode>, owned: HubSection) -> Self {
        IngestService {
            node: Arc::downgrade(node),
            owned,
            proposals: Arc::new(Semaphore::new(MAX_INGEST_PROPOSALS_PER_NODE)),
        }
    }
}

impl ExternalService for IngestService {
    fn admits(&self, peer: &NodeIdentity) -> bool {
        peer.role == Role::Edge
    }

    fn serve_stream(
        &self,
        peer: NodeIdentity,
        request: Request,
        recv: RecvStream,
        send: SendStream,
    ) -> BoxFuture<'static, StreamEnd> {
        let node = self.node.upgrade();
        let owned = self.owned.clone();
        let proposals = self.proposals.clone();
        Box::pin(async move {
            let Some(node) = node else {
                return StreamEnd::Finished;
            };
            match request {
                Request::ShipOpen {
                    site,
                    epoch,
                    head_seq,
                } => {
                    let opening = Opening {
                        site,
                        epoch,
                        head_seq,
                    };
                    let session = Session {
                        node,
                        owned,
                        proposals,
                        peer,
                    };
                    serve_session(session, opening, recv, send).await
                }
                other => {
                    warn!(%peer, request = ?other, "edge node sent a request other than ShipOpen; refused");
                    StreamEnd::Misbehaved
                }
            }
        })
    }
}

/// Commits a batch (or an empty opening batch) and returns the hub's answer.
async fn propose(node: &GroupNode, batch: Vec<u8>) -> Result<ShipReply, String> {
    let command = node.command(Op::Ingest { batch }, None, None);
    match node.write(command).await {
        Ok(CommandResponse::Ship(reply)) => Ok(reply),
        Ok(other) => Err(format!("unexpected result {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn count(reply: &ShipReply) {
    match reply {
        ShipReply::ShippedThrough(_) => {}
        ShipReply::Gap { .. } => HUB.gaps.inc(),
        ShipReply::Fenced { .. } => HUB.fenced.inc(),
        ShipReply::Rejected(_) => HUB.bad_batches.inc(),
    }
}

async fn refuse(mut send: SendStream, reason: String) -> StreamEnd {
    HUB.forbidden.inc();
    let _ = write_frame(&mut send, &ShipReply::Rejected(reason)).await;
    let _ = send.finish();
    StreamEnd::Finished
}

/// A session's turn to propose: one of the node's `MAX_INGEST_PROPOSALS_PER_NODE` permits,
/// counted in flight while held. The count is dropped before the permit (field order), so
/// the gauge never shows more than the permits.
struct Turn<'a> {
    _in_flight: GaugeHold,
    _permit: SemaphorePermit<'a>,
}

/// Waits (first come, first served) for a turn; `None` only if the permits are closed, which
/// they never are.
async fn take_turn(proposals: &Semaphore) -> Option<Turn<'_>> {
    let permit = match proposals.try_acquire() {
        Ok(permit) => permit,
        Err(TryAcquireError::Closed) => return None,
        Err(TryAcquireError::NoPermits) => {
            HUB.proposal_waits.inc();
            let _waiting = HUB.proposals_waiting.hold();
            proposals.acquire().await.ok()?
        }
    };
    let in_flight = HUB.proposals_in_flight.hold();
    HUB.proposals_in_flight_max
        .raise_to(HUB.proposals_in_flight.get());
    Some(Turn {
        _in_flight: in_flight,
        _permit: permit,
    })
}

/// Commits a batch in its turn. The turn is not held while the reply waits for the edge
/// to read it.
async fn propose_in_turn(
    node: &GroupNode,
    proposals: &Semaphore,
    batch: Vec<u8>,
) -> Result<ShipReply, String> {
    let Some(_turn) = take_turn(proposals).await else {
        return Err("ingest admission closed".into());
    };
    propose(node, batch).await
}

/// What an edge leader says when it opens a session.
struct Opening {
    site: String,
    epoch: u64,
    head_seq: u64,
}

/// What a session works with.
struct Session {
    node: Arc<GroupNode>,
    owned: HubSection,
    proposals: Arc<Semaphore>,
    peer: NodeIdentity,
}

async fn serve_session(
    session: Session,
    opening: Opening,
    mut recv: RecvStream,
    mut send: SendStream,
) -> StreamEnd {
    let Session {
        node,
        owned,
        proposals,
        peer,
    } = session;
    let Opening {
        site,
        epoch,
        head_seq,
    } = opening;
    if peer.site.as_str() != site {
        warn!(%peer, claimed_site = %site, "edge certificate of one site tried to ship as another; refused");
        return refuse(
            send,
            format!("certificate is for site {}, not {site}", peer.site),
        )
        .await;
    }
    if !owned.owns(&site) {
        warn!(%peer, site = %site, group = %node.site(), "site is not owned by this hub group; refused");
        return refuse(
            send,
            format!("site {site} is not owned by hub group {}", node.site()),
        )
        .await;
    }
    HUB.sessions.inc();
    let _open = HUB.sessions_open.hold();
    let opening = ShipBatch {
        site: site.clone(),
        epoch,
        first_seq: 1,
        head_seq,
        events: Vec::new(),
    };
    let Ok(opening) = codec::encode(&opening) else {
        return StreamEnd::Finished;
    };
    let reply = match propose(&node, opening).await {
        Ok(reply) => reply,
        Err(e) => {
            info!(%peer, error = %e, "could not open a shipping session now");
            return StreamEnd::Finished;
        }
    };
    count(&reply);
    if write_frame(&mut send, &reply).await.is_err() {
        return StreamEnd::Finished;
    }
    info!(%peer, epoch, answer = ?reply, "shipping session opened");
    if !matches!(reply, ShipReply::ShippedThrough(_)) {
        let _ = send.finish();
        return StreamEnd::Finished;
    }
    loop {
        let frame = match read_frame::<_, ShipFrame>(&mut recv).await {
            Ok(frame) => frame,
            Err(WireError::Io(_)) => return StreamEnd::Finished, // the edge went away
            Err(e) => {
                SHARED.bad_frames.inc();
                warn!(%peer, error = %e, "bad frame on a shipping session; closing the connection");
                return StreamEnd::Misbehaved;
            }
        };
        HUB.bytes.add(frame.batch.len() as u64);
        // Checked here, before proposing: garbage never reaches the log.
        let batch = match codec::decode(&frame.batch) {
            Ok(batch) => batch,
            Err(e) => {
                HUB.bad_batches.inc();
                warn!(%peer, error = %e, "invalid shipping batch; closing the connection");
                return StreamEnd::Misbehaved;
            }
        };
        if batch.site != site {
            HUB.forbidden.inc();
            warn!(%peer, batch_site = %batch.site, "batch for another site on a session; closing the connection");
            return StreamEnd::Misbehaved;
        }
        HUB.events.add(batch.events.len() as u64);
        let reply = match propose_in_turn(&node, &proposals, frame.batch).await {
            Ok(reply) => reply,
            Err(e) => {
                // Unknown outcome: the edge reconnects and resumes from shipped-through.
                info!(%peer, error = %e, "could not commit a batch; closing the session");
                return StreamEnd::Finished;
            }
        };
        count(&reply);
        if matches!(reply, ShipReply::ShippedThrough(_)) {
            HUB.batches.inc();
        }
        let stop = !matches!(reply, ShipReply::ShippedThrough(_) | ShipReply::Gap { .. });
        if write_frame(&mut send, &reply).await.is_err() {
            return StreamEnd::Finished;
        }
        if stop {
            let _ = send.finish();
            return StreamEnd::Finished;
        }
    }
}
