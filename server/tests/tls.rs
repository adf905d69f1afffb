//! TLS over real loopback connections, with certificates made in the test: a client that
//! trusts the server's CA gets through; a plaintext client, a client that trusts another CA,
//! and (with client certificates required) a client without one fail with errors that say
//! so; a client certificate reaches the request as `PeerInfo`; and replacing the files on
//! disk changes the certificate new connections get, without a restart.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use seccomp_server::pki::{Ca, PemFiles};
use seccomp_server::tls::{self, ClientCerts, ClientTls, PeerInfo, ReloadingTls, ServerTls};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Option<PeerInfo>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A health server on loopback with `tls`; it records each request's `PeerInfo`.
async fn serve(tls: ServerTls) -> Server {
    let tls = Arc::new(ReloadingTls::load(tls).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (_reporter, health) = tonic_health::server::health_reporter();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let layer =
        tower::ServiceBuilder::new().map_request(move |req: tonic::codegen::http::Request<_>| {
            record
                .lock()
                .unwrap()
                .push(req.extensions().get::<PeerInfo>().cloned());
            req
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(health);
    tokio::spawn(
        router.serve_with_incoming_shutdown(tls::incoming(listener, Some(tls)), async {
            let _ = stopped.await;
        }),
    );
    Server {
        url,
        seen,
        stop: Some(stop),
    }
}

async fn check(url: &str, client: &ClientTls) -> Result<(), String> {
    let endpoint = tls::endpoint(url, client)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn trusting(ca: &Path) -> ClientTls {
    ClientTls {
        ca: Some(ca.to_owned()),
        ..ClientTls::default()
    }
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    server: PemFiles,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test ca").unwrap();
        ca.write_cert(&dir.path().join("ca.crt")).unwrap();
        let server = ca
            .server(&["localhost", "127.0.0.1"])
            .unwrap()
            .write(dir.path(), "server")
            .unwrap();
        Pki { dir, ca, server }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_gets_through_and_others_are_told_why() {
    let pki = Pki::new();
    let server = serve(ServerTls::new(&pki.server.cert, &pki.server.key)).await;
    check(&server.url, &trusting(&pki.path("ca.crt")))
        .await
        .unwrap();
    let seen = server.seen.lock().unwrap().clone();
    let peer = seen
        .last()
        .unwrap()
        .as_ref()
        .expect("PeerInfo on the request");
    assert!(peer.tls);
    assert!(peer.certs.is_none(), "no client certificate was sent");

    // Another CA: the server's certificate is not trusted.
    let other = Ca::new("other ca").unwrap();
    other.write_cert(&pki.path("other.crt")).unwrap();
    let err = check(&server.url, &trusting(&pki.path("other.crt")))
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Plaintext against TLS: the connection fails (no gRPC answer).
    let plain = server.url.replace("https://", "http://");
    let err = check(&plain, &ClientTls::default()).await.unwrap_err();
    assert!(!err.is_empty());

    // An https URL without a CA is a usage error, before any connection.
    let err = check(&server.url, &ClientTls::default()).await.unwrap_err();
    assert!(err.contains("--ca"), "{err}");
    // And TLS files with an http URL would silently not be used: refused.
    let err = check(&plain, &trusting(&pki.path("ca.crt")))
        .await
        .unwrap_err();
    assert!(err.contains("not an https:// URL"), "{err}");
}

#[tokio::test]
async fn client_certificates_reach_the_request_and_can_be_required() {
    let pki = Pki::new();
    let mut files = ServerTls::new(&pki.server.cert, &pki.server.key);
    files.client_ca = Some(pki.path("ca.crt"));
    files.client_certs = ClientCerts::Required;
    let server = serve(files).await;

    let node = pki
        .ca
        .client("system:node:n1", &["spiffe://test/node/n1"])
        .unwrap()
        .write(pki.dir.path(), "n1")
        .unwrap();
    let with_cert = ClientTls {
        ca: Some(pki.path("ca.crt")),
        cert: Some(node.cert.clone()),
        key: Some(node.key.clone()),
    };
    check(&server.url, &with_cert).await.unwrap();
    let seen = server.seen.lock().unwrap().clone();
    let certs = seen
        .last()
        .unwrap()
        .as_ref()
        .unwrap()
        .certs
        .clone()
        .expect("the client's certificate");
    assert_eq!(
        certs[0].as_ref(),
        rustls::pki_types::CertificateDer::from_pem_file(&node.cert)
            .unwrap()
            .as_ref()
    );

    // Without a certificate, or with one from another CA: refused in the handshake.
    let err = check(&server.url, &trusting(&pki.path("ca.crt")))
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    let other = Ca::new("other ca").unwrap();
    let stranger = other
        .client("system:node:n1", &[])
        .unwrap()
        .write(pki.dir.path(), "stranger")
        .unwrap();
    let err = check(
        &server.url,
        &ClientTls {
            ca: Some(pki.path("ca.crt")),
            cert: Some(stranger.cert),
            key: Some(stranger.key),
        },
    )
    .await
    .unwrap_err();
    assert!(!err.is_empty());
    assert_eq!(
        server.seen.lock().unwrap().len(),
        seen.len(),
        "no request got through without a valid certificate"
    );
}

#[tokio::test]
async fn renewed_certificate_files_are_served_without_a_restart() {
    let pki = Pki::new();
    let mut files = ServerTls::new(&pki.server.cert, &pki.server.key);
    // Every connection checks the files, so the test needs no waiting.
    files.reload_every = Duration::ZERO;
    let server = serve(files).await;
    check(&server.url, &trusting(&pki.path("ca.crt")))
        .await
        .unwrap();

    // Renewed by another CA (so which certificate is served shows in who trusts it): written
    // in place, as cert-manager does.
    let renewed_ca = Ca::new("renewed ca").unwrap();
    renewed_ca.write_cert(&pki.path("renewed-ca.crt")).unwrap();
    renewed_ca
        .server(&["localhost"])
        .unwrap()
        .write(pki.dir.path(), "server")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while check(&server.url, &trusting(&pki.path("renewed-ca.crt")))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        check(&server.url, &trusting(&pki.path("ca.crt")))
            .await
            .is_err(),
        "the old certificate is no longer served"
    );

    // Broken files (a half-finished renewal): the last good certificate stays.
    std::fs::write(&pki.server.key, "not a key").unwrap();
    check(&server.url, &trusting(&pki.path("renewed-ca.crt")))
        .await
        .unwrap();
}
