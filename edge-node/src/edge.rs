//! A running edge node: the Raft group member (`shared::group`) plus the edge's policy — the
//! write admission that keeps the outbox bounded, and the shipper that runs while this node
//! leads.

use std::sync::Arc;

use shared::group::{GroupNode, OpError, StartError};
use shared::types::{Command, CommandResponse, Op};

use crate::config::EdgeConfig;
use crate::uplink::UplinkState;

pub struct Edge {
    pub group: Arc<GroupNode>,
    pub config: EdgeConfig,
    pub uplink: Arc<UplinkState>,
}

impl Edge {
    pub async fn start(config: EdgeConfig) -> Result<Arc<Edge>, StartError> {
        let group = GroupNode::start(config.group_settings(), |_| None).await?;
        let edge = Arc::new(Edge {
            group,
            config,
            uplink: Arc::new(UplinkState::default()),
        });
        if edge.config.uplink.is_some() {
            tokio::spawn(crate::uplink::run(edge.clone()));
        }
        Ok(edge)
    }

    /// A client write: stamped, bounded by the uplink backlog when this site ships.
    pub fn command(&self, op: Op, idempotency_key: Option<String>) -> Command {
        let backlog_limit = self.config.uplink.as_ref().map(|u| u.max_unshipped_bytes.0);
        self.group.command(op, idempotency_key, backlog_limit)
    }

    pub async fn write(&self, command: Command) -> Result<CommandResponse, OpError> {
        self.group.write(command).await
    }

    pub async fn shutdown(&self) {
        self.uplink.stop();
        self.group.shutdown().await;
    }
}
