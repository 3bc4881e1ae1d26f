//! Node-to-node messages and their framing.
//!
//! A frame is `u32 big-endian length ‖ version byte ‖ postcard body`. The length is checked
//! against [`MAX_FRAME_BYTES`] before anything is allocated, and decoding never panics: every
//! malformed frame is a [`WireError`]. One RPC = one bidirectional QUIC stream: a request
//! frame, optionally followed by raw bytes (snapshot data) until FIN, then a response frame.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::MAX_FRAME_BYTES;
use crate::types::{Command, CommandResponse, NodeAddr, NodeId, SnapshotMeta, TypeConfig, Vote};

/// Version byte of every frame; bumped with any incompatible change.
pub const WIRE_VERSION: u8 = 1;

const LENGTH_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one frame (length prefix included).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; LENGTH_BYTES];
    buf.push(WIRE_VERSION);
    let mut buf = postcard::to_extend(message, buf)?;
    let body = buf.len() - LENGTH_BYTES;
    if body > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(body));
    }
    buf[..LENGTH_BYTES].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(buf)
}

/// Decodes a frame body (after the length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (&version, rest) = body.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    Ok(postcard::from_bytes(rest)?)
}

pub async fn write_frame<W, T>(writer: &mut W, message: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    writer.write_all(&encode(message)?).await?;
    Ok(())
}

/// Reads one frame; the announced length is checked before the body is allocated.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<T, WireError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; LENGTH_BYTES];
    reader.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    decode(&body)
}

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// Header of a full snapshot; the snapshot file's bytes follow on the stream until FIN.
    InstallSnapshot {
        vote: Vote,
        meta: SnapshotMeta,
        size_bytes: u64,
    },
    /// A client write forwarded to the leader.
    ClientWrite(Command),
    /// Ask the leader for a read index (quorum-confirmed) for a linearizable read elsewhere.
    ReadIndex,
    /// A membership or maintenance operation forwarded to the leader.
    Admin(AdminOp),
    /// Opens a pipelined replication stream: AppendEntries frames follow from the leader,
    /// `StreamAppendResult` frames come back in order, until either side finishes.
    StreamAppend,
    /// Opens a shipping session (edge leader → hub, DESIGN.md §3.3): the hub answers a
    /// `ShipReply` (its shipped-through for the site, or Fenced), then one `ShipReply` per
    /// `ShipFrame` the edge sends, in order.
    ShipOpen {
        site: String,
        epoch: u64,
        /// The edge's newest seq (a reseeded group proves with it that it holds exactly the
        /// hub's frozen state).
        head_seq: u64,
    },
    /// Client writes forwarded to the leader together (at most `MAX_FORWARD_BATCH_COMMANDS`);
    /// answered with one result per command, in order.
    ClientWriteBatch(Vec<Command>),
}

/// One shipping batch on a session: `ship::codec` bytes (compressed, bounded by the frame).
#[derive(Debug, Serialize, Deserialize)]
pub struct ShipFrame {
    #[serde(with = "serde_bytes")]
    pub batch: Vec<u8>,
}

impl Request {
    /// Requests that keep their stream open for many frames each way.
    pub fn is_streaming(&self) -> bool {
        matches!(self, Request::StreamAppend | Request::ShipOpen { .. })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Response {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    InstallSnapshot(SnapshotResponse<TypeConfig>),
    ClientWrite(CommandResponse),
    /// Log index the reader must have applied before it reads.
    ReadIndex(u64),
    Admin(AdminResult),
    Error(RemoteError),
    /// One result per command of a `ClientWriteBatch`, in its order.
    ClientWriteBatch(Vec<Result<CommandResponse, RemoteError>>),
}

/// Why a remote node did not carry out a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// Not the leader; `leader` is its best guess.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// No quorum, shutting down, or timed out: may succeed on retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request is wrong and will stay wrong.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The peer's certificate does not allow this request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request was proposed but its fate is unknown (e.g. leadership was lost).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminOp {
    AddLearner { id: NodeId, addr: NodeAddr },
    Promote { id: NodeId },
    Remove { id: NodeId },
    Snapshot,
    TransferLeader { to: NodeId },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminResult {
    Done { log_index: Option<u64> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let frame = encode(&Request::ReadIndex).expect("encode");
        let req: Request = decode(&frame[LENGTH_BYTES..]).expect("decode");
        assert!(matches!(req, Request::ReadIndex));
        assert!(matches!(decode::<Request>(&[]), Err(WireError::Empty)));
        assert!(matches!(
            decode::<Request>(&[9, 0]),
            Err(WireError::Version(9))
        ));
        assert!(matches!(
            decode::<Request>(&[WIRE_VERSION, 200, 200, 200]),
            Err(WireError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn oversize_length_is_refused_before_allocation() {
        let mut bytes: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1];
        let result: Result<Request, _> = read_frame(&mut bytes).await;
        assert!(matches!(result, Err(WireError::TooLarge(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u64;
        for len in 0..512 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode::<Request>(&body);
            let mut with_version = vec![WIRE_VERSION];
            with_version.extend_from_slice(&body);
            let _ = decode::<Request>(&with_version);
            let _ = decode::<Response>(&with_version);
        }
    }
}
