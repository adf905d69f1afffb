//! How the system's clients (seccompctl, the node agent, the services calling each other)
//! reach a server: TLS for `https://` URLs ([`crate::tls::endpoint`]) and a bearer token,
//! sent with every request by the [`Bearer`] interceptor.

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

use crate::auth::CLAIMED_ACTOR;
use crate::tls::{self, ClientTls, TlsError};

/// A client's credentials for one server.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// TLS files (`https://` URLs).
    pub tls: ClientTls,
    /// Bearer token.
    pub token: Option<Token>,
    /// With no token: a name to claim, recorded unverified where authentication is off.
    pub claimed: Option<String>,
}

/// A bearer token; never printed.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The token is empty or not printable ASCII.
    #[error("{0}")]
    Invalid(String),
}

impl Token {
    /// A token given as text (surrounding white space dropped).
    pub fn new(text: &str) -> Result<Self, TokenError> {
        let t = text.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid(
                "the token is empty or has characters other than printable ASCII".to_owned(),
            ));
        }
        Ok(Token(t.to_owned()))
    }

    /// The token in a file (its first line; e.g. a Kubernetes Secret mounted as a file).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokenError::Read {
            path: path.to_owned(),
            error,
        })?;
        Token::new(text.lines().next().unwrap_or(""))
            .map_err(|e| TokenError::Invalid(format!("token file {}: {e}", path.display())))
    }

    /// The token's text, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Adds `authorization: Bearer <token>` (or, without a token, the claimed name) to every
/// request.
#[derive(Clone, Default)]
pub struct Bearer {
    authorization: Option<MetadataValue<Ascii>>,
    claimed: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        if let Some(value) = &self.authorization {
            metadata.insert("authorization", value.clone());
        } else if let Some(value) = &self.claimed {
            metadata.insert(CLAIMED_ACTOR, value.clone());
        }
        Ok(request)
    }
}

impl Credentials {
    /// A service's credentials for another: a CA, a client certificate and key, a token
    /// file (read now), each optional.
    pub fn from_files(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        token_file: Option<&Path>,
    ) -> Result<Self, TokenError> {
        Ok(Credentials {
            tls: ClientTls { ca, cert, key },
            token: token_file.map(Token::from_file).transpose()?,
            claimed: None,
        })
    }

    /// The endpoint for `url` (see [`tls::endpoint`]).
    pub fn endpoint(&self, url: &str) -> Result<tonic::transport::Endpoint, TlsError> {
        tls::endpoint(url, &self.tls)
    }

    /// The interceptor that sends the token.
    pub fn bearer(&self) -> Bearer {
        let authorization = self
            .token
            .as_ref()
            .and_then(|t| format!("Bearer {}", t.expose()).parse().ok());
        let claimed = self.claimed.as_deref().and_then(|c| c.parse().ok());
        Bearer {
            authorization,
            claimed,
        }
    }
}
