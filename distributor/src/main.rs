//! `seccomp-distributor`: parse flags, set up logging and signals, bind, and hand over to
//! [`seccomp_distributor::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use seccomp_server::client::Credentials;
use seccomp_server::security::SecurityArgs;
use seccomp_server::telemetry::LogArgs;

/// mimalloc instead of glibc's allocator: every agent message and engine tick allocates, and
/// `perf` had glibc's malloc and free at a quarter of the distributor's time in a
/// 10,000-node rollout (`seccomp-bench converge`, which uses mimalloc too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The seccomp distributor: turns rollouts into NodeConfigItems and streams each node agent
/// its effective file set.
///
/// Serves `seccomp.distributor.v1.Distributor` (rollouts, nodes, rendering) and
/// `seccomp.agent.v1.AgentSync` (node agents) over gRPC, with health checking and
/// reflection. Prints `listening on ADDR` on standard output once bound. SIGTERM or SIGINT
/// stops it gracefully.
#[derive(Debug, Parser)]
#[command(name = "seccomp-distributor", version, about, long_about)]
struct Args {
    /// Address for the gRPC server.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    listen: SocketAddr,

    /// The registry that profile versions are fetched from.
    #[arg(
        long,
        env = "SECCOMP_REGISTRY",
        default_value = "http://127.0.0.1:50051"
    )]
    registry: String,

    /// Directory of the sled database (created when missing); unused with --etcd-endpoints.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_DATA_DIR",
        default_value = "./data/distributor"
    )]
    data_dir: PathBuf,

    /// Keep the state (rollout records, node records and sightings, the audit log) in this
    /// etcd cluster instead of sled in --data-dir: its members' client URLs, comma-separated
    /// or the flag repeated, `https://` with --etcd-ca. Every write the distributor
    /// acknowledges (a created rollout, a command) is acknowledged by etcd first. Running
    /// etcd is the platform's job.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    etcd_endpoints: Vec<String>,

    /// Every key under this prefix, so distributors of several clusters can share one etcd.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_ETCD_PREFIX",
        default_value = "/seccomp-distributor"
    )]
    etcd_prefix: String,

    /// CA of the etcd members' certificates.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_ETCD_CA", value_name = "FILE")]
    etcd_ca: Option<PathBuf>,

    /// Client certificate for etcd (with --etcd-key), for a cluster that checks them.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_ETCD_CERT",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    etcd_cert: Option<PathBuf>,

    /// Private key of --etcd-cert.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_ETCD_KEY",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    etcd_key: Option<PathBuf>,

    /// etcd user name, for a cluster with authentication on (with --etcd-password-file).
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_ETCD_USER",
        requires = "etcd_password_file"
    )]
    etcd_user: Option<String>,

    /// A file holding the password of --etcd-user (its first line).
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_ETCD_PASSWORD_FILE",
        value_name = "FILE",
        requires = "etcd_user"
    )]
    etcd_password_file: Option<PathBuf>,

    /// This replica's name among the distributors that share the etcd prefix (with
    /// --etcd-endpoints; letters, digits, `-`, `_` and `.`). Default: POD_NAME, else the
    /// hostname. Every replica serves agents and seccompctl; one, elected, runs the rollout
    /// engine and the sinks, and commands given to the others are passed to it through
    /// etcd. Another replica takes over within --leader-lease of the leader going away.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_REPLICA_ID")]
    replica_id: Option<String>,

    /// Time to live of the leader's etcd lease: a leader that stopped (killed, paused,
    /// partitioned) keeps the others out this long at most, and steps down by itself after
    /// two thirds of it without a keep-alive. Every write it makes is fenced by its
    /// election key, so a deposed leader's writes are refused by etcd.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_LEADER_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    leader_lease: Duration,

    /// How long a command given to a replica that does not lead (create, pause, resume,
    /// abort, rollback, retire) waits for the leader to run it. One no leader took in that
    /// time is taken back and refused as not applied (UNAVAILABLE); one the leader took and
    /// did not answer is reported as possibly applied.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_COMMAND_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    command_wait: Duration,

    /// While this replica leads, label this pod (its own, in a StatefulSet from
    /// `metadata.name`) `seccomp.dev/leader: "true"`, and take the label off when it stops
    /// leading, so `kubectl get pods -l seccomp.dev/leader=true` shows which replica runs
    /// the engine (needs `patch` on that pod). Every replica serves either way.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_LEADER_POD",
        requires = "leader_pod_namespace"
    )]
    leader_pod: Option<String>,

    /// The namespace of --leader-pod (`metadata.namespace`).
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_LEADER_POD_NAMESPACE",
        requires = "leader_pod"
    )]
    leader_pod_namespace: Option<String>,

    /// How long one etcd request may take.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_ETCD_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    etcd_timeout: Duration,

    /// Seconds without a message after which a disconnected node counts as Unknown.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_UNKNOWN_AFTER", default_value_t = 30)]
    unknown_after_secs: u64,

    /// Also keep one YAML file per NodeConfigItem in this directory (for Argo CD or Flux);
    /// files of ours no longer desired are removed, other files are left alone.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_YAML_DIR")]
    yaml_dir: Option<PathBuf>,

    /// Also apply the NodeConfigItems to the cluster of the kubeconfig (`KUBECONFIG`, or
    /// in-cluster): server-side apply as `seccomp-distributor`, pruning our objects that are
    /// no longer desired. The CRD is in `deploy/nodeconfigitem-crd.yaml`.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_APPLY_TO_CLUSTER")]
    apply_to_cluster: bool,

    /// Where profiles may go on the nodes: every file of a rollout lies under it and is named
    /// *.json, and directories are it or below it (the node agents have the same flag and
    /// check again). Rollouts elsewhere are refused with INVALID_ARGUMENT.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_ALLOWED_ROOT",
        default_value = seccomp_rollout::nci::DEFAULT_ROOT
    )]
    allowed_root: String,

    /// Forget a node whose agent has been gone this long (its record, its place in ListNodes
    /// and in the registry's in-use check). Until then an offline node is kept, also across
    /// restarts.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_FORGET_NODES_AFTER", default_value = "7d", value_parser = humantime::parse_duration)]
    forget_nodes_after: Duration,

    /// Before a change takes a profile file away from a node, check which pods name it in
    /// their seccompProfile (a watch of the cluster's pods, kubeconfig or in-cluster service
    /// account; needs `list` and `watch` on pods), and refuse the change when one on that
    /// node does, unless the caller gives --force. Until the pods are listed, such a change
    /// is refused too. The same watch tells the seccomp events agents report by pod and
    /// profile (the container ids in the pods' statuses).
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_CHECK_PODS")]
    check_pods: bool,

    /// Address for Prometheus metrics (`GET /metrics`), `GET /healthz` and `GET /readyz`
    /// (200 while serving with the rollout engine running); off when not given.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    /// Take node labels and membership from the cluster's Node objects (kubeconfig or
    /// in-cluster service account; needs list and watch on nodes) instead of what each agent
    /// reports: label changes move nodes in and out of selectors at once, a deleted Node
    /// leaves every rollout, and a node cannot claim labels it does not have.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_WATCH_NODES")]
    watch_nodes: bool,

    /// Forget finished rollouts this long after they finished (`0s`: keep all). The newest
    /// rollout of every NCI, its stable one and the newest completed one are always kept:
    /// what nodes hold and what a rollback restores never goes.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_HISTORY_RETENTION", default_value = "365d", value_parser = humantime::parse_duration)]
    history_retention: Duration,

    /// Keep the seccomp events agents report (what profiles logged or denied, from the
    /// logs agents follow with --audit-log) this long after they were last seen. They are
    /// kept in memory: a restarted distributor collects them anew.
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_EVENTS_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    events_retention: Duration,

    /// Keep at most this many kinds of seccomp event (node, container, executable,
    /// architecture, syscall, action); further new kinds are counted as dropped until old
    /// ones expire.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_EVENTS_MAX",
        default_value_t = 100_000
    )]
    events_max: usize,

    /// CA of the registry's TLS certificate (an https:// --registry).
    #[arg(long, env = "SECCOMP_DISTRIBUTOR_REGISTRY_CA", value_name = "FILE")]
    registry_ca: Option<PathBuf>,

    /// Client certificate for the registry (with --registry-key), an identity its auth file
    /// gives the viewer role.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_REGISTRY_CERT",
        value_name = "FILE",
        requires = "registry_key"
    )]
    registry_cert: Option<PathBuf>,

    /// Private key of --registry-cert.
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_REGISTRY_KEY",
        value_name = "FILE",
        requires = "registry_cert"
    )]
    registry_key: Option<PathBuf>,

    /// File holding the bearer token the distributor sends the registry (a viewer's).
    #[arg(
        long,
        env = "SECCOMP_DISTRIBUTOR_REGISTRY_TOKEN_FILE",
        value_name = "FILE"
    )]
    registry_token_file: Option<PathBuf>,

    #[command(flatten)]
    security: SecurityArgs,

    #[command(flatten)]
    limits: seccomp_server::grpc::LimitArgs,

    #[command(flatten)]
    retention: seccomp_server::retention::RetentionArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    seccomp_server::telemetry::init(&args.log)?;
    let shutdown =
        seccomp_server::shutdown::on_signal().context("cannot install signal handlers")?;
    let mut security = args.security.security()?;
    // Before anything is bound or opened: an exposed server does not start at all.
    security.check(args.listen)?;
    seccomp_k8s::connect_token_review(&mut security).await?;
    let mut config = seccomp_distributor::Config::new(args.data_dir, args.registry);
    config.unknown_after = Duration::from_secs(args.unknown_after_secs);
    config.yaml_dir = args.yaml_dir;
    config.apply_to_cluster = args.apply_to_cluster;
    if args.check_pods {
        config.pod_watch = Some(
            seccomp_k8s::PodWatch::from_default_config()
                .await
                .context("--check-pods: connecting to the cluster")?,
        );
    }
    if args.watch_nodes {
        config.node_watch = Some(
            seccomp_k8s::NodeWatch::from_default_config()
                .await
                .context("--watch-nodes: connecting to the cluster")?,
        );
    }
    config.security = security;
    config.forget_nodes_after = args.forget_nodes_after;
    config.limits = args.limits.limits();
    config.audit_retention = args.retention.retention();
    config.history_retention =
        (!args.history_retention.is_zero()).then_some(args.history_retention);
    if !args.etcd_endpoints.is_empty() {
        let mut etcd = seccomp_distributor::store::EtcdSettings::new(args.etcd_endpoints);
        etcd.prefix = args.etcd_prefix;
        etcd.tls = seccomp_server::tls::ClientTls {
            ca: args.etcd_ca,
            cert: args.etcd_cert,
            key: args.etcd_key,
        };
        if let (Some(user), Some(file)) = (args.etcd_user, &args.etcd_password_file) {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--etcd-password-file {}", file.display()))?;
            let password = text.lines().next().unwrap_or("").to_owned();
            etcd.user = Some((user, password));
        }
        etcd.timeout = args.etcd_timeout;
        config.etcd = Some(etcd);
    } else if args.etcd_ca.is_some() || args.etcd_cert.is_some() || args.etcd_user.is_some() {
        anyhow::bail!("--etcd-ca, --etcd-cert and --etcd-user need --etcd-endpoints");
    }
    config.events = seccomp_distributor::events::EventSettings {
        retention: args.events_retention,
        max: args.events_max,
    };
    config.policy =
        seccomp_rollout::policy::Policy::new(&args.allowed_root).context("--allowed-root")?;
    config.registry_credentials = Credentials::from_files(
        args.registry_ca,
        args.registry_cert,
        args.registry_key,
        args.registry_token_file,
    );
    let mut metrics_task = None;
    if let Some(addr) = args.metrics_listen {
        let registry = Arc::new(std::sync::Mutex::new(
            prometheus_client::registry::Registry::default(),
        ));
        config.metrics_registry = Some(Arc::clone(&registry));
        metrics_task = Some(
            seccomp_server::metrics::start(
                addr,
                registry,
                config.readiness.clone(),
                shutdown.clone().cancelled_owned(),
            )
            .await?,
        );
    }
    match config.etcd.clone() {
        None => {
            let listener = listen(args.listen).await?;
            seccomp_distributor::run(config, listener, shutdown.cancelled_owned()).await?;
        }
        Some(_) => {
            let election = seccomp_distributor::leader::ElectionSettings {
                replica_id: match args.replica_id {
                    Some(id) => id,
                    None => replica_id()?,
                },
                lease_ttl: args.leader_lease,
            };
            let pod = match (&args.leader_pod, &args.leader_pod_namespace) {
                (Some(name), Some(ns)) => Some(
                    seccomp_k8s::LeaderPod::from_default_config(ns, name)
                        .await
                        .context("--leader-pod")?,
                ),
                _ => None,
            };
            check_replica_id(&election.replica_id)?;
            config.replica = Some(seccomp_distributor::ReplicaSettings {
                election,
                leader_pod: pod,
                command_wait: args.command_wait,
            });
            let listener = listen(args.listen).await?;
            seccomp_distributor::run(config, listener, shutdown.cancelled_owned()).await?;
        }
    }
    if let Some(task) = metrics_task {
        task.await??;
    }
    Ok(())
}

/// Bind the gRPC listener and say where (tests and `seccompctl dev` wait for the line).
async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// A replica id is part of etcd keys (`conn/<replica>/<node>`): no `/`, nothing odd.
fn check_replica_id(id: &str) -> anyhow::Result<()> {
    let fine = !id.is_empty()
        && id.len() <= 253
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !fine {
        anyhow::bail!(
            "replica id {id:?}: use letters, digits, '-', '_' and '.' only (set --replica-id)"
        );
    }
    Ok(())
}

/// POD_NAME, else the hostname.
fn replica_id() -> anyhow::Result<String> {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return Ok(pod);
    }
    for file in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(text) = std::fs::read_to_string(file)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_owned());
        }
    }
    anyhow::bail!("no --replica-id, POD_NAME or hostname")
}
