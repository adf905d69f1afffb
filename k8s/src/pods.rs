//! Which pods name a seccomp profile file: a pod whose `securityContext.seccompProfile` (at
//! pod level, or on any container, init container or ephemeral container) is of type
//! `Localhost` names the file `<kubelet seccomp root>/<localhostProfile>` on its node. The
//! distributor asks before it takes a file away from a node, so that a running pod's next
//! container start does not fail with `cannot load seccomp profile`.
//!
//! [`PodIndex`] answers, kept by a watch of every pod ([`PodWatch`]: a list, then a watch
//! from its resource version) and indexed by the files each pod names, so an answer costs
//! no API call.

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, SeccompProfile};
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio_stream::StreamExt as _;

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

/// `namespace/name`, the node, and the profile files (node paths, sorted) a pod that may
/// still start containers names; `None` for a pod not on a node yet, or done.
fn named_files(pod: &Pod) -> Option<(String, String, Vec<String>)> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
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
    let mut named: Vec<String> = profiles
        .into_iter()
        .filter(|p| p.type_ == "Localhost")
        .filter_map(|p| p.localhost_profile.as_deref())
        .map(|relative| {
            format!(
                "{KUBELET_SECCOMP_ROOT}/{}",
                relative.trim_start_matches('/')
            )
        })
        .collect();
    named.sort();
    named.dedup();
    Some((name, node, named))
}

/// The cluster's pods by the profile files they name, kept up to date by a [`PodWatch`].
/// Only pods that name a file are kept (their node and those paths), so it stays small.
#[derive(Clone, Default)]
pub struct PodIndex(Arc<Mutex<IndexState>>);

type Named = HashMap<String, (String, Vec<String>)>;

#[derive(Default)]
struct IndexState {
    /// The first complete list has arrived.
    ready: bool,
    /// `namespace/name` to (node, files it names).
    pods: Named,
    /// The list being received (after an Init).
    listing: Option<Named>,
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// A pod's index entry; `None` when it names no file (or is done).
fn entry(pod: &Pod) -> Option<(String, (String, Vec<String>))> {
    let (name, node, named) = named_files(pod)?;
    (!named.is_empty()).then_some((name, (node, named)))
}

impl PodIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, IndexState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Of `files` (node name to node paths), the pods that name one, sorted; an error until
    /// the first list of pods arrived (an empty answer then would be a guess).
    pub fn users(&self, files: &BTreeMap<String, Vec<String>>) -> Result<Vec<PodUse>, PodsError> {
        let st = self.lock();
        if !st.ready {
            return Err(PodsError(
                "the pods are not listed yet (the watch started, or the API server does not answer)".into(),
            ));
        }
        let mut out: Vec<PodUse> = Vec::new();
        for (pod, (node, named)) in &st.pods {
            let Some(paths) = files.get(node) else {
                continue;
            };
            out.extend(
                named
                    .iter()
                    .filter(|p| paths.contains(p))
                    .map(|path| PodUse {
                        node: node.clone(),
                        path: path.clone(),
                        pod: pod.clone(),
                    }),
            );
        }
        out.sort();
        Ok(out)
    }

    /// Take one watch event.
    pub fn apply(&self, event: Event<Pod>) {
        let mut st = self.lock();
        match event {
            Event::Init => st.listing = Some(Named::new()),
            Event::InitApply(pod) => {
                if let (Some(listing), Some((name, value))) = (st.listing.as_mut(), entry(&pod)) {
                    listing.insert(name, value);
                }
            }
            Event::InitDone => {
                st.pods = st.listing.take().unwrap_or_default();
                st.ready = true;
            }
            Event::Apply(pod) => match entry(&pod) {
                Some((name, value)) => {
                    st.pods.insert(name, value);
                }
                // Done, or names no file any more.
                None => {
                    st.pods.remove(&key(&pod));
                }
            },
            Event::Delete(pod) => {
                st.pods.remove(&key(&pod));
            }
        }
    }
}

/// A watch of every pod, feeding a [`PodIndex`].
#[derive(Clone)]
pub struct PodWatch {
    client: kube::Client,
}

impl PodWatch {
    /// Over `client`.
    pub fn new(client: kube::Client) -> Self {
        PodWatch { client }
    }

    /// Over the cluster of the kubeconfig or the in-cluster service account.
    pub async fn from_default_config() -> Result<Self, PodsError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| PodsError(e.to_string()))?;
        Ok(Self::new(client))
    }

    /// Keep `index` up to date until the stream ends (it does not, short of the process
    /// ending); errors are logged and retried with backoff.
    pub async fn run(self, index: PodIndex) {
        let api: Api<Pod> = Api::all(self.client);
        let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut events = pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => index.apply(e),
                Err(e) => tracing::warn!(error = %e, "watching the cluster's pods; retrying"),
            }
        }
    }
}
