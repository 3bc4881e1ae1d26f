//! OpenClaw's common library: config loading, node identity and TLS, the QUIC transport,
//! the wire format, the openraft type config and network, fjall storage, and metrics.
//!
//! Architecture invariant: nothing here knows which daemon it runs in. The Raft group member
//! (`group`), the API pieces both daemons serve (`http`), the operator commands
//! (`operator`) and the shipping protocol (`ship`) are here so that both daemons use one
//! implementation; edge-node and hub compose these pieces with their own policy.

pub mod backoff;
pub mod codec_error;
pub mod config;
pub mod group;
pub mod http;
pub mod identity;
pub mod in_flight;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod operator;
pub mod ship;
pub mod store;
pub mod tls;
pub mod transport;
pub mod types;
pub mod units;
pub mod wire;
