//! Config files (`shared::config`): the strict TOML loader `load_toml` and `NodeConfig::load`
//! (parse, validate, resolve paths) over the sections both daemons share, with their unit
//! parsers (`"64MiB"`, `"150ms"`), site ids, addresses and cross-field rules.
//!
//! The daemons' config types live in their binaries, so the target mirrors their shape:
//! every shared section, and the edge's `[uplink]` and the hub's `[hub]` tables. Checks: no
//! panic, and a config that loads has absolute paths.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use openclaw_fuzz::scratch_file;
use serde::Deserialize;
use shared::config::{
    load_toml, ApiSection, ByteSize, ClusterSection, ConfigError, GroupSections, HttpSection,
    HumanDuration, NodeConfig, NodeSection, RaftSection, SiteId, StorageSection, TlsSection,
};

/// `openclaw-edge`'s file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeShape {
    node: NodeSection,
    raft: RaftSection,
    #[serde(default)]
    cluster: ClusterSection,
    http: Option<HttpSection>,
    tls: TlsSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    api: ApiSection,
    #[allow(dead_code)]
    uplink: Option<UplinkShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UplinkShape {
    hub_group: SiteId,
    hubs: Vec<HubEntryShape>,
    max_unshipped_bytes: Option<ByteSize>,
    batch_delay: Option<HumanDuration>,
    max_bytes_per_second: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct HubEntryShape {
    id: u64,
    addr: String,
}

/// `openclaw-hub`'s file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HubShape {
    node: HubNodeShape,
    raft: RaftSection,
    #[serde(default)]
    cluster: ClusterSection,
    http: Option<HttpSection>,
    tls: TlsSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    #[allow(dead_code)]
    hub: HubSectionShape,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HubNodeShape {
    id: u64,
    #[allow(dead_code)]
    group: SiteId,
    data_dir: PathBuf,
    #[serde(default)]
    runtime_threads: usize,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct HubSectionShape {
    #[serde(default)]
    sites: Vec<SiteId>,
}

fn default_http() -> HttpSection {
    HttpSection {
        listen: shared::config::defaults::http_listen(),
    }
}

#[allow(clippy::too_many_arguments)]
fn validate_shared(
    path: &Path,
    node_id: u64,
    runtime_threads: usize,
    raft: &RaftSection,
    storage: &StorageSection,
    http: &Option<HttpSection>,
    tls: &TlsSection,
    cluster: &ClusterSection,
    api: &ApiSection,
) -> Result<(), ConfigError> {
    let http = http.clone().unwrap_or_else(default_http);
    GroupSections {
        node_id,
        runtime_threads,
        raft,
        storage,
        http: &http,
        tls,
        cluster,
        api,
    }
    .validate(path)
}

/// Both daemons' shapes have the same shared sections under the same names.
macro_rules! node_config_of_shape {
    ($shape:ty, $memtable:ident) => {
        impl NodeConfig for $shape {
            fn validate(&self, path: &Path) -> Result<(), ConfigError> {
                let c = self;
                validate_shared(
                    path,
                    c.node.id,
                    c.node.runtime_threads,
                    &c.raft,
                    &c.storage,
                    &c.http,
                    &c.tls,
                    &c.cluster,
                    &c.api,
                )
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
            const DEFAULT_MEMTABLE_SIZE: ByteSize = shared::config::defaults::$memtable;
        }
    };
}

node_config_of_shape!(EdgeShape, MEMTABLE_SIZE);
node_config_of_shape!(HubShape, HUB_MEMTABLE_SIZE);

fn assert_absolute(data_dir: &Path, tls: &TlsSection) {
    for p in [data_dir, &tls.ca, &tls.cert, &tls.key] {
        assert!(p.is_absolute(), "{} left relative", p.display());
    }
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("config_toml.toml", data);
    if let Ok(config) = EdgeShape::load(&path) {
        assert_absolute(&config.node.data_dir, &config.tls);
    }
    if let Ok(config) = HubShape::load(&path) {
        assert_absolute(&config.node.data_dir, &config.tls);
    }
    // Single sections, as other tools load them.
    let _ = load_toml::<NodeSection>(&path);
    let _ = load_toml::<StorageSection>(&path);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shared::units::parse_size(text);
        let _ = shared::units::parse_duration(text);
        let _ = SiteId::parse(text);
    }
});
