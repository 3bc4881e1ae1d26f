//! openraft's network over the QUIC transport: one client per (local node, target).
//!
//! Replication is pipelined (`stream_append`): one stream per follower carries requests
//! without waiting for replies. AppendEntries requests are cut to fit a frame: the prefix that fits is sent and reported
//! as `PartialSuccess`, and openraft sends the rest next. Snapshots stream their file on one
//! RPC stream after an `InstallSnapshot` header.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, RaftNetworkV2};

use crate::identity::NodeIdentity;
use crate::limits::{ENTRY_OVERHEAD_BYTES, MAX_FRAME_BYTES};
use crate::store::SnapshotData;
use crate::transport::{Transport, TransportError};
use crate::types::{Entry, NodeAddr, NodeId, Snapshot, TypeConfig, Vote};
use crate::wire::{encode, read_frame, Request, Response, WireError};

/// Replies of a pipelined replication stream, in request order.
type ReplyStream<'s> = BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>;

/// Encoded-size budget of the entries in one AppendEntries frame.
const APPEND_BUDGET_BYTES: usize = MAX_FRAME_BYTES / 2;

/// Builds clients to the members of one group.
#[derive(Clone)]
pub struct NetworkFactory {
    transport: Arc<Transport>,
    /// This node; peers are the other members of its group.
    own: NodeIdentity,
}

impl NetworkFactory {
    pub fn new(transport: Arc<Transport>, own: NodeIdentity) -> Self {
        NetworkFactory { transport, own }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            peer: self.own.peer(target),
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
        EntryPayload::Normal(command) => command.approx_encoded_bytes(),
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
    type SnapshotData = SnapshotData;

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

    /// Pipelined replication: requests go out without waiting for replies.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<ReplyStream<'s>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            // openraft waits out its backoff after an error (200 ms) inside the request
            // stream, not before calling here. Dialing first, a peer that refuses at once (a
            // certificate it rejects, an endpoint closing) was dialed again with no pause:
            // thousands of failed handshakes and warnings a second. The first request is
            // taken first, so the backoff runs before each dial.
            let mut input = input;
            let Some(first) = input.next().await else {
                let nothing: ReplyStream<'s> = Box::pin(futures::stream::empty());
                return Ok(nothing);
            };
            let input = futures::stream::once(std::future::ready(first)).chain(input);
            let (send, recv) = self
                .transport
                .open_stream(
                    &self.peer,
                    &self.addr,
                    &Request::StreamAppend,
                    option.hard_ttl().max(MIN_STREAM_REPLY_TIMEOUT),
                )
                .await
                .map_err(rpc_error)?;
            let outstanding = Arc::new(Outstanding::new(Instant::now()));
            let writer = tokio::spawn(write_requests(input, send, outstanding.clone()));
            let state = ReplyState {
                recv,
                outstanding,
                reply_timeout: option.hard_ttl().max(MIN_STREAM_REPLY_TIMEOUT),
                _writer: AbortOnDrop(writer),
                done: false,
            };
            let replies: ReplyStream<'s> = Box::pin(futures::stream::unfold(state, next_reply));
            Ok(replies)
        })
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
        snapshot: Snapshot<SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let network = |text: String| StreamingError::Network(NetworkError::from_string(text));
        let Snapshot { meta, snapshot } = snapshot;
        // A lazy snapshot is written out now, off the runtime; the copy is removed once sent.
        let file = tokio::task::spawn_blocking(move || snapshot.into_file())
            .await
            .map_err(|e| network(format!("snapshot writer: {e}")))?
            .map_err(|e| network(format!("snapshot file: {e}")))?;
        let request = Request::InstallSnapshot {
            vote,
            meta,
            size_bytes: file.size_bytes,
        };
        let data = match file.file.try_clone() {
            Ok(handle) => tokio::fs::File::from_std(handle),
            Err(e) => {
                file.remove();
                return Err(network(format!("snapshot file: {e}")));
            }
        };
        let send = self.transport.call_with_data(
            &self.peer,
            &self.addr,
            &request,
            Some(data),
            option.hard_ttl(),
        );
        let outcome = tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => match result {
                Ok(Response::InstallSnapshot(response)) => Ok(response),
                Ok(other) => Err(network(format!("{other:?}"))),
                Err(e) => Err(network(e.to_string())),
            },
        };
        file.remove();
        outcome
    }
}

/// Shortest wait for a streamed reply while requests are outstanding (a follower's fsync
/// plus a busy debug build can exceed a heartbeat-sized TTL without anything being wrong).
const MIN_STREAM_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The slowest link replication keeps working over: the wait for a streamed reply grows by
/// the time the requests outstanding on the stream take to cross such a link. With a fixed
/// wait, one AppendEntries frame (up to `APPEND_BUDGET_BYTES`, 16 s at 1 Mbit/s) could
/// never be answered in time; openraft restarted the stream and sent the same request
/// again, and commits waited until it happened to send smaller ones (openclaw-ship-bench's
/// slow-link rows, docs/benchmarks.md 2026-12-07). A longer wait does not delay noticing a
/// dead peer: its connection closes after the QUIC idle timeout, which ends the stream.
const MIN_REPLICATION_BYTES_PER_SEC: u64 = 64 * 1024;
const _: () = assert!(MIN_REPLICATION_BYTES_PER_SEC > 0);

/// How long to wait for the next reply of a replication stream with `outstanding_bytes` of
/// requests unanswered.
fn reply_deadline(base: std::time::Duration, outstanding_bytes: u64) -> std::time::Duration {
    base + std::time::Duration::from_secs_f64(
        outstanding_bytes as f64 / MIN_REPLICATION_BYTES_PER_SEC as f64,
    )
}

/// The requests written to one replication stream and not yet answered (their encoded
/// sizes and when they were written, oldest first: replies come in request order), and when
/// the last reply came.
struct Outstanding {
    inner: std::sync::Mutex<OutstandingInner>,
}

struct OutstandingInner {
    requests: std::collections::VecDeque<(usize, Instant)>,
    last_reply: Instant,
}

impl Outstanding {
    fn new(now: Instant) -> Self {
        Outstanding {
            inner: std::sync::Mutex::new(OutstandingInner {
                requests: std::collections::VecDeque::new(),
                last_reply: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutstandingInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sent(&self, bytes: usize, now: Instant) {
        self.lock().requests.push_back((bytes, now));
    }

    fn answered(&self, now: Instant) {
        let mut inner = self.lock();
        inner.requests.pop_front();
        inner.last_reply = now;
    }

    /// When the next reply is overdue (None: nothing is outstanding). The oldest request's
    /// reply is next; the clock runs from when it was written or from the last reply, if
    /// that came later, and the wait covers every byte outstanding (`reply_deadline`).
    fn overdue_at(&self, base: std::time::Duration) -> Option<Instant> {
        let inner = self.lock();
        let (_, oldest) = inner.requests.front()?;
        let bytes = inner.requests.iter().map(|(b, _)| *b as u64).sum();
        Some((*oldest).max(inner.last_reply) + reply_deadline(base, bytes))
    }
}

/// Aborts the request-writing task when the reply stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes AppendEntries requests onto the replication stream until the input ends, a
/// request had to be cut to fit a frame (its reply is partial and ends the pipeline), or the
/// stream breaks.
async fn write_requests<S>(mut input: S, mut send: quinn::SendStream, outstanding: Arc<Outstanding>)
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    while let Some(mut request) = input.next().await {
        let fit = entries_that_fit(&request.entries);
        let cut = fit < request.entries.len();
        request.entries.truncate(fit);
        let Ok(frame) = encode(&request) else {
            break; // cannot happen for a request cut to fit; the reader sees the stream end
        };
        outstanding.sent(frame.len(), Instant::now());
        if send.write_all(&frame).await.is_err() || cut {
            break;
        }
    }
    let _ = send.finish();
}

struct ReplyState {
    recv: quinn::RecvStream,
    outstanding: Arc<Outstanding>,
    /// The wait for a reply when nothing is in flight (`reply_deadline` adds to it).
    reply_timeout: std::time::Duration,
    _writer: AbortOnDrop,
    done: bool,
}

async fn next_reply(
    mut state: ReplyState,
) -> Option<(
    Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>,
    ReplyState,
)> {
    if state.done {
        return None;
    }
    let base = state.reply_timeout;
    let read = {
        // One read, kept across the waits below: a frame is never cut off half-read.
        let read = read_frame(&mut state.recv);
        tokio::pin!(read);
        loop {
            // Nothing outstanding: look again after the base wait.
            let wait = state
                .outstanding
                .overdue_at(base)
                .map_or(base, |at| at.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, &mut read).await {
                Ok(read) => break Some(read),
                // A request written or answered meanwhile moves the deadline.
                Err(_) => match state.outstanding.overdue_at(base) {
                    Some(at) if Instant::now() >= at => break None,
                    _ => continue,
                },
            }
        }
    };
    let reply = match read {
        None => Err(RPCError::Network(NetworkError::from_string(
            "no replication reply in time for the bytes outstanding".to_owned(),
        ))),
        Some(Err(WireError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return None
        }
        Some(Err(e)) => Err(RPCError::Network(NetworkError::from_string(e.to_string()))),
        Some(Ok(result)) => {
            state.outstanding.answered(Instant::now());
            Ok(result)
        }
    };
    // A transport error or a refusal (conflict, higher vote) ends the pipeline.
    state.done = !matches!(reply, Ok(Ok(_)));
    Some((reply, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_reply_wait_covers_a_full_frame_on_a_slow_link() {
        let base = MIN_STREAM_REPLY_TIMEOUT;
        assert_eq!(
            reply_deadline(base, 0),
            base,
            "nothing in flight: the base wait"
        );
        let one_mbit = 125_000.0;
        let full_frame = APPEND_BUDGET_BYTES as u64;
        assert!(
            reply_deadline(base, full_frame)
                > Duration::from_secs_f64(full_frame as f64 / one_mbit),
            "a full AppendEntries frame crosses 1 Mbit/s before its reply is given up on"
        );
    }

    #[test]
    fn the_next_reply_is_due_by_the_bytes_outstanding_from_the_last_progress() {
        let base = MIN_STREAM_REPLY_TIMEOUT;
        let t0 = Instant::now();
        let outstanding = Outstanding::new(t0);
        assert_eq!(outstanding.overdue_at(base), None, "nothing outstanding");
        let t1 = t0 + Duration::from_secs(5);
        outstanding.sent(640 * 1024, t1);
        assert_eq!(
            outstanding.overdue_at(base),
            Some(t1 + base + Duration::from_secs(10))
        );
        outstanding.sent(64 * 1024, t1 + Duration::from_secs(1));
        assert_eq!(
            outstanding.overdue_at(base),
            Some(t1 + base + Duration::from_secs(11)),
            "a later request adds its bytes, the clock still runs from the oldest"
        );
        let t2 = t1 + Duration::from_secs(8);
        outstanding.answered(t2);
        assert_eq!(
            outstanding.overdue_at(base),
            Some(t2 + base + Duration::from_secs(1)),
            "after a reply the clock runs from that reply"
        );
        outstanding.answered(t2);
        assert_eq!(outstanding.overdue_at(base), None);
        outstanding.answered(t2); // a reply with nothing outstanding does not underflow
        assert_eq!(outstanding.overdue_at(base), None);
    }
}
