//! OpenClaw's common library: config loading, node identity and TLS, the QUIC transport,
//! the wire format, the openraft type config and network, fjall storage, and metrics.
//!
//! Architecture invariant: nothing here knows about HTTP, shipping policy or which daemon
//! it runs in; edge-node and hub compose these pieces.

pub mod backoff;
pub mod codec_error;
pub mod config;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod ship;
pub mod store;
pub mod tls;
pub mod transport;
pub mod types;
pub mod units;
pub mod wire;
