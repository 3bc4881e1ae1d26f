//! The shipping protocol between an edge group and the hub group that owns its site
//! (DESIGN.md §3.3), as plain code: the hub's apply rules (`rules`), the edge shipper's
//! session state (`session`), the batch it gathers next (`pending`) and the batch codec
//! (`codec`). No sockets, no clocks: tasks that move bytes drive these (the edge's
//! `uplink.rs`, the hub's `ingest.rs`), and tests drive them directly.

pub mod codec;
pub mod pending;
pub mod rules;
pub mod session;

use serde::{Deserialize, Serialize};

/// One committed event of a site's log, as shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedEvent {
    pub seq: u64,
    pub hlc: u64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    Append {
        stream: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// What the hub answers to a batch (or to a session's opening).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipReply {
    /// Durably committed (hub quorum) through this seq; duplicates are acknowledged too.
    ShippedThrough(u64),
    /// The batch did not start at shipped-through + 1: resend from `expected`.
    Gap { expected: u64 },
    /// The site's epoch at the hub is newer: this edge group no longer owns the site.
    Fenced {
        epoch: u64,
        /// The batch's epoch ended at this seq: the sender's events through it are held here;
        /// those after it are its unshipped tail (export, never silently drop).
        shipped_through: u64,
    },
    /// The batch is malformed (not contiguous, over the limits, undecodable).
    Rejected(String),
}
