//! Which pods name a seccomp profile file: a pod whose `securityContext.seccompProfile` (at
//! pod level, or on any container, init container or ephemeral container) is of type
//! `Localhost` names the file `<kubelet seccomp root>/<localhostProfile>` on its node. The
//! distributor asks before it takes a file away from a node, so that a running pod's next
//! container start does not fail with `cannot load seccomp profile`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, SeccompProfile};
use kube::api::{Api, ListParams};

/// Where kubelet resolves `localhostProfile` paths.
pub const KUBELET_SECCOMP_ROOT: &str = "/var/lib/kubelet/seccomp";

/// One pod that names a file on its node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodUse {
    /// The node it runs on.
    pub node: String,
    /// The file it names, as a node path.
    pub path: String,
    /// `namespace/name`.
    pub pod: String,
}

/// Why the pods could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list the cluster's pods: {0}")]
pub struct PodsError(String);

/// The pods of a cluster, asked which profile files they name.
#[derive(Clone)]
pub struct PodProfiles {
    client: kube::Client,
}

/// Pods listed per page.
const PAGE: u32 = 500;

impl PodProfiles {
    /// Over `client`.
    pub fn new(client: kube::Client) -> Self {
        PodProfiles { client }
    }

    /// Over the cluster of the kubeconfig or the in-cluster service account.
    pub async fn from_default_config() -> Result<Self, PodsError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| PodsError(e.to_string()))?;
        Ok(Self::new(client))
    }

    /// Of `files` (node name to the node paths it is to lose), the pods that name one, sorted.
    /// Pods that are done (Succeeded, Failed) start no container again and do not count.
    pub async fn users(
        &self,
        files: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<PodUse>, PodsError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut out = BTreeSet::new();
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| PodsError(e.to_string()))?;
            for pod in &page.items {
                out.extend(uses(pod, files));
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// The files of `files` that `pod` names on its node.
pub fn uses(pod: &Pod, files: &BTreeMap<String, Vec<String>>) -> Vec<PodUse> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let Some(node) = spec.node_name.as_deref() else {
        return Vec::new();
    };
    let Some(paths) = files.get(node) else {
        return Vec::new();
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut profiles: Vec<&SeccompProfile> = Vec::new();
    profiles.extend(
        spec.security_context
            .as_ref()
            .and_then(|c| c.seccomp_profile.as_ref()),
    );
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    profiles.extend(containers.filter_map(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
    }));
    profiles.extend(spec.ephemeral_containers.iter().flatten().filter_map(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
    }));
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    let mut out: Vec<PodUse> = profiles
        .into_iter()
        .filter(|p| p.type_ == "Localhost")
        .filter_map(|p| p.localhost_profile.as_deref())
        .map(|relative| {
            format!(
                "{KUBELET_SECCOMP_ROOT}/{}",
                relative.trim_start_matches('/')
            )
        })
        .filter(|path| paths.contains(path))
        .map(|path| PodUse {
            node: node.to_owned(),
            path,
            pod: name.clone(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
