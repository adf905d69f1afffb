//! Kubernetes ServiceAccount tokens checked with TokenReview (`--auth-kubernetes`).
//!
//! A review asks the API server whether a bearer token is valid for this service's
//! audiences, and who it belongs to: the user, its groups, and for a projected token bound
//! to a pod the node that pod runs on (`authentication.kubernetes.io/node-name`), which is
//! how a node agent's token names its node.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use seccomp_server::auth::{BoxFuture, Reviewed, TokenReviewer};

/// The extra field of a TokenReview's user that names the node of the pod a token is
/// bound to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Reviews tokens with the API server of `client`.
#[derive(Clone)]
pub struct KubeTokenReview {
    api: Api<TokenReview>,
    audiences: Vec<String>,
}

impl KubeTokenReview {
    /// Reviews through `client`, for `audiences` (at least one: a token for the API server
    /// itself is never accepted).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        KubeTokenReview {
            api: Api::all(client),
            audiences,
        }
    }

    /// Reviews through the default configuration (in-cluster, or `KUBECONFIG`).
    pub async fn from_default_config(audiences: Vec<String>) -> Result<Self, String> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("cannot reach the Kubernetes API for TokenReview: {e}"))?;
        Ok(Self::new(client, audiences))
    }
}

impl TokenReviewer for KubeTokenReview {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Reviewed>, String>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
                },
                ..TokenReview::default()
            };
            // kube's errors carry the API's status message, never the request body.
            let answer = self
                .api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| format!("TokenReview: {e}"))?;
            let Some(status) = answer.status else {
                return Err("TokenReview: the API server answered without a status".to_owned());
            };
            if status.authenticated != Some(true) {
                return Ok(None);
            }
            // A reviewer that does not know audiences accepts tokens meant for anyone: the
            // answer must name one of ours (the API's own audience is never accepted).
            let theirs = status.audiences.unwrap_or_default();
            if !self.audiences.iter().any(|a| theirs.contains(a)) {
                return Ok(None);
            }
            let user = status.user.unwrap_or_default();
            let Some(username) = user.username.filter(|u| !u.is_empty()) else {
                return Ok(None);
            };
            let node = user
                .extra
                .as_ref()
                .and_then(|extra| extra.get(NODE_NAME_EXTRA))
                .and_then(|values| values.first())
                .filter(|n| !n.is_empty())
                .cloned();
            Ok(Some(Reviewed {
                username,
                groups: user.groups.unwrap_or_default(),
                node,
            }))
        })
    }
}
