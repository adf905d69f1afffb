//! Where NCIs go besides the agents: [`dir`], a directory of YAML files for GitOps (Argo CD,
//! Flux), and [`cluster`], a Kubernetes cluster by server-side apply (the only module that
//! uses kube). Both hold exactly the NCIs they are given among their own objects and never
//! touch anyone else's.

pub mod cluster;
pub mod dir;

use seccomp_rollout::nci::NodeConfigItem;

use crate::BoxFuture;
use crate::error::Result;

pub use cluster::ClusterSink;
pub use dir::DirSink;

/// Somewhere besides the agents that NCIs go: a GitOps directory, a cluster.
pub trait NciSink: Send + Sync + 'static {
    /// For logs: `yaml directory /x`, `kubernetes`.
    fn describe(&self) -> String;
    /// Make the sink hold exactly `ncis` among its objects.
    fn sync<'a>(&'a self, ncis: &'a [NodeConfigItem]) -> BoxFuture<'a, Result<()>>;
}
