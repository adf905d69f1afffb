//! `seccomp-k8s`: what the services need from a Kubernetes cluster, kept apart so that
//! `seccomp-server` (which `seccompctl` links for its TLS and tokens) carries no kube.
//!
//! Layout:
//! - [`token_review`]: Kubernetes ServiceAccount tokens checked with TokenReview, the
//!   [`seccomp_server::auth::TokenReviewer`] behind `--auth-kubernetes`;
//! - [`nodes`]: the cluster's nodes and their labels, watched (the distributor's
//!   `--watch-nodes`);
//! - [`pods`]: which pods name a profile file on their node (the distributor's
//!   `--check-pods`, before it takes a file away);
//! - [`leader_label`]: the leading distributor replica's pod labelled for its Service
//!   (`--leader-pod`).

pub mod leader_label;
pub mod nodes;
pub mod pods;
pub mod token_review;

use std::sync::Arc;

use seccomp_server::security::{Security, SecurityError};

pub use leader_label::{LEADER_LABEL, LeaderPod};
pub use nodes::{NodeEvent, NodeWatch};
pub use pods::{ContainerUse, PodIndex, PodUse, PodWatch, PodsError};
pub use token_review::KubeTokenReview;

/// With `--auth-kubernetes` (`security.kubernetes`): connect to the cluster's API, so that
/// bearer tokens that are not in the auth file are checked with TokenReview.
pub async fn connect_token_review(security: &mut Security) -> Result<(), SecurityError> {
    let Some(k) = &security.kubernetes else {
        return Ok(());
    };
    let reviewer = KubeTokenReview::from_default_config(k.audiences.clone())
        .await
        .map_err(SecurityError::Kubernetes)?;
    security.auth = security.auth.clone().with_token_review(Arc::new(reviewer));
    Ok(())
}
