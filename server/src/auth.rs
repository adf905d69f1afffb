//! Who is calling, and whether they may: one tower layer ([`AuthLayer`]) in front of every
//! gRPC service authenticates each request and checks it against [`RULES`], the one table of
//! what every RPC of the system needs. Handlers get the verified [`Principal`] from the
//! request's extensions ([`principal`]) and never read credentials themselves.
//!
//! Identities:
//! - callers (people, CI, the other service) by a bearer token (`authorization: Bearer ...`)
//!   or a client certificate (its CN or a URI SAN), each listed in the auth file with a
//!   [`Role`];
//! - node agents by a client certificate whose URI SAN is `spiffe://<trust-domain>/node/<name>`
//!   or whose CN is `system:node:<name>`: such an identity may open its node's agent stream
//!   and nothing else, and callers may not open agent streams.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time; neither a token nor its
//! digest is ever logged or put into an error. Without an auth file and client CA the layer
//! lets everything through as [`Principal::Anonymous`] (for loopback development; a server
//! refuses to run that way on another address unless told `--insecure`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::codegen::http;

use crate::tls::PeerInfo;

/// The metadata key a client may use to say who it is when authentication is off; it is
/// recorded as `unverified:<name>`, never trusted.
pub const CLAIMED_ACTOR: &str = "x-seccomp-actor";

/// What a caller may do. Every role may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: profiles, versions, rollouts, nodes, audit.
    Viewer,
    /// Read, publish and deprecate profile versions.
    Publisher,
    /// Read, and run rollouts: create, pause, resume, abort, roll back.
    Operator,
    /// Everything, hard delete included.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unauthenticated (health checks from kubelet probes and load balancers).
    Public,
    /// Any caller (reflection).
    Caller,
    /// A caller with any role.
    Read,
    /// A publisher or an admin.
    Publish,
    /// An operator or an admin.
    Operate,
    /// An admin.
    Admin,
    /// A node agent (its own node's stream).
    Agent,
}

impl Role {
    /// Whether this role grants `access`.
    pub fn grants(self, access: Access) -> bool {
        match access {
            Access::Public | Access::Caller | Access::Read => true,
            Access::Publish => matches!(self, Role::Publisher | Role::Admin),
            Access::Operate => matches!(self, Role::Operator | Role::Admin),
            Access::Admin => self == Role::Admin,
            Access::Agent => false,
        }
    }
}

/// What every RPC of the system needs, by its path (`/package.Service/Method`); a path
/// ending in `/*` covers every method of that service. A request whose path is not here is
/// refused, and a test checks that every RPC in the descriptor set has a rule.
pub const RULES: &[(&str, Access)] = &[
    ("/grpc.health.v1.Health/*", Access::Public),
    ("/grpc.reflection.v1.ServerReflection/*", Access::Caller),
    (
        "/grpc.reflection.v1alpha.ServerReflection/*",
        Access::Caller,
    ),
    ("/seccomp.registry.v1.Registry/Publish", Access::Publish),
    (
        "/seccomp.registry.v1.Registry/ValidateProfile",
        Access::Read,
    ),
    ("/seccomp.registry.v1.Registry/GetProfile", Access::Read),
    ("/seccomp.registry.v1.Registry/ListProfiles", Access::Read),
    ("/seccomp.registry.v1.Registry/History", Access::Read),
    ("/seccomp.registry.v1.Registry/Diff", Access::Read),
    ("/seccomp.registry.v1.Registry/Deprecate", Access::Publish),
    ("/seccomp.registry.v1.Registry/DeleteVersion", Access::Admin),
    ("/seccomp.registry.v1.Registry/ListAudit", Access::Read),
    (
        "/seccomp.distributor.v1.Distributor/CreateRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/GetRollout",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListRollouts",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/PauseRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ResumeRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/AbortRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/Rollback",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/WatchRollout",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListNodes",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/RenderNci",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListAudit",
        Access::Read,
    ),
    ("/seccomp.agent.v1.AgentSync/Sync", Access::Agent),
];

/// The rule for a request path, if there is one.
pub fn rule(path: &str) -> Option<Access> {
    RULES.iter().find_map(|(p, access)| {
        let matches = match p.strip_suffix('*') {
            Some(service) => path.starts_with(service) && !path[service.len()..].contains('/'),
            None => path == *p,
        };
        matches.then_some(*access)
    })
}

/// Who a request comes from, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off (loopback or `--insecure`): anyone, perhaps claiming a name in
    /// [`CLAIMED_ACTOR`] that nothing checked.
    Anonymous {
        /// The name the client claimed.
        claimed: Option<String>,
    },
    /// A person or program from the auth file.
    Caller {
        /// Its name in the file.
        name: String,
        /// What it may do.
        role: Role,
    },
    /// A node agent.
    Node {
        /// The node's name.
        node: String,
    },
}

impl Principal {
    /// The name to record as actor: `alice`, `node:n1`, `anonymous` or `unverified:<name>`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous { claimed: None } => "anonymous".to_owned(),
            Principal::Anonymous {
                claimed: Some(name),
            } => format!("unverified:{name}"),
            Principal::Caller { name, .. } => name.clone(),
            Principal::Node { node } => format!("node:{node}"),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Caller { name, role } => write!(f, "{name} ({role})"),
            other => f.write_str(&other.actor()),
        }
    }
}

/// The verified caller of `request` (put there by [`AuthLayer`]); anonymous when the layer
/// is not installed (an in-process test server).
pub fn principal<T>(request: &tonic::Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous { claimed: None })
}

/// Why the auth file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// It could not be read.
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a valid list of identities.
    #[error("auth file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a token).
        message: String,
    },
}

/// One entry of the auth file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    certificate: Option<String>,
    /// A Kubernetes user (`system:serviceaccount:<ns>:<name>`) or group, from TokenReview.
    #[serde(default)]
    kubernetes: Option<String>,
    role: Role,
}

/// A caller identity from the auth file.
#[derive(Clone)]
enum Credential {
    /// SHA-256 of a bearer token.
    Token([u8; 32]),
    /// A client certificate's CN or URI SAN.
    Certificate(String),
    /// A Kubernetes user or group (`--auth-kubernetes`).
    Kubernetes(String),
}

#[derive(Clone)]
struct Identity {
    name: String,
    role: Role,
    credential: Credential,
}

/// The identities a server accepts.
#[derive(Clone, Default)]
pub struct Identities {
    callers: Vec<Identity>,
    /// Accept node agents by client certificate (the server verifies client certificates).
    nodes: bool,
    /// Only `spiffe://<this>/node/<name>` names a node (any trust domain when `None`).
    trust_domain: Option<String>,
    /// The Kubernetes user of the node agents (their DaemonSet's service account): its
    /// tokens, bound to a pod, name the node.
    kubernetes_agents: Option<String>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and roles only: never a token digest.
        f.debug_struct("Identities")
            .field(
                "callers",
                &self
                    .callers
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.role))
                    .collect::<Vec<_>>(),
            )
            .field("nodes", &self.nodes)
            .field("trust_domain", &self.trust_domain)
            .field("kubernetes_agents", &self.kubernetes_agents)
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Identities {
    /// Read the auth file: a YAML list of `{name, token | token_sha256 | certificate |
    /// kubernetes, role}`.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| AuthFileError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// The identities of an auth file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        // serde's messages may quote the offending value, which could be a token: say
        // where, not what.
        let entries: Vec<Entry> = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
            Some(at) => format!(
                "not a list of {{name, token | token_sha256 | certificate | kubernetes, role}} (line {}, column {})",
                at.line(),
                at.column()
            ),
            None => "not a list of {name, token | token_sha256 | certificate | kubernetes, role}".to_owned(),
        })?;
        let mut names = BTreeSet::new();
        let mut callers = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let at = format!("entry {} ({:?})", i + 1, e.name);
            if e.name.trim().is_empty() {
                return Err(format!("entry {}: the name is empty", i + 1));
            }
            if !names.insert(e.name.clone()) {
                return Err(format!("{at}: the name is given twice"));
            }
            let credential = match (e.token, e.token_sha256, e.certificate, e.kubernetes) {
                (None, None, None, Some(subject)) if !subject.is_empty() => {
                    Credential::Kubernetes(subject)
                }
                (Some(token), None, None, None) => {
                    if token.len() < 16 {
                        return Err(format!("{at}: the token is shorter than 16 characters"));
                    }
                    Credential::Token(sha256(token.as_bytes()))
                }
                (None, Some(hex_digest), None, None) => {
                    let digest = hex::decode(hex_digest.trim())
                        .ok()
                        .and_then(|d| <[u8; 32]>::try_from(d).ok())
                        .ok_or_else(|| {
                            format!("{at}: token_sha256 is not 64 hexadecimal digits")
                        })?;
                    Credential::Token(digest)
                }
                (None, None, Some(subject), None) if !subject.is_empty() => {
                    if node_of(&subject, None).is_some() {
                        return Err(format!(
                            "{at}: certificate {subject:?} is a node identity, which cannot be a caller"
                        ));
                    }
                    Credential::Certificate(subject)
                }
                _ => {
                    return Err(format!(
                        "{at}: give exactly one of token, token_sha256, certificate and kubernetes"
                    ));
                }
            };
            callers.push(Identity {
                name: e.name,
                role: e.role,
                credential,
            });
        }
        Ok(Identities {
            callers,
            ..Identities::default()
        })
    }

    /// Also accept node agents by their client certificates (only where the server verifies
    /// client certificates), optionally only from one SPIFFE trust domain.
    pub fn with_nodes(mut self, trust_domain: Option<String>) -> Self {
        self.nodes = true;
        self.trust_domain = trust_domain;
        self
    }

    /// Also accept node agents by the Kubernetes tokens of `user` (`--auth-kubernetes`): a
    /// TokenReview that names that user and a node is that node.
    pub fn with_kubernetes_agents(mut self, user: String) -> Self {
        self.kubernetes_agents = Some(user);
        self
    }

    /// Whether anything at all is accepted (else authentication is off).
    pub fn is_enabled(&self) -> bool {
        self.nodes || !self.callers.is_empty()
    }

    fn by_token(&self, token: &str) -> Option<&Identity> {
        let presented = sha256(token.as_bytes());
        // Every entry is compared, so the time taken does not say which one matched.
        let mut found = None;
        for c in &self.callers {
            if let Credential::Token(digest) = &c.credential
                && bool::from(digest.ct_eq(&presented))
            {
                found = Some(c);
            }
        }
        found
    }

    fn by_certificate(&self, names: &CertNames) -> Option<&Identity> {
        self.callers.iter().find(|c| match &c.credential {
            Credential::Certificate(subject) => {
                names.cn.as_deref() == Some(subject.as_str()) || names.uris.contains(subject)
            }
            Credential::Token(_) | Credential::Kubernetes(_) => false,
        })
    }

    fn by_kubernetes(&self, reviewed: &Reviewed) -> Option<&Identity> {
        self.callers.iter().find(|c| match &c.credential {
            Credential::Kubernetes(subject) => {
                reviewed.username == *subject || reviewed.groups.contains(subject)
            }
            _ => false,
        })
    }
}

/// The names a client certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject's common name.
    pub cn: Option<String>,
    /// The URI subject alternative names.
    pub uris: Vec<String>,
}

impl fmt::Display for CertNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(cn) = &self.cn {
            parts.push(format!("CN={cn}"));
        }
        parts.extend(self.uris.iter().map(|u| format!("URI:{u}")));
        if parts.is_empty() {
            f.write_str("a certificate with no CN and no URI SAN")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The CN and URI SANs of a DER certificate.
pub fn cert_names(der: &CertificateDer<'_>) -> Result<CertNames, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push((*uri).to_owned());
            }
        }
    }
    Ok(CertNames { cn, uris })
}

/// The node a certificate name stands for: `spiffe://<trust-domain>/node/<name>` (from
/// `trust_domain` when given) or `system:node:<name>`.
pub fn node_of(subject: &str, trust_domain: Option<&str>) -> Option<String> {
    if let Some(name) = subject.strip_prefix("system:node:") {
        return (!name.is_empty()).then(|| name.to_owned());
    }
    let rest = subject.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/')?;
    if trust_domain.is_some_and(|td| td != domain) {
        return None;
    }
    let name = path.strip_prefix("node/")?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

/// The node a client certificate names, if it names one.
fn node_of_cert(names: &CertNames, trust_domain: Option<&str>) -> Option<String> {
    names
        .uris
        .iter()
        .find_map(|u| node_of(u, trust_domain))
        .or_else(|| names.cn.as_deref().and_then(|cn| node_of(cn, None)))
}

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
/// At most this many answers are kept.
const REVIEW_CACHE: usize = 4096;

type ReviewCache = HashMap<[u8; 32], (Option<Reviewed>, Instant)>;

/// Decides who a request comes from and whether it may make it.
#[derive(Clone, Default)]
pub struct Authenticator {
    identities: Identities,
    reviewer: Option<Arc<dyn TokenReviewer>>,
    reviewed: Arc<Mutex<ReviewCache>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("identities", &self.identities)
            .field("kubernetes", &self.reviewer.is_some())
            .finish_non_exhaustive()
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
                .filter(|(_, at)| at.elapsed() < REVIEW_TTL)
                .map(|(r, _)| r.clone())
        };
        let reviewed = match cached {
            Some(r) => r,
            None => {
                let r = reviewer.review(token).await.map_err(|e| {
                    Status::unavailable(format!(
                        "cannot check the token with the Kubernetes API: {e}"
                    ))
                })?;
                let mut cache = self.reviewed.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= REVIEW_CACHE {
                    cache.retain(|_, (_, at)| at.elapsed() < REVIEW_TTL);
                    if cache.len() >= REVIEW_CACHE {
                        cache.clear();
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

/// Told about every refused request (a service records them in its audit log). Called on
/// the request path: it must not block.
pub trait Refusals: Send + Sync + 'static {
    /// `actor` (as far as known) was refused the RPC at `path` with `code`
    /// (`UNAUTHENTICATED` or `PERMISSION_DENIED`) for `reason`.
    fn refused(&self, path: &str, actor: &str, code: &str, reason: &str);
}

/// Refusals are only logged (the layer always logs them).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOnly;

impl Refusals for LogOnly {
    fn refused(&self, _path: &str, _actor: &str, _code: &str, _reason: &str) {}
}

/// The canonical name of a refusal's code.
fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        _ => "REFUSED",
    }
}

/// The tower layer: authenticate, authorize, put the [`Principal`] into the request.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    refusals: Arc<dyn Refusals>,
}

impl AuthLayer {
    /// The layer over `auth`, telling `refusals` about each refusal.
    pub fn new(auth: Authenticator, refusals: Arc<dyn Refusals>) -> Self {
        AuthLayer {
            auth: Arc::new(auth),
            refusals,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The service that was polled ready goes with this request; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let verdict = layer
                .auth
                .check(req.headers(), req.extensions().get::<PeerInfo>(), &path)
                .await;
            match verdict {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err((actor, status)) => {
                    tracing::warn!(method = %path, %actor, code = ?status.code(), reason = status.message(), "request refused");
                    layer.refusals.refused(
                        &path,
                        &actor,
                        code_name(status.code()),
                        status.message(),
                    );
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rules_match_methods_and_whole_services() {
        assert_eq!(rule("/grpc.health.v1.Health/Check"), Some(Access::Public));
        assert_eq!(rule("/grpc.health.v1.Health/Watch"), Some(Access::Public));
        assert_eq!(
            rule("/seccomp.registry.v1.Registry/DeleteVersion"),
            Some(Access::Admin)
        );
        assert_eq!(rule("/seccomp.registry.v1.Registry/Nope"), None);
        assert_eq!(rule("/grpc.health.v1.Health/a/b"), None);
        assert_eq!(rule("/grpc.health.v1.HealthX/Check"), None);
    }

    #[test]
    fn roles_grant_what_the_table_says() {
        use Access::*;
        let table = [
            (Role::Viewer, [true, false, false, false, false]),
            (Role::Publisher, [true, true, false, false, false]),
            (Role::Operator, [true, false, true, false, false]),
            (Role::Admin, [true, true, true, true, false]),
        ];
        for (role, expected) in table {
            let got = [Read, Publish, Operate, Admin, Agent].map(|a| role.grants(a));
            assert_eq!(got, expected, "{role}");
        }
    }

    #[test]
    fn node_names_come_from_spiffe_ids_and_kubelet_style_names() {
        for (subject, td, expected) in [
            ("spiffe://cluster.local/node/n1", None, Some("n1")),
            (
                "spiffe://cluster.local/node/n1",
                Some("cluster.local"),
                Some("n1"),
            ),
            ("spiffe://other/node/n1", Some("cluster.local"), None),
            ("spiffe://cluster.local/node/", None, None),
            ("spiffe://cluster.local/node/a/b", None, None),
            ("spiffe://cluster.local/service/registry", None, None),
            ("system:node:n2", None, Some("n2")),
            ("system:node:", None, None),
            ("n3", None, None),
        ] {
            assert_eq!(
                node_of(subject, td).as_deref(),
                expected,
                "{subject} {td:?}"
            );
        }
    }

    fn check_file(text: &str, expected: Result<usize, &str>) {
        match (Identities::parse(text), expected) {
            (Ok(ids), Ok(n)) => assert_eq!(ids.callers.len(), n, "{text}"),
            (Err(message), Err(part)) => {
                assert!(message.contains(part), "{message:?} lacks {part:?}")
            }
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn auth_files_are_checked_and_never_quote_a_token() {
        let digest = hex::encode(sha256(b"0123456789abcdef-admin"));
        check_file("[]", Ok(0));
        check_file(
            &format!(
                "- {{name: alice, token_sha256: {digest}, role: admin}}\n- {{name: ci, token: 0123456789abcdef-ci, role: publisher}}\n- {{name: reg, certificate: spiffe://td/service/registry, role: viewer}}"
            ),
            Ok(3),
        );
        check_file("- {name: a, role: admin}", Err("exactly one of"));
        check_file(
            "- {name: a, token: 0123456789abcdef, certificate: x, role: admin}",
            Err("exactly one of"),
        );
        check_file(
            "- {name: a, token: short, role: admin}",
            Err("shorter than 16"),
        );
        check_file(
            "- {name: a, token_sha256: abc, role: admin}",
            Err("64 hexadecimal"),
        );
        check_file(
            "- {name: a, token: 0123456789abcdef, role: root}",
            Err("line 1"),
        );
        check_file(
            "- {name: a, token: 0123456789abcdef, role: admin}\n- {name: a, token: 0123456789abcdeg, role: admin}",
            Err("given twice"),
        );
        check_file(
            "- {name: a, certificate: system:node:n1, role: admin}",
            Err("node identity"),
        );
        let secret = "super-secret-token-value";
        let err =
            Identities::parse(&format!("- {{name: a, token: {secret}, role: rooot}}")).unwrap_err();
        assert!(!err.contains(secret), "{err}");
        let err =
            Identities::parse(&format!("- {{name: a, tokn: {secret}, role: admin}}")).unwrap_err();
        assert!(!err.contains(secret), "{err}");
    }

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
            ("down-jwt", tonic::Code::Unavailable, "connection refused"),
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
