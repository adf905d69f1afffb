//! Node facts from the cluster (`--watch-nodes`): the `Node` objects' labels, and which
//! nodes exist, through a kube-runtime watcher (a list, then a watch from its resource
//! version, relisting when the API server says the version is too old). Each change is handed
//! to the caller as a [`NodeEvent`]; the watcher retries with backoff after errors, so a
//! restarting API server costs a relist, not the process.

use std::collections::BTreeMap;
use std::pin::pin;

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio_stream::StreamExt as _;

/// A node's labels.
pub type Labels = BTreeMap<String, String>;

/// What changed about the cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The complete set of nodes (after the first list, and after every relist): nodes
    /// not in it are gone.
    All(BTreeMap<String, Labels>),
    /// A node was added or its labels may have changed.
    Applied(String, Labels),
    /// A node was deleted.
    Deleted(String),
}

/// The cluster's `Node` objects, watched.
#[derive(Clone)]
pub struct NodeWatch {
    client: kube::Client,
}

fn name_and_labels(node: Node) -> Option<(String, Labels)> {
    let name = node.metadata.name?;
    Some((name, node.metadata.labels.unwrap_or_default()))
}

impl NodeWatch {
    /// Over `client`.
    pub fn new(client: kube::Client) -> Self {
        NodeWatch { client }
    }

    /// Over the cluster of the kubeconfig or the in-cluster service account.
    pub async fn from_default_config() -> Result<Self, kube::Error> {
        Ok(Self::new(kube::Client::try_default().await?))
    }

    /// Watch until the stream ends (it does not, short of the process ending), handing
    /// every change to `on`. A relist is delivered whole ([`NodeEvent::All`]), so nodes
    /// deleted while the watch was down are noticed.
    pub async fn run(self, mut on: impl FnMut(NodeEvent)) {
        let api: Api<Node> = Api::all(self.client);
        let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut events = pin!(events);
        let mut listing: Option<BTreeMap<String, Labels>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(BTreeMap::new()),
                Ok(Event::InitApply(node)) => {
                    if let (Some(all), Some((name, labels))) =
                        (listing.as_mut(), name_and_labels(node))
                    {
                        all.insert(name, labels);
                    }
                }
                Ok(Event::InitDone) => on(NodeEvent::All(listing.take().unwrap_or_default())),
                Ok(Event::Apply(node)) => {
                    if let Some((name, labels)) = name_and_labels(node) {
                        on(NodeEvent::Applied(name, labels));
                    }
                }
                Ok(Event::Delete(node)) => {
                    if let Some(name) = node.metadata.name {
                        on(NodeEvent::Deleted(name));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching the cluster's nodes; retrying"),
            }
        }
    }
}
