//! `openclaw-edge` config: the shared sections plus `[cluster]` and `[api]`, validated as a
//! whole (cross-field rules name the key they break).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::{
    load_toml, ConfigError, HttpSection, HumanDuration, NodeSection, RaftSection, StorageSection,
    TlsSection,
};
use shared::limits::{MAX_GROUP_SIZE, MIN_IDEMPOTENCY_WINDOW_SECS};
use shared::types::{NodeAddr, NodeId};

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
}

fn default_http() -> HttpSection {
    HttpSection {
        listen: shared::config::defaults::http_listen(),
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
    #[serde(default = "defaults::write_timeout")]
    pub write_timeout: HumanDuration,
    /// A linearizable read that cannot confirm the leader within this is answered 503.
    #[serde(default = "defaults::read_timeout")]
    pub read_timeout: HumanDuration,
    /// How long an Idempotency-Key is remembered (at least 10 minutes).
    #[serde(default = "defaults::idempotency_window")]
    pub idempotency_window: HumanDuration,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            write_timeout: defaults::write_timeout(),
            read_timeout: defaults::read_timeout(),
            idempotency_window: defaults::idempotency_window(),
        }
    }
}

mod defaults {
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
}

impl EdgeConfig {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: EdgeConfig = load_toml(path)?;
        config.validate(path)?;
        if config.node.data_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.node.data_dir = base.join(&config.node.data_dir);
        }
        for p in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if p.is_relative() {
                let base = path.parent().map(PathBuf::from).unwrap_or_default();
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.node.id == 0 {
            return Err(invalid("node.id", "must be >= 1".into()));
        }
        self.raft.validate(path)?;
        self.storage.validate(path)?;
        if !self.http.listen.ip().is_loopback() {
            return Err(invalid(
                "http.listen",
                format!(
                    "{} is not a loopback address; the client API has no TLS or token \
                     authentication yet, so it only binds to loopback",
                    self.http.listen
                ),
            ));
        }
        let cluster = &self.cluster;
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
            let ids: BTreeSet<NodeId> = cluster.members.iter().map(|m| m.id).collect();
            if ids.len() != cluster.members.len() {
                return Err(invalid("cluster.members", "duplicate member id".into()));
            }
            if !ids.contains(&self.node.id) {
                return Err(invalid(
                    "cluster.members",
                    format!("must include this node (node.id = {})", self.node.id),
                ));
            }
        }
        if self.api.idempotency_window.0.as_secs() < MIN_IDEMPOTENCY_WINDOW_SECS {
            return Err(invalid(
                "api.idempotency_window",
                format!("must be at least {MIN_IDEMPOTENCY_WINDOW_SECS}s"),
            ));
        }
        Ok(())
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
        assert!(config.node.data_dir.is_absolute());
        assert!(config.tls.ca.is_absolute());
        assert_eq!(config.api.idempotency_window.0.as_secs(), 600);
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
        ];
        for (text, key) in cases {
            let err = load(&text).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
