//! Every protocol and storage limit of OpenClaw, as named constants (DESIGN.md §7).
//!
//! A limit is checked before anything is allocated for the thing it bounds. Relations
//! between limits are asserted at compile time at the bottom of this file.

/// Longest KV key, in bytes. Keys are stored inline in the KV keyspace and in log entries.
pub const MAX_KEY_BYTES: usize = 1024;

/// Largest KV value or stream event payload, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Longest stream name, in bytes (`[A-Za-z0-9._-]`).
pub const MAX_STREAM_NAME_BYTES: usize = 128;

/// Longest `Idempotency-Key` header value, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Largest frame on any QUIC stream (one RPC request or response), in bytes.
/// A peer announcing more is disconnected before the frame is read.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Largest HTTP request body the client API reads, in bytes (one value plus slack).
pub const MAX_HTTP_BODY_BYTES: usize = MAX_VALUE_BYTES + 64 * 1024;

/// Largest Raft group (voters plus learners).
pub const MAX_GROUP_SIZE: usize = 7;

/// Most items a list or stream read returns in one page.
pub const MAX_PAGE_ITEMS: usize = 1000;

/// Items a list or stream read returns when the client names no limit.
pub const DEFAULT_PAGE_ITEMS: usize = 100;

/// Largest snapshot a node accepts from a leader, in bytes: bounds the temporary file.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Chunk in which snapshot files are streamed, in bytes.
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;

/// Shortest idempotency window the config accepts (DESIGN.md §4.1: at least 10 minutes).
pub const MIN_IDEMPOTENCY_WINDOW_SECS: u64 = 600;

/// Expired idempotency records deleted per applied write: bounds the work of one apply.
pub const IDEMPOTENCY_EXPIRE_PER_APPLY: usize = 8;

/// Concurrent RPC streams a peer may open on one QUIC connection.
pub const MAX_CONCURRENT_RPC_STREAMS: u32 = 1024;

/// Encoded size of one log entry beyond its key and value (headers, ids, varints).
pub const ENTRY_OVERHEAD_BYTES: usize = 512;

/// Most events in one shipping batch (edge → hub).
pub const MAX_SHIP_BATCH_EVENTS: usize = 4096;

/// Largest shipping batch after decompression, in bytes: checked while decompressing, so a
/// decompression bomb costs at most this much memory.
pub const MAX_SHIP_BATCH_RAW_BYTES: usize = 8 * 1024 * 1024;

/// Longest site id, in bytes (`[a-z0-9-]{1,32}`, DESIGN.md §1).
pub const MAX_SITE_ID_BYTES: usize = 32;

/// Raw bytes the edge shipper puts in one batch before it closes it (one event may take a
/// batch past it; the event limit keeps even that batch under `MAX_SHIP_BATCH_RAW_BYTES`
/// and, compressed or not, under the frame and hub log-entry budget).
pub const SHIP_BATCH_TARGET_BYTES: usize = 1024 * 1024;

/// Outbox entries removed per applied command once the hub has them: bounds the work of one
/// apply (the rest goes with the following applies).
pub const OUTBOX_COMPACT_PER_APPLY: usize = 4096;

/// Most sites one hub group owns (bounds the status listing and the per-site state).
pub const MAX_SITES_PER_GROUP: usize = 10_000;

/// zstd level of shipping batches: fast on gateway CPUs, most of the gain on JSON telemetry.
pub const SHIP_ZSTD_LEVEL: i32 = 3;

/// Forwarded writes (follower → leader) travel in batches of at most this many commands
/// (`Request::ClientWriteBatch`), so concurrent clients of a follower share one RPC.
pub const MAX_FORWARD_BATCH_COMMANDS: usize = 256;

/// Estimated encoded bytes of the commands in one forwarded batch (`Command::approx_encoded_bytes`).
pub const FORWARD_BATCH_MAX_BYTES: usize = 1024 * 1024;

/// A command estimated larger than this is forwarded on its own (`Request::ClientWrite`), so a
/// batch never carries a value near the frame limit.
pub const FORWARD_BATCH_ITEM_MAX_BYTES: usize = 64 * 1024;

/// Forwarded batches one follower has in flight at once; requests arriving meanwhile queue
/// and leave together in the next batch (the batch size adapts to the load).
pub const MAX_FORWARD_BATCHES_IN_FLIGHT: usize = 4;

/// A leader proposes concurrent client writes (puts, deletes, appends; keyed, conditional or
/// not) as one log entry (`Op::Batch`, `Op::ClientBatch`) of at most this many writes.
pub const MAX_PROPOSAL_BATCH_WRITES: usize = 256;

/// Estimated encoded bytes of the writes in one batch entry (`Command::approx_encoded_bytes`).
pub const PROPOSAL_BATCH_MAX_BYTES: usize = 1024 * 1024;

/// A write estimated larger than this is proposed as its own entry.
pub const PROPOSAL_BATCH_ITEM_MAX_BYTES: usize = 64 * 1024;

/// Batch entries a leader has proposed and not yet seen applied; writes arriving meanwhile
/// queue and go together in the next entry (the batch size adapts to the load). One: fewer,
/// fuller entries did better than 2, 4 or 8 in flight at 16 and 64 clients, for writes and
/// appends alike (openclaw-bench, docs/benchmarks.md 2026-12-06); openraft still pipelines
/// the entry's append and replication, and commands other than blind writes never wait here.
pub const MAX_PROPOSAL_BATCHES_IN_FLIGHT: usize = 1;

/// Encoded size of one write in a batch entry beyond its key, value and Idempotency-Key
/// (two clock stamps, the backlog limit, a condition, the key's window, the variants and
/// the lengths, as varints).
pub const BLIND_WRITE_OVERHEAD_BYTES: usize = 64;

/// Bytes a QUIC peer may have in flight to us on one connection (all streams), and that we
/// buffer for sending on one: the bound on transport memory per peer (a small gateway has
/// a handful of peers).
pub const QUIC_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Bytes a QUIC peer may have in flight on one stream: a whole frame, so one RPC never
/// waits for the reader to make room.
pub const QUIC_STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024 + 64 * 1024;

const _: () = assert!(QUIC_STREAM_WINDOW_BYTES as usize > MAX_FRAME_BYTES);
const _: () = assert!(QUIC_STREAM_WINDOW_BYTES < QUIC_CONNECTION_WINDOW_BYTES);
const _: () = assert!(MAX_KEY_BYTES + MAX_VALUE_BYTES + ENTRY_OVERHEAD_BYTES < MAX_FRAME_BYTES);
const _: () =
    assert!(MAX_KEY_BYTES + MAX_VALUE_BYTES + ENTRY_OVERHEAD_BYTES < MAX_SHIP_BATCH_RAW_BYTES);
const _: () = assert!(MAX_HTTP_BODY_BYTES < MAX_FRAME_BYTES);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES < MAX_FRAME_BYTES);
const _: () = assert!(
    SHIP_BATCH_TARGET_BYTES + MAX_KEY_BYTES + MAX_VALUE_BYTES + ENTRY_OVERHEAD_BYTES
        < MAX_SHIP_BATCH_RAW_BYTES
);
// A batch the shipper builds fits one frame and one hub log entry even uncompressed.
const _: () = assert!(
    SHIP_BATCH_TARGET_BYTES + MAX_KEY_BYTES + MAX_VALUE_BYTES + 2 * ENTRY_OVERHEAD_BYTES
        < MAX_FRAME_BYTES
);
const _: () = assert!(DEFAULT_PAGE_ITEMS <= MAX_PAGE_ITEMS);
const _: () = assert!(FORWARD_BATCH_ITEM_MAX_BYTES <= FORWARD_BATCH_MAX_BYTES);
// A full batch (each command counted at its estimate) and its framing fit in one frame.
const _: () = assert!(FORWARD_BATCH_MAX_BYTES + MAX_FORWARD_BATCH_COMMANDS * 16 < MAX_FRAME_BYTES);
const _: () = assert!(PROPOSAL_BATCH_ITEM_MAX_BYTES <= PROPOSAL_BATCH_MAX_BYTES);
// A full batch entry (each write counted at its estimate) and its framing fit in one frame.
const _: () = assert!(PROPOSAL_BATCH_MAX_BYTES + 2 * ENTRY_OVERHEAD_BYTES < MAX_FRAME_BYTES);
