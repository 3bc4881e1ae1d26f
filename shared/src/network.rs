//! openraft's network over the QUIC transport: one client per (local node, target).
//!
//! AppendEntries requests are cut to fit a frame: the prefix that fits is sent and reported
//! as `PartialSuccess`, and openraft sends the rest next. Snapshots stream their file on one
//! RPC stream after an `InstallSnapshot` header.

use std::future::Future;
use std::sync::Arc;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, RaftNetworkV2};

use crate::config::SiteId;
use crate::identity::NodeIdentity;
use crate::limits::{ENTRY_OVERHEAD_BYTES, MAX_FRAME_BYTES};
use crate::store::SnapshotFile;
use crate::transport::{Transport, TransportError};
use crate::types::{Entry, NodeAddr, NodeId, Snapshot, TypeConfig, Vote};
use crate::wire::{Request, Response};

/// Encoded-size budget of the entries in one AppendEntries frame.
const APPEND_BUDGET_BYTES: usize = MAX_FRAME_BYTES / 2;

/// Builds clients to the members of one group.
#[derive(Clone)]
pub struct NetworkFactory {
    transport: Arc<Transport>,
    site: SiteId,
}

impl NetworkFactory {
    pub fn new(transport: Arc<Transport>, site: SiteId) -> Self {
        NetworkFactory { transport, site }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            peer: NodeIdentity::edge(self.site.clone(), target),
            addr: node.raft.clone(),
        }
    }
}

pub struct PeerClient {
    transport: Arc<Transport>,
    peer: NodeIdentity,
    addr: String,
}

fn rpc_error(e: TransportError) -> RPCError<TypeConfig> {
    if e.is_unreachable() {
        RPCError::Unreachable(Unreachable::from_string(e.to_string()))
    } else {
        RPCError::Network(NetworkError::from_string(e.to_string()))
    }
}

fn unexpected(response: Response) -> RPCError<TypeConfig> {
    let text = match response {
        Response::Error(e) => e.to_string(),
        other => format!("unexpected response {other:?}"),
    };
    RPCError::Network(NetworkError::from_string(text))
}

/// Upper estimate of an entry's encoded size, without encoding it.
fn estimated_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(command) => {
            let body = match &command.op {
                crate::types::Op::Put { key, value, .. } => key.len() + value.len(),
                crate::types::Op::Delete { key, .. } => key.len(),
                crate::types::Op::Append { stream, data } => stream.len() + data.len(),
            };
            body + command.idempotency.as_ref().map_or(0, |i| i.key.len()) + ENTRY_OVERHEAD_BYTES
        }
        EntryPayload::Blank | EntryPayload::Membership(_) => ENTRY_OVERHEAD_BYTES * 4,
    }
}

/// How many leading entries fit the frame budget (at least one).
fn entries_that_fit(entries: &[Entry]) -> usize {
    let mut total = 0;
    for (i, entry) in entries.iter().enumerate() {
        total += estimated_bytes(entry);
        if total > APPEND_BUDGET_BYTES {
            return i.max(1);
        }
    }
    entries.len()
}

impl PeerClient {
    async fn call(
        &self,
        request: &Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<TypeConfig>> {
        self.transport
            .call(&self.peer, &self.addr, request, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let fit = entries_that_fit(&rpc.entries);
        let partial = (fit < rpc.entries.len()).then(|| {
            rpc.entries.truncate(fit);
            rpc.entries.last().map(|e| e.log_id)
        });
        match self.call(&Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(AppendEntriesResponse::Success) if partial.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(partial.flatten()))
            }
            Response::AppendEntries(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Request::Vote(rpc), &option).await? {
            Response::Vote(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Request::PreVote(rpc), &option).await? {
            Response::Vote(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&Request::TransferLeader(req), &option).await? {
            Response::TransferLeader(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let network = |text: String| StreamingError::Network(NetworkError::from_string(text));
        let file = snapshot
            .snapshot
            .file
            .try_clone()
            .map_err(|e| network(format!("snapshot file: {e}")))?;
        let request = Request::InstallSnapshot {
            vote,
            meta: snapshot.meta,
            size_bytes: snapshot.snapshot.size_bytes,
        };
        let mut data = tokio::fs::File::from_std(file);
        use tokio::io::AsyncSeekExt;
        data.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| network(format!("snapshot file: {e}")))?;
        let send = self.transport.call_with_data(
            &self.peer,
            &self.addr,
            &request,
            Some(data),
            option.hard_ttl(),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => match result {
                Ok(Response::InstallSnapshot(response)) => Ok(response),
                Ok(other) => Err(network(format!("{other:?}"))),
                Err(e) => Err(network(e.to_string())),
            },
        }
    }
}
