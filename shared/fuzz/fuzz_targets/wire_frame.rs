//! Node-to-node frames (`shared::wire`): `u32 BE length ‖ version ‖ postcard body`, read from
//! a QUIC stream by `read_frame` and decoded by `decode`, for every message type a peer can
//! send: `Request`, `Response`, the replication stream's `AppendEntriesRequest` and
//! `StreamAppendResult`, and the shipping session's `ShipFrame` and `ShipReply`.
//!
//! Input: one selector byte (message type), then the bytes of the stream. Checks: no panic,
//! the length is bounded before allocation (libFuzzer's malloc limit), and every frame that
//! decodes re-encodes to a frame that decodes to the same encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shared::ship::ShipReply;
use shared::types::TypeConfig;
use shared::wire::{self, read_frame, Request, Response, ShipFrame};

const LENGTH_BYTES: usize = 4;

fn check<T: Serialize + DeserializeOwned>(stream: &[u8]) {
    // The body decoder on its own (what follows a length prefix).
    if let Ok(message) = wire::decode::<T>(stream) {
        round_trip(&message);
    }
    // The stream reader: length checked, body read, decoded.
    let mut reader = stream;
    if let Ok(message) = futures::executor::block_on(read_frame::<_, T>(&mut reader)) {
        round_trip(&message);
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(message: &T) {
    let frame = wire::encode(message).expect("a decoded message re-encodes");
    let length = u32::from_be_bytes(frame[..LENGTH_BYTES].try_into().expect("4 bytes")) as usize;
    assert_eq!(length, frame.len() - LENGTH_BYTES, "length prefix");
    let again: T = wire::decode(&frame[LENGTH_BYTES..]).expect("a re-encoded frame decodes");
    let mut reader = &frame[..];
    let read: T = futures::executor::block_on(read_frame(&mut reader)).expect("read_frame");
    let frame_again = wire::encode(&again).expect("re-encode");
    assert_eq!(
        frame, frame_again,
        "decode(encode(x)) re-encodes identically"
    );
    assert_eq!(
        frame,
        wire::encode(&read).expect("re-encode"),
        "read_frame agrees"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => check::<Request>(stream),
        1 => check::<Response>(stream),
        2 => check::<AppendEntriesRequest<TypeConfig>>(stream),
        3 => check::<StreamAppendResult<TypeConfig>>(stream),
        4 => check::<ShipFrame>(stream),
        _ => check::<ShipReply>(stream),
    }
});
