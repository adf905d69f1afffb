//! The auth file (who may call, and as what) and the names in client certificates.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;
use super::authenticator::Reviewed;

/// Why the auth file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// It could not be read.
    #[error("cannot read the auth file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
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

/// Which name of a client certificate an auth-file entry matches. Explicit, so that a CN
/// (which a certificate's requester often chooses) never passes for a URI SAN.
#[derive(Clone, PartialEq, Eq)]
enum CertSubject {
    /// A URI subject alternative name, exactly.
    Uri(String),
    /// The subject's common name, exactly.
    Cn(String),
}

impl CertSubject {
    fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("uri", v)) if !v.is_empty() => Some(CertSubject::Uri(v.to_owned())),
            Some(("cn", v)) if !v.is_empty() => Some(CertSubject::Cn(v.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for CertSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSubject::Uri(u) => write!(f, "URI:{u}"),
            CertSubject::Cn(c) => write!(f, "CN={c}"),
        }
    }
}

/// A caller identity from the auth file.
#[derive(Clone)]
enum Credential {
    /// SHA-256 of a bearer token.
    Token([u8; 32]),
    /// A client certificate's URI SAN or CN.
    Certificate(CertSubject),
    /// A Kubernetes user or group (`--auth-kubernetes`).
    Kubernetes(String),
}

#[derive(Clone)]
pub(super) struct Identity {
    pub(super) name: String,
    pub(super) role: Role,
    credential: Credential,
}

/// The identities a server accepts.
#[derive(Clone, Default)]
pub struct Identities {
    pub(super) callers: Vec<Identity>,
    /// Accept node agents by client certificate (the server verifies client certificates).
    pub(super) nodes: bool,
    /// Only `spiffe://<this>/node/<name>` names a node (any trust domain when `None`).
    pub(super) trust_domain: Option<String>,
    /// The Kubernetes user of the node agents (their DaemonSet's service account): its
    /// tokens, bound to a pod, name the node.
    pub(super) kubernetes_agents: Option<String>,
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

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Identities {
    /// Read the auth file: a YAML list of `{name, token | token_sha256 | certificate |
    /// kubernetes, role}`.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| AuthFileError::Read {
            path: path.to_owned(),
            error,
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
            // A name is recorded as the actor: it must not look like another kind of one.
            if e.name.contains(':')
                || ["anonymous", "unauthenticated"].contains(&e.name.as_str())
                || !e.name.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "{at}: a name is printable, without ':', and not \"anonymous\" or \"unauthenticated\""
                ));
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
                (None, None, Some(subject), None) => {
                    let subject = CertSubject::parse(&subject).ok_or_else(|| {
                        format!(
                            "{at}: certificate is \"uri:<URI SAN>\" or \"cn:<common name>\", not {subject:?}"
                        )
                    })?;
                    let node = match &subject {
                        CertSubject::Uri(u) => u.contains("/node/") && u.starts_with("spiffe://"),
                        CertSubject::Cn(cn) => cn.starts_with("system:node:"),
                    };
                    if node {
                        return Err(format!(
                            "{at}: certificate {subject} looks like a node identity, which cannot be a caller"
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

    pub(super) fn by_token(&self, token: &str) -> Option<&Identity> {
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

    pub(super) fn by_certificate(&self, names: &CertNames) -> Option<&Identity> {
        self.callers.iter().find(|c| match &c.credential {
            Credential::Certificate(CertSubject::Uri(uri)) => names.uris.contains(uri),
            Credential::Certificate(CertSubject::Cn(cn)) => {
                names.cn.as_deref() == Some(cn.as_str())
            }
            Credential::Token(_) | Credential::Kubernetes(_) => false,
        })
    }

    pub(super) fn by_kubernetes(&self, reviewed: &Reviewed) -> Option<&Identity> {
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

/// The node a certificate name stands for: `system:node:<name>` (a CN), or
/// `spiffe://<trust-domain>/node/<name>` (a URI SAN) in the configured trust domain; SPIFFE
/// IDs are not node identities without one.
pub fn node_of(subject: &str, trust_domain: Option<&str>) -> Option<String> {
    if let Some(name) = subject.strip_prefix("system:node:") {
        return (!name.is_empty()).then(|| name.to_owned());
    }
    let rest = subject.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/')?;
    if trust_domain != Some(domain) {
        return None;
    }
    let name = path.strip_prefix("node/")?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

/// The node a client certificate names, if it names one: from its URI SANs in the trust
/// domain, and from its CN only in the `system:node:` form. A certificate that names more
/// than one node is an error.
pub(super) fn node_of_cert(
    names: &CertNames,
    trust_domain: Option<&str>,
) -> Result<Option<String>, String> {
    let mut nodes: BTreeSet<String> = names
        .uris
        .iter()
        .filter_map(|u| node_of(u, trust_domain))
        .collect();
    if let Some(node) = names
        .cn
        .as_deref()
        .and_then(|cn| cn.strip_prefix("system:node:"))
        .filter(|n| !n.is_empty())
    {
        nodes.insert(node.to_owned());
    }
    match nodes.len() {
        0 => Ok(None),
        1 => Ok(nodes.pop_first()),
        _ => Err(format!(
            "client certificate {names} names several nodes ({})",
            nodes.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn node_names_come_from_spiffe_ids_and_kubelet_style_names() {
        for (subject, td, expected) in [
            ("spiffe://cluster.local/node/n1", None, None),
            (
                "spiffe://cluster.local/node/n1",
                Some("cluster.local"),
                Some("n1"),
            ),
            ("spiffe://other/node/n1", Some("cluster.local"), None),
            ("spiffe://cluster.local/node/", Some("cluster.local"), None),
            (
                "spiffe://cluster.local/node/a/b",
                Some("cluster.local"),
                None,
            ),
            (
                "spiffe://cluster.local/service/registry",
                Some("cluster.local"),
                None,
            ),
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
                "- {{name: alice, token_sha256: {digest}, role: admin}}\n- {{name: ci, token: 0123456789abcdef-ci, role: publisher}}\n- {{name: reg, certificate: \"uri:spiffe://td/service/registry\", role: viewer}}\n- {{name: ops, certificate: \"cn:ops-bot\", role: operator}}"
            ),
            Ok(4),
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
            "- {name: a, certificate: \"cn:system:node:n1\", role: admin}",
            Err("node identity"),
        );
        check_file(
            "- {name: a, certificate: \"uri:spiffe://td/node/n1\", role: admin}",
            Err("node identity"),
        );
        check_file(
            "- {name: a, certificate: \"spiffe://td/ci\", role: admin}",
            Err("certificate is \"uri:<URI SAN>\""),
        );
        for name in ["node:x", "anonymous", "unauthenticated", "a b"] {
            check_file(
                &format!("- {{name: \"{name}\", token: 0123456789abcdef, role: admin}}"),
                Err("a name is printable"),
            );
        }
        let secret = "super-secret-token-value";
        let err =
            Identities::parse(&format!("- {{name: a, token: {secret}, role: rooot}}")).unwrap_err();
        assert!(!err.contains(secret), "{err}");
        let err =
            Identities::parse(&format!("- {{name: a, tokn: {secret}, role: admin}}")).unwrap_err();
        assert!(!err.contains(secret), "{err}");
    }

    #[test]
    fn a_certificate_names_at_most_one_node() {
        let names = |cn: Option<&str>, uris: &[&str]| CertNames {
            cn: cn.map(str::to_owned),
            uris: uris.iter().map(|u| (*u).to_owned()).collect(),
        };
        let td = Some("td");
        let one = |n: &str| Ok(Some(n.to_owned()));
        assert_eq!(
            node_of_cert(&names(Some("system:node:a"), &[]), td),
            one("a")
        );
        assert_eq!(
            node_of_cert(&names(Some("system:node:a"), &["spiffe://td/node/a"]), td),
            one("a")
        );
        assert!(node_of_cert(&names(Some("system:node:a"), &["spiffe://td/node/b"]), td).is_err());
        assert!(
            node_of_cert(
                &names(None, &["spiffe://td/node/a", "spiffe://td/node/b"]),
                td
            )
            .is_err()
        );
        // A SPIFFE ID in the CN, or one from another trust domain, names nobody.
        assert_eq!(
            node_of_cert(&names(Some("spiffe://td/node/a"), &[]), td),
            Ok(None)
        );
        assert_eq!(
            node_of_cert(&names(None, &["spiffe://other/node/a"]), td),
            Ok(None)
        );
        assert_eq!(
            node_of_cert(&names(None, &["spiffe://td/node/a"]), None),
            Ok(None)
        );
    }
}
