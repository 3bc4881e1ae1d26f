//! A whole local deployment: S sites of N edge nodes each, shipping to one hub group of M
//! nodes, all under one dev CA (what `openclaw-lab up` runs and the uplink tests use).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{binary, run, GroupKind, GroupOptions, LabGroup, UplinkOptions};

/// Name of the lab's hub group.
pub const HUB_GROUP: &str = "hub-1";

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub sites: u64,
    pub edge_nodes: u64,
    pub hub_nodes: u64,
    /// Template of every site's group options (timing, relays); name, addresses, CA and
    /// uplink are filled in per site.
    pub edge: GroupOptions,
    /// Template of the hub group's options.
    pub hub: GroupOptions,
    pub max_unshipped_bytes: String,
    pub max_bytes_per_second: u64,
    /// Every site's `[uplink] reconnect_max` (the edge's default when `None`).
    pub reconnect_max: Option<&'static str>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            sites: 1,
            edge_nodes: 3,
            hub_nodes: 0,
            edge: GroupOptions::default(),
            hub: GroupOptions::default(),
            max_unshipped_bytes: "1GiB".into(),
            max_bytes_per_second: 0,
            reconnect_max: None,
        }
    }
}

pub struct Lab {
    pub dir: PathBuf,
    pub hub: Option<LabGroup>,
    pub sites: Vec<LabGroup>,
}

/// Runtime threads for each of `nodes` daemons sharing this machine: its cores divided
/// among them, at least one. Left at the daemon's default (one per core each), three nodes
/// on two cores run six runtime workers that mostly wake each other: openclaw-bench measured
/// 3-10% more server CPU per operation that way (docs/benchmarks.md, 2026-12-07).
pub fn share_of_cores(nodes: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1) as usize).max(1)
}

/// A new CA in `dir/ca` (one per lab: every group's certificates chain to it).
pub fn make_ca(dir: &Path) -> anyhow::Result<PathBuf> {
    let ca = dir.join("ca");
    run(
        &binary("openclaw-edge", "OPENCLAW_EDGE_BIN")?,
        &["certs", "ca", "--dir"],
        &ca,
    )?;
    Ok(ca)
}

pub fn site_name(i: u64) -> String {
    format!("site-{i}")
}

impl Lab {
    /// Starts the hub (if any) and then every site, and waits until all serve.
    pub async fn start(dir: &Path, options: LabOptions) -> anyhow::Result<Lab> {
        std::fs::create_dir_all(dir)?;
        let ca = make_ca(dir)?;
        let mut lab = Lab {
            dir: dir.to_owned(),
            hub: None,
            sites: Vec::new(),
        };
        let nodes = options.sites * options.edge_nodes + options.hub_nodes;
        let runtime_threads = Some(share_of_cores(nodes));
        if options.hub_nodes > 0 {
            let hub_options = GroupOptions {
                kind: GroupKind::Hub,
                site: HUB_GROUP.into(),
                ip_base: 1 << 16,
                ca_dir: Some(ca.clone()),
                runtime_threads: options.hub.runtime_threads.or(runtime_threads),
                ..options.hub.clone()
            };
            let hub = LabGroup::start(&dir.join(HUB_GROUP), options.hub_nodes, hub_options).await?;
            lab.hub = Some(hub);
        }
        for i in 1..=options.sites {
            let uplink = lab.hub.as_ref().map(|hub| UplinkOptions {
                max_unshipped_bytes: options.max_unshipped_bytes.clone(),
                max_bytes_per_second: options.max_bytes_per_second,
                reconnect_max: options.reconnect_max,
                ..UplinkOptions::to(hub)
            });
            let site_options = GroupOptions {
                kind: GroupKind::Edge,
                site: site_name(i),
                ip_base: 16 * i as u32,
                ca_dir: Some(ca.clone()),
                uplink,
                runtime_threads: options.edge.runtime_threads.or(runtime_threads),
                ..options.edge.clone()
            };
            let group =
                LabGroup::start(&dir.join(site_name(i)), options.edge_nodes, site_options).await?;
            lab.sites.push(group);
        }
        if let Some(hub) = &lab.hub {
            hub.wait_ready(&hub.ids()).await?;
        }
        for site in &lab.sites {
            site.wait_ready(&site.ids()).await?;
        }
        Ok(lab)
    }

    pub fn hub(&self) -> anyhow::Result<&LabGroup> {
        self.hub
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this lab has no hub"))
    }

    pub fn hub_mut(&mut self) -> anyhow::Result<&mut LabGroup> {
        self.hub
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("this lab has no hub"))
    }

    /// DESIGN.md §4.2's endpoints.json.
    pub fn endpoints(&self) -> Value {
        let sites: Vec<Value> = self
            .sites
            .iter()
            .map(|g| serde_json::json!({"site": g.options.site, "nodes": g.node_endpoints()}))
            .collect();
        let hub = self
            .hub
            .as_ref()
            .map(|h| h.node_endpoints())
            .unwrap_or_default();
        serde_json::json!({"sites": sites, "hub": hub})
    }

    /// Stops every process of the lab (SIGTERM, then kill -9 after the stop timeout);
    /// returns the (group, node) pairs that had to be killed.
    pub async fn stop_all(&mut self) -> anyhow::Result<Vec<(String, u64)>> {
        let stops = self
            .sites
            .iter_mut()
            .chain(self.hub.iter_mut())
            .map(|group| async {
                let name = group.options.site.clone();
                group.stop_all().await.map(|ids| {
                    ids.into_iter()
                        .map(|id| (name.clone(), id))
                        .collect::<Vec<_>>()
                })
            });
        let mut killed = Vec::new();
        for result in futures::future::join_all(stops).await {
            killed.extend(result?);
        }
        Ok(killed)
    }
}
