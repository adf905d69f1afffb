//! A server's security settings, shared by the services: the flags (`--tls-cert`,
//! `--tls-key`, `--client-ca`, `--auth-tokens`, `--trust-domain`, `--insecure`), what they
//! become ([`Security`]), and the rule that keeps the secure path the default: a server on
//! an address other than loopback without both TLS and authentication refuses to start
//! unless `--insecure` says so, and then warns at every start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::{AuthFileError, AuthLayer, Authenticator, Identities, Refusals};
use crate::tls::{ClientCerts, ReloadingTls, ServerTls, TlsError};

/// The security flags of a server.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// PEM certificate chain for TLS (with --tls-key). Read again when the file changes, so a
    /// renewed certificate is served without a restart.
    #[arg(
        long,
        env = "SECCOMP_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "SECCOMP_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle for client certificates (mTLS). Clients may then authenticate with a
    /// certificate; node agents must. Required of every client when --auth-tokens is not
    /// given.
    #[arg(
        long,
        env = "SECCOMP_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,

    /// YAML list of the callers allowed in, each `{name, token | token_sha256 | certificate,
    /// role}` with role viewer, publisher, operator or admin; `certificate` matches a client
    /// certificate's CN or a URI SAN. Tokens are sent as `authorization: Bearer <token>`.
    #[arg(long, env = "SECCOMP_AUTH_TOKENS", value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,

    /// Only client certificates with URI SAN `spiffe://<DOMAIN>/node/<name>` (or CN
    /// `system:node:<name>`) are node agents; any trust domain when not given.
    #[arg(long, env = "SECCOMP_TRUST_DOMAIN", value_name = "DOMAIN")]
    pub trust_domain: Option<String>,

    /// Also accept Kubernetes ServiceAccount tokens, checked with TokenReview against the
    /// cluster's API (in-cluster, or KUBECONFIG): callers by their user or group in the auth
    /// file (`kubernetes: system:serviceaccount:<ns>:<name>`), node agents by
    /// --auth-kubernetes-agents. The service account needs `create` on `tokenreviews`.
    #[arg(long, env = "SECCOMP_AUTH_KUBERNETES")]
    pub auth_kubernetes: bool,

    /// The audience Kubernetes tokens must be for (repeatable; at least one with
    /// --auth-kubernetes, so that a token meant for the API server or another service is never
    /// accepted). Node agents' projected tokens use `seccomp-distributor`.
    #[arg(
        long,
        env = "SECCOMP_AUTH_KUBERNETES_AUDIENCE",
        value_name = "AUDIENCE",
        requires = "auth_kubernetes"
    )]
    pub auth_kubernetes_audience: Vec<String>,

    /// The Kubernetes user of the node agents (their DaemonSet's service account, for
    /// example `system:serviceaccount:seccomp-system:seccomp-node-agent`): a token of it,
    /// bound to a pod, authenticates the agent as the node of that pod.
    #[arg(
        long,
        env = "SECCOMP_AUTH_KUBERNETES_AGENTS",
        value_name = "USER",
        requires = "auth_kubernetes"
    )]
    pub auth_kubernetes_agents: Option<String>,

    /// Serve on an address other than loopback without TLS or without authentication.
    /// Anyone who can reach the port can then do anything the missing piece would stop.
    #[arg(long, env = "SECCOMP_INSECURE")]
    pub insecure: bool,
}

/// A server's security, ready to serve with.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS files, when TLS is on.
    pub tls: Option<ServerTls>,
    /// Who may call.
    pub auth: Authenticator,
    /// Allowed to serve a non-loopback address without TLS or authentication.
    pub insecure: bool,
    /// Kubernetes tokens to accept: the service connects a TokenReviewer for them
    /// (`seccomp_k8s::connect`) before it serves.
    pub kubernetes: Option<KubernetesAuth>,
}

/// What `--auth-kubernetes` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesAuth {
    /// Audiences the tokens must be for.
    pub audiences: Vec<String>,
}

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The auth file is unusable.
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Kubernetes API cannot be used for TokenReview.
    #[error("{0}")]
    Kubernetes(String),
    /// Serving like this would expose the service.
    #[error(
        "refusing to serve {addr} without {missing}: anyone who reaches it could do anything; give {hint}, or --insecure to do it anyway"
    )]
    Exposed {
        /// The address.
        addr: SocketAddr,
        /// What is missing.
        missing: &'static str,
        /// The flags that fix it.
        hint: &'static str,
    },
}

impl SecurityArgs {
    /// What the flags ask for (the auth file is read now).
    pub fn security(&self) -> Result<Security, SecurityError> {
        if self.auth_kubernetes && self.auth_kubernetes_audience.is_empty() {
            return Err(SecurityError::Kubernetes(
                "--auth-kubernetes needs --auth-kubernetes-audience (for example seccomp-distributor): \
                 without one, tokens meant for the API server itself would be accepted"
                    .to_owned(),
            ));
        }
        let mut identities = match &self.auth_tokens {
            Some(path) => Identities::load(path)?,
            None => Identities::default(),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let mut tls = ServerTls::new(cert, key);
                tls.client_ca = self.client_ca.clone();
                // Callers and agents with bearer tokens have no certificate to offer.
                tls.client_certs = if self.auth_tokens.is_some() || self.auth_kubernetes {
                    ClientCerts::Optional
                } else {
                    ClientCerts::Required
                };
                Some(tls)
            }
            _ => None,
        };
        if self.client_ca.is_some() {
            identities = identities.with_nodes(self.trust_domain.clone());
        }
        if let Some(user) = &self.auth_kubernetes_agents {
            identities = identities.with_kubernetes_agents(user.clone());
        }
        Ok(Security {
            tls,
            auth: Authenticator::new(identities),
            insecure: self.insecure,
            kubernetes: self.auth_kubernetes.then(|| KubernetesAuth {
                audiences: self.auth_kubernetes_audience.clone(),
            }),
        })
    }
}

/// What [`Security::prepare`] made: the TLS acceptor's configuration and the auth layer.
pub struct Prepared {
    /// TLS, when on.
    pub tls: Option<Arc<ReloadingTls>>,
    /// The layer that authenticates and authorizes every request.
    pub layer: AuthLayer,
}

impl Security {
    /// No TLS, no authentication (tests and loopback development).
    pub fn none() -> Self {
        Security::default()
    }

    /// What is off, and the flags that would turn it on.
    fn missing(&self) -> Option<(&'static str, &'static str)> {
        match (self.tls.is_some(), self.auth.is_enabled()) {
            (true, true) => None,
            (false, true) => Some(("TLS", "--tls-cert and --tls-key")),
            (true, false) => Some(("authentication", "--auth-tokens FILE or --client-ca FILE")),
            (false, false) => Some((
                "TLS and authentication",
                "--tls-cert, --tls-key and --auth-tokens (or --client-ca)",
            )),
        }
    }

    /// Whether serving `addr` this way is allowed: on loopback, with TLS and authentication,
    /// or with `--insecure`. A server checks before it opens anything.
    pub fn check(&self, addr: SocketAddr) -> Result<(), SecurityError> {
        match self.missing() {
            Some((missing, hint)) if !addr.ip().is_loopback() && !self.insecure => {
                Err(SecurityError::Exposed {
                    addr,
                    missing,
                    hint,
                })
            }
            _ => Ok(()),
        }
    }

    /// Check `addr` (see [`Security::check`]), load the TLS files, and make the auth layer,
    /// which tells `refusals` about refused requests. Says in the log what is off.
    pub fn prepare(
        &self,
        addr: SocketAddr,
        refusals: Arc<dyn Refusals>,
    ) -> Result<Prepared, SecurityError> {
        self.check(addr)?;
        if let Some((missing, _)) = self.missing() {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "INSECURE: serving without {missing} (--insecure): anyone who can reach this address can use it");
            } else {
                tracing::warn!(%addr, "serving without {missing}: only for development on this machine");
            }
        }
        let tls = self
            .tls
            .clone()
            .map(ReloadingTls::load)
            .transpose()?
            .map(Arc::new);
        Ok(Prepared {
            tls,
            layer: AuthLayer::new(self.auth.clone(), refusals),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::auth::LogOnly;

    fn prepare(security: &Security, addr: &str) -> Result<Prepared, SecurityError> {
        security.prepare(addr.parse().unwrap(), Arc::new(LogOnly))
    }

    #[test]
    fn only_loopback_or_insecure_serves_without_tls_and_authentication() {
        let open = Security::none();
        assert!(prepare(&open, "127.0.0.1:50051").is_ok());
        assert!(prepare(&open, "[::1]:50051").is_ok());
        for addr in ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051"] {
            let err = prepare(&open, addr).err().unwrap();
            let text = err.to_string();
            assert!(text.contains("without TLS and authentication"), "{text}");
            assert!(text.contains("--insecure"), "{text}");
        }
        // Authentication without TLS would send tokens in the clear.
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("auth.yaml");
        std::fs::write(&tokens, "- {name: a, token: 0123456789abcdef, role: admin}").unwrap();
        let tokens_only = SecurityArgs {
            auth_tokens: Some(tokens),
            ..SecurityArgs::default()
        }
        .security()
        .unwrap();
        let err = prepare(&tokens_only, "0.0.0.0:50051").err().unwrap();
        assert!(err.to_string().contains("without TLS:"), "{err}");

        let insecure = Security {
            insecure: true,
            ..Security::none()
        };
        assert!(prepare(&insecure, "0.0.0.0:50051").is_ok());
    }
}
