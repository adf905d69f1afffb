//! The Kubernetes sink, and the only module that uses kube: NCIs are applied with
//! server-side apply (field manager `seccomp-distributor`, `force`), then our objects
//! (found by the managed-by label) that are no longer desired are deleted.
//!
//! The NCI type is our own serde model ([`seccomp_rollout::nci`]); here it is mapped onto kube's
//! dynamic API with an [`ApiResource`] for `node.shturval.tech/v1beta2`, cluster-scoped, so
//! no generated CRD code is needed. The CRD itself is in `deploy/nodeconfigitem-crd.yaml`
//! for clusters that do not have it yet.

use std::collections::BTreeSet;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};

use crate::error::{Error, Result};
use seccomp_rollout::nci::{self, NodeConfigItem};

/// The NodeConfigItem resource for kube's dynamic API.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: nci::GROUP.to_owned(),
        version: nci::VERSION.to_owned(),
        api_version: nci::API_VERSION.to_owned(),
        kind: nci::KIND.to_owned(),
        plural: nci::PLURAL.to_owned(),
    }
}

/// The label selector that finds our objects.
pub fn managed_selector() -> String {
    format!("{}={}", nci::labels::MANAGED_BY, nci::MANAGER)
}

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects applied.
    pub applied: Vec<String>,
    /// Objects of ours deleted because they are no longer desired.
    pub pruned: Vec<String>,
}

/// Applies NCIs to a cluster.
#[derive(Clone)]
pub struct ClusterSink {
    api: Api<DynamicObject>,
}

fn kube_err(what: &str, e: kube::Error) -> Error {
    Error::Kube(format!("{what}: {e}"))
}

impl ClusterSink {
    /// A sink using `client` (from the kubeconfig or in-cluster config).
    pub fn new(client: kube::Client) -> Self {
        ClusterSink {
            api: Api::all_with(client, &api_resource()),
        }
    }

    /// A sink from the default configuration (`KUBECONFIG`, `~/.kube/config` or in-cluster).
    pub async fn from_default_config() -> Result<Self> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| kube_err("connecting", e))?;
        Ok(Self::new(client))
    }

    /// Apply `ncis` and prune our objects that are not among them.
    pub async fn sync(&self, ncis: &[NodeConfigItem]) -> Result<ApplyReport> {
        let params = PatchParams::apply(nci::MANAGER).force();
        let mut report = ApplyReport::default();
        let mut desired = BTreeSet::new();
        for n in ncis {
            let name = n.metadata.name.as_str();
            let value = serde_json::to_value(n).map_err(|e| Error::Encoding(e.to_string()))?;
            let object: DynamicObject =
                serde_json::from_value(value).map_err(|e| Error::Encoding(e.to_string()))?;
            self.api
                .patch(name, &params, &Patch::Apply(&object))
                .await
                .map_err(|e| kube_err(&format!("applying NodeConfigItem \"{name}\""), e))?;
            tracing::info!(nci = name, "applied");
            desired.insert(name);
            report.applied.push(name.to_owned());
        }
        let ours = self
            .api
            .list(&ListParams::default().labels(&managed_selector()))
            .await
            .map_err(|e| kube_err("listing our NodeConfigItems", e))?;
        for object in ours {
            let Some(name) = object.metadata.name else {
                continue;
            };
            if desired.contains(name.as_str()) {
                continue;
            }
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(kube_err(&format!("pruning NodeConfigItem \"{name}\""), e)),
            }
            tracing::info!(nci = name.as_str(), "pruned");
            report.pruned.push(name);
        }
        Ok(report)
    }
}

impl super::NciSink for ClusterSink {
    fn describe(&self) -> String {
        "kubernetes".to_owned()
    }

    fn sync<'a>(&'a self, ncis: &'a [NodeConfigItem]) -> crate::BoxFuture<'a, Result<()>> {
        Box::pin(async move { ClusterSink::sync(self, ncis).await.map(|_| ()) })
    }
}
