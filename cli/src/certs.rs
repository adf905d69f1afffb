//! `seccompctl certs`: a throwaway certificate authority, certificates and tokens for trying
//! the secure setup on one machine (and what `seccompctl dev` runs with). Production
//! certificates come from the platform's CA (cert-manager); these are for development only.
//!
//! In `--dir` it writes, each file replaced atomically:
//! - `ca.crt`: the CA every client and server trusts (its key is never written);
//! - `server.crt`, `server.key`: for both services, valid for `localhost`, `127.0.0.1` and
//!   every `--host`;
//! - `node-<name>.crt`, `node-<name>.key`: a node agent's identity, URI SAN
//!   `spiffe://seccomp.dev/node/<name>`, for each `--node`;
//! - `admin.token`: an admin's bearer token (`SECCOMP_TOKEN_FILE`);
//! - `registry.token`, `distributor.token`: the viewer tokens the services use with each
//!   other;
//! - `auth.yaml`: the services' `--auth-tokens` file, naming those three by their SHA-256.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use seccomp_server::pki::{Ca, PemFiles};
use sha2::{Digest as _, Sha256};

use crate::Outcome;
use crate::output::outln;

/// The SPIFFE trust domain of the node certificates.
pub const TRUST_DOMAIN: &str = "seccomp.dev";

/// Arguments of `seccompctl certs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write into (created when missing; files there are replaced).
    #[arg(long, default_value = "./pki")]
    dir: PathBuf,

    /// A node to make an agent certificate for (repeatable).
    #[arg(long = "node", value_name = "NAME")]
    nodes: Vec<String>,

    /// Another name or address the server certificate is valid for (repeatable).
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
}

/// Where `write` put everything.
#[derive(Debug, Clone)]
pub struct Pki {
    /// `ca.crt`.
    pub ca: PathBuf,
    /// The services' certificate and key.
    pub server: PemFiles,
    /// Each node's certificate and key, in the order asked.
    pub nodes: Vec<(String, PemFiles)>,
    /// `admin.token`.
    pub admin_token: PathBuf,
    /// `registry.token`: what the registry sends the distributor.
    pub registry_token: PathBuf,
    /// `distributor.token`: what the distributor sends the registry.
    pub distributor_token: PathBuf,
    /// `auth.yaml`.
    pub auth: PathBuf,
}

/// 32 random bytes as hex.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a token")?;
    Ok(hex::encode(bytes))
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    seccomp_server::atomic::write(path, text.as_bytes(), 0o600)
        .map_err(|e| anyhow!("{}: {}", e.context(), e.source))
}

/// Make a fresh CA and everything signed by it in `dir` (see the module docs).
pub fn write(dir: &Path, nodes: &[String], hosts: &[String]) -> Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for node in nodes {
        seccomp_profile::name::check_dns_subdomain(node)
            .map_err(|e| anyhow!("--node {node:?}: {e}"))?;
    }
    let ca = Ca::new("seccompctl throwaway CA")?;
    let ca_path = dir.join("ca.crt");
    ca.write_cert(&ca_path)?;
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    names.extend(hosts.iter().map(String::as_str));
    let server = ca.server(&names)?.write(dir, "server")?;
    let mut node_files = Vec::new();
    for node in nodes {
        let uri = format!("spiffe://{TRUST_DOMAIN}/node/{node}");
        let files = ca.client(&format!("system:node:{node}"), &[&uri])?;
        node_files.push((node.clone(), files.write(dir, &format!("node-{node}"))?));
    }
    let mut auth =
        String::from("# Who may call the services (seccompctl certs: for development only).\n");
    let mut token_file = |name: &str, role: &str| -> Result<PathBuf> {
        let token = random_token()?;
        let path = dir.join(format!("{name}.token"));
        write_secret(&path, &format!("{token}\n"))?;
        auth.push_str(&format!(
            "- name: {name}\n  token_sha256: {}\n  role: {role}\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        ));
        Ok(path)
    };
    let admin_token = token_file("admin", "admin")?;
    let registry_token = token_file("registry", "viewer")?;
    let distributor_token = token_file("distributor", "viewer")?;
    let auth_path = dir.join("auth.yaml");
    write_secret(&auth_path, &auth)?;
    Ok(Pki {
        ca: ca_path,
        server,
        nodes: node_files,
        admin_token,
        registry_token,
        distributor_token,
        auth: auth_path,
    })
}

/// `seccompctl certs`.
pub fn run(args: &Args) -> Result<Outcome> {
    let pki = write(&args.dir, &args.nodes, &args.hosts)?;
    outln!("CA               {}", pki.ca.display());
    outln!(
        "server           {} {}",
        pki.server.cert.display(),
        pki.server.key.display()
    );
    for (node, files) in &pki.nodes {
        outln!(
            "node {node:<11} {} {}",
            files.cert.display(),
            files.key.display()
        );
    }
    outln!("admin token      {}", pki.admin_token.display());
    outln!("auth file        {}", pki.auth.display());
    Ok(Outcome::Ok)
}
