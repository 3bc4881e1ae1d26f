//! A running hub node: a member of one hub group (`shared::group`) that ingests its sites'
//! shipping sessions (`ingest`) and serves queries over the merged state (`api`).

use std::sync::Arc;

use shared::config::SiteId;
use shared::group::{ExternalService, GroupNode, OpError, StartError};
use shared::metrics::{Counter, Gauge};
use shared::types::{CommandResponse, Op};

use crate::config::HubConfig;
use crate::ingest::IngestService;

pub struct Hub {
    pub group: Arc<GroupNode>,
    pub config: HubConfig,
}

/// Hub-only counters.
pub struct HubMetrics {
    pub sessions: Counter,
    pub sessions_open: Gauge,
    pub batches: Counter,
    pub events: Counter,
    pub bytes: Counter,
    pub gaps: Counter,
    pub fenced: Counter,
    pub forbidden: Counter,
    pub bad_batches: Counter,
    pub proposals_in_flight: Gauge,
    pub proposals_in_flight_max: Gauge,
    pub proposals_waiting: Gauge,
    pub proposal_waits: Counter,
}

pub static HUB: HubMetrics = HubMetrics {
    sessions: Counter::new(
        "openclaw_hub_ship_sessions_total",
        "Shipping sessions opened by edge leaders",
    ),
    sessions_open: Gauge::new(
        "openclaw_hub_ship_sessions_open",
        "Shipping sessions open on this hub node now (one per connected site leader)",
    ),
    batches: Counter::new(
        "openclaw_hub_ship_batches_total",
        "Shipping batches acknowledged (applied, or already held)",
    ),
    events: Counter::new(
        "openclaw_hub_ship_events_total",
        "Events received in shipping batches (duplicates included)",
    ),
    bytes: Counter::new(
        "openclaw_hub_ship_bytes_total",
        "Compressed shipping bytes received",
    ),
    gaps: Counter::new(
        "openclaw_hub_ship_gaps_total",
        "Batches refused for a gap (the edge resends from the expected seq)",
    ),
    fenced: Counter::new(
        "openclaw_hub_ship_fenced_total",
        "Sessions or batches refused for a stale epoch",
    ),
    forbidden: Counter::new(
        "openclaw_hub_ship_forbidden_total",
        "Sessions refused: the certificate's site is not the site shipped, or not owned here",
    ),
    bad_batches: Counter::new(
        "openclaw_hub_ship_bad_batches_total",
        "Connections closed for an undecodable, oversize or invalid batch",
    ),
    proposals_in_flight: Gauge::new(
        "openclaw_hub_ingest_proposals_in_flight",
        "Shipped batches this hub node is committing now",
    ),
    proposals_in_flight_max: Gauge::new(
        "openclaw_hub_ingest_proposals_in_flight_max",
        "Most shipped batches this hub node committed at once since it started (at most MAX_INGEST_PROPOSALS_PER_NODE)",
    ),
    proposals_waiting: Gauge::new(
        "openclaw_hub_ingest_proposals_waiting",
        "Shipped batches waiting for their turn to be proposed on this hub node",
    ),
    proposal_waits: Counter::new(
        "openclaw_hub_ingest_proposal_waits_total",
        "Shipped batches that waited for their turn to be proposed",
    ),
};

impl HubMetrics {
    pub fn render(&self, out: &mut String) {
        for counter in [
            &self.sessions,
            &self.batches,
            &self.events,
            &self.bytes,
            &self.gaps,
            &self.fenced,
            &self.forbidden,
            &self.bad_batches,
            &self.proposal_waits,
        ] {
            counter.render(out);
        }
        for gauge in [
            &self.sessions_open,
            &self.proposals_in_flight,
            &self.proposals_in_flight_max,
            &self.proposals_waiting,
        ] {
            gauge.render(out);
        }
    }
}

impl Hub {
    pub async fn start(config: HubConfig) -> Result<Arc<Hub>, StartError> {
        let owned = config.hub.clone();
        let group = GroupNode::start(config.group_settings(), move |node| {
            let service: Arc<dyn ExternalService> = Arc::new(IngestService::new(node, owned));
            Some(service)
        })
        .await?;
        Ok(Arc::new(Hub { group, config }))
    }

    /// A client write to a promoted site's namespace (refused unless the hub is its writer).
    /// Idempotency-Keys are kept per site.
    pub async fn write_site(
        &self,
        site: &SiteId,
        op: Op,
        idempotency_key: Option<String>,
    ) -> Result<CommandResponse, OpError> {
        let key = idempotency_key.map(|k| format!("{site}\u{0}{k}"));
        let mut command = self.group.command(op, key, None);
        command.site = Some(site.to_string());
        self.group.write(command).await
    }

    pub async fn shutdown(&self) {
        self.group.shutdown().await;
    }
}
