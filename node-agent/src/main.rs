//! `seccomp-node-agent`: parse flags, set up logging and signals, and hand over to
//! [`seccomp_node_agent::sync::run`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use seccomp_node_agent::{Config, WriteHook, node, sync};
use seccomp_server::telemetry::LogArgs;
use seccomp_server::tls::ClientTls;

/// The seccomp node agent: keeps this node's seccomp profiles in line with the distributor.
///
/// Opens one gRPC stream to the distributor (`seccomp.agent.v1.AgentSync`), receives the
/// node's complete desired file set, writes each file atomically (temp file, fchown, fchmod,
/// fsync, rename) with exactly the requested mode, owner and group, and confirms what it then
/// finds on disk. Writes only seccomp profiles (files named *.json whose content validates,
/// modes without set-id, sticky, execute or other-write bits) and only under the allowed
/// root, never follows a symlink, never overwrites a file it did not place (unless
/// --adopt-existing), removes only files it placed itself, and repairs files changed by hand
/// (inotify plus a periodic scan). A set that breaks any of this is refused whole.
/// With the distributor unreachable it keeps the files and reconnects with exponential
/// backoff. SIGTERM or SIGINT stops it between writes.
#[derive(Debug, Parser)]
#[command(name = "seccomp-node-agent", version, about, long_about)]
struct Args {
    /// The distributor's gRPC URL; `https://` for TLS (then --ca, and --cert/--key naming
    /// this node). Several replicas: repeat the flag or separate the URLs with commas; on a
    /// broken stream the agent reconnects to the next one (with backoff, keeping its files),
    /// and a name that resolves to several addresses (a headless Service) is tried address
    /// by address.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR",
        default_value = "http://127.0.0.1:50052",
        value_delimiter = ','
    )]
    distributor: Vec<String>,

    /// CA of the distributor's TLS certificate.
    #[arg(long, env = "SECCOMP_AGENT_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// This node's client certificate: URI SAN `spiffe://<trust-domain>/node/<node-name>`
    /// or CN `system:node:<node-name>`. Read again at every reconnection.
    #[arg(
        long,
        env = "SECCOMP_AGENT_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    cert: Option<PathBuf>,

    /// Private key of --cert.
    #[arg(
        long,
        env = "SECCOMP_AGENT_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    key: Option<PathBuf>,

    /// A file holding a bearer token to send instead of a client certificate: in a cluster,
    /// a projected ServiceAccount token with audience `seccomp-distributor` (read again at
    /// every reconnection, as the kubelet renews it).
    #[arg(long, env = "SECCOMP_AGENT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// This node's name, as Kubernetes knows it. Default: the hostname, from
    /// /proc/sys/kernel/hostname or /etc/hostname. In a DaemonSet, set NODE_NAME from
    /// `spec.nodeName`.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,

    /// A node label, KEY=VALUE; repeat for several (in the environment: comma-separated).
    /// Labels given here override those of --labels-file.
    #[arg(
        long = "label",
        value_name = "KEY=VALUE",
        env = "SECCOMP_AGENT_LABELS",
        value_delimiter = ',',
        value_parser = node::parse_label
    )]
    labels: Vec<(String, String)>,

    /// A file of node labels, one KEY=VALUE (or KEY="VALUE", as the Downward API writes them)
    /// per line; read at start-up.
    #[arg(long, env = "SECCOMP_AGENT_LABELS_FILE", value_name = "FILE")]
    labels_file: Option<PathBuf>,

    /// Where the host's `/` is: `/` on the host, `/host` in a DaemonSet that mounts it there.
    /// Node paths, /etc/passwd and /etc/group are read under it.
    #[arg(long, env = "SECCOMP_AGENT_HOST_ROOT", default_value = "/")]
    host_root: PathBuf,

    /// The only directory (a node path) the agent writes to.
    #[arg(
        long,
        env = "SECCOMP_AGENT_ALLOWED_ROOT",
        default_value = "/var/lib/kubelet/seccomp"
    )]
    allowed_root: String,

    /// Take over a file the agent did not place that is at a desired path with other bytes:
    /// overwrite it (said in the log) and from then on treat it as placed, so it is removed
    /// once no longer desired. Without this such a file refuses the whole set
    /// (`foreign-file`). A file that already has the desired bytes is adopted either way and
    /// never removed.
    #[arg(long, env = "SECCOMP_AGENT_ADOPT_EXISTING")]
    adopt_existing: bool,

    /// The agent's own directory (not under the host root): its record of the files it
    /// placed, their contents for repairs, and a lock.
    #[arg(
        long,
        env = "SECCOMP_AGENT_STATE_DIR",
        default_value = "/var/lib/seccomp-node-agent"
    )]
    state_dir: PathBuf,

    /// How often to send a heartbeat, for example 10s or 1m.
    #[arg(long, env = "SECCOMP_AGENT_HEARTBEAT", default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,

    /// How often to scan every file for drift, besides inotify.
    #[arg(long, env = "SECCOMP_AGENT_SCAN_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    scan_interval: Duration,

    /// Address for Prometheus metrics (`GET /metrics`), `GET /healthz` and `GET /readyz`
    /// (200 while the stream to the distributor is up); off when not given.
    #[arg(long, env = "SECCOMP_AGENT_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,

    /// A log file with the kernel's seccomp records (a node path, under --host-root), for
    /// example /var/log/audit/audit.log (auditd), /var/log/syslog or /var/log/messages (the
    /// kernel's `audit: type=1326` lines); repeat for several (in the environment:
    /// comma-separated). The agent follows each across rotation and truncation, keeps its
    /// position in --state-dir (a restart sends nothing twice), names each syscall by the
    /// record's own architecture, tells its container by /proc/<pid>/cgroup, and sends the
    /// events, counted, to the distributor (`seccompctl events`, `seccompctl profile
    /// suggest`). Events counted but not yet sent when the agent stops are not sent.
    #[arg(
        long = "audit-log",
        value_name = "PATH",
        env = "SECCOMP_AGENT_AUDIT_LOGS",
        value_delimiter = ','
    )]
    audit_logs: Vec<PathBuf>,

    /// How often the --audit-log files are read, and the most often events are sent.
    #[arg(long, env = "SECCOMP_AGENT_AUDIT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    audit_interval: Duration,

    /// Most kinds of seccomp event (container, executable, architecture, syscall, action)
    /// held between two sends; records of further kinds are counted as dropped (and the
    /// count sent), so a noisy workload cannot flood the agent or the distributor.
    #[arg(long, env = "SECCOMP_AGENT_AUDIT_MAX_KINDS", default_value_t = 1000)]
    audit_max_kinds: usize,

    #[command(flatten)]
    log: LogArgs,
}

// One thread is plenty for one stream; file I/O runs on the blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    seccomp_server::telemetry::init(&args.log)?;
    let shutdown =
        seccomp_server::shutdown::on_signal().context("cannot install signal handlers")?;

    let node_name = match args.node_name {
        Some(name) => name,
        None => node::hostname().context(
            "no --node-name or NODE_NAME, and no hostname in /proc/sys/kernel/hostname or /etc/hostname",
        )?,
    };
    let mut labels = BTreeMap::new();
    if let Some(path) = &args.labels_file {
        labels.extend(node::read_labels_file(path)?);
    }
    labels.extend(args.labels);

    let files = Config {
        host_root: args.host_root,
        allowed_root: args.allowed_root,
        state_dir: args.state_dir,
    };
    let mut config = sync::Config::new(args.distributor.join(","), node_name, files);
    config.labels = labels;
    config.tls = ClientTls {
        ca: args.ca,
        cert: args.cert,
        key: args.key,
    };
    config.token_file = args.token_file;
    config.heartbeat = args.heartbeat;
    config.scan_interval = args.scan_interval;
    config.adopt_existing = args.adopt_existing;
    for log in &args.audit_logs {
        if !log.is_absolute()
            || log
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            anyhow::bail!(
                "--audit-log {}: must be an absolute node path without ..",
                log.display()
            );
        }
    }
    config.audit_logs = args.audit_logs;
    config.audit_interval = args.audit_interval;
    config.audit_max_kinds = args.audit_max_kinds;
    config.record_desired =
        std::env::var_os(seccomp_node_agent::hook::RECORD_ENV).map(PathBuf::from);
    if let Some(hook) = WriteHook::stdio_pause_from_env() {
        config.hook = Some(
            hook.map_err(anyhow::Error::msg)
                .context(seccomp_node_agent::hook::PAUSE_ENV)?,
        );
    }
    let mut metrics_task = None;
    if let Some(addr) = args.metrics_listen {
        let mut registry = prometheus_client::registry::Registry::default();
        config.metrics = Some(seccomp_node_agent::metrics::AgentMetrics::register(
            &mut registry,
        ));
        metrics_task = Some(
            seccomp_server::metrics::start(
                addr,
                std::sync::Arc::new(std::sync::Mutex::new(registry)),
                config.readiness.clone(),
                shutdown.clone().cancelled_owned(),
            )
            .await?,
        );
    }
    sync::run(config, shutdown.cancelled_owned()).await?;
    if let Some(task) = metrics_task {
        task.await??;
    }
    Ok(())
}
