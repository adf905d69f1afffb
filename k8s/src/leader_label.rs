//! The pod of the distributor replica that leads carries the label
//! `seccomp.dev/leader: "true"` (`--leader-pod`), so that a Service selecting it sends the
//! agents and `seccompctl` to the one replica that serves; the others stand by without it.
//! The label is set with a JSON merge patch of the pod's own labels, and removed the same
//! way when the replica stops leading. It is routing only: a stale label (a leader that
//! died before removing it) costs a refused connection, never a write, as etcd fences
//! every write of a deposed leader.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

/// The label.
pub const LEADER_LABEL: &str = "seccomp.dev/leader";

/// Why the label could not be set.
#[derive(Debug, thiserror::Error)]
#[error("cannot label pod {namespace}/{name} {LEADER_LABEL}: {reason}")]
pub struct LabelError {
    namespace: String,
    name: String,
    reason: String,
}

/// This replica's own pod.
#[derive(Clone)]
pub struct LeaderPod {
    api: Api<Pod>,
    namespace: String,
    name: String,
}

impl LeaderPod {
    /// Pod `name` in `namespace`, through `client`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        LeaderPod {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Over the in-cluster service account (or the kubeconfig).
    pub async fn from_default_config(namespace: &str, name: &str) -> Result<Self, LabelError> {
        let client = kube::Client::try_default().await.map_err(|e| LabelError {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(client, namespace, name))
    }

    /// Set the label (`leading`) or remove it.
    pub async fn set(&self, leading: bool) -> Result<(), LabelError> {
        let value = if leading {
            serde_json::Value::from("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}});
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| LabelError {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                reason: e.to_string(),
            })
    }
}
