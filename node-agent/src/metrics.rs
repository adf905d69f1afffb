//! The node agent's Prometheus metrics (`--metrics-listen`): applies by result, files
//! written and removed, drift repairs, refusals, when the node was last in sync, how many
//! files it manages, and whether its stream is up.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: String,
}

/// The agent's metrics.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    pub(crate) applies: Family<ResultLabels, Counter>,
    pub(crate) files_written: Counter,
    pub(crate) files_removed: Counter,
    pub(crate) repairs: Family<ResultLabels, Counter>,
    pub(crate) last_sync: Gauge,
    pub(crate) files_managed: Gauge,
    pub(crate) connected: Gauge,
}

impl AgentMetrics {
    /// The metrics, registered in `registry` (names prefixed `seccomp_agent_`).
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Self> {
        let m = std::sync::Arc::new(AgentMetrics::default());
        let r = registry.sub_registry_with_prefix("seccomp_agent");
        r.register(
            "applies",
            "Desired sets handled, by result (applied, refused)",
            m.applies.clone(),
        );
        r.register("files_written", "Files written", m.files_written.clone());
        r.register(
            "files_removed",
            "Files and directories the agent placed and removed as no longer desired",
            m.files_removed.clone(),
        );
        r.register(
            "drift_repairs",
            "Changes on disk found, by result (repaired, failed)",
            m.repairs.clone(),
        );
        r.register(
            "last_sync_timestamp_seconds",
            "When the agent last applied a desired set completely, Unix seconds",
            m.last_sync.clone(),
        );
        r.register(
            "files_managed",
            "Entries of the desired set the agent keeps on disk",
            m.files_managed.clone(),
        );
        r.register(
            "connected",
            "1 while the stream to the distributor is up",
            m.connected.clone(),
        );
        m
    }

    pub(crate) fn count(family: &Family<ResultLabels, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub(crate) fn synced(&self, files: usize) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.last_sync.set(now);
        self.files_managed
            .set(i64::try_from(files).unwrap_or(i64::MAX));
    }
}
