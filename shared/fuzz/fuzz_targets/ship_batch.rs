//! Shipping batches (`shared::ship::codec::decode`): zstd-compressed postcard `ShipBatch`es
//! that the hub takes from an edge (and re-reads from its own log), bounded before and while
//! decompressing, then validated.
//!
//! Each input is decoded twice: as the compressed bytes on the wire (zstd framing, bombs,
//! truncation), and compressed first, so mutations reach the postcard decoder and
//! `validate` directly. Checks: no panic, memory bounded by `MAX_SHIP_BATCH_RAW_BYTES`
//! (libFuzzer's malloc and RSS limits), a decoded batch is valid, and
//! `decode(encode(batch)) == batch`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::ship::codec::{decode, encode, validate, ShipBatch};

fn check(wire: &[u8]) {
    let Ok(batch) = decode(wire) else {
        return;
    };
    validate(&batch).expect("a decoded batch is valid");
    // A decoded batch fits the raw bound, so it re-encodes unless its compressed form would
    // exceed a frame (not possible for fuzz-sized inputs, but not an invariant either).
    if let Ok(again) = encode(&batch) {
        let round: ShipBatch = decode(&again).expect("an encoded batch decodes");
        assert_eq!(round, batch, "decode(encode(batch)) == batch");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(compressed) = zstd::bulk::compress(data, 1) {
        check(&compressed);
    }
});
