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
//! - with `--auth-kubernetes`, Kubernetes ServiceAccount tokens by TokenReview: callers by
//!   user or group, node agents by the node their projected token is bound to.
//!
//! Layout: this module holds the rule table, roles and principals; [`identities`] the auth
//! file and certificate names; [`authenticator`] who a request comes from and whether it may
//! make it; [`layer`] the tower layer.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time; neither a token nor its
//! digest is ever logged or put into an error. Without an auth file and client CA the layer
//! lets everything through as [`Principal::Anonymous`] (for loopback development; a server
//! refuses to run that way on another address unless told `--insecure`).

mod authenticator;
mod identities;
mod layer;

use std::fmt;

use serde::Deserialize;

pub use authenticator::{Authenticator, BoxFuture, Reviewed, TokenReviewer};
pub use identities::{AuthFileError, CertNames, Identities, cert_names, node_of};
pub use layer::{AuthLayer, AuthService, LogOnly, Refusals};

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
    ("/seccomp.registry.v1.Registry/SetPolicy", Access::Admin),
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
        "/seccomp.distributor.v1.Distributor/PlanRollout",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/RetireNci",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListAudit",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListSeccompEvents",
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
}
