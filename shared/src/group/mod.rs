//! One member of a Raft group — an edge node of a site, or a hub node of a hub group: opens
//! the store, starts Raft and the QUIC transport, and offers what a daemon's API needs —
//! writes (local or forwarded to the leader), linearizable read barriers, membership
//! changes — plus a clean shutdown. The daemons add their policy on top (client API, the
//! shipper at the edge, ingest at the hub) and never reimplement this.

mod batcher;
mod forward;
mod leader_contact;
mod log_retention;
mod proposer;
mod read_rounds;
mod rpc;
pub mod supervise;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use quinn::{RecvStream, SendStream};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ReadPolicy, ServerState, SnapshotPolicy};
use tracing::{info, warn};

use self::forward::Forwarder;
use self::leader_contact::{LeaderContact, DEPOSED_LEADER_ANSWER_WAIT};
use self::proposer::Proposer;
use self::rpc::RpcService;
use crate::config::{RaftSection, SiteId, StorageSection, TlsSection};
use crate::identity::NodeIdentity;
use crate::in_flight::InFlight;
use crate::limits::{FORWARD_BATCH_ITEM_MAX_BYTES, MAX_GROUP_SIZE};
use crate::metrics::GROUP;
use crate::network::NetworkFactory;
use crate::store::{LogStore, StateMachine, StateReader, Store};
use crate::tls::TlsMaterial;
use crate::transport::{Transport, TransportTiming};
use crate::types::{
    Command, CommandResponse, IdempotencyKey, NodeAddr, NodeId, Op, Raft, TypeConfig,
};
use crate::wire::{AdminOp, AdminResult, RemoteError, Request, Response};

/// What a group member needs to know to start, whatever daemon runs it.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// Who this node is: role, site (edge) or hub group name (hub), node id.
    pub identity: NodeIdentity,
    pub data_dir: PathBuf,
    pub raft: RaftSection,
    pub storage: StorageSection,
    pub tls: TlsSection,
    /// Initialise a new group from `members` when the store is empty.
    pub bootstrap: bool,
    pub members: BTreeMap<NodeId, NodeAddr>,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    pub idempotency_window: Duration,
}

impl GroupSettings {
    /// Settings from the config sections every group member has.
    pub fn from_sections(
        identity: NodeIdentity,
        data_dir: PathBuf,
        sections: &crate::config::GroupSections<'_>,
    ) -> Self {
        GroupSettings {
            identity,
            data_dir,
            raft: sections.raft.clone(),
            storage: sections.storage.clone(),
            tls: sections.tls.clone(),
            bootstrap: sections.cluster.bootstrap,
            members: sections
                .cluster
                .members
                .iter()
                .map(|m| (m.id, m.addr()))
                .collect(),
            write_timeout: sections.api.write_timeout.0,
            read_timeout: sections.api.read_timeout.0,
            idempotency_window: sections.api.idempotency_window.0,
        }
    }
}

/// Requests from peers outside the group (edge shippers at a hub), served on the group's
/// QUIC endpoint beside Raft. Group-internal requests are never passed here.
pub trait ExternalService: Send + Sync + 'static {
    /// Whether a peer that is not a member of this group may connect at all.
    fn admits(&self, peer: &NodeIdentity) -> bool;
    /// Serves one streaming request from such a peer.
    fn serve_stream(
        &self,
        peer: NodeIdentity,
        request: Request,
        recv: RecvStream,
        send: SendStream,
    ) -> BoxFuture<'static, crate::transport::StreamEnd>;
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why an operation was not carried out; each maps to one HTTP status.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OpError {
    #[error("no leader is known; the group may have lost its quorum")]
    NoLeader,
    /// Not carried out, and known not to be: safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// The request may or may not have been carried out (the leader changed or went silent
    /// after it was sent). Writes are not retried internally: the client retries, with its
    /// Idempotency-Key if it needs exactly-once.
    #[error(
        "{0}; the write may or may not have been applied (retry with the same Idempotency-Key)"
    )]
    OutcomeUnknown(String),
    #[error("timed out after {0:?}; the write may or may not have been applied (retry with the same Idempotency-Key)")]
    WriteTimeout(Duration),
    #[error("timed out after {0:?} confirming the leader for a linearizable read")]
    ReadTimeout(Duration),
    #[error("{0}")]
    Rejected(String),
    /// Raft has stopped (the node is shutting down): nothing more will be carried out here.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl From<RemoteError> for OpError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NotLeader { .. } => OpError::NoLeader,
            RemoteError::Unavailable(m) => OpError::Unavailable(m),
            RemoteError::OutcomeUnknown(m) => OpError::OutcomeUnknown(m),
            RemoteError::Rejected(m) | RemoteError::Forbidden(m) => OpError::Rejected(m),
        }
    }
}

/// What a failed proposal means for its writes. `ForwardToLeader` refuses it before its
/// entry is appended: never carried out, safe to retry (`GroupNode::write` does). An entry
/// appended and then dropped from this node's log (`LogEntryDiscarded`: truncated by a new
/// leader, or purged under a snapshot that may well contain it) may still commit, or already
/// has: retrying it here would apply the write twice, so its writers are told the outcome is
/// unknown.
fn client_write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> OpError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => OpError::NoLeader,
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => OpError::OutcomeUnknown(
            "the leader changed before this write's log entry was known to commit".into(),
        ),
        // Raft stopped (shut down, or halted by a storage failure) after the write reached
        // it: its entry may have been appended, and replicated, and commit under the next
        // leader. `write_local` refuses before proposing once Raft has stopped.
        RaftError::Fatal(_) => OpError::OutcomeUnknown(
            "this node's Raft stopped before the write was known to commit".into(),
        ),
        e => OpError::Unavailable(e.to_string()),
    }
}

/// Time to wait for a leader to appear before retrying a forwarded request.
const LEADER_WAIT: Duration = Duration::from_millis(500);
/// Longest a departing leader waits for its successor on shutdown.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one forwarded RPC to the leader (the whole write has `write_timeout`).
const FORWARD_RPC_TIMEOUT: Duration = Duration::from_secs(10);
// The wait for a replaced leader's answer cuts a forward short, never lengthens it.
const _: () = assert!(DEPOSED_LEADER_ANSWER_WAIT.as_millis() < FORWARD_RPC_TIMEOUT.as_millis());

pub struct GroupNode {
    pub settings: GroupSettings,
    pub id: NodeId,
    pub raft: Raft<StateMachine>,
    pub reader: StateReader,
    pub store: Store,
    pub transport: Arc<Transport>,
    /// Stamps `Command.elapsed_ms` on this node's proposals.
    retention_clock: RetentionClock,
    /// Writes this node forwards to the leader, in batches.
    forwarder: Forwarder,
    proposer: Proposer,
    /// Linearizable reads on this node, in shared read-index rounds.
    read_rounds: read_rounds::ReadRounds,
    /// When this node last heard from each recent leader (the one it forwards to among them).
    leader_contact: LeaderContact,
    /// Writes other members forwarded here that are not answered yet.
    forwarded_writes: Arc<InFlight>,
}

/// This node's reading of the group's retention clock: the applied clock it last saw grow,
/// plus monotonic time since. Wall clock jumps do not move it; a node that was down reads
/// low until the applied clock (which only takes the largest reading) passes it again, so
/// records are kept longer, never shorter.
pub struct RetentionClock {
    anchor: std::sync::Mutex<(u64, std::time::Instant)>,
}

impl RetentionClock {
    pub fn new(applied_ms: u64) -> Self {
        RetentionClock {
            anchor: std::sync::Mutex::new((applied_ms, std::time::Instant::now())),
        }
    }

    /// The reading now, given the applied clock.
    pub fn reading(&self, applied_ms: u64) -> u64 {
        let Ok(mut anchor) = self.anchor.lock() else {
            return applied_ms;
        };
        let estimate = anchor
            .0
            .saturating_add(anchor.1.elapsed().as_millis().min(u64::MAX as u128) as u64);
        if applied_ms > estimate {
            *anchor = (applied_ms, std::time::Instant::now());
            return applied_ms;
        }
        estimate
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn raft_config(raft: &RaftSection, site: &str) -> Result<openraft::Config, StartError> {
    let heartbeat = raft.heartbeat_interval.0.as_millis() as u64;
    let election_min = raft.election_timeout.0.as_millis() as u64;
    let election_max = raft.election_timeout_max().as_millis() as u64;
    openraft::Config {
        cluster_name: format!("openclaw-{site}"),
        heartbeat_interval: heartbeat,
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(raft.snapshot_every_entries),
        max_in_snapshot_log_to_keep: raft.log_entries_kept_after_snapshot,
        install_snapshot_timeout: 60_000,
        enable_pre_vote: Some(true),
        // A restarted leader must not resume its old term: log entries it had appended but
        // not yet fsynced are gone after a power cut, yet a follower may hold them durably.
        // Resuming the term, it would write different entries at the same (term, index),
        // which the follower takes for the ones it has (Log Matching broken: replicas
        // diverge, acknowledged writes vanish). Found by the fault rig's power cuts; an
        // election after a leader restart costs one election timeout.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))
}

impl GroupNode {
    /// Opens the store, starts Raft and serves peers: members of the group, plus whoever
    /// `external` (made once the node exists) admits.
    pub async fn start(
        settings: GroupSettings,
        external: impl FnOnce(&Arc<GroupNode>) -> Option<Arc<dyn ExternalService>>,
    ) -> Result<Arc<GroupNode>, StartError> {
        let id = settings.identity.node_id;
        let store = Store::open(&settings.data_dir, &settings.storage)?;
        let (machine, reader) = StateMachine::open(store.clone())?;
        let tls = TlsMaterial::load(&settings.tls)?;
        let transport = Transport::bind(
            settings.raft.listen,
            &tls,
            settings.identity.clone(),
            TransportTiming {
                keep_alive: settings.raft.keep_alive.0,
                idle_timeout: settings.raft.idle_timeout.0,
                handshake_timeout: crate::transport::HANDSHAKE_TIMEOUT,
            },
        )?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config(
                &settings.raft,
                &settings.identity.site.to_string(),
            )?),
            NetworkFactory::new(transport.clone(), settings.identity.clone()),
            LogStore::new(store.clone()),
            machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let retention_clock = RetentionClock::new(reader.retention_ms());
        let node = Arc::new_cyclic(|node| GroupNode {
            settings,
            id,
            raft,
            reader,
            store,
            transport: transport.clone(),
            retention_clock,
            forwarder: Forwarder::start(node.clone()),
            proposer: Proposer::start(node.clone()),
            read_rounds: read_rounds::ReadRounds::default(),
            leader_contact: LeaderContact::default(),
            forwarded_writes: Arc::default(),
        });
        log_retention::start(
            Arc::downgrade(&node),
            node.store.log_sizes.clone(),
            log_retention::Limits {
                bytes: node.store.log_budget,
                min_entries: node
                    .settings
                    .raft
                    .log_entries_kept_after_snapshot
                    .min(log_retention::MIN_ENTRIES_KEPT),
            },
        );
        let external = external(&node);
        let service = RpcService::new(node.clone(), external.clone());
        let own = node.settings.identity.clone();
        transport.serve(
            Arc::new(service),
            Arc::new(move |peer: &NodeIdentity| {
                own.same_group(peer) || external.as_ref().is_some_and(|e| e.admits(peer))
            }),
        );
        node.bootstrap().await?;
        Ok(node)
    }

    async fn bootstrap(&self) -> Result<(), StartError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !self.settings.bootstrap || initialized {
            return Ok(());
        }
        let members: BTreeMap<NodeId, NodeAddr> = self.settings.members.clone();
        info!(members = ?members.keys().collect::<Vec<_>>(), "initialising a new group");
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another member's initialisation reached us first: same group, nothing to do.
            Err(RaftError::APIError(e)) => {
                info!(reason = %e, "group already initialised");
                Ok(())
            }
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    /// A copy of Raft's current metrics (role, leader, term, membership, progress).
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.with_raft_metrics(Clone::clone)
    }

    /// Whether this node's Raft has stopped (shut down, or halted by a fatal error): it
    /// proposes, forwards and follows nothing any more.
    fn raft_stopped(&self) -> bool {
        self.with_raft_metrics(|m| m.state == ServerState::Shutdown || m.running_state.is_err())
    }

    /// `read` of Raft's current metrics, without copying them (the write and read paths
    /// look at one field per request; a copy holds the membership and replication maps).
    fn with_raft_metrics<T>(
        &self,
        read: impl FnOnce(&openraft::RaftMetrics<TypeConfig>) -> T,
    ) -> T {
        use openraft::async_runtime::watch::WatchReceiver;
        read(&self.raft.metrics().borrow_watched())
    }

    /// The site (edge) or hub group name (hub) this group serves.
    pub fn site(&self) -> &SiteId {
        &self.settings.identity.site
    }

    /// Builds the command for a client write.
    pub fn command(
        &self,
        op: Op,
        idempotency_key: Option<String>,
        backlog_limit: Option<u64>,
    ) -> Command {
        Command {
            proposed_ms: now_ms(),
            elapsed_ms: self.retention_clock.reading(self.reader.retention_ms()),
            idempotency: idempotency_key.map(|key| IdempotencyKey {
                key,
                window_secs: self
                    .settings
                    .idempotency_window
                    .as_secs()
                    .min(u32::MAX as u64) as u32,
            }),
            backlog_limit,
            site: None,
            op,
        }
    }

    fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        self.with_raft_metrics(|metrics| {
            let leader = metrics.current_leader?;
            let addr = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .cloned()?;
            Some((leader, addr))
        })
    }

    async fn wait_for_leader(&self, not: Option<NodeId>) {
        let _ = self
            .raft
            .wait(Some(LEADER_WAIT))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != not,
                "leader known",
            )
            .await;
    }

    /// Returns once `leader` is no longer the leader this node knows. Watches Raft's server
    /// metrics, which change with the vote, the leader, the role or the membership only: a
    /// wait on the full metrics woke every forwarded request in flight for each log entry.
    async fn leader_is_not(&self, leader: NodeId) {
        use openraft::async_runtime::watch::WatchReceiver;
        let mut server = self.raft.server_metrics();
        while server.borrow_watched().current_leader == Some(leader) {
            if server.changed().await.is_err() {
                // Raft stopped: nobody leads for this node any more.
                return;
            }
        }
    }

    /// Sends `request` to the current leader; `Ok(None)` when this node is the leader.
    ///
    /// When the leader it sent to is replaced, a leader this node heard from just before
    /// (it handed over, and lives on) is given `DEPOSED_LEADER_ANSWER_WAIT` to answer; a
    /// leader silent for longer (dead, or cut off) is given up on at once. Either way, a
    /// request left without an answer has an unknown outcome.
    async fn to_leader(&self, request: &Request) -> Result<Option<Response>, OpError> {
        if self.raft_stopped() {
            // Its last known leader may lead still, but nothing here watches for a change
            // any more: send nothing.
            return Err(OpError::ShuttingDown);
        }
        let Some((leader, addr)) = self.leader() else {
            self.wait_for_leader(None).await;
            return Err(OpError::NoLeader);
        };
        if leader == self.id {
            return Ok(None);
        }
        let peer = self.settings.identity.peer(leader);
        // Nothing is sent before the connection is up: a leader replaced while this node
        // still dials it never saw the request, which its successor can take.
        let connect = tokio::time::timeout(
            FORWARD_RPC_TIMEOUT,
            self.transport.connection(&peer, &addr.raft),
        );
        let connected = tokio::select! {
            biased;
            connected = connect => connected,
            _ = self.leader_is_not(leader) => return Err(OpError::NoLeader),
        };
        let not_connected = match connected {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no connection in {FORWARD_RPC_TIMEOUT:?}")),
        };
        if let Some(why) = not_connected {
            self.wait_for_leader(Some(leader)).await;
            return Err(OpError::Unavailable(format!(
                "leader {leader} unreachable: {why}"
            )));
        }
        let call = self
            .transport
            .call(&peer, &addr.raft, request, FORWARD_RPC_TIMEOUT);
        tokio::pin!(call);
        let deposed = self.leader_is_not(leader);
        let result = tokio::select! {
            // An answer that arrived with the news of a new leader is still the answer.
            biased;
            result = &mut call => result,
            _ = deposed => {
                if self.raft_stopped() {
                    return Err(OpError::OutcomeUnknown(format!(
                        "this node stopped while leader {leader} held the request"
                    )));
                }
                if !self.leader_contact.heard_within(leader, self.dead_leader_silence()) {
                    return Err(OpError::OutcomeUnknown(format!(
                        "leader {leader} was replaced while it held the request"
                    )));
                }
                match tokio::time::timeout(DEPOSED_LEADER_ANSWER_WAIT, call).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(OpError::OutcomeUnknown(format!(
                            "leader {leader} handed over and did not answer within \
                             {DEPOSED_LEADER_ANSWER_WAIT:?}"
                        )))
                    }
                }
            }
        };
        match result {
            Ok(Response::Error(RemoteError::NotLeader { .. })) => {
                self.wait_for_leader(Some(leader)).await;
                Err(OpError::NoLeader)
            }
            Ok(response) => Ok(Some(response)),
            Err(e) if e.is_unreachable() => {
                // Never reached the leader: wait a little for a new one, then retry.
                self.wait_for_leader(Some(leader)).await;
                Err(OpError::Unavailable(format!(
                    "leader {leader} unreachable: {e}"
                )))
            }
            Err(e) => Err(OpError::OutcomeUnknown(format!(
                "forward to leader {leader} failed: {e}"
            ))),
        }
    }

    /// The silence after which a replaced leader is taken for dead: none can be replaced
    /// sooner than `election_timeout_min` after it last reached its followers (their lease
    /// on it, unless it handed over and lifted the lease itself).
    fn dead_leader_silence(&self) -> Duration {
        Duration::from_millis(self.raft.config().election_timeout_min)
    }

    /// Returns once no write forwarded by another member is being served here: a departing
    /// leader answers them (they commit under its successor) before its Raft stops.
    pub async fn forwarded_writes_answered(&self) {
        self.forwarded_writes.idle().await
    }

    /// Replicates a write through the leader and returns what applying it did.
    /// A retry after Raft stopped ends at once: `to_leader` and `write_local` refuse with
    /// `ShuttingDown`, which is not retried.
    pub async fn write(&self, command: Command) -> Result<CommandResponse, OpError> {
        let timeout = self.settings.write_timeout;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(timeout, async {
            loop {
                match self.write_once(&command).await {
                    Err(OpError::NoLeader | OpError::Unavailable(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap_or(Err(OpError::WriteTimeout(timeout)));
        GROUP.write_latency.observe(started.elapsed());
        if result.is_ok() {
            GROUP.commits.inc();
        }
        result
    }

    async fn write_once(&self, command: &Command) -> Result<CommandResponse, OpError> {
        if self.is_leader() {
            return self.write_here(command).await;
        }
        if command.approx_encoded_bytes() <= FORWARD_BATCH_ITEM_MAX_BYTES {
            return self.forwarder.write(command.clone()).await;
        }
        GROUP.forwarded_batches.inc();
        match self
            .to_leader(&Request::ClientWrite(command.clone()))
            .await?
        {
            None => self.write_here(command).await,
            Some(Response::ClientWrite(response)) => {
                GROUP.forwarded_writes.inc();
                Ok(response)
            }
            Some(Response::Error(e)) => Err(e.into()),
            Some(other) => Err(OpError::Unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.with_raft_metrics(|m| m.current_leader == Some(self.id))
    }

    /// `write_local` for `write`'s retries. When this node's own Raft core refuses the
    /// proposal (no quorum has acknowledged it within its lease: it is cut off, or so newly
    /// elected that its first acknowledgements are on their way; or it is handing over), the
    /// next try waits for a quorum's next acknowledgement or a change of leader, at most a
    /// heartbeat interval. Trying again at once spun a cut-off leader's cores for the whole
    /// `write_timeout`: over 3 s of CPU in 3 s with one write waiting.
    async fn write_here(&self, command: &Command) -> Result<CommandResponse, OpError> {
        let acked = self.with_raft_metrics(|m| m.last_quorum_acked);
        let result = self.write_local(command.clone()).await;
        if matches!(result, Err(OpError::NoLeader)) {
            let heartbeat = Duration::from_millis(self.raft.config().heartbeat_interval);
            let _ = self
                .raft
                .wait(Some(heartbeat))
                .metrics(
                    |m| m.current_leader != Some(self.id) || m.last_quorum_acked != acked,
                    "a quorum's acknowledgement or a new leader",
                )
                .await;
        }
        result
    }

    /// Proposes on this node (which believes it leads): a blind write in a batch entry with
    /// the other blind writes waiting (`proposer.rs`), any other command as its own entry.
    pub async fn write_local(&self, command: Command) -> Result<CommandResponse, OpError> {
        if self.raft_stopped() {
            // Not proposed: a forwarding follower may try it at the next leader.
            return Err(OpError::ShuttingDown);
        }
        self.proposer.propose(self, command).await
    }

    /// Proposes `command` as one log entry on this node.
    async fn client_write(&self, command: Command) -> Result<CommandResponse, OpError> {
        self.raft
            .client_write(command)
            .await
            .map(|response| response.data)
            .map_err(client_write_error)
    }

    /// The log index a linearizable read must wait for, confirmed by a quorum (leader only).
    pub async fn read_index_local(&self) -> Result<u64, OpError> {
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read_log_id, _applied)) => Ok(read_log_id.index()),
            Err(RaftError::APIError(_)) => Err(OpError::NoLeader),
            Err(RaftError::Fatal(_)) => Err(OpError::ShuttingDown),
        }
    }

    /// The read index from the leader (this node or, forwarded, the one it follows).
    async fn read_index(&self) -> Result<u64, OpError> {
        if self.is_leader() {
            return self.read_index_local().await;
        }
        match self.to_leader(&Request::ReadIndex).await {
            Ok(None) => self.read_index_local().await,
            Ok(Some(Response::ReadIndex(index))) => Ok(index),
            Ok(Some(Response::Error(e))) => Err(e.into()),
            Ok(Some(other)) => Err(OpError::Unavailable(format!("unexpected reply {other:?}"))),
            Err(e) => Err(e),
        }
    }

    /// Returns once this node's state includes every write acknowledged before the call
    /// (its read index from a round shared with the reads arriving alongside,
    /// `read_rounds.rs`).
    pub async fn linearize(&self) -> Result<(), OpError> {
        let timeout = self.settings.read_timeout;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(timeout, async {
            loop {
                let index = self.read_rounds.read_index(|| self.read_index()).await;
                match index {
                    Ok(index) => {
                        let waited = self
                            .raft
                            .wait(None)
                            .applied_index_at_least(Some(index), "linearizable read")
                            .await;
                        return waited
                            .map(|_| ())
                            .map_err(|e| OpError::Unavailable(e.to_string()));
                    }
                    // Reads change nothing: any failure short of a rejection is retried.
                    Err(
                        OpError::NoLeader | OpError::Unavailable(_) | OpError::OutcomeUnknown(_),
                    ) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .unwrap_or(Err(OpError::ReadTimeout(timeout)));
        GROUP.read_barrier_latency.observe(started.elapsed());
        result
    }

    /// Runs a membership or maintenance operation at the leader.
    pub async fn admin(&self, op: AdminOp) -> Result<AdminResult, OpError> {
        let timeout = Duration::from_secs(60);
        tokio::time::timeout(timeout, async {
            loop {
                let attempt = if self.is_leader() {
                    self.admin_local(op.clone()).await
                } else {
                    match self.to_leader(&Request::Admin(op.clone())).await {
                        Ok(None) => self.admin_local(op.clone()).await,
                        Ok(Some(Response::Admin(result))) => Ok(result),
                        Ok(Some(Response::Error(e))) => Err(e.into()),
                        Ok(Some(other)) => {
                            Err(OpError::Unavailable(format!("unexpected reply {other:?}")))
                        }
                        Err(e) => Err(e),
                    }
                };
                match attempt {
                    Err(OpError::NoLeader) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap_or(Err(OpError::Unavailable(format!(
            "timed out after {timeout:?}"
        ))))
    }

    /// Carries out an admin operation on this node, which must be the leader.
    pub async fn admin_local(&self, op: AdminOp) -> Result<AdminResult, OpError> {
        let unavailable = |e: String| OpError::Unavailable(e);
        let done = |log_index: Option<u64>| Ok(AdminResult::Done { log_index });
        let membership = self.raft_metrics().membership_config.clone();
        match op {
            AdminOp::AddLearner { id, addr } => {
                if membership.membership().nodes().count() >= MAX_GROUP_SIZE
                    && membership.membership().get_node(&id).is_none()
                {
                    return Err(OpError::Rejected(format!(
                        "the group has {MAX_GROUP_SIZE} members already (the maximum)"
                    )));
                }
                info!(node = id, %addr, "adding learner");
                let r = self
                    .raft
                    .add_learner(id, addr, true)
                    .await
                    .map_err(map_membership_error)?;
                done(Some(r.log_id.index))
            }
            AdminOp::Promote { id } => {
                if membership.membership().get_node(&id).is_none() {
                    return Err(OpError::Rejected(format!(
                        "node {id} is not a member; add it first"
                    )));
                }
                info!(node = id, "promoting to voter");
                let r = self
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(map_membership_error)?;
                done(Some(r.log_id.index))
            }
            AdminOp::Remove { id } => {
                let is_voter = membership.membership().voter_ids().any(|v| v == id);
                let is_member = membership.membership().get_node(&id).is_some();
                if !is_member {
                    return Err(OpError::Rejected(format!("node {id} is not a member")));
                }
                info!(node = id, "removing member");
                let mut last = None;
                if is_voter {
                    let r = self
                        .raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_membership_error)?;
                    last = Some(r.log_id.index);
                }
                let still_member = self
                    .raft_metrics()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .is_some();
                if still_member {
                    let r = self
                        .raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_membership_error)?;
                    last = Some(r.log_id.index);
                }
                done(last)
            }
            AdminOp::Snapshot => {
                self.raft
                    .trigger()
                    .snapshot()
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                done(None)
            }
            AdminOp::TransferLeader { to } => {
                if !membership.membership().voter_ids().any(|v| v == to) {
                    return Err(OpError::Rejected(format!("node {to} is not a voter")));
                }
                self.raft
                    .trigger()
                    .transfer_leader(to)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                done(None)
            }
        }
    }

    /// Hands leadership to another voter (if this node leads), then stops Raft, makes the
    /// store durable and closes connections.
    pub async fn shutdown(&self) {
        self.hand_over_leadership().await;
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
        if let Err(e) = self.store.flush().await {
            warn!(error = %e, "final flush failed");
        }
        self.transport.shutdown().await;
    }

    /// The first step of a shutdown: if this node leads, hands leadership to the voter
    /// furthest along and waits (at most `HANDOVER_TIMEOUT`) until another node leads. The
    /// daemon takes it before it stops taking requests, so writes keep flowing (forwarded
    /// to the successor) while it drains them (`operator::serve_until_signal`).
    pub async fn hand_over_leadership(&self) {
        let metrics = self.raft_metrics();
        if metrics.state == ServerState::Leader {
            let successor = metrics
                .membership_config
                .membership()
                .voter_ids()
                .filter(|v| *v != self.id)
                .max_by_key(|v| {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(v).cloned().flatten())
                        .map(|log_id| log_id.index)
                });
            if let Some(to) = successor {
                info!(to, "handing leadership over before shutdown");
                if self.raft.trigger().transfer_leader(to).await.is_ok() {
                    let handed = self
                        .raft
                        .wait(Some(HANDOVER_TIMEOUT))
                        .metrics(
                            |m| m.current_leader.is_some_and(|l| l != self.id),
                            "handover",
                        )
                        .await;
                    if handed.is_err() {
                        warn!("no successor took over in {HANDOVER_TIMEOUT:?}; stopping anyway");
                    }
                }
            }
        }
    }
}

fn map_membership_error<E: std::fmt::Display>(e: RaftError<TypeConfig, E>) -> OpError {
    match e {
        RaftError::APIError(e) => {
            let text = e.to_string();
            if text.contains("forward") || text.contains("Forward") {
                OpError::NoLeader
            } else {
                OpError::Rejected(text)
            }
        }
        RaftError::Fatal(e) => OpError::Unavailable(e.to_string()),
    }
}

/// Renders this member's metrics: the shared counters and histograms, then Raft's state.
pub fn render_metrics(node: &GroupNode, out: &mut String) {
    use std::fmt::Write as _;
    crate::metrics::SHARED.render(out);
    crate::http::HTTP_REQUESTS.render(out);
    let m = node.raft_metrics();
    let is_leader = u8::from(m.current_leader == Some(node.id));
    let memory = node.store.memory();
    let gauges: [(&str, &str, u64); 9] = [
        ("openclaw_raft_term", "Current Raft term", m.current_term),
        (
            "openclaw_raft_is_leader",
            "1 if this node leads its group",
            u64::from(is_leader),
        ),
        (
            "openclaw_raft_leader_id",
            "Leader's node id (0: none known)",
            m.current_leader.unwrap_or(0),
        ),
        (
            "openclaw_raft_applied_index",
            "Last applied log index",
            m.last_applied.as_ref().map_or(0, |l| l.index),
        ),
        (
            "openclaw_applied_seq",
            "Seq of the last applied event",
            node.reader.applied_seq(),
        ),
        (
            "openclaw_disk_bytes",
            "Bytes the store occupies on disk",
            node.store.disk_bytes(),
        ),
        (
            "openclaw_store_memtable_bytes",
            "Bytes in the store's memtables, active and waiting to be flushed",
            memory.memtable_bytes,
        ),
        (
            "openclaw_store_block_cache_bytes",
            "Bytes in the store's block cache",
            memory.block_cache_bytes,
        ),
        (
            "openclaw_store_pending_flushes",
            "Sealed memtables waiting to be flushed",
            memory.pending_flushes,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            *out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{ClientWriteError, Fatal, ForwardToLeader, RaftError};

    use super::{client_write_error, OpError, RetentionClock};

    /// A proposal refused before its entry was appended is retried; one whose entry was
    /// appended and then dropped from this node's log may have committed, and is not.
    #[test]
    fn only_proposals_known_not_to_have_been_appended_are_retried() {
        let refused = client_write_error(RaftError::APIError(ClientWriteError::ForwardToLeader(
            ForwardToLeader::empty(),
        )));
        assert!(matches!(refused, OpError::NoLeader), "{refused:?}");
        let discarded = client_write_error(RaftError::APIError(
            ClientWriteError::LogEntryDiscarded(ForwardToLeader::empty()),
        ));
        assert!(
            matches!(discarded, OpError::OutcomeUnknown(_)),
            "{discarded:?}"
        );
        // Raft stopped under a write it had taken: it may have appended it. Answered as
        // unknown, so a forwarding follower does not try it again at the next leader.
        let stopped = client_write_error(RaftError::Fatal(Fatal::Stopped));
        assert!(matches!(stopped, OpError::OutcomeUnknown(_)), "{stopped:?}");
        let remote = super::rpc::remote_error(stopped);
        assert!(
            matches!(OpError::from(remote), OpError::OutcomeUnknown(_)),
            "the forwarded answer stays unknown"
        );
    }

    /// The power-cut regression (see `raft_config`): a leader that restarts stands for a new
    /// election instead of resuming a term whose unsynced tail it may have lost.
    #[test]
    fn a_restarted_leader_does_not_resume_its_term() {
        let raft: crate::config::RaftSection =
            toml::from_str("listen = \"127.0.0.1:7001\"\nadvertise = \"127.0.0.1:7001\"")
                .expect("raft section");
        let config = super::raft_config(&raft, "site-1").expect("config");
        assert_eq!(config.enable_leader_restore, Some(false));
    }

    #[test]
    fn retention_clock_takes_the_larger_of_applied_and_monotonic_time() {
        let clock = RetentionClock::new(100);
        assert!(clock.reading(0) >= 100, "never below its anchor");
        // Another node's larger reading, once applied, becomes the new anchor.
        assert_eq!(clock.reading(10_000), 10_000);
        let later = clock.reading(0);
        assert!(later >= 10_000, "{later}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            clock.reading(0) >= later + 20,
            "advances with monotonic time"
        );
    }
}
