//! `seccompctl dev`: the whole stack on this machine.
//!
//! The registry, the distributor and `--nodes` node agents run as child processes (the real
//! service binaries, see [`services`]) with their data under `--data-dir` and each agent's
//! host root at `<data-dir>/nodes/<node>/`. The gRPC ports are real loopback ports, printed
//! as `export` lines so that every other `seccompctl` command works from a second terminal.
//! On a first start (no stored data yet) or with `--demo`, the [`demo`] publishes the seed
//! profile, rolls it out and shows the result. Ctrl-C (SIGINT) or SIGTERM stops everything
//! cleanly; starting again reuses the data.
//!
//! Everything runs the secure way: at each start a throwaway CA, certificates and tokens are
//! made in `<data-dir>/pki` ([`crate::certs`]); both services serve TLS and accept only the
//! tokens of `auth.yaml` (the distributor also each agent's client certificate, which names
//! its node); the services call each other with viewer tokens; the demo and the printed
//! `export` lines use the admin token.

mod demo;
mod services;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};

use seccomp_server::client::{Credentials, TokenSource};
use seccomp_server::tls::ClientTls;

use self::services::{Binaries, Services};
use crate::Outcome;
use crate::certs::{self, Pki};
use crate::client;
use crate::output::{errln, outln};

/// How long the services may take to stop after SIGTERM before they are killed: more than
/// the distributor's own 10 s for draining open calls (a `--watch` from another terminal).
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often, while the stack is up, services that stopped on their own are reported.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Arguments of `seccompctl dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of node agents, named node-1..node-N.
    #[arg(long, env = "SECCOMP_DEV_NODES", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    nodes: u32,

    /// Where the registry, the distributor and the nodes keep their data; reused on restart.
    #[arg(long, env = "SECCOMP_DEV_DATA_DIR", default_value = "./.seccomp-dev")]
    data_dir: PathBuf,

    /// Run the demo even when the data directory holds an earlier start's data (it runs by
    /// itself on the first start).
    #[arg(long, env = "SECCOMP_DEV_DEMO")]
    demo: bool,

    /// Registry port on 127.0.0.1 (0: any free port).
    #[arg(long, env = "SECCOMP_DEV_REGISTRY_PORT", default_value_t = 50051)]
    registry_port: u16,

    /// Distributor port on 127.0.0.1 (0: any free port).
    #[arg(long, env = "SECCOMP_DEV_DISTRIBUTOR_PORT", default_value_t = 50052)]
    distributor_port: u16,
}

/// One simulated node.
pub struct Node {
    /// `node-1`.
    pub name: String,
    /// Its labels, which the agent reports.
    pub labels: BTreeMap<String, String>,
    /// Where its `/` is on this machine.
    pub host_root: PathBuf,
}

/// The nodes of a stack of `n`: `kubernetes.io/os=linux` on all, `zone` cycling over three
/// zones and `pool` alternating `general` / `secure`.
fn nodes(data_dir: &Path, n: u32) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            let name = format!("node-{i}");
            let zone = char::from(b'a' + u8::try_from((i - 1) % 3).unwrap_or(0));
            let pool = if i % 2 == 0 { "secure" } else { "general" };
            let labels = [
                ("kubernetes.io/os", "linux".to_owned()),
                ("zone", format!("zone-{zone}")),
                ("pool", pool.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let host_root = data_dir.join("nodes").join(&name);
            Node {
                name,
                labels,
                host_root,
            }
        })
        .collect()
}

/// The effective uid and gid of this process, from `/proc/self/status`.
fn current_ids() -> Result<(u32, u32)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let field = |key: &str| -> Result<u32> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .ok_or_else(|| anyhow!("no {key} line in /proc/self/status"))?;
        // real, effective, saved, filesystem: the effective id is what chown checks.
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("unreadable {key} line in /proc/self/status: {line:?}"))
    };
    Ok((field("Uid:")?, field("Gid:")?))
}

/// Create a node's host root: `var/lib/kubelet/` and `etc/passwd` + `etc/group` where `root`
/// is `uid`/`gid`.
fn prepare_host(host: &Path, uid: u32, gid: u32) -> Result<()> {
    // The seccomp directory too: the NCI names it with the file's mode (0644), which a
    // directory the agent creates would get, and without search permission only root could
    // write into it. An existing directory is left as it is.
    for dir in ["var/lib/kubelet/seccomp", "etc", "var/log"] {
        let d = host.join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let passwd = format!("root:x:{uid}:{gid}:root:/root:/bin/sh\n");
    let group = format!("root:x:{gid}:\n");
    for (file, text) in [("etc/passwd", passwd), ("etc/group", group)] {
        let p = host.join(file);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// Whether an earlier start left data in `data_dir`: the registry's or the distributor's
/// database. A missing or empty directory, or one holding anything else, is a first start.
fn has_stored_data(data_dir: &Path) -> bool {
    ["registry", "distributor"]
        .iter()
        .any(|d| data_dir.join(d).exists())
}

/// A free port for `--{what}-port` (`port` itself unless it is 0), with a clear error when
/// `port` is taken.
fn free_port(port: u16, what: &str, flag: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
        format!(
            "cannot listen on 127.0.0.1:{port} for the {what} (is another `seccompctl dev` \
             running? {flag} 0 picks a free port)"
        )
    })?;
    Ok(listener.local_addr()?.port())
}

/// `seccompctl dev`.
pub fn run(args: &Args) -> Result<Outcome> {
    // Before anything is created: without the services there is nothing to run.
    let binaries = Binaries::find()?;
    let fresh = !has_stored_data(&args.data_dir);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?;

    let (uid, gid) = current_ids()?;
    if uid != 0 {
        outln!(
            "not running as root: the nodes' etc/passwd and etc/group map `root` to uid {uid} \
             and gid {gid}, so the agents can set owners"
        );
    }
    let nodes = nodes(&data_dir, args.nodes);
    for node in &nodes {
        prepare_host(&node.host_root, uid, gid)?;
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let pki = certs::write(&data_dir.join("pki"), &names, &[])?;
    client::configure(Credentials {
        tls: ClientTls {
            ca: Some(pki.ca.clone()),
            ..ClientTls::default()
        },
        token: Some(TokenSource::File(pki.admin_token.clone())),
        claimed: None,
    });

    // Current-thread: the children must be started from this (the main) thread.
    client::runtime()?.block_on(async {
        // Signal handlers first, so a Ctrl-C during start or the demo also stops cleanly.
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut services = Services::default();
        let started = start(&mut services, &binaries, args, &data_dir, &nodes, &pki).await;
        let (registry, distributor) = match started {
            Ok(urls) => urls,
            Err(e) => {
                if let Err(stop) = services.stop(STOP_GRACE).await {
                    errln!("seccompctl dev: {stop:#}");
                }
                return Err(e);
            }
        };
        print_stack(&registry, &distributor, &data_dir, &nodes, &pki);

        let mut outcome = Ok(Outcome::Ok);
        let mut interrupted = false;
        let mut check = tokio::time::interval(CHECK_EVERY);
        if fresh || args.demo {
            let demo = demo::run(&registry, &distributor, &nodes);
            tokio::pin!(demo);
            loop {
                tokio::select! {
                    r = &mut demo => {
                        match r {
                            Ok(()) => outln!("demo complete; the stack stays up, Ctrl-C stops it"),
                            Err(e) => outcome = Err(e.context("the demo failed")),
                        }
                        break;
                    }
                    _ = interrupt.recv() => interrupted = true,
                    _ = terminate.recv() => interrupted = true,
                    _ = check.tick() => services.report_exits(),
                }
                if interrupted {
                    break;
                }
            }
        } else {
            outln!(
                "the data directory holds an earlier start's data: no demo (--demo runs it \
                 again); Ctrl-C stops the stack"
            );
        }
        while outcome.is_ok() && !interrupted {
            tokio::select! {
                _ = interrupt.recv() => interrupted = true,
                _ = terminate.recv() => interrupted = true,
                _ = check.tick() => services.report_exits(),
            }
        }

        outln!("stopping...");
        if let Err(e) = services.stop(STOP_GRACE).await
            && outcome.is_ok()
        {
            outcome = Err(e);
        }
        outln!("stopped");
        outcome
    })
}

/// Start the registry, the distributor and the agents with the flags that configure them for
/// `data_dir`; the registry's and the distributor's URLs.
async fn start(
    services: &mut Services,
    binaries: &Binaries,
    args: &Args,
    data_dir: &Path,
    nodes: &[Node],
    pki: &Pki,
) -> Result<(String, String)> {
    let arg = |s: &str| OsString::from(s);
    let path = |p: PathBuf| p.into_os_string();
    // The registry (for its delete check) and the distributor (for version bytes) each need
    // the other's URL when they start. The registry starts first and may take any port (it
    // says which); so the distributor's port is settled before, a free one for 0.
    if args.registry_port != 0 {
        free_port(args.registry_port, "registry", "--registry-port")?;
    }
    let distributor_port = free_port(args.distributor_port, "distributor", "--distributor-port")?;
    let distributor = format!("https://127.0.0.1:{distributor_port}");
    // TLS and tokens on both services.
    let secure = [
        arg("--tls-cert"),
        path(pki.server.cert.clone()),
        arg("--tls-key"),
        path(pki.server.key.clone()),
        arg("--auth-tokens"),
        path(pki.auth.clone()),
    ];
    let mut registry_args = vec![
        arg("--listen"),
        arg(&format!("127.0.0.1:{}", args.registry_port)),
        arg("--data-dir"),
        path(data_dir.join("registry")),
        arg("--distributor"),
        arg(&distributor),
        arg("--distributor-ca"),
        path(pki.ca.clone()),
        arg("--distributor-token-file"),
        path(pki.registry_token.clone()),
    ];
    registry_args.extend(secure.iter().cloned());
    let registry = services
        .start("registry", &binaries.registry, &registry_args, true)
        .await?
        .ok_or_else(|| anyhow!("the registry said nothing about where it listens"))?;
    let registry = format!("https://{registry}");

    let mut distributor_args = vec![
        arg("--listen"),
        arg(&format!("127.0.0.1:{distributor_port}")),
        arg("--registry"),
        arg(&registry),
        arg("--registry-ca"),
        path(pki.ca.clone()),
        arg("--registry-token-file"),
        path(pki.distributor_token.clone()),
        arg("--data-dir"),
        path(data_dir.join("distributor")),
        arg("--yaml-dir"),
        path(data_dir.join("gitops")),
        // Agents authenticate with their node certificates.
        arg("--client-ca"),
        path(pki.ca.clone()),
        arg("--trust-domain"),
        arg(certs::TRUST_DOMAIN),
    ];
    distributor_args.extend(secure.iter().cloned());
    let distributor = services
        .start(
            "distributor",
            &binaries.distributor,
            &distributor_args,
            true,
        )
        .await?
        .map_or(distributor, |addr| format!("https://{addr}"));

    for (node, (_, files)) in nodes.iter().zip(&pki.nodes) {
        let mut agent_args = vec![
            arg("--distributor"),
            arg(&distributor),
            arg("--ca"),
            path(pki.ca.clone()),
            arg("--cert"),
            path(files.cert.clone()),
            arg("--key"),
            path(files.key.clone()),
            arg("--node-name"),
            arg(&node.name),
            arg("--host-root"),
            path(node.host_root.clone()),
            arg("--allowed-root"),
            arg("/var/lib/kubelet/seccomp"),
            arg("--state-dir"),
            path(data_dir.join("agents").join(&node.name)),
            // The kernel's seccomp records, as syslog has them; on these nodes nothing
            // writes there but the user (the README's walk-through stands in for the kernel).
            arg("--audit-log"),
            arg(DEV_SYSLOG),
            arg("--audit-interval"),
            arg("1s"),
        ];
        for (k, v) in &node.labels {
            agent_args.push(arg("--label"));
            agent_args.push(arg(&format!("{k}={v}")));
        }
        let label = format!("agent {}", node.name);
        services
            .start(&label, &binaries.agent, &agent_args, false)
            .await?;
    }
    Ok((registry, distributor))
}

/// The log each dev agent follows for seccomp records (a node path).
const DEV_SYSLOG: &str = "/var/log/syslog";

/// Where everything is, and what to type in a second terminal.
fn print_stack(registry: &str, distributor: &str, data_dir: &Path, nodes: &[Node], pki: &Pki) {
    outln!("registry     {registry}");
    outln!("distributor  {distributor}");
    for node in nodes {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        outln!(
            "{}  host root {}  labels {}  seccomp log {}",
            node.name,
            node.host_root.display(),
            labels.join(","),
            node.host_root
                .join(DEV_SYSLOG.trim_start_matches('/'))
                .display()
        );
    }
    outln!("data in {}", data_dir.display());
    outln!("In a second terminal:");
    outln!(
        "  export SECCOMP_REGISTRY={registry} SECCOMP_DISTRIBUTOR={distributor} SECCOMP_CA={} SECCOMP_TOKEN_FILE={}",
        pki.ca.display(),
        pki.admin_token.display()
    );
    outln!("  seccompctl nodes");
    outln!("seccompctl dev: ready");
}

#[cfg(test)]
mod tests {
    use super::has_stored_data;

    #[test]
    fn only_a_database_makes_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !has_stored_data(&dir.path().join("missing")),
            "no directory"
        );
        assert!(!has_stored_data(dir.path()), "an empty directory");
        std::fs::create_dir_all(dir.path().join("nodes/node-1")).unwrap();
        assert!(!has_stored_data(dir.path()), "host roots only");
        for db in ["registry", "distributor"] {
            let data = tempfile::tempdir().unwrap();
            std::fs::create_dir(data.path().join(db)).unwrap();
            assert!(has_stored_data(data.path()), "{db}");
        }
    }
}
