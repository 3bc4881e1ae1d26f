//! Config sections shared by both daemons, and the one TOML loader.
//!
//! Parsing is strict: unknown keys are errors, sizes and durations take units, and every
//! error names the file and the key. Product-specific composition (which sections a daemon
//! has, and cross-field rules) lives in each daemon's own `config` module.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::limits::{MAX_GROUP_SIZE, MAX_HTTP_BODY_BYTES, MIN_IDEMPOTENCY_WINDOW_SECS};
use crate::types::{NodeAddr, NodeId};
use crate::units::{parse_duration, parse_size};

/// A config file could not be read or is invalid. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// (The IO error is part of the message, not a `source`, so it is printed once.)
    #[error("cannot read config {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Reads and parses a TOML file into `T` (which should be `deny_unknown_fields`).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// A byte size written with a unit in config (`"64MiB"`), or a bare integer of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t).map(ByteSize).map_err(D::Error::custom),
        }
    }
}

/// A duration written with a unit in config (`"150ms"`, `"10m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(D::Error::custom)
    }
}

/// A site id: `[a-z0-9-]{1,32}` (DESIGN.md §1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SiteId(String);

impl SiteId {
    pub const MAX_LEN: usize = crate::limits::MAX_SITE_ID_BYTES;

    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(SiteId(text.to_owned()))
        } else {
            Err(format!("`{text}` is not a site id ([a-z0-9-]{{1,32}})"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SiteId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SiteId::parse(&text).map_err(D::Error::custom)
    }
}

/// `[node]`: who this process is and where it keeps its state.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: u64,
    pub site: SiteId,
    pub data_dir: PathBuf,
    /// Threads that run the node's network, Raft and HTTP work; 0: one per CPU core.
    #[serde(default)]
    pub runtime_threads: usize,
}

/// `[raft]`: the consensus transport and timing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// QUIC bind address.
    pub listen: SocketAddr,
    /// Address peers dial; defaults to `listen` (differs behind NAT or a relay).
    pub advertise: Option<SocketAddr>,
    #[serde(default = "defaults::heartbeat_interval")]
    pub heartbeat_interval: HumanDuration,
    /// Lower bound of the randomized election timeout.
    #[serde(default = "defaults::election_timeout")]
    pub election_timeout: HumanDuration,
    /// Upper bound of the randomized election timeout; by default
    /// `election_timeout` × [`ELECTION_TIMEOUT_MAX_PER_MIN`]. openraft also uses it as the
    /// leader lease a follower waits out before its election timer starts, so a follower
    /// campaigns `max + [min, max]` after the last heartbeat it heard: that sum is the
    /// failover time.
    pub election_timeout_max: Option<HumanDuration>,
    #[serde(default = "defaults::snapshot_every_entries")]
    pub snapshot_every_entries: u64,
    #[serde(default = "defaults::log_entries_kept_after_snapshot")]
    pub log_entries_kept_after_snapshot: u64,
    /// QUIC keep-alive: below the shortest NAT UDP timeout on the path.
    #[serde(default = "defaults::keep_alive")]
    pub keep_alive: HumanDuration,
    /// A peer silent this long is disconnected (and redialled on next use).
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
}

/// Default upper bound of the election timeout over its lower bound: a window as wide as the
/// lower bound keeps two followers' timers (which fire on openraft's ticks, ~heartbeat/5
/// apart) from coinciding, so split votes stay rare.
pub const ELECTION_TIMEOUT_MAX_PER_MIN: u32 = 2;

impl RaftSection {
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// The randomized election timeout's upper bound (configured, or derived from the lower).
    pub fn election_timeout_max(&self) -> Duration {
        match self.election_timeout_max {
            Some(max) => max.0,
            None => self.election_timeout.0 * ELECTION_TIMEOUT_MAX_PER_MIN,
        }
    }
}

/// `[tls]`: the deployment CA and this node's certificate (mutual TLS on every QUIC link).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[http]`: the client API listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(default = "defaults::http_listen")]
    pub listen: SocketAddr,
}

/// `[storage]`: fjall memory and disk budget (defaults fit a 256 MiB gateway).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default = "defaults::cache_size")]
    pub cache_size: ByteSize,
    /// Each written keyspace's memtable; unset, the daemon's default
    /// (`NodeConfig::DEFAULT_MEMTABLE_SIZE`: small on a gateway, larger on a hub).
    #[serde(default)]
    pub memtable_size: Option<ByteSize>,
    #[serde(default = "defaults::journal_size")]
    pub max_journal_size: ByteSize,
    #[serde(default = "defaults::worker_threads")]
    pub worker_threads: usize,
    /// Acknowledge writes without waiting for fsync (etcd's `--unsafe-no-fsync`): a power
    /// cut then loses acknowledged writes. Only for the fault rig's negative control, which
    /// must catch exactly that; never on a gateway.
    #[serde(default)]
    pub unsafe_no_fsync: bool,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            cache_size: defaults::cache_size(),
            memtable_size: None,
            max_journal_size: defaults::journal_size(),
            worker_threads: defaults::worker_threads(),
            unsafe_no_fsync: false,
        }
    }
}

/// Most threads `node.runtime_threads` may ask for: beyond the cores of any gateway or hub
/// node, more only adds wakeups between them.
pub const MAX_RUNTIME_THREADS: usize = 64;

/// fjall panics on journals below this size (DEPENDENCIES.md §2).
pub const MIN_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

impl StorageSection {
    /// `memtable_size`, or the gateway default where no daemon filled it in (tools, tests).
    pub fn memtable_bytes(&self) -> u64 {
        self.memtable_size.unwrap_or(defaults::MEMTABLE_SIZE).0
    }

    /// Checks the values fjall would reject or that cannot fit a gateway.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.max_journal_size.0 < MIN_JOURNAL_BYTES {
            return Err(invalid(
                "storage.max_journal_size",
                format!("must be at least {}MiB", MIN_JOURNAL_BYTES >> 20),
            ));
        }
        if self.memtable_bytes() < 1 << 20 {
            return Err(invalid(
                "storage.memtable_size",
                "must be at least 1MiB".into(),
            ));
        }
        if !(1..=16).contains(&self.worker_threads) {
            return Err(invalid("storage.worker_threads", "must be 1..=16".into()));
        }
        Ok(())
    }
}

impl RaftSection {
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let heartbeat = self.heartbeat_interval.0;
        let election = self.election_timeout.0;
        if heartbeat.is_zero() {
            return Err(invalid("raft.heartbeat_interval", "must be > 0".into()));
        }
        if election < heartbeat * 3 {
            return Err(invalid(
                "raft.election_timeout",
                format!("must be at least 3x raft.heartbeat_interval ({heartbeat:?})"),
            ));
        }
        if self.election_timeout_max() <= election {
            return Err(invalid(
                "raft.election_timeout_max",
                format!("must be longer than raft.election_timeout ({election:?})"),
            ));
        }
        if self.snapshot_every_entries == 0 {
            return Err(invalid("raft.snapshot_every_entries", "must be > 0".into()));
        }
        if self.idle_timeout.0 <= self.keep_alive.0 {
            return Err(invalid(
                "raft.idle_timeout",
                "must be longer than raft.keep_alive".into(),
            ));
        }
        Ok(())
    }
}

/// Named defaults, each a documented choice.
pub mod defaults {
    use super::*;

    /// Heartbeats every 50 ms: several per election timeout, so a lossy site LAN must drop
    /// a run of them (to a majority: pre-vote) before anyone campaigns.
    pub fn heartbeat_interval() -> HumanDuration {
        HumanDuration(Duration::from_millis(50))
    }
    /// 150 ms, randomized to 300 ms. openraft first waits out the leader lease (the upper
    /// bound), so followers campaign 450–600 ms after the last heartbeat they heard, and a
    /// split vote costs one more timeout (≤ 900 ms): writes resume within 1 s of a leader's
    /// crash (openclaw-bench). A follower must hear nothing for 450 ms — hundreds of LAN
    /// round trips — before it even asks for votes.
    pub fn election_timeout() -> HumanDuration {
        HumanDuration(Duration::from_millis(150))
    }
    /// A snapshot is a view (no IO to build), and a batch entry holds up to 256 writes:
    /// 1,000 entries keep the log, and what of it the LSM flushes before a purge, small.
    pub fn snapshot_every_entries() -> u64 {
        1_000
    }
    /// Kept above the writes of one snapshot transfer (openraft #1706).
    pub fn log_entries_kept_after_snapshot() -> u64 {
        1_000
    }
    /// Below common NAT UDP timeouts (~30 s).
    pub fn keep_alive() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn idle_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(15))
    }
    pub fn http_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    /// fjall block cache: 8 MiB of a 256 MiB gateway. Misses are served from the OS's page
    /// cache; 16 MiB measured no faster in the bench's reads and held 8 MiB more RSS.
    pub fn cache_size() -> ByteSize {
        ByteSize(8 << 20)
    }
    /// Per-keyspace memtable on a gateway: small, several keyspaces share the budget.
    pub const MEMTABLE_SIZE: ByteSize = ByteSize(4 << 20);
    /// Per-keyspace memtable on a hub node (a cloud machine). Ingest writes each event to
    /// three keyspaces on every hub node; with the gateway's 4 MiB the many small flushes,
    /// their compactions and the log snapshots they pace (`LogByteBudget`) took ~40% of the
    /// hub's CPU per event (openclaw-ship-bench, docs/benchmarks.md 2026-12-07).
    pub const HUB_MEMTABLE_SIZE: ByteSize = ByteSize(32 << 20);
    pub fn journal_size() -> ByteSize {
        ByteSize(MIN_JOURNAL_BYTES)
    }
    pub fn worker_threads() -> usize {
        1
    }
}

/// `[cluster]`: how this node's group comes to be.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Initialise a new group from `members` when the store is empty.
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub members: Vec<MemberEntry>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub id: NodeId,
    pub raft: String,
    pub http: String,
}

impl MemberEntry {
    pub fn addr(&self) -> NodeAddr {
        NodeAddr {
            raft: self.raft.clone(),
            http: self.http.clone(),
        }
    }
}

/// `[api]`: client API behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// A write not committed within this is answered 503 (it may still commit: retry with
    /// the same Idempotency-Key).
    #[serde(default = "api_defaults::write_timeout")]
    pub write_timeout: HumanDuration,
    /// A linearizable read that cannot confirm the leader within this is answered 503.
    #[serde(default = "api_defaults::read_timeout")]
    pub read_timeout: HumanDuration,
    /// How long an Idempotency-Key is remembered (at least 10 minutes).
    #[serde(default = "api_defaults::idempotency_window")]
    pub idempotency_window: HumanDuration,
    /// Request body bytes buffered at once over all requests; requests beyond it wait for
    /// their turn (a memory bound: 1 MiB values × many clients would not fit a gateway).
    #[serde(default = "api_defaults::max_buffered_request_bytes")]
    pub max_buffered_request_bytes: ByteSize,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            write_timeout: api_defaults::write_timeout(),
            read_timeout: api_defaults::read_timeout(),
            idempotency_window: api_defaults::idempotency_window(),
            max_buffered_request_bytes: api_defaults::max_buffered_request_bytes(),
        }
    }
}

mod api_defaults {
    use super::*;
    pub fn write_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn read_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn idempotency_window() -> HumanDuration {
        HumanDuration(Duration::from_secs(MIN_IDEMPOTENCY_WINDOW_SECS))
    }
    pub fn max_buffered_request_bytes() -> ByteSize {
        ByteSize(32 * 1024 * 1024)
    }
}

/// The sections every group member's config has, borrowed from a daemon's own config type.
pub struct GroupSections<'a> {
    pub node_id: u64,
    pub runtime_threads: usize,
    pub raft: &'a RaftSection,
    pub storage: &'a StorageSection,
    pub http: &'a HttpSection,
    pub tls: &'a TlsSection,
    pub cluster: &'a ClusterSection,
    pub api: &'a ApiSection,
}

impl GroupSections<'_> {
    /// Checks every shared section and the rules between them.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        validate_group(path, self.node_id, self.cluster, self.api)?;
        if self.runtime_threads > MAX_RUNTIME_THREADS {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "node.runtime_threads".into(),
                message: format!("must be 0 (one per CPU core) to {MAX_RUNTIME_THREADS}"),
            });
        }
        self.raft.validate(path)?;
        self.storage.validate(path)?;
        validate_http(path, self.http)
    }
}

/// A daemon's whole config file: loaded strictly, validated, then its paths made absolute.
pub trait NodeConfig: DeserializeOwned {
    /// Every rule the file must satisfy (each error names its key).
    fn validate(&self, path: &Path) -> Result<(), ConfigError>;
    /// The data directory and TLS files, to resolve against the file's directory.
    fn paths_mut(&mut self) -> (&mut PathBuf, &mut TlsSection);
    /// `node.runtime_threads`: the async runtime's worker threads, 0 for one per CPU core.
    fn runtime_threads(&self) -> usize;
    /// `[storage]`, to fill in this daemon's defaults.
    fn storage_mut(&mut self) -> &mut StorageSection;
    /// `storage.memtable_size` when the file does not set it.
    const DEFAULT_MEMTABLE_SIZE: ByteSize;

    fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = load_toml(path)?;
        config
            .storage_mut()
            .memtable_size
            .get_or_insert(Self::DEFAULT_MEMTABLE_SIZE);
        config.validate(path)?;
        let (data_dir, tls) = config.paths_mut();
        resolve_node_paths(path, data_dir, tls);
        Ok(config)
    }
}

/// Makes the data directory and TLS files absolute against the config file's directory.
pub fn resolve_node_paths(config_path: &Path, data_dir: &mut PathBuf, tls: &mut TlsSection) {
    for p in [data_dir, &mut tls.ca, &mut tls.cert, &mut tls.key] {
        resolve_relative(config_path, p);
    }
}

/// Checks the sections every group member has: a node id, the bootstrap members, the API.
pub fn validate_group(
    path: &Path,
    node_id: u64,
    cluster: &ClusterSection,
    api: &ApiSection,
) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    if node_id == 0 {
        return Err(invalid("node.id", "must be >= 1".into()));
    }
    if cluster.bootstrap {
        if cluster.members.is_empty() {
            return Err(invalid(
                "cluster.members",
                "bootstrap = true needs the initial members".into(),
            ));
        }
        if cluster.members.len() > MAX_GROUP_SIZE {
            return Err(invalid(
                "cluster.members",
                format!(
                    "{} members; a group has at most {MAX_GROUP_SIZE}",
                    cluster.members.len()
                ),
            ));
        }
        let ids: BTreeSet<u64> = cluster.members.iter().map(|m| m.id).collect();
        if ids.len() != cluster.members.len() {
            return Err(invalid("cluster.members", "duplicate member id".into()));
        }
        if !ids.contains(&node_id) {
            return Err(invalid(
                "cluster.members",
                format!("must include this node (node.id = {node_id})"),
            ));
        }
    }
    if api.idempotency_window.0.as_secs() < MIN_IDEMPOTENCY_WINDOW_SECS {
        return Err(invalid(
            "api.idempotency_window",
            format!("must be at least {MIN_IDEMPOTENCY_WINDOW_SECS}s"),
        ));
    }
    let buffered = api.max_buffered_request_bytes.0;
    if buffered < MAX_HTTP_BODY_BYTES as u64 || buffered > u64::from(u32::MAX) {
        return Err(invalid(
            "api.max_buffered_request_bytes",
            format!(
                "must hold one largest request ({MAX_HTTP_BODY_BYTES} bytes) and be under 4GiB, \
                 got {buffered}"
            ),
        ));
    }
    Ok(())
}

/// The client API binds to loopback only until it has TLS and tokens (DESIGN.md §5).
pub fn validate_http(path: &Path, http: &HttpSection) -> Result<(), ConfigError> {
    if http.listen.ip().is_loopback() {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        path: path.to_owned(),
        key: "http.listen".into(),
        message: format!(
            "{} is not a loopback address; the client API has no TLS or token \
             authentication yet, so it only binds to loopback",
            http.listen
        ),
    })
}

/// Makes `p` absolute against the directory of the config file it came from.
pub fn resolve_relative(config_path: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        let base = config_path.parent().map(PathBuf::from).unwrap_or_default();
        *p = base.join(&*p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        node: NodeSection,
        storage: Option<StorageSection>,
    }

    fn parse(text: &str) -> Result<Sample, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        load_toml(&path)
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[node]\nid = 1\nsite = \"a\"\ndata_dir = \"/x\"\ncolour = 3\n")
            .expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("colour"), "{text}");
        assert!(text.contains("c.toml"), "{text}");
    }

    #[test]
    fn bad_site_and_size_are_named() {
        let err =
            parse("[node]\nid = 1\nsite = \"Bad_Site\"\ndata_dir = \"/x\"\n").expect_err("site");
        assert!(err.to_string().contains("site"), "{err}");
        let err = parse(
            "[node]\nid = 1\nsite = \"a\"\ndata_dir = \"/x\"\n[storage]\ncache_size = \"3 furlongs\"\n",
        )
        .expect_err("size");
        assert!(err.to_string().contains("cache_size"), "{err}");
    }

    #[test]
    fn sizes_accept_units() {
        let ok = parse(
            "[node]\nid = 1\nsite = \"a\"\ndata_dir = \"/x\"\n[storage]\ncache_size = \"8MiB\"\n",
        )
        .expect("parse");
        assert_eq!(ok.storage.map(|s| s.cache_size), Some(ByteSize(8 << 20)));
    }

    fn raft(extra: &str) -> RaftSection {
        toml::from_str(&format!("listen = \"127.0.0.1:7001\"\n{extra}")).expect("raft section")
    }

    #[test]
    fn election_timeout_max_defaults_to_twice_the_min() {
        let defaults = raft("");
        assert_eq!(defaults.election_timeout.0, Duration::from_millis(150));
        assert_eq!(defaults.election_timeout_max(), Duration::from_millis(300));
        defaults
            .validate(Path::new("c.toml"))
            .expect("defaults are valid");
        let derived = raft("election_timeout = \"1s\"\n");
        assert_eq!(derived.election_timeout_max(), Duration::from_secs(2));
        let explicit = raft("election_timeout = \"1s\"\nelection_timeout_max = \"1500ms\"\n");
        assert_eq!(explicit.election_timeout_max(), Duration::from_millis(1500));
    }

    #[test]
    fn bad_raft_timing_is_named() {
        let path = Path::new("c.toml");
        let err = raft("election_timeout = \"500ms\"\nelection_timeout_max = \"500ms\"\n")
            .validate(path)
            .expect_err("max must exceed min");
        assert!(err.to_string().contains("election_timeout_max"), "{err}");
        let err = raft("heartbeat_interval = \"100ms\"\nelection_timeout = \"250ms\"\n")
            .validate(path)
            .expect_err("election must be 3 heartbeats");
        assert!(err.to_string().contains("raft.election_timeout"), "{err}");
    }
}
