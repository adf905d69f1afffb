//! Which pods name a seccomp profile file: a pod whose `securityContext.seccompProfile` (at
//! pod level, or on any container, init container or ephemeral container) is of type
//! `Localhost` names the file `<kubelet seccomp root>/<localhostProfile>` on its node. The
//! distributor asks before it takes a file away from a node, so that a running pod's next
//! container start does not fail with `cannot load seccomp profile`.
//!
//! [`PodIndex`] answers, kept by a watch of every pod ([`PodWatch`]: a list, then a watch
//! from its resource version) and indexed by the files each pod names, so an answer costs
//! no API call. It also knows, of those pods, which container ids (from the pods' container
//! statuses) run under which file ([`PodIndex::container`]), so the seccomp events agents
//! report by container id can be told by pod and profile (#19).

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

/// The node path of a `Localhost` profile, `None` for another type.
fn localhost_path(p: &SeccompProfile) -> Option<String> {
    (p.type_ == "Localhost").then_some(())?;
    let relative = p.localhost_profile.as_deref()?;
    Some(format!(
        "{KUBELET_SECCOMP_ROOT}/{}",
        relative.trim_start_matches('/')
    ))
}

/// A running container of a pod, as [`PodIndex::container`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The container's name in the pod.
    pub container: String,
    /// The profile file it runs under (its own seccompProfile, else the pod's), a node
    /// path; `None` when that is not a `Localhost` profile.
    pub path: Option<String>,
}

/// The pod's containers by id (the runtime's `<scheme>://` prefix taken off), each with the
/// file it runs under.
fn containers_of(pod: &Pod, name: &str) -> Vec<(String, ContainerUse)> {
    let (Some(spec), Some(status)) = (pod.spec.as_ref(), pod.status.as_ref()) else {
        return Vec::new();
    };
    let pod_level = spec
        .security_context
        .as_ref()
        .and_then(|c| c.seccomp_profile.as_ref());
    // A container's own profile wins over the pod's, whatever its type.
    let own = |container: &str| -> Option<Option<&SeccompProfile>> {
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == container)
            .map(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|s| s.seccomp_profile.as_ref())
            });
        c.or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == container)
                .map(|c| {
                    c.security_context
                        .as_ref()
                        .and_then(|s| s.seccomp_profile.as_ref())
                })
        })
    };
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .chain(status.ephemeral_container_statuses.iter().flatten());
    statuses
        .filter_map(|s| {
            let id = s.container_id.as_deref()?;
            let id = id.rsplit_once("://").map_or(id, |(_, id)| id);
            let profile = own(&s.name).flatten().or(pod_level);
            Some((
                id.to_ascii_lowercase(),
                ContainerUse {
                    pod: name.to_owned(),
                    container: s.name.clone(),
                    path: profile.and_then(localhost_path),
                },
            ))
        })
        .collect()
}

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
    let mut named: Vec<String> = profiles.into_iter().filter_map(localhost_path).collect();
    named.sort();
    named.dedup();
    Some((name, node, named))
}

/// The cluster's pods by the profile files they name, kept up to date by a [`PodWatch`].
/// Only pods that name a file are kept (their node and those paths), so it stays small.
#[derive(Clone, Default)]
pub struct PodIndex(Arc<Mutex<IndexState>>);

/// `namespace/name` to (node, files it names, its containers by id).
type Named = HashMap<String, PodEntry>;

#[derive(Clone)]
struct PodEntry {
    node: String,
    named: Vec<String>,
    containers: Vec<(String, ContainerUse)>,
}

#[derive(Default)]
struct IndexState {
    /// The first complete list has arrived.
    ready: bool,
    /// The pods that name a file.
    pods: Named,
    /// Container id to the pod it is in (of `pods`).
    containers: HashMap<String, ContainerUse>,
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
fn entry(pod: &Pod) -> Option<(String, PodEntry)> {
    let (name, node, named) = named_files(pod)?;
    let containers = containers_of(pod, &name);
    (!named.is_empty()).then_some((
        name,
        PodEntry {
            node,
            named,
            containers,
        },
    ))
}

impl IndexState {
    fn insert(&mut self, name: String, entry: PodEntry) {
        self.remove(&name);
        for (id, c) in &entry.containers {
            self.containers.insert(id.clone(), c.clone());
        }
        self.pods.insert(name, entry);
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.pods.remove(name) {
            for (id, _) in old.containers {
                self.containers.remove(&id);
            }
        }
    }
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
        for (pod, PodEntry { node, named, .. }) in &st.pods {
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

    /// The pod (of those that name a profile file) a container id runs in, and the file it
    /// runs under; `None` when no such pod has it (or the pods are not listed yet).
    pub fn container(&self, id: &str) -> Option<ContainerUse> {
        self.lock().containers.get(id).cloned()
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
                let listed = st.listing.take().unwrap_or_default();
                st.pods.clear();
                st.containers.clear();
                for (name, entry) in listed {
                    st.insert(name, entry);
                }
                st.ready = true;
            }
            Event::Apply(pod) => match entry(&pod) {
                Some((name, value)) => st.insert(name, value),
                // Done, or names no file any more.
                None => st.remove(&key(&pod)),
            },
            Event::Delete(pod) => st.remove(&key(&pod)),
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
