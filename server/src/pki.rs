//! A small certificate authority made with `rcgen`, for `seccompctl dev`'s throwaway setup
//! and for tests: a CA, server certificates for names and addresses, client certificates
//! with a common name and URI SANs (a node's `spiffe://<trust-domain>/node/<name>`).
//! Production certificates come from the platform's own CA (cert-manager, say); nothing here
//! is meant for them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("cannot make a certificate: {0}")]
    Make(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// Where [`Pem::write`] put the two files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file (mode 0600).
    pub key: PathBuf,
}

impl Pem {
    /// Write `<dir>/<base>.crt` and `<dir>/<base>.key` (the key readable by its owner only),
    /// each atomically.
    pub fn write(&self, dir: &Path, base: &str) -> Result<PemFiles, PkiError> {
        let files = PemFiles {
            cert: dir.join(format!("{base}.crt")),
            key: dir.join(format!("{base}.key")),
        };
        write(&files.cert, self.cert.as_bytes(), 0o644)?;
        write(&files.key, self.key.as_bytes(), 0o600)?;
        Ok(files)
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    crate::atomic::write(path, bytes, mode).map_err(|e| PkiError::Write {
        path: path.to_owned(),
        error: e.source,
    })
}

/// A certificate authority that lives in memory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

impl Ca {
    /// A new self-signed CA whose common name is `cn`.
    pub fn new(cn: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Ca { issuer })
    }

    /// The CA certificate, PEM (what clients and servers trust).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Write the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), PkiError> {
        write(path, self.cert_pem().as_bytes(), 0o644)
    }

    /// A server certificate for `names`: each an IP address or a DNS name.
    pub fn server(&self, names: &[&str]) -> Result<Pem, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(names.first().copied().unwrap_or("server"));
        for n in names {
            params.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into()?),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with common name `cn` and the URI SANs `uris`.
    pub fn client(&self, cn: &str, uris: &[&str]) -> Result<Pem, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into()?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<Pem, PkiError> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}
