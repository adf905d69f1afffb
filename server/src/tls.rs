//! TLS for the services' gRPC servers and clients, with rustls (ring).
//!
//! Servers: [`ServerTls`] names the certificate chain, the private key and optionally a CA
//! for client certificates (mTLS, required or optional). The files are read again when they
//! change (cert-manager renews them in place, often by swapping a symlink), at most once per
//! [`ServerTls::reload_every`] and only when a connection arrives, so a renewed certificate is
//! served without a restart; files that do not load keep the previous configuration and say
//! why in the log. [`incoming`] accepts TCP connections and hands tonic either plain streams
//! or finished TLS streams as [`Conn`]s, whose [`PeerInfo`] (the client's certificate chain,
//! when it sent one) reaches every request's extensions.
//!
//! Clients: [`ClientTls`] names a CA and optionally a client certificate and key;
//! [`endpoint`] turns a URL into a tonic `Endpoint`, with TLS exactly when the URL is
//! `https://`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for tonic.
const BACKLOG: usize = 128;
/// TLS handshakes at once; the next connection waits to be accepted, so idle sockets cannot
/// use up every file descriptor.
const HANDSHAKES: usize = 1024;
/// How long accepting pauses after it failed (out of file descriptors, say), rather than
/// failing again at once in a loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {error}")]
    Read {
        /// Which file (`TLS certificate`, `client CA`, ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A file is not what it should be (no PEM certificate, no key, ...).
    #[error("{what} {path}: {message}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A client option that makes no sense with the URL.
    #[error("{0}")]
    Usage(String),
}

/// Whether a server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Every client must present one signed by the client CA (agents only, say).
    Required,
    /// A client may present one (then it must be valid); one without is left to other
    /// authentication (a bearer token).
    Optional,
}

/// A server's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain, the server's own first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to; `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
    /// With a client CA: whether a client certificate is required.
    pub client_certs: ClientCerts,
    /// How often at most the files are checked for changes.
    pub reload_every: Duration,
}

impl ServerTls {
    /// TLS with `cert` and `key`, no client certificates, checked for changes every 10 s.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTls {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_certs: ClientCerts::Optional,
            reload_every: Duration::from_secs(10),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// The certificates of a PEM file; at least one.
pub fn parse_certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Invalid {
        what: "TLS key",
        path: path.to_owned(),
        message: format!("no PEM private key: {e}"),
    })
}

/// The bytes of a server's TLS files, and a fingerprint over them.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
    fingerprint: [u8; 32],
}

/// What the server configuration was built from, to tell whether the files changed.
struct Loaded {
    fingerprint: [u8; 32],
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// The files' bytes, and a fingerprint over them.
    fn read_all(&self) -> Result<Files, TlsError> {
        let cert = read("TLS certificate", &self.cert)?;
        let key = read("TLS key", &self.key)?;
        let ca = self
            .client_ca
            .as_deref()
            .map(|p| read("client CA", p))
            .transpose()?;
        let mut h = Sha256::new();
        for part in [Some(&cert), Some(&key), ca.as_ref()] {
            let part = part.map_or(&[][..], Vec::as_slice);
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Ok(Files {
            cert,
            key,
            ca,
            fingerprint: h.finalize().into(),
        })
    }

    fn build(&self, cert: &[u8], key: &[u8], ca: Option<&[u8]>) -> Result<ServerConfig, TlsError> {
        let chain = parse_certs("TLS certificate", &self.cert, cert)?;
        let key = parse_key(&self.key, key)?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match (ca, &self.client_ca) {
            (Some(ca), Some(ca_path)) => {
                let mut roots = RootCertStore::empty();
                for c in parse_certs("client CA", ca_path, ca)? {
                    roots.add(c).map_err(|e| TlsError::Invalid {
                        what: "client CA",
                        path: ca_path.clone(),
                        message: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match self.client_certs {
                    ClientCerts::Required => verifier,
                    ClientCerts::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.cert.display())))?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// A server's TLS configuration, read again when its files change.
pub struct ReloadingTls {
    files: ServerTls,
    state: Mutex<(Loaded, Instant)>,
}

impl fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Load `files` now; an error here stops the server from starting.
    pub fn load(files: ServerTls) -> Result<Self, TlsError> {
        let read = files.read_all()?;
        let config = Arc::new(files.build(&read.cert, &read.key, read.ca.as_deref())?);
        let fingerprint = read.fingerprint;
        Ok(ReloadingTls {
            files,
            state: Mutex::new((
                Loaded {
                    fingerprint,
                    config,
                },
                Instant::now(),
            )),
        })
    }

    /// The files it serves.
    pub fn files(&self) -> &ServerTls {
        &self.files
    }

    /// The configuration for a new connection: the files are checked at most once per
    /// `reload_every`; changed files that load replace the configuration, others are
    /// logged and the previous one stays.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (loaded, checked) = &mut *state;
        if checked.elapsed() < self.files.reload_every {
            return Arc::clone(&loaded.config);
        }
        *checked = Instant::now();
        match self.files.read_all() {
            Ok(read) if read.fingerprint == loaded.fingerprint => {}
            Ok(read) => match self.files.build(&read.cert, &read.key, read.ca.as_deref()) {
                Ok(config) => {
                    *loaded = Loaded {
                        fingerprint: read.fingerprint,
                        config: Arc::new(config),
                    };
                    tracing::info!(cert = %self.files.cert.display(), "TLS files changed: serving the new certificate");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS files changed but do not load; serving the previous certificate")
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot re-read the TLS files; serving the previous certificate")
            }
        }
        Arc::clone(&loaded.config)
    }
}

/// What a request knows about its connection (in the request's extensions).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's certificate chain (its own first), verified against the client CA, when
    /// it presented one.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// An accepted connection: plain TCP, or TLS over TCP with the handshake done.
pub enum Conn {
    /// No TLS.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(s) => PeerInfo {
                remote_addr: s.peer_addr().ok(),
                tls: false,
                certs: None,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                PeerInfo {
                    remote_addr: tcp.peer_addr().ok(),
                    tls: true,
                    certs: session
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The connections of `listener` for tonic's `serve_with_incoming*`: `TCP_NODELAY` set
/// (without it every unary reply waits ~40 ms for a delayed ACK), and with `tls` the
/// handshake done (each in a task of its own, so a slow client holds up nobody; a failed
/// one is logged and dropped). Accepting stops once the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: tell, pause, go on accepting.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let permit = tokio::select! {
                        () = tx.closed() => return,
                        permit = Arc::clone(&handshakes).acquire_owned() => permit,
                    };
                    let acceptor = TlsAcceptor::from(tls.current());
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::info!(%remote, error = %e, "TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::info!(%remote, "TLS handshake timed out")
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A client's TLS files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA bundle the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for mTLS.
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Whether any file is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// tonic's client TLS settings from the files (read now).
    pub fn config(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        let mut config = tonic::transport::ClientTlsConfig::new();
        match &self.ca {
            Some(ca) => {
                let pem = read("CA", ca)?;
                parse_certs("CA", ca, &pem)?;
                config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            None => {
                return Err(TlsError::Usage(
                    "an https:// URL needs the CA that signed the server's certificate (--ca FILE)"
                        .to_owned(),
                ));
            }
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read("client certificate", cert)?;
                parse_certs("client certificate", cert, &cert_pem)?;
                let key_pem = read("client key", key)?;
                parse_key(key, &key_pem)?;
                config = config.identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
            }
            (None, None) => {}
            _ => {
                return Err(TlsError::Usage(
                    "a client certificate needs both --cert FILE and --key FILE".to_owned(),
                ));
            }
        }
        Ok(config)
    }
}

/// A tonic endpoint for `url`: TLS with `tls` for `https://`, plain for `http://` (where TLS
/// files are an error: they would silently not be used).
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<tonic::transport::Endpoint, TlsError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| TlsError::Usage(format!("invalid URL {url:?}: {e}")))?;
    if url.starts_with("https://") {
        endpoint
            .tls_config(tls.config()?)
            .map_err(|e| TlsError::Config(format!("{url}: {e}")))
    } else if tls.is_set() {
        Err(TlsError::Usage(format!(
            "TLS files are given but {url} is not an https:// URL"
        )))
    } else {
        Ok(endpoint)
    }
}
