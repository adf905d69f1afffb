//! The registry's Prometheus metrics (`--metrics-listen`), besides the gRPC request
//! metrics: publishes by result (created, unchanged, or the refusal's category), the time a
//! validation takes, and, read at each scrape, how many profiles and stored versions there
//! are.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as Metrics;
use seccomp_server::metrics::encode_gauges;

use crate::service::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: String,
}

/// The counters and the histogram.
#[derive(Debug)]
pub struct RegistryMetrics {
    pub(crate) publishes: Family<ResultLabels, Counter>,
    pub(crate) validation: Histogram,
}

impl RegistryMetrics {
    /// The metrics, registered in `metrics` (names prefixed `seccomp_registry_`), with the
    /// profile and version gauges read from `registry`.
    pub fn register(metrics: &mut Metrics, registry: &Registry) -> Arc<Self> {
        let m = Arc::new(RegistryMetrics {
            publishes: Family::default(),
            // 10 µs .. ~0.3 s
            validation: Histogram::new(exponential_buckets(0.000_01, 2.0, 15)),
        });
        let r = metrics.sub_registry_with_prefix("seccomp_registry");
        r.register(
            "publishes",
            "Publish calls, by result: created, unchanged (identical to a live version), or the category of the refusal (invalid-argument, failed-precondition, ...)",
            m.publishes.clone(),
        );
        r.register(
            "validation_duration_seconds",
            "Time to validate a profile's bytes on publish",
            m.validation.clone(),
        );
        r.register_collector(Box::new(Gauges(registry.clone())));
        m
    }

    pub(crate) fn published(&self, result: &str) {
        self.publishes
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The gauges, read at scrape time.
struct Gauges(Registry);

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("registry gauges")
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (profiles, versions) = self.0.counts();
        let none = Vec::<(String, String)>::new;
        encode_gauges(
            &mut encoder,
            "profiles",
            "Profiles with at least one stored version",
            [(none(), i64::try_from(profiles).unwrap_or(i64::MAX))],
        )?;
        encode_gauges(
            &mut encoder,
            "versions",
            "Stored profile versions (deprecated ones included, deleted ones not)",
            [(none(), i64::try_from(versions).unwrap_or(i64::MAX))],
        )
    }
}
