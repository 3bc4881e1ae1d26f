//! `openclaw-edge` config: the shared sections plus `[cluster]` and `[api]`, validated as a
//! whole (cross-field rules name the key they break).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::{
    ApiSection, ByteSize, ClusterSection, ConfigError, GroupSections, HttpSection, HumanDuration,
    NodeConfig, NodeSection, RaftSection, SiteId, StorageSection, TlsSection,
};
use shared::group::GroupSettings;
use shared::identity::NodeIdentity;
use shared::ship::session::{RECONNECT_BASE, RECONNECT_CAP, RECONNECT_MAX_LIMIT};
use shared::types::NodeId;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    pub node: NodeSection,
    pub raft: RaftSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default = "default_http")]
    pub http: HttpSection,
    pub tls: TlsSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub api: ApiSection,
    /// Shipping to the hub; without it the group keeps no outbox and ships nothing.
    pub uplink: Option<UplinkSection>,
}

/// `[uplink]`: the hub group that owns this site and how to ship to it. Every member of the
/// group must have the same section (the leader ships; any member may become leader).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// Name of the hub group that owns this site (its certificates name it).
    pub hub_group: SiteId,
    /// The hub group's nodes; the shipper tries them in turn (any may forward to its leader).
    pub hubs: Vec<HubEntry>,
    /// Unshipped events kept at most, in bytes; beyond it writes get 503 "uplink backlog
    /// full" until the hub catches up.
    #[serde(default = "uplink_defaults::max_unshipped_bytes")]
    pub max_unshipped_bytes: ByteSize,
    /// While batches are in flight, how often the shipper gathers new events behind them (a
    /// batch that is not full waits for the replies); an idle shipper sends the next event as
    /// soon as it is applied.
    #[serde(default = "uplink_defaults::batch_delay")]
    pub batch_delay: HumanDuration,
    /// Shipping bandwidth cap in bytes per second on the wire (0: none).
    #[serde(default)]
    pub max_bytes_per_second: ByteSize,
    /// Longest wait between attempts to reach the hub while it is unreachable (jittered
    /// exponential backoff from 200 ms): how soon after the hub returns this site ships.
    #[serde(default = "uplink_defaults::reconnect_max")]
    pub reconnect_max: HumanDuration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubEntry {
    pub id: NodeId,
    /// The hub node's QUIC address (host:port).
    pub addr: String,
}

impl HubEntry {
    pub fn identity(&self, group: &SiteId) -> NodeIdentity {
        NodeIdentity::hub(group.clone(), self.id)
    }
}

mod uplink_defaults {
    use super::*;
    pub fn max_unshipped_bytes() -> ByteSize {
        ByteSize(1024 * 1024 * 1024)
    }
    pub fn batch_delay() -> HumanDuration {
        HumanDuration(Duration::from_millis(5))
    }
    pub fn reconnect_max() -> HumanDuration {
        HumanDuration(RECONNECT_CAP)
    }
}

impl UplinkSection {
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.hubs.is_empty() {
            return Err(invalid("uplink.hubs", "name at least one hub node".into()));
        }
        if self.max_unshipped_bytes.0 < MIN_UNSHIPPED_BYTES {
            return Err(invalid(
                "uplink.max_unshipped_bytes",
                format!("must be at least {MIN_UNSHIPPED_BYTES} bytes (one largest event)"),
            ));
        }
        if self.batch_delay.0 > Duration::from_secs(10) {
            return Err(invalid("uplink.batch_delay", "at most 10s".into()));
        }
        let reconnect = self.reconnect_max.0;
        if !(RECONNECT_BASE..=RECONNECT_MAX_LIMIT).contains(&reconnect) {
            return Err(invalid(
                "uplink.reconnect_max",
                format!(
                    "must be between {RECONNECT_BASE:?} and {}s",
                    RECONNECT_MAX_LIMIT.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// The backlog must hold at least one largest event, or nothing could ever be written.
const MIN_UNSHIPPED_BYTES: u64 = 2 * shared::limits::MAX_VALUE_BYTES as u64;

fn default_http() -> HttpSection {
    HttpSection {
        listen: shared::config::defaults::http_listen(),
    }
}

impl NodeConfig for EdgeConfig {
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.sections().validate(path)?;
        if let Some(uplink) = &self.uplink {
            uplink.validate(path)?;
        }
        Ok(())
    }

    fn paths_mut(&mut self) -> (&mut PathBuf, &mut TlsSection) {
        (&mut self.node.data_dir, &mut self.tls)
    }

    fn runtime_threads(&self) -> usize {
        self.node.runtime_threads
    }

    fn storage_mut(&mut self) -> &mut StorageSection {
        &mut self.storage
    }

    const DEFAULT_MEMTABLE_SIZE: ByteSize = shared::config::defaults::MEMTABLE_SIZE;
}

impl EdgeConfig {
    /// What the Raft group member needs from this config.
    pub fn group_settings(&self) -> GroupSettings {
        let identity = NodeIdentity::edge(self.node.site.clone(), self.node.id);
        GroupSettings::from_sections(identity, self.node.data_dir.clone(), &self.sections())
    }

    fn sections(&self) -> GroupSections<'_> {
        GroupSections {
            node_id: self.node.id,
            runtime_threads: self.node.runtime_threads,
            raft: &self.raft,
            storage: &self.storage,
            http: &self.http,
            tls: &self.tls,
            cluster: &self.cluster,
            api: &self.api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = 1
site = "site-1"
data_dir = "data"
[raft]
listen = "127.0.0.1:7001"
[cluster]
bootstrap = true
[[cluster.members]]
id = 1
raft = "127.0.0.1:7001"
http = "http://127.0.0.1:8001"
[http]
listen = "127.0.0.1:8001"
[tls]
ca = "certs/ca.pem"
cert = "certs/node-1.pem"
key = "certs/node-1.key"
"#;

    fn load(text: &str) -> Result<EdgeConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, text).expect("write");
        EdgeConfig::load(&path)
    }

    #[test]
    fn good_config_resolves_relative_paths() {
        let config = load(GOOD).expect("valid");
        assert_eq!(
            config.node.runtime_threads, 0,
            "one worker per core unless set"
        );
        assert!(config.node.data_dir.is_absolute());
        assert!(config.tls.ca.is_absolute());
        assert_eq!(config.api.idempotency_window.0.as_secs(), 600);
        assert_eq!(
            config.storage.memtable_size,
            Some(ByteSize(4 << 20)),
            "a gateway's memtables"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("id = 1\nsite", "id = 0\nsite"), "node.id"),
            (
                GOOD.replace("listen = \"127.0.0.1:8001\"", "listen = \"0.0.0.0:8001\""),
                "http.listen",
            ),
            (
                GOOD.replace("[[cluster.members]]\nid = 1", "[[cluster.members]]\nid = 2"),
                "cluster.members",
            ),
            (
                format!("{GOOD}\n[api]\nidempotency_window = \"1m\"\n"),
                "api.idempotency_window",
            ),
            (
                format!("{GOOD}\n[api]\nwrite_timeout = \"soon\"\n"),
                "write_timeout",
            ),
            (GOOD.replace("[raft]", "[raft]\nspeed = 3"), "speed"),
            (
                GOOD.replace("data_dir = \"data\"", "data_dir = \"data\"\nruntime_threads = 65"),
                "node.runtime_threads",
            ),
            (format!("{GOOD}\n[uplink]\nhub_group = \"hub-1\"\nhubs = []\n"), "uplink.hubs"),
            (
                format!("{GOOD}\n[uplink]\nhub_group = \"hub-1\"\nhubs = [{{id = 1, addr = \"127.0.0.1:7401\"}}]\nreconnect_max = \"10ms\"\n"),
                "uplink.reconnect_max",
            ),
            (
                format!("{GOOD}\n[uplink]\nhub_group = \"hub-1\"\nhubs = [{{id = 1, addr = \"127.0.0.1:7401\"}}]\nreconnect_max = \"2h\"\n"),
                "uplink.reconnect_max",
            ),
            (
                format!("{GOOD}\n[uplink]\nhub_group = \"hub-1\"\nhubs = [{{id = 1, addr = \"127.0.0.1:7401\"}}]\nmax_unshipped_bytes = \"1KiB\"\n"),
                "uplink.max_unshipped_bytes",
            ),
        ];
        for (text, key) in cases {
            let err = load(&text).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn example_configs_in_the_repo_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for file in ["edge.toml", "edge-single.toml"] {
            EdgeConfig::load(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
