//! The cluster's pods as [`ProfileUsers`] (`--check-pods`): before a change takes a file
//! from a node, the pods on that node that name it, from the index a watch of every pod
//! keeps (see [`seccomp_k8s::pods`]).

use std::collections::BTreeMap;

use seccomp_k8s::PodIndex;

use crate::BoxFuture;
use crate::error::{Error, Result};
use crate::service::{FileUser, ProfileUsers};

/// The pods of the cluster, as a [`seccomp_k8s::PodWatch`] keeps them in its index.
pub struct ClusterPods(pub PodIndex);

impl ProfileUsers for ClusterPods {
    fn users<'a>(
        &'a self,
        files: &'a BTreeMap<String, Vec<String>>,
    ) -> BoxFuture<'a, Result<Vec<FileUser>>> {
        Box::pin(async move {
            let found = self
                .0
                .users(files)
                .map_err(|e| Error::Kube(e.to_string()))?;
            Ok(found
                .into_iter()
                .map(|u| FileUser {
                    node: u.node,
                    path: u.path,
                    user: u.pod,
                })
                .collect())
        })
    }
}
