//! Where an OpenClaw write's time went during one workload, read from the nodes' own
//! histograms (`/metrics`, sums and counts) before and after it: the leader's commit cycle,
//! the fsync, a follower's forward RPC, and a write answered at the leader and at a
//! follower. Means over the workload, measured by the nodes, so they say what a throughput
//! figure waited for (docs/benchmarks.md, "what a write waits for").

use super::Table;

/// A histogram's running sum (seconds) and count on one node.
#[derive(Clone, Copy, Default)]
struct SumCount {
    sum: f64,
    count: f64,
}

impl SumCount {
    fn since(self, before: SumCount) -> SumCount {
        SumCount {
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    fn plus(self, other: SumCount) -> SumCount {
        SumCount {
            sum: self.sum + other.sum,
            count: self.count + other.count,
        }
    }

    fn mean_ms(self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count * 1e3)
    }
}

/// The figures of one node.
#[derive(Clone, Copy, Default)]
struct NodeFigures {
    /// `openclaw_proposal_seconds`: only a leader proposes client-write entries.
    proposal: SumCount,
    fsync: SumCount,
    forward: SumCount,
    write: SumCount,
    forwarded_writes: f64,
}

impl NodeFigures {
    fn parse(text: &str) -> NodeFigures {
        let value = |name: &str| {
            text.lines()
                .find_map(|l| {
                    let rest = l.strip_prefix(name)?;
                    rest.starts_with(' ')
                        .then(|| rest.trim().parse::<f64>().ok())
                        .flatten()
                })
                .unwrap_or(0.0)
        };
        let histogram = |name: &str| SumCount {
            sum: value(&format!("{name}_sum")),
            count: value(&format!("{name}_count")),
        };
        NodeFigures {
            proposal: histogram("openclaw_proposal_seconds"),
            fsync: histogram("openclaw_fsync_seconds"),
            forward: histogram("openclaw_forward_seconds"),
            write: histogram("openclaw_write_seconds"),
            forwarded_writes: value("openclaw_forwarded_writes_total"),
        }
    }

    fn since(self, before: NodeFigures) -> NodeFigures {
        NodeFigures {
            proposal: self.proposal.since(before.proposal),
            fsync: self.fsync.since(before.fsync),
            forward: self.forward.since(before.forward),
            write: self.write.since(before.write),
            forwarded_writes: self.forwarded_writes - before.forwarded_writes,
        }
    }
}

/// Every node's figures at one moment.
pub(crate) struct Breakdown(Vec<NodeFigures>);

impl Breakdown {
    /// Reads every node's `/metrics`; `None` if any node does not answer (the rows are then
    /// left out rather than computed from part of the group).
    pub(crate) async fn sample(http: &reqwest::Client, nodes: &[String]) -> Option<Breakdown> {
        let mut figures = Vec::with_capacity(nodes.len());
        for node in nodes {
            let response = http.get(format!("{node}/metrics")).send().await.ok()?;
            figures.push(NodeFigures::parse(&response.text().await.ok()?));
        }
        Some(Breakdown(figures))
    }

    /// Records the means over the workload between `before` and `self` as rows of `label`.
    /// The leader is the node that proposed entries meanwhile (the one that proposed most,
    /// should leadership have moved).
    pub(crate) fn record_since(&self, before: &Breakdown, label: &str, table: &mut Table) {
        if self.0.len() != before.0.len() {
            return;
        }
        let nodes: Vec<NodeFigures> = self
            .0
            .iter()
            .zip(&before.0)
            .map(|(after, before)| after.since(*before))
            .collect();
        let Some(leader) = (0..nodes.len()).max_by(|a, b| {
            nodes[*a]
                .proposal
                .count
                .total_cmp(&nodes[*b].proposal.count)
        }) else {
            return;
        };
        let sum = |pick: fn(&NodeFigures) -> SumCount, include: &dyn Fn(usize) -> bool| {
            (0..nodes.len())
                .filter(|i| include(*i))
                .map(|i| pick(&nodes[i]))
                .fold(SumCount::default(), SumCount::plus)
        };
        let all = |_: usize| true;
        let followers = |i: usize| i != leader;
        let forward = sum(|n| n.forward, &all);
        let forwarded: f64 = nodes.iter().map(|n| n.forwarded_writes).sum();
        let rows = [
            (
                "leader's commit cycle ms",
                sum(|n| n.proposal, &all).mean_ms(),
            ),
            ("fsync ms, all nodes", sum(|n| n.fsync, &all).mean_ms()),
            ("forward RPC ms", forward.mean_ms()),
            (
                "writes per forward RPC",
                (forward.count > 0.0).then(|| forwarded / forward.count),
            ),
            (
                "write answered at the leader ms",
                sum(|n| n.write, &|i| i == leader).mean_ms(),
            ),
            (
                "write answered at a follower ms",
                sum(|n| n.write, &followers).mean_ms(),
            ),
        ];
        for (row, value) in rows {
            if let Some(value) = value {
                table.insert(format!("{label} {row} (mean)"), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_read_from_its_sum_and_count_lines_only() {
        let text = "\
# TYPE openclaw_fsync_seconds histogram
openclaw_fsync_seconds_bucket{le=\"0.001\"} 3
openclaw_fsync_seconds_sum 0.006
openclaw_fsync_seconds_count 4
openclaw_forwarded_writes_total 12
openclaw_forwarded_writes_total_extra 99
";
        let figures = NodeFigures::parse(text);
        assert_eq!(figures.fsync.mean_ms(), Some(1.5));
        assert_eq!(figures.forwarded_writes, 12.0);
        assert_eq!(figures.proposal.mean_ms(), None, "absent: no mean");
    }

    #[test]
    fn the_leader_is_the_node_that_proposed_and_followers_are_the_rest() {
        let node = |proposals: f64, write_ms: f64, writes: f64| NodeFigures {
            proposal: SumCount {
                sum: proposals * 0.002,
                count: proposals,
            },
            write: SumCount {
                sum: write_ms / 1e3 * writes,
                count: writes,
            },
            ..NodeFigures::default()
        };
        let before = Breakdown(vec![NodeFigures::default(); 3]);
        let after = Breakdown(vec![
            node(0.0, 5.0, 10.0),
            node(100.0, 3.0, 10.0),
            node(0.0, 7.0, 10.0),
        ]);
        let mut table = Table::default();
        after.record_since(&before, "w", &mut table);
        let near = |row: &str, want: f64| {
            let got = table.get(row).unwrap_or(f64::NAN);
            assert!((got - want).abs() < 1e-9, "{row}: {got} != {want}");
        };
        near("w leader's commit cycle ms (mean)", 2.0);
        near("w write answered at the leader ms (mean)", 3.0);
        near("w write answered at a follower ms (mean)", 6.0);
        assert_eq!(table.get("w forward RPC ms (mean)"), None);
    }
}
