//! `seccomp-registry`: parse flags, set up logging, signals and metrics, bind, and hand over
//! to [`seccomp_registry::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use seccomp_server::client::Credentials;
use seccomp_server::security::SecurityArgs;
use seccomp_server::telemetry::LogArgs;

/// mimalloc instead of glibc's allocator: validation and gRPC allocate per request, and on the
/// publish benchmark it took a fifth off the server's CPU time per call (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The seccomp profile registry: validates profiles and keeps immutable, numbered versions.
///
/// Serves `seccomp.registry.v1.Registry` over gRPC, with gRPC health checking and reflection.
/// Prints `listening on ADDR` to standard output once bound (useful with `--listen
/// 127.0.0.1:0`); logs go to standard error. SIGTERM or SIGINT stops accepting calls,
/// finishes the ones in flight and flushes the database; a second signal exits at once.
#[derive(Debug, Parser)]
#[command(name = "seccomp-registry", version, about, long_about)]
struct Args {
    /// Address for the gRPC server.
    #[arg(
        long,
        env = "SECCOMP_REGISTRY_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    listen: SocketAddr,

    /// Directory of the sled database (created when missing).
    #[arg(
        long,
        env = "SECCOMP_REGISTRY_DATA_DIR",
        default_value = "./data/registry"
    )]
    data_dir: PathBuf,

    /// Largest accepted profile, in bytes; larger publishes fail with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SECCOMP_REGISTRY_MAX_PROFILE_BYTES", default_value_t = seccomp_registry::DEFAULT_MAX_PROFILE_BYTES)]
    max_profile_bytes: usize,

    /// Seconds to wait for in-flight calls on shutdown before dropping connections.
    #[arg(long, env = "SECCOMP_REGISTRY_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace_secs: u64,

    /// The distributor (`http://host:port`) asked before a hard delete whether anything uses
    /// the version: an active rollout, or nodes that hold it. A version in use is refused
    /// with FAILED_PRECONDITION, and so (UNAVAILABLE) is every delete while the distributor
    /// does not answer. Without it, deletes are not checked (a warning says so at start).
    #[arg(long, env = "SECCOMP_REGISTRY_DISTRIBUTOR", value_name = "URL")]
    distributor: Option<String>,

    /// CA of the distributor's TLS certificate (an https:// --distributor).
    #[arg(long, env = "SECCOMP_REGISTRY_DISTRIBUTOR_CA", value_name = "FILE")]
    distributor_ca: Option<PathBuf>,

    /// Client certificate for the distributor (with --distributor-key), an identity its
    /// auth file gives the viewer role.
    #[arg(
        long,
        env = "SECCOMP_REGISTRY_DISTRIBUTOR_CERT",
        value_name = "FILE",
        requires = "distributor_key"
    )]
    distributor_cert: Option<PathBuf>,

    /// Private key of --distributor-cert.
    #[arg(
        long,
        env = "SECCOMP_REGISTRY_DISTRIBUTOR_KEY",
        value_name = "FILE",
        requires = "distributor_cert"
    )]
    distributor_key: Option<PathBuf>,

    /// File holding the bearer token the registry sends the distributor (a viewer's).
    #[arg(
        long,
        env = "SECCOMP_REGISTRY_DISTRIBUTOR_TOKEN_FILE",
        value_name = "FILE"
    )]
    distributor_token_file: Option<PathBuf>,

    /// Address for Prometheus metrics (`GET /metrics`); off when not given.
    #[arg(long, env = "SECCOMP_REGISTRY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

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

    let mut config = seccomp_registry::Config::new(&args.data_dir);
    config.max_profile_bytes = args.max_profile_bytes;
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
    config.distributor = args.distributor;
    config.security = args.security.security()?;
    config.limits = args.limits.limits();
    config.audit_retention = args.retention.retention();
    // Before anything is bound or opened: an exposed server does not start at all.
    config.security.check(args.listen)?;
    seccomp_k8s::connect_token_review(&mut config.security).await?;
    config.distributor_credentials = Credentials::from_files(
        args.distributor_ca,
        args.distributor_cert,
        args.distributor_key,
        args.distributor_token_file,
    );

    let mut metrics_task = None;
    if let Some(addr) = args.metrics_listen {
        let registry = Arc::new(Mutex::new(prometheus_client::registry::Registry::default()));
        config.metrics = Some(Arc::clone(&registry));
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

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot bind {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);

    seccomp_registry::run(config, listener, shutdown.cancelled_owned())
        .await
        .context("registry failed")?;
    if let Some(task) = metrics_task {
        task.await??;
    }
    Ok(())
}
