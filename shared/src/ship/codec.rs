//! Shipping batches on the wire: postcard, then zstd. Decoding is bounded twice — the
//! compressed size by the frame limit, the decompressed size while it is produced — and then
//! validated (contiguous seqs, per-event limits) before anything is applied.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{EventKind, ShippedEvent};
use crate::codec_error::CodecError;
use crate::limits::{
    MAX_FRAME_BYTES, MAX_KEY_BYTES, MAX_SHIP_BATCH_EVENTS, MAX_SHIP_BATCH_RAW_BYTES,
    MAX_STREAM_NAME_BYTES, MAX_VALUE_BYTES, SHIP_ZSTD_LEVEL,
};

/// A run of a site's events, stamped with the epoch of the group that wrote them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipBatch {
    pub site: String,
    pub epoch: u64,
    pub first_seq: u64,
    /// The edge's newest committed seq when it sent the batch (the hub's lag figure).
    pub head_seq: u64,
    pub events: Vec<ShippedEvent>,
}

/// Encodes and compresses a batch.
pub fn encode(batch: &ShipBatch) -> Result<Vec<u8>, CodecError> {
    let raw = postcard::to_stdvec(batch).map_err(|e| CodecError::Encode(e.to_string()))?;
    if raw.len() > MAX_SHIP_BATCH_RAW_BYTES {
        return Err(CodecError::TooLarge {
            what: "batch",
            bytes: raw.len(),
            limit: MAX_SHIP_BATCH_RAW_BYTES,
        });
    }
    let compressed = zstd::bulk::compress(&raw, SHIP_ZSTD_LEVEL)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if compressed.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            what: "compressed batch",
            bytes: compressed.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    Ok(compressed)
}

/// Decompresses, decodes and validates a batch from untrusted bytes.
pub fn decode(compressed: &[u8]) -> Result<ShipBatch, CodecError> {
    if compressed.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            what: "compressed batch",
            bytes: compressed.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| CodecError::Decode(format!("zstd: {e}")))?;
    let mut raw = Vec::new();
    decoder
        .take(MAX_SHIP_BATCH_RAW_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| CodecError::Decode(format!("zstd: {e}")))?;
    if raw.len() > MAX_SHIP_BATCH_RAW_BYTES {
        return Err(CodecError::TooLarge {
            what: "decompressed batch",
            bytes: raw.len(),
            limit: MAX_SHIP_BATCH_RAW_BYTES,
        });
    }
    let batch: ShipBatch =
        postcard::from_bytes(&raw).map_err(|e| CodecError::Decode(e.to_string()))?;
    validate(&batch)?;
    Ok(batch)
}

fn invalid(message: String) -> CodecError {
    CodecError::Invalid(message)
}

/// Checks what the type cannot: contiguous seqs from `first_seq`, and the per-event limits.
pub fn validate(batch: &ShipBatch) -> Result<(), CodecError> {
    if batch.events.len() > MAX_SHIP_BATCH_EVENTS {
        return Err(invalid(format!(
            "{} events in one batch (max {MAX_SHIP_BATCH_EVENTS})",
            batch.events.len()
        )));
    }
    for (i, event) in batch.events.iter().enumerate() {
        let expected = batch.first_seq.checked_add(i as u64);
        if Some(event.seq) != expected {
            return Err(invalid(format!(
                "event {i} has seq {}, expected {expected:?}",
                event.seq
            )));
        }
        let (key, body) = match &event.kind {
            EventKind::Put { key, value } => (key.len(), value.len()),
            EventKind::Delete { key } => (key.len(), 0),
            EventKind::Append { stream, data } => {
                if stream.len() > MAX_STREAM_NAME_BYTES {
                    return Err(invalid(format!("seq {}: stream name too long", event.seq)));
                }
                (0, data.len())
            }
        };
        if key > MAX_KEY_BYTES || body > MAX_VALUE_BYTES {
            return Err(invalid(format!(
                "seq {}: key or value over the limits",
                event.seq
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry_batch(n: u64) -> ShipBatch {
        ShipBatch {
            site: "plant-7".into(),
            epoch: 1,
            first_seq: 100,
            head_seq: 100 + n,
            events: (0..n)
                .map(|i| ShippedEvent {
                    seq: 100 + i,
                    hlc: 1_000 + i,
                    kind: EventKind::Append {
                        stream: "telemetry".into(),
                        data: format!(
                            r#"{{"sensor":"pump-{}","temperature_c":{}.{},"status":"ok"}}"#,
                            i % 12,
                            20 + i % 7,
                            i % 10
                        )
                        .into_bytes(),
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_compression_of_json_telemetry() {
        let batch = telemetry_batch(1000);
        let wire = encode(&batch).expect("encode");
        assert_eq!(decode(&wire).expect("decode"), batch);
        let raw: usize = batch
            .events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Append { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert!(
            wire.len() * 5 < raw,
            "{} compressed vs {raw} raw payload bytes",
            wire.len()
        );
    }

    #[test]
    fn decompression_bomb_is_refused_within_the_bound() {
        let bomb =
            zstd::bulk::compress(&vec![0u8; MAX_SHIP_BATCH_RAW_BYTES * 4], 19).expect("compress");
        assert!(bomb.len() < 64 * 1024, "a small frame");
        assert!(matches!(
            decode(&bomb),
            Err(CodecError::TooLarge {
                what: "decompressed batch",
                ..
            })
        ));
    }

    #[test]
    fn gaps_and_garbage_are_refused() {
        let mut batch = telemetry_batch(3);
        batch.events[1].seq = 999;
        let wire = zstd::bulk::compress(&postcard::to_stdvec(&batch).expect("raw"), 1).expect("z");
        assert!(matches!(decode(&wire), Err(CodecError::Invalid(_))));
        for garbage in [&b""[..], b"\x28\xb5\x2f\xfd", b"not zstd at all"] {
            assert!(decode(garbage).is_err());
        }
        let not_a_batch = zstd::bulk::compress(&[7u8; 64], 1).expect("z");
        assert!(matches!(decode(&not_a_batch), Err(CodecError::Decode(_))));
    }
}
