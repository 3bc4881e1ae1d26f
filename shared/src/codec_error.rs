//! Errors of decoders of untrusted bytes that are not frames (shipping batches).

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{what} of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("undecodable: {0}")]
    Decode(String),
    #[error("invalid: {0}")]
    Invalid(String),
}
