//! Encoding of values stored on disk: a format byte then postcard. Decoding returns an
//! error for anything unexpected; it never panics on what it reads back.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// Format byte of every postcard value at rest; bump it and keep a decoder for the old one.
pub const FORMAT_V1: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT_V1]).map_err(|e| StoreError::Corrupt {
        what: "value to encode".into(),
        message: e.to_string(),
    })
}

pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        what: what.to_owned(),
        message,
    };
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => postcard::from_bytes(body).map_err(|e| corrupt(e.to_string())),
        Some((other, _)) => Err(corrupt(format!("unknown format byte {other}"))),
        None => Err(corrupt("empty value".into())),
    }
}

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn read_u64(what: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: what.to_owned(),
            message: format!("{} bytes, want at least 8", bytes.len()),
        })?;
    Ok(u64::from_be_bytes(array))
}
