//! How the system's clients (seccompctl, the node agent, the services calling each other)
//! reach a server: TLS for `https://` URLs ([`crate::tls::endpoint`]) and a bearer token,
//! sent with every request by the [`Bearer`] interceptor. A token file is read each time a
//! client is made ([`Credentials::bearer`]), and the TLS files each time an endpoint is
//! ([`Credentials::endpoint`]), so renewed ones are used without a restart; a token never
//! goes in the clear to a host other than this machine.

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
    pub token: Option<TokenSource>,
    /// With no token: a name to claim, recorded unverified where authentication is off.
    pub claimed: Option<String>,
}

/// Where a bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// Given as text.
    Value(Token),
    /// In a file, read at each use (a mounted Secret, a projected token the kubelet renews).
    File(PathBuf),
}

impl TokenSource {
    /// The token now.
    pub fn token(&self) -> Result<Token, TokenError> {
        match self {
            TokenSource::Value(t) => Ok(t.clone()),
            TokenSource::File(path) => Token::from_file(path),
        }
    }
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
    /// file, each optional.
    pub fn from_files(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        token_file: Option<PathBuf>,
    ) -> Self {
        Credentials {
            tls: ClientTls { ca, cert, key },
            token: token_file.map(TokenSource::File),
            claimed: None,
        }
    }

    /// The endpoint for `url` (see [`tls::endpoint`]), with the TLS files as they are now.
    /// With a token, a plaintext `http://` URL is refused unless it names this machine.
    pub fn endpoint(&self, url: &str) -> Result<tonic::transport::Endpoint, TlsError> {
        if self.token.is_some() && url.starts_with("http://") && !is_loopback(url) {
            return Err(TlsError::Usage(format!(
                "refusing to send a token in the clear to {url}: use https://"
            )));
        }
        tls::endpoint(url, &self.tls)
    }

    /// The interceptor that sends the token (read now when it is in a file).
    pub fn bearer(&self) -> Result<Bearer, TokenError> {
        let authorization = match &self.token {
            Some(source) => {
                let token = source.token()?;
                Some(format!("Bearer {}", token.expose()).parse().map_err(|_| {
                    TokenError::Invalid("the token is not a header value".to_owned())
                })?)
            }
            None => None,
        };
        let claimed = self.claimed.as_deref().and_then(|c| c.parse().ok());
        Ok(Bearer {
            authorization,
            claimed,
        })
    }
}

/// Whether `url`'s host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_token_goes_in_the_clear_only_to_this_machine() {
        let with_token = Credentials {
            token: Some(TokenSource::Value(Token::new("0123456789abcdef").unwrap())),
            ..Credentials::default()
        };
        for url in ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"] {
            assert!(with_token.endpoint(url).is_ok(), "{url}");
        }
        for url in ["http://10.0.0.1:1", "http://registry.example:1"] {
            let e = with_token.endpoint(url).unwrap_err().to_string();
            assert!(e.contains("in the clear"), "{url}: {e}");
        }
        assert!(Credentials::default().endpoint("http://10.0.0.1:1").is_ok());
    }

    #[test]
    fn a_token_file_is_read_when_a_client_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let credentials = Credentials::from_files(None, None, None, Some(path.clone()));
        assert!(matches!(credentials.bearer(), Err(TokenError::Read { .. })));
        std::fs::write(&path, "first-token-0123456789\n").unwrap();
        assert!(credentials.bearer().is_ok());
    }
}
