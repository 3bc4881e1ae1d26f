//! `openclaw-hub` config: the shared sections, `[node]` naming the hub group, and `[hub]`
//! with the sites this group owns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::config::{
    ApiSection, ByteSize, ClusterSection, ConfigError, GroupSections, HttpSection, NodeConfig,
    RaftSection, SiteId, StorageSection, TlsSection,
};
use shared::group::GroupSettings;
use shared::identity::NodeIdentity;
use shared::limits::MAX_SITES_PER_GROUP;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub node: HubNodeSection,
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
    #[serde(default)]
    pub hub: HubSection,
}

/// `[node]`: who this hub node is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubNodeSection {
    pub id: u64,
    /// The hub group this node belongs to (its certificate names it in place of a site).
    pub group: SiteId,
    pub data_dir: PathBuf,
    /// Threads that run the node's network, Raft and HTTP work; 0: one per CPU core.
    #[serde(default)]
    pub runtime_threads: usize,
}

/// `[hub]`: what this hub group serves.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The sites this group owns (static assignment); empty: every site that ships here.
    /// A hub cluster scales out by running several groups, each owning some sites.
    #[serde(default)]
    pub sites: Vec<SiteId>,
}

impl HubSection {
    /// Whether this group owns `site`.
    pub fn owns(&self, site: &str) -> bool {
        self.sites.is_empty() || self.sites.iter().any(|s| s.as_str() == site)
    }
}

fn default_http() -> HttpSection {
    HttpSection {
        listen: shared::config::defaults::http_listen(),
    }
}

impl NodeConfig for HubConfig {
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        self.sections().validate(path)?;
        if self.hub.sites.len() > MAX_SITES_PER_GROUP {
            return Err(invalid(
                "hub.sites",
                format!("at most {MAX_SITES_PER_GROUP} sites per hub group"),
            ));
        }
        let unique: BTreeSet<&str> = self.hub.sites.iter().map(|s| s.as_str()).collect();
        if unique.len() != self.hub.sites.len() {
            return Err(invalid("hub.sites", "a site is listed twice".into()));
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

    const DEFAULT_MEMTABLE_SIZE: ByteSize = shared::config::defaults::HUB_MEMTABLE_SIZE;
}

impl HubConfig {
    pub fn group_settings(&self) -> GroupSettings {
        let identity = NodeIdentity::hub(self.node.group.clone(), self.node.id);
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
group = "hub-1"
data_dir = "data"
[raft]
listen = "127.0.0.1:7401"
[cluster]
bootstrap = true
[[cluster.members]]
id = 1
raft = "127.0.0.1:7401"
http = "http://127.0.0.1:8401"
[http]
listen = "127.0.0.1:8401"
[tls]
ca = "certs/ca.pem"
cert = "certs/hub-1.pem"
key = "certs/hub-1.key"
[hub]
sites = ["site-1", "site-2"]
"#;

    fn load(text: &str) -> Result<HubConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, text).expect("write");
        HubConfig::load(&path)
    }

    #[test]
    fn good_config_and_ownership() {
        let config = load(GOOD).expect("valid");
        assert!(config.node.data_dir.is_absolute());
        assert!(config.hub.owns("site-2"));
        assert!(!config.hub.owns("site-3"));
        assert!(HubSection::default().owns("anything"));
    }

    #[test]
    fn a_hub_defaults_to_larger_memtables_than_a_gateway_unless_told() {
        let hub = load(GOOD).expect("valid");
        assert_eq!(hub.storage.memtable_size, Some(ByteSize(32 << 20)));
        assert!(hub.storage.memtable_bytes() > shared::config::defaults::MEMTABLE_SIZE.0);
        let partial = GOOD.replace("[hub]", "[storage]\ncache_size = \"32MiB\"\n[hub]");
        let hub = load(&partial).expect("valid");
        assert_eq!(
            hub.storage.memtable_bytes(),
            32 << 20,
            "a [storage] without it"
        );
        let set = GOOD.replace("[hub]", "[storage]\nmemtable_size = \"8MiB\"\n[hub]");
        let hub = load(&set).expect("valid");
        assert_eq!(hub.storage.memtable_bytes(), 8 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("group = \"hub-1\"", "group = \"Hub_1\""),
                "group",
            ),
            (
                GOOD.replace("\"site-1\", \"site-2\"", "\"site-1\", \"site-1\""),
                "hub.sites",
            ),
            (GOOD.replace("[hub]", "[hub]\nregion = 1"), "region"),
            (GOOD.replace("id = 1\ngroup", "id = 0\ngroup"), "node.id"),
        ];
        for (text, key) in cases {
            let err = load(&text).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn example_configs_in_the_repo_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        HubConfig::load(&dir.join("hub.toml")).unwrap_or_else(|e| panic!("hub.toml: {e}"));
    }
}
