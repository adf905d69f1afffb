//! The distributor's Prometheus metrics (`--metrics-listen`), besides the gRPC request
//! metrics every server has: counters the hub and the engine bump as things happen (desired
//! sets sent, NACKs by error code, drift reports, sink errors, the time from targeting a node
//! to its confirmation), and gauges read at scrape time from the distributor itself
//! (connected agents, nodes by state, rollouts by state), so the hot paths pay nothing for
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use seccomp_server::metrics::encode_gauges;

use crate::service::Distributor;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabels {
    pub(crate) code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SinkLabels {
    pub(crate) sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The counters and the histogram.
#[derive(Debug)]
pub struct DistributorMetrics {
    pub(crate) sets_sent: Counter,
    pub(crate) nacks: Family<CodeLabels, Counter>,
    pub(crate) drift_reports: Counter,
    pub(crate) sink_errors: Family<SinkLabels, Counter>,
    pub(crate) confirmation: Histogram,
}

impl DistributorMetrics {
    /// The metrics, registered in `registry` (names prefixed `seccomp_distributor_`).
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(DistributorMetrics {
            sets_sent: Counter::default(),
            nacks: Family::default(),
            drift_reports: Counter::default(),
            sink_errors: Family::default(),
            // 50 ms .. ~27 min
            confirmation: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
        });
        let r = registry.sub_registry_with_prefix("seccomp_distributor");
        r.register(
            "desired_sets_sent",
            "Desired file sets sent to node agents",
            m.sets_sent.clone(),
        );
        r.register(
            "nacks",
            "Desired sets node agents refused, by the error code of each refused path",
            m.nacks.clone(),
        );
        r.register(
            "drift_reports",
            "Reports from node agents of files changed on disk",
            m.drift_reports.clone(),
        );
        r.register(
            "sink_errors",
            "Failed or timed-out syncs of the NCIs to a sink, by sink",
            m.sink_errors.clone(),
        );
        r.register(
            "node_confirmation_seconds",
            "Time from a wave targeting a node to the node confirming the rollout's content",
            m.confirmation.clone(),
        );
        m
    }

    /// Register the gauges read from `distributor` at each scrape.
    pub fn register_gauges(registry: &mut Registry, distributor: Arc<Distributor>) {
        registry
            .sub_registry_with_prefix("seccomp_distributor")
            .register_collector(Box::new(Gauges(distributor)));
    }
}

/// The gauges, read at scrape time.
struct Gauges(Arc<Distributor>);

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("distributor gauges")
    }
}

fn by_state(counts: BTreeMap<String, usize>) -> Vec<(StateLabels, i64)> {
    counts
        .into_iter()
        .map(|(state, n)| (StateLabels { state }, i64::try_from(n).unwrap_or(i64::MAX)))
        .collect()
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let d = &self.0;
        let (connected, nodes) = d.node_counts();
        encode_gauges(
            &mut encoder,
            "agents_connected",
            "Node agents with an open stream",
            [(
                Vec::<(String, String)>::new(),
                i64::try_from(connected).unwrap_or(i64::MAX),
            )],
        )?;
        encode_gauges(
            &mut encoder,
            "nodes",
            "Known nodes by state",
            by_state(nodes),
        )?;
        encode_gauges(
            &mut encoder,
            "rollouts",
            "Stored rollouts by state",
            by_state(d.rollout_counts()),
        )
    }
}
