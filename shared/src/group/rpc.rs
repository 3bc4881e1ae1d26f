//! Serves node-to-node requests: Raft RPCs (checked against the sender's certificate),
//! forwarded writes, read-index requests and admin operations (leader only).

use std::sync::Arc;

use futures::StreamExt;
use openraft::raft::AppendEntriesRequest;
use openraft::vote::RaftLeaderId;
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncWriteExt;
use tracing::warn;

use super::{ExternalService, GroupNode, OpError};
use crate::identity::NodeIdentity;
use crate::limits::{MAX_FORWARD_BATCH_COMMANDS, MAX_SNAPSHOT_BYTES};
use crate::metrics::SHARED;
use crate::store::{SnapshotData, SnapshotFile};
use crate::transport::{RpcHandler, StreamEnd};
use crate::types::TypeConfig;
use crate::types::{NodeId, Snapshot, Vote};
use crate::wire::{read_frame, write_frame, WireError};
use crate::wire::{RemoteError, Request, Response};

pub(super) struct RpcService {
    node: Arc<GroupNode>,
    external: Option<Arc<dyn ExternalService>>,
}

impl RpcService {
    pub(super) fn new(node: Arc<GroupNode>, external: Option<Arc<dyn ExternalService>>) -> Self {
        RpcService { node, external }
    }

    /// Group-internal requests come only from members of the group (same role, same site or
    /// hub group); anything else goes to the external service, if any.
    fn refuse_outsider(&self, peer: &NodeIdentity) -> Option<Response> {
        if self.node.settings.identity.same_group(peer) {
            return None;
        }
        warn!(%peer, "group request from a node outside the group; refused");
        Some(Response::Error(RemoteError::Forbidden(format!(
            "{peer} is not a member of this group"
        ))))
    }
}

fn voter_of(vote: &Vote) -> NodeId {
    *vote.leader_id().node_id()
}

/// A peer may only speak Raft as the node its certificate names.
fn check_sender(peer: &NodeIdentity, claimed: NodeId) -> Result<(), Response> {
    if peer.node_id == claimed {
        Ok(())
    } else {
        warn!(%peer, claimed, "peer claims another node id in a Raft message; refused");
        Err(Response::Error(RemoteError::Forbidden(format!(
            "certificate is for node {}, message claims node {claimed}",
            peer.node_id
        ))))
    }
}

pub(super) fn remote_error(e: OpError) -> RemoteError {
    match e {
        OpError::NoLeader => RemoteError::NotLeader { leader: None },
        OpError::Rejected(m) => RemoteError::Rejected(m),
        OpError::OutcomeUnknown(m) => RemoteError::OutcomeUnknown(m),
        other => RemoteError::Unavailable(other.to_string()),
    }
}

fn op_error(e: OpError) -> Response {
    Response::Error(remote_error(e))
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    Response::Error(RemoteError::Unavailable(e.to_string()))
}

impl RpcService {
    async fn receive_snapshot(
        &self,
        size_bytes: u64,
        data: &mut RecvStream,
    ) -> Result<SnapshotFile, String> {
        if size_bytes > MAX_SNAPSHOT_BYTES {
            return Err(format!(
                "snapshot of {size_bytes} bytes exceeds {MAX_SNAPSHOT_BYTES}"
            ));
        }
        let dir = self.node.settings.data_dir.join("snapshots");
        let path = SnapshotFile::incoming_path(&dir);
        let result = async {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| e.to_string())?;
            let mut received: u64 = 0;
            while let Some(chunk) = data
                .read_chunk(64 * 1024, true)
                .await
                .map_err(|e| e.to_string())?
            {
                received += chunk.bytes.len() as u64;
                if received > size_bytes {
                    return Err(format!(
                        "snapshot longer than the announced {size_bytes} bytes"
                    ));
                }
                file.write_all(&chunk.bytes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if received != size_bytes {
                return Err(format!(
                    "snapshot truncated: {received} of {size_bytes} bytes"
                ));
            }
            file.sync_all().await.map_err(|e| e.to_string())?;
            SnapshotFile::open(path.clone()).map_err(|e| e.to_string())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        result
    }
}

impl RpcService {
    /// Follower side of pipelined replication: feeds the leader's AppendEntries frames to
    /// openraft in order and writes each result back as it completes.
    async fn serve_stream_append(
        &self,
        peer: NodeIdentity,
        recv: RecvStream,
        mut send: SendStream,
    ) {
        let peer_id = peer.node_id;
        let requests = futures::stream::unfold(recv, move |mut recv| async move {
            match read_frame::<_, AppendEntriesRequest<TypeConfig>>(&mut recv).await {
                Ok(request) if voter_of(&request.vote) == peer_id => Some((request, recv)),
                Ok(request) => {
                    warn!(
                        peer = peer_id,
                        claimed = voter_of(&request.vote),
                        "replication stream claims another leader; closed"
                    );
                    None
                }
                Err(WireError::Io(_)) => None,
                Err(e) => {
                    SHARED.bad_frames.inc();
                    warn!(peer = peer_id, error = %e, "bad frame on replication stream; closed");
                    None
                }
            }
        });
        let results = self.node.raft.stream_append(requests);
        futures::pin_mut!(results);
        while let Some(item) = results.next().await {
            let Ok(result) = item else { break }; // fatal: raft is stopping
            self.node.leader_contact.heard(peer_id);
            let refused = result.is_err();
            if write_frame(&mut send, &result).await.is_err() || refused {
                break;
            }
        }
        let _ = send.finish();
    }
}

impl RpcHandler for RpcService {
    async fn handle_stream(
        &self,
        peer: NodeIdentity,
        request: Request,
        recv: RecvStream,
        send: SendStream,
    ) -> StreamEnd {
        if !self.node.settings.identity.same_group(&peer) {
            return match &self.external {
                Some(external) => external.serve_stream(peer, request, recv, send).await,
                None => {
                    warn!(%peer, "streaming request from outside the group; refused");
                    StreamEnd::Misbehaved
                }
            };
        }
        match request {
            Request::StreamAppend => {
                self.serve_stream_append(peer, recv, send).await;
                StreamEnd::Finished
            }
            other => {
                warn!(%peer, request = ?other, "not a group streaming request");
                StreamEnd::Misbehaved
            }
        }
    }

    async fn handle(
        &self,
        peer: NodeIdentity,
        request: Request,
        data: &mut RecvStream,
    ) -> Response {
        if let Some(refused) = self.refuse_outsider(&peer) {
            return refused;
        }
        let raft = &self.node.raft;
        match request {
            Request::AppendEntries(rpc) => {
                if let Err(r) = check_sender(&peer, voter_of(&rpc.vote)) {
                    return r;
                }
                self.node.leader_contact.heard(peer.node_id);
                raft.append_entries(rpc)
                    .await
                    .map_or_else(unavailable, Response::AppendEntries)
            }
            Request::Vote(rpc) => {
                if let Err(r) = check_sender(&peer, voter_of(&rpc.vote)) {
                    return r;
                }
                raft.vote(rpc)
                    .await
                    .map_or_else(unavailable, Response::Vote)
            }
            Request::PreVote(rpc) => {
                if let Err(r) = check_sender(&peer, voter_of(&rpc.vote)) {
                    return r;
                }
                raft.pre_vote(rpc)
                    .await
                    .map_or_else(unavailable, Response::Vote)
            }
            Request::TransferLeader(rpc) => {
                if let Err(r) = check_sender(&peer, voter_of(rpc.from_leader())) {
                    return r;
                }
                raft.handle_transfer_leader(rpc)
                    .await
                    .map_or_else(unavailable, Response::TransferLeader)
            }
            Request::InstallSnapshot {
                vote,
                meta,
                size_bytes,
            } => {
                if let Err(r) = check_sender(&peer, voter_of(&vote)) {
                    return r;
                }
                let file = match self.receive_snapshot(size_bytes, data).await {
                    Ok(file) => file,
                    Err(e) => {
                        warn!(%peer, error = %e, "snapshot transfer failed");
                        return unavailable(e);
                    }
                };
                raft.install_full_snapshot(
                    vote,
                    Snapshot {
                        meta,
                        snapshot: SnapshotData::File(file),
                    },
                )
                .await
                .map_or_else(unavailable, Response::InstallSnapshot)
            }
            // Raft stopped here (the node is going down): nothing is proposed, and the
            // sender waits for the next leader before it tries again, instead of spinning
            // on this node until it goes.
            Request::ClientWrite(_) | Request::ClientWriteBatch(_) if self.node.raft_stopped() => {
                Response::Error(RemoteError::NotLeader { leader: None })
            }
            Request::ClientWrite(command) => {
                let _serving = self.node.forwarded_writes.enter();
                match self.node.write_local(command).await {
                    Ok(response) => Response::ClientWrite(response),
                    Err(e) => op_error(e),
                }
            }
            Request::ClientWriteBatch(commands) => {
                if commands.len() > MAX_FORWARD_BATCH_COMMANDS {
                    return Response::Error(RemoteError::Rejected(format!(
                        "a batch of {} writes; at most {MAX_FORWARD_BATCH_COMMANDS}",
                        commands.len()
                    )));
                }
                let _serving = self.node.forwarded_writes.enter();
                // Proposed concurrently, so openraft appends them as one batch.
                let writes = commands.into_iter().map(|c| self.node.write_local(c));
                let results = futures::future::join_all(writes).await;
                Response::ClientWriteBatch(
                    results
                        .into_iter()
                        .map(|r| r.map_err(remote_error))
                        .collect(),
                )
            }
            // A follower's read shares the leader's rounds with its own reads.
            Request::ReadIndex => match self
                .node
                .read_rounds
                .read_index(|| self.node.read_index_local())
                .await
            {
                Ok(index) => Response::ReadIndex(index),
                Err(e) => op_error(e),
            },
            Request::Admin(op) => match self.node.admin_local(op).await {
                Ok(result) => Response::Admin(result),
                Err(e) => op_error(e),
            },
            Request::StreamAppend | Request::ShipOpen { .. } => Response::Error(
                RemoteError::Rejected("a streaming request sent as a call".into()),
            ),
        }
    }
}
