//! Writes the seed corpora under `corpus/<target>/` (run from anywhere):
//!
//!     cargo run --manifest-path shared/fuzz/Cargo.toml --example gen_corpus
//!
//! Seeds are real encodings made by the crate's own encoders: frames of each message type,
//! shipping batches, and backup files of stores that applied edge and hub commands. Files
//! are named by content, so re-running only adds what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openclaw_fuzz::snapshot_seed;
use openraft::entry::RaftEntry;
use openraft::raft::{AppendEntriesRequest, StreamAppendError, StreamAppendResult, VoteRequest};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::Membership;
use serde::Serialize;
use shared::config::StorageSection;
use shared::ship::codec::{self, ShipBatch};
use shared::ship::{EventKind, ShipReply, ShippedEvent};
use shared::store::{LogStore, StateMachine, Store};
use shared::types::{
    BlindWrite, Command, CommandResponse, Entry, IdempotencyKey, LogId, NodeAddr, Op, SnapshotMeta,
    StoredMembership, TypeConfig, Vote,
};
use shared::wire::{self, AdminOp, RemoteError, Request, Response, ShipFrame};

fn corpus_dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

fn save(target: &str, name: &str, bytes: &[u8]) {
    let hash = crc32fast::hash(bytes);
    let path = corpus_dir(target).join(format!("{name}-{hash:08x}"));
    std::fs::write(&path, bytes).expect("write seed");
    println!("{:>7} bytes  {}", bytes.len(), path.display());
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, node, index)
}

fn command(ms: u64, op: Op, idempotency: Option<&str>, backlog: Option<u64>) -> Command {
    Command {
        proposed_ms: ms,
        elapsed_ms: ms % 1_000_000,
        idempotency: idempotency.map(|key| IdempotencyKey {
            key: key.into(),
            window_secs: 600,
        }),
        backlog_limit: backlog,
        site: None,
        op,
    }
}

fn members() -> Membership<u64, NodeAddr> {
    let nodes: BTreeMap<u64, NodeAddr> = (1..=3)
        .map(|id| {
            (
                id,
                NodeAddr {
                    raft: format!("127.0.0.1:700{id}"),
                    http: format!("http://127.0.0.1:800{id}"),
                },
            )
        })
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).expect("membership")
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
        if_revision: None,
    }
}

fn append(stream: &str, data: &str) -> Op {
    Op::Append {
        stream: stream.into(),
        data: data.into(),
    }
}

fn telemetry(site: &str, first_seq: u64, n: u64) -> ShipBatch {
    ShipBatch {
        site: site.into(),
        epoch: 1,
        first_seq,
        head_seq: first_seq + n,
        events: (0..n)
            .map(|i| ShippedEvent {
                seq: first_seq + i,
                hlc: 1_000 + i,
                kind: match i % 3 {
                    0 => EventKind::Append {
                        stream: "telemetry".into(),
                        data: format!(r#"{{"sensor":"pump-{i}","temperature_c":21.{i}}}"#)
                            .into_bytes(),
                    },
                    1 => EventKind::Put {
                        key: format!("config/{i}").into_bytes(),
                        value: b"on".to_vec(),
                    },
                    _ => EventKind::Delete {
                        key: format!("config/{}", i - 1).into_bytes(),
                    },
                },
            })
            .collect(),
    }
}

/// Entries of an edge group: membership, puts (one idempotent, one conditional), a delete,
/// stream appends, all kept in the outbox.
fn edge_entries() -> Vec<Entry> {
    let mut entries = vec![Entry::new_membership(log_id(1, 1, 1), members())];
    let ops = [
        (put("a", "1"), Some("req-1")),
        (put("b", "22"), None),
        (
            Op::Put {
                key: b"a".to_vec(),
                value: b"3".to_vec(),
                if_revision: Some(1),
            },
            None,
        ),
        (
            Op::Delete {
                key: b"b".to_vec(),
                if_revision: None,
            },
            None,
        ),
        (append("telemetry", r#"{"t":20.5}"#), Some("req-2")),
        (append("telemetry", r#"{"t":20.7}"#), None),
    ];
    for (i, (op, idem)) in ops.into_iter().enumerate() {
        let index = i as u64 + 2;
        entries.push(Entry::new_normal(
            log_id(1, 1, index),
            command(1_700_000_000_000 + index, op, idem, Some(1 << 30)),
        ));
    }
    // Concurrent blind writes as one batch entry (`Op::Batch`), a key put twice in it.
    let writes = [
        put("c", "4"),
        append("telemetry", r#"{"t":20.9}"#),
        put("c", "5"),
    ]
    .into_iter()
    .map(|op| command(1_700_000_000_010, op, None, Some(1 << 30)))
    .map(|c| BlindWrite::from_command(c).expect("a blind write"))
    .collect();
    entries.push(Entry::new_normal(log_id(1, 1, 8), Command::batch(writes)));
    entries.push(Entry::new_blank(log_id(2, 2, 9)));
    entries
}

/// Entries of a hub group: membership, then one shipped batch of a site.
fn hub_entries() -> Vec<Entry> {
    let batch = codec::encode(&telemetry("plant-7", 1, 4)).expect("batch");
    vec![
        Entry::new_membership(log_id(1, 1, 1), members()),
        Entry::new_normal(
            log_id(1, 1, 2),
            command(1_700_000_000_000, Op::Ingest { batch }, None, None),
        ),
    ]
}

/// A backup file of a store that appended and applied `entries` (all committed).
async fn backup_of(entries: Vec<Entry>) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &StorageSection::default()).expect("store");
    let mut log = LogStore::new(store.clone());
    let (mut machine, _reader) = StateMachine::open(store.clone()).expect("state machine");
    if let Some(last) = entries.last().map(|e| e.log_id) {
        log.append(entries.clone(), IOFlushed::noop())
            .await
            .expect("append");
        log.save_committed(Some(last)).await.expect("committed");
        let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        machine.apply(stream).await.expect("apply");
    }
    let file = store.backup().expect("backup");
    let bytes = std::fs::read(&file.path).expect("read backup");
    Store::describe_backup(&file.path).expect("the backup describes");
    bytes
}

fn frame<T: Serialize>(selector: u8, message: &T) -> Vec<u8> {
    let mut seed = vec![selector];
    seed.extend_from_slice(&wire::encode(message).expect("encode"));
    seed
}

fn wire_seeds() {
    let vote = Vote::new_committed(3, 1);
    let entries = edge_entries();
    let append_request = || AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(1, 1, 1)),
        entries: entries[1..4].to_vec(),
        leader_commit: Some(log_id(1, 1, 1)),
    };
    let write = command(
        1_700_000_000_000,
        put("k", "v"),
        Some("idem-1"),
        Some(1 << 20),
    );
    let requests: Vec<(&str, Request)> = vec![
        ("read-index", Request::ReadIndex),
        ("client-write", Request::ClientWrite(write.clone())),
        (
            "client-write-batch",
            Request::ClientWriteBatch(vec![write.clone(), write]),
        ),
        ("append", Request::AppendEntries(append_request())),
        (
            "append-batch-entry",
            Request::AppendEntries(AppendEntriesRequest::<TypeConfig> {
                entries: entries[7..8].to_vec(),
                prev_log_id: Some(log_id(1, 1, 7)),
                ..append_request()
            }),
        ),
        (
            "vote",
            Request::Vote(VoteRequest::new(vote, Some(log_id(2, 1, 9)))),
        ),
        (
            "install-snapshot",
            Request::InstallSnapshot {
                vote,
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(2, 1, 9)),
                    last_membership: StoredMembership::new(Some(log_id(1, 1, 1)), members()),
                },
                size_bytes: 4096,
            },
        ),
        (
            "admin",
            Request::Admin(AdminOp::AddLearner {
                id: 4,
                addr: NodeAddr {
                    raft: "127.0.0.1:7004".into(),
                    http: "http://127.0.0.1:8004".into(),
                },
            }),
        ),
        (
            "ship-open",
            Request::ShipOpen {
                site: "plant-7".into(),
                epoch: 2,
                head_seq: 1234,
            },
        ),
    ];
    for (name, request) in &requests {
        save("wire_frame", &format!("request-{name}"), &frame(0, request));
    }
    let responses = [
        (
            "write",
            Response::ClientWrite(CommandResponse::Put {
                seq: 7,
                revision: 3,
            }),
        ),
        (
            "write-batch",
            Response::ClientWriteBatch(vec![
                Ok(CommandResponse::Put {
                    seq: 8,
                    revision: 8,
                }),
                Err(RemoteError::OutcomeUnknown("leader changed".into())),
            ]),
        ),
        ("read-index", Response::ReadIndex(42)),
        (
            "not-leader",
            Response::Error(RemoteError::NotLeader { leader: Some(2) }),
        ),
    ];
    for (name, response) in &responses {
        save(
            "wire_frame",
            &format!("response-{name}"),
            &frame(1, response),
        );
    }
    save("wire_frame", "stream-append", &frame(2, &append_request()));
    let results: [StreamAppendResult<TypeConfig>; 2] = [
        Ok(Some(log_id(1, 1, 4))),
        Err(StreamAppendError::Conflict(log_id(1, 1, 2))),
    ];
    for (i, result) in results.iter().enumerate() {
        save(
            "wire_frame",
            &format!("stream-result-{i}"),
            &frame(3, result),
        );
    }
    let batch = codec::encode(&telemetry("plant-7", 10, 6)).expect("batch");
    save("wire_frame", "ship-frame", &frame(4, &ShipFrame { batch }));
    let replies = [
        ShipReply::ShippedThrough(15),
        ShipReply::Fenced {
            epoch: 3,
            shipped_through: 12,
        },
    ];
    for (i, reply) in replies.iter().enumerate() {
        save("wire_frame", &format!("ship-reply-{i}"), &frame(5, reply));
    }
}

fn ship_seeds() {
    for (name, batch) in [
        ("telemetry", telemetry("plant-7", 100, 12)),
        ("single", telemetry("site-1", 1, 1)),
        ("empty", telemetry("site-1", 1, 0)),
    ] {
        save("ship_batch", name, &codec::encode(&batch).expect("encode"));
        // The target also compresses each input itself: raw postcard reaches `validate`.
        save(
            "ship_batch",
            &format!("{name}-raw"),
            &postcard::to_stdvec(&batch).expect("raw"),
        );
    }
}

async fn snapshot_seeds() {
    for (name, entries) in [
        ("empty", Vec::new()),
        ("edge", edge_entries()),
        ("hub", hub_entries()),
    ] {
        let file = backup_of(entries).await;
        for target in ["snapshot_file", "snapshot_install"] {
            save(target, &format!("backup-{name}"), &snapshot_seed(&file));
        }
        if name == "empty" {
            // Regression: a record with an empty key panicked fjall mid-install (the empty
            // backup is header ‖ end tag ‖ crc; the record goes before the end tag).
            let mut crafted = file[..file.len() - 5].to_vec();
            crafted.push(1); // TAG_KV
            crafted.extend_from_slice(&0u32.to_be_bytes());
            crafted.extend_from_slice(&5u32.to_be_bytes());
            crafted.extend_from_slice(b"value");
            crafted.push(0xff); // end tag
            crafted.extend_from_slice(&[0; 4]); // crc (the target appends the real one)
            for target in ["snapshot_file", "snapshot_install"] {
                save(target, "regress-empty-record-key", &snapshot_seed(&crafted));
            }
        }
    }
}

fn config_seeds() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for name in ["edge.toml", "hub.toml", "edge-single.toml"] {
        let text = std::fs::read(configs.join(name)).expect("config");
        save("config_toml", name.trim_end_matches(".toml"), &text);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    wire_seeds();
    ship_seeds();
    snapshot_seeds().await;
    config_seeds();
}
