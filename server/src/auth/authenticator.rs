//! Who a request comes from ([`Authenticator::authenticate`]: a bearer token from the auth
//! file or by TokenReview, or a client certificate) and whether it may make it
//! ([`Authenticator::authorize`], by the rule table).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::codegen::http;

use super::identities::{Identities, cert_names, node_of_cert, sha256};
use super::{Access, CLAIMED_ACTOR, Principal, rule};
use crate::tls::PeerInfo;

/// The bearer token of a request, if it carries one.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(Status::unauthenticated(
            "the authorization header is not \"Bearer <token>\"",
        )),
    }
}

/// What a TokenReview said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// The user (`system:serviceaccount:<namespace>:<name>`).
    pub username: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The node of the pod the token is bound to (`authentication.kubernetes.io/node-name`).
    pub node: Option<String>,
}

/// A boxed future, so [`TokenReviewer`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Checks bearer tokens that are not in the auth file with the Kubernetes API (TokenReview).
pub trait TokenReviewer: Send + Sync + 'static {
    /// Who the token belongs to; `None` when the API says it is not valid (for this
    /// service's audience); an error when the API cannot be asked.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Reviewed>, String>>;
}

/// How long a TokenReview answer is reused (tokens live for an hour or more; the API is not
/// asked on every call of a stream of calls).
const REVIEW_TTL: Duration = Duration::from_secs(60);
/// How long a "not valid" answer is reused: long enough that a flood of one bad token costs
/// the API server little, short enough that a token just issued works soon.
const REFUSAL_TTL: Duration = Duration::from_secs(10);
/// Reviews in flight at once; more wait (and time out), so a flood of unknown tokens cannot
/// turn into a flood on the API server.
const REVIEWS_AT_ONCE: usize = 32;
/// How long a request may wait for its review.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many answers are kept.
const REVIEW_CACHE: usize = 4096;

type ReviewCache = HashMap<[u8; 32], (Option<Reviewed>, Instant)>;

/// Decides who a request comes from and whether it may make it.
#[derive(Clone)]
pub struct Authenticator {
    identities: Identities,
    reviewer: Option<Arc<dyn TokenReviewer>>,
    reviewed: Arc<Mutex<ReviewCache>>,
    reviews: Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("identities", &self.identities)
            .field("kubernetes", &self.reviewer.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            identities: Identities::default(),
            reviewer: None,
            reviewed: Arc::default(),
            reviews: Arc::new(tokio::sync::Semaphore::new(REVIEWS_AT_ONCE)),
        }
    }
}

/// Whether a cached answer is still good.
fn fresh(answer: &Option<Reviewed>, at: Instant) -> bool {
    at.elapsed()
        < if answer.is_some() {
            REVIEW_TTL
        } else {
            REFUSAL_TTL
        }
}

impl Authenticator {
    /// An authenticator accepting `identities` (none: authentication off).
    pub fn new(identities: Identities) -> Self {
        Authenticator {
            identities,
            ..Authenticator::default()
        }
    }

    /// Also check bearer tokens that are not in the auth file with `reviewer`.
    pub fn with_token_review(mut self, reviewer: Arc<dyn TokenReviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// Whether authentication is on.
    pub fn is_enabled(&self) -> bool {
        self.identities.is_enabled() || self.reviewer.is_some()
    }

    /// Who sent a request with these headers over this connection.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Principal, Status> {
        if !self.is_enabled() {
            // Printable and short: it ends up in logs and the audit log.
            let claimed = headers
                .get(CLAIMED_ACTOR)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= 128
                        && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                })
                .map(str::to_owned);
            return Ok(Principal::Anonymous { claimed });
        }
        if let Some(token) = bearer(headers)? {
            if let Some(c) = self.identities.by_token(token) {
                return Ok(Principal::Caller {
                    name: c.name.clone(),
                    role: c.role,
                });
            }
            return self.review(token).await;
        }
        let cert = peer.and_then(|p| p.certs.as_ref()).and_then(|c| c.first());
        let Some(cert) = cert else {
            return Err(Status::unauthenticated(
                "no credentials: send a bearer token (authorization: Bearer ...) or a client certificate",
            ));
        };
        let names = cert_names(cert).map_err(Status::unauthenticated)?;
        if self.identities.nodes
            && let Some(node) = node_of_cert(&names, self.identities.trust_domain.as_deref())
                .map_err(Status::unauthenticated)?
        {
            return Ok(Principal::Node { node });
        }
        match self.identities.by_certificate(&names) {
            Some(c) => Ok(Principal::Caller {
                name: c.name.clone(),
                role: c.role,
            }),
            None => Err(Status::unauthenticated(format!(
                "client certificate {names} is not a known identity"
            ))),
        }
    }

    /// A token that is not in the auth file, by TokenReview.
    async fn review(&self, token: &str) -> Result<Principal, Status> {
        let invalid = || Status::unauthenticated("the bearer token is not valid");
        let Some(reviewer) = &self.reviewer else {
            return Err(invalid());
        };
        let key = sha256(token.as_bytes());
        let cached = {
            let cache = self.reviewed.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&key)
                .filter(|(r, at)| fresh(r, *at))
                .map(|(r, _)| r.clone())
        };
        let reviewed = match cached {
            Some(r) => r,
            None => {
                // The details (the API's own words) go to the log, not to a caller who may be
                // anyone.
                let unavailable = |detail: &str| {
                    tracing::warn!(error = %detail, "token review failed");
                    Status::unavailable("cannot check the token with the Kubernetes API now")
                };
                let asked = tokio::time::timeout(REVIEW_TIMEOUT, async {
                    let _permit = self.reviews.acquire().await;
                    reviewer.review(token).await
                })
                .await;
                let r = match asked {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return Err(unavailable(&e)),
                    Err(_) => return Err(unavailable("no answer in time")),
                };
                let mut cache = self.reviewed.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= REVIEW_CACHE {
                    cache.retain(|_, (r, at)| fresh(r, *at));
                    // Still full of good answers: drop the oldest quarter, not everyone's.
                    if cache.len() >= REVIEW_CACHE {
                        let mut ages: Vec<Instant> = cache.values().map(|(_, at)| *at).collect();
                        ages.sort_unstable();
                        let cut = ages[ages.len() / 4];
                        cache.retain(|_, (_, at)| *at > cut);
                    }
                }
                cache.insert(key, (r.clone(), Instant::now()));
                r
            }
        };
        let Some(reviewed) = reviewed else {
            return Err(invalid());
        };
        if self.identities.kubernetes_agents.as_deref() == Some(reviewed.username.as_str()) {
            return match &reviewed.node {
                Some(node) => Ok(Principal::Node { node: node.clone() }),
                None => Err(Status::unauthenticated(format!(
                    "the token of {} names no node (a projected token bound to the agent's pod is needed)",
                    reviewed.username
                ))),
            };
        }
        match self.identities.by_kubernetes(&reviewed) {
            Some(c) => Ok(Principal::Caller {
                name: c.name.clone(),
                role: c.role,
            }),
            None => Err(Status::unauthenticated(format!(
                "kubernetes user {} is not a known identity",
                reviewed.username
            ))),
        }
    }

    /// Who sent the request, if they may call the RPC at `path`. RPCs open to everyone need
    /// no credentials (health checks from probes carry none). On refusal, the error comes
    /// with the caller's actor as far as it is known.
    pub async fn check(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerInfo>,
        path: &str,
    ) -> Result<Principal, (String, Status)> {
        if rule(path) == Some(Access::Public) {
            return Ok(Principal::Anonymous { claimed: None });
        }
        let principal = self
            .authenticate(headers, peer)
            .await
            .map_err(|s| ("unauthenticated".to_owned(), s))?;
        self.authorize(&principal, path)
            .map_err(|s| (principal.actor(), s))?;
        Ok(principal)
    }

    /// Whether `principal` may call the RPC at `path`.
    pub fn authorize(&self, principal: &Principal, path: &str) -> Result<(), Status> {
        let Some(access) = rule(path) else {
            return Err(Status::permission_denied(format!(
                "{path} has no access rule"
            )));
        };
        let allowed = match (principal, access) {
            (_, Access::Public) => true,
            (Principal::Anonymous { .. }, _) => !self.is_enabled(),
            (Principal::Node { .. }, Access::Agent) => true,
            (Principal::Node { .. }, _) => {
                return Err(Status::permission_denied(
                    "a node identity can only open its node's agent stream",
                ));
            }
            (Principal::Caller { .. }, Access::Agent) => {
                return Err(Status::permission_denied(
                    "agent streams are for node identities (a node's client certificate)",
                ));
            }
            (Principal::Caller { role, .. }, access) => role.grants(access),
        };
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{principal} may not call {path}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::auth::Role;

    fn headers(token: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    #[tokio::test]
    async fn tokens_name_callers_and_the_table_decides() {
        let auth = Authenticator::new(
            Identities::parse(
                "- {name: alice, token: alice-0123456789ab, role: admin}\n- {name: vic, token: vic-0123456789abcd, role: viewer}",
            )
            .unwrap(),
        );
        let alice = auth
            .authenticate(&headers(Some("alice-0123456789ab")), None)
            .await
            .unwrap();
        assert_eq!(alice.actor(), "alice");
        let vic = auth
            .authenticate(&headers(Some("vic-0123456789abcd")), None)
            .await
            .unwrap();
        let delete = "/seccomp.registry.v1.Registry/DeleteVersion";
        assert!(auth.authorize(&alice, delete).is_ok());
        let denied = auth.authorize(&vic, delete).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied.message().contains("vic (viewer)"),
            "{}",
            denied.message()
        );
        assert!(
            auth.authorize(&vic, "/seccomp.registry.v1.Registry/GetProfile")
                .is_ok()
        );
        let agent = auth
            .authorize(&alice, "/seccomp.agent.v1.AgentSync/Sync")
            .unwrap_err();
        assert_eq!(agent.code(), tonic::Code::PermissionDenied);

        let wrong = auth
            .authenticate(&headers(Some("alice-0123456789ac")), None)
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!wrong.message().contains("alice-0123456789ac"));
        let none = auth.authenticate(&headers(None), None).await.unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        // Health stays open to probes; nothing else is.
        assert!(
            auth.check(&headers(None), None, "/grpc.health.v1.Health/Check")
                .await
                .is_ok()
        );
        let refused = auth
            .check(
                &headers(None),
                None,
                "/seccomp.registry.v1.Registry/GetProfile",
            )
            .await
            .unwrap_err();
        assert_eq!(refused.1.code(), tonic::Code::Unauthenticated);
        assert_eq!(refused.0, "unauthenticated");
    }

    #[tokio::test]
    async fn without_identities_everyone_is_an_unverified_anonymous() {
        let auth = Authenticator::default();
        let mut h = headers(None);
        h.insert(CLAIMED_ACTOR, "bob".parse().unwrap());
        let p = auth.authenticate(&h, None).await.unwrap();
        assert_eq!(p.actor(), "unverified:bob");
        assert!(
            auth.authorize(&p, "/seccomp.registry.v1.Registry/DeleteVersion")
                .is_ok()
        );
    }

    /// A TokenReview stand-in: a fixed answer per token, counting the questions.
    struct FakeReview(std::sync::atomic::AtomicUsize);

    impl TokenReviewer for FakeReview {
        fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Reviewed>, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = match token {
                "agent-jwt" => Ok(Some(Reviewed {
                    username: "system:serviceaccount:seccomp:agent".into(),
                    groups: vec!["system:serviceaccounts".into()],
                    node: Some("n7".into()),
                })),
                "unbound-agent-jwt" => Ok(Some(Reviewed {
                    username: "system:serviceaccount:seccomp:agent".into(),
                    groups: Vec::new(),
                    node: None,
                })),
                "ci-jwt" => Ok(Some(Reviewed {
                    username: "system:serviceaccount:ci:deployer".into(),
                    groups: vec!["system:serviceaccounts:ci".into()],
                    node: None,
                })),
                "other-jwt" => Ok(Some(Reviewed {
                    username: "system:serviceaccount:x:y".into(),
                    groups: Vec::new(),
                    node: None,
                })),
                "down-jwt" => Err("connection refused".into()),
                _ => Ok(None),
            };
            Box::pin(std::future::ready(answer))
        }
    }

    #[tokio::test]
    async fn kubernetes_tokens_name_agents_by_their_node_and_callers_by_user_or_group() {
        let review = Arc::new(FakeReview(std::sync::atomic::AtomicUsize::new(0)));
        let identities = Identities::parse(
            "- {name: ci, kubernetes: system:serviceaccounts:ci, role: publisher}",
        )
        .unwrap()
        .with_kubernetes_agents("system:serviceaccount:seccomp:agent".into());
        let auth = Authenticator::new(identities).with_token_review(review.clone());
        let who = |token: &'static str| {
            let auth = auth.clone();
            async move { auth.authenticate(&headers(Some(token)), None).await }
        };
        assert_eq!(
            who("agent-jwt").await.unwrap(),
            Principal::Node { node: "n7".into() }
        );
        assert_eq!(
            who("ci-jwt").await.unwrap(),
            Principal::Caller {
                name: "ci".into(),
                role: Role::Publisher
            }
        );
        for (token, code, part) in [
            (
                "unbound-agent-jwt",
                tonic::Code::Unauthenticated,
                "names no node",
            ),
            (
                "other-jwt",
                tonic::Code::Unauthenticated,
                "not a known identity",
            ),
            ("forged-jwt", tonic::Code::Unauthenticated, "not valid"),
            (
                "down-jwt",
                tonic::Code::Unavailable,
                "cannot check the token",
            ),
        ] {
            let err = who(token).await.unwrap_err();
            assert_eq!(err.code(), code, "{token}");
            assert!(err.message().contains(part), "{token}: {}", err.message());
            assert!(
                !err.message().contains(token),
                "{token} in {}",
                err.message()
            );
        }
        // Answers are reused for a while; a failed question is not.
        let asked = review.0.load(std::sync::atomic::Ordering::SeqCst);
        who("agent-jwt").await.unwrap();
        who("forged-jwt").await.unwrap_err();
        assert_eq!(review.0.load(std::sync::atomic::Ordering::SeqCst), asked);
        who("down-jwt").await.unwrap_err();
        assert_eq!(
            review.0.load(std::sync::atomic::Ordering::SeqCst),
            asked + 1
        );
    }
}
