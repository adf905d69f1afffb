//! `seccomp-registry`: the gRPC service that validates seccomp profiles and keeps immutable,
//! numbered versions of them in sled (DESIGN section 3; the wire contract is
//! `proto/proto/seccomp/registry/v1/registry.proto`).
//!
//! Layout:
//! - [`store`]: the sled key layout and the records, one journalled commit per mutation;
//! - [`journal`]: the commit journal that makes a mutation atomic and durable with one insert
//!   and one flush;
//! - [`service`]: the behaviour (publish with idempotency and compare-and-set, reads, diff,
//!   deprecate, delete, audit), with no tonic in it;
//! - [`metrics`]: the registry's Prometheus metrics (`--metrics-listen`);
//! - [`usage`]: whether a version is in use, asked of the distributor before a hard delete;
//! - [`error`]: the error enum and its categories;
//! - [`grpc`]: the tonic service, proto <-> domain conversion, and the only
//!   `impl From<Error> for tonic::Status`;
//! - [`run`]: serve on an already-bound listener until a shutdown future completes, used by
//!   the thin `main.rs` and by the tests (which pass `127.0.0.1:0` and a oneshot).
//!
//! Validation and the name rules live in `seccomp-profile`; server plumbing (logging,
//! signals, health, reflection, metrics) in `seccomp-server`.

pub mod error;
pub mod grpc;
pub mod journal;
pub mod metrics;
pub mod service;
pub mod store;
pub mod usage;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use seccomp_proto::registry::v1::registry_server::SERVICE_NAME;
use seccomp_server::client::Credentials;
use seccomp_server::metrics::GrpcMetrics;
use seccomp_server::security::Security;
use tokio::net::TcpListener;
use tower::util::MapResponseLayer;
use tracing::{info, warn};

pub use error::{Error, Result};
pub use service::{Limits, NoUsageTracking, Registry, UsageCheck};
pub use store::ProfileStore;

/// Default size limit of a profile: 1 MiB.
pub const DEFAULT_MAX_PROFILE_BYTES: usize = seccomp_profile::DEFAULT_MAX_BYTES;

/// What [`run`] needs besides the listener.
#[derive(Clone)]
pub struct Config {
    /// Where the sled database lives.
    pub data_dir: PathBuf,
    /// Largest accepted profile.
    pub max_profile_bytes: usize,
    /// How long shutdown waits for in-flight calls before dropping connections.
    pub shutdown_grace: Duration,
    /// Where the metrics go (`--metrics-listen` serves it): gRPC requests and the
    /// registry's own ([`metrics`]); `None`: none are kept.
    pub metrics: Option<Arc<std::sync::Mutex<prometheus_client::registry::Registry>>>,
    /// Set while the registry serves (`GET /readyz` on the metrics address).
    pub readiness: seccomp_server::metrics::Readiness,
    /// The distributor asked before a hard delete whether the version is in use
    /// (`http://host:port`); without one, deletes are not checked.
    pub distributor: Option<String>,
    /// How the registry identifies itself to the distributor.
    pub distributor_credentials: Credentials,
    /// TLS and who may call.
    pub security: Security,
    /// Streams, headers and keepalive.
    pub limits: seccomp_server::grpc::Limits,
    /// Audit entries older than this are deleted; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
}

impl Config {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            max_profile_bytes: DEFAULT_MAX_PROFILE_BYTES,
            shutdown_grace: Duration::from_secs(30),
            metrics: None,
            readiness: seccomp_server::metrics::Readiness::default(),
            distributor: None,
            distributor_credentials: Credentials::default(),
            security: Security::none(),
            limits: seccomp_server::grpc::Limits::default(),
            audit_retention: Some(seccomp_server::retention::DEFAULT_RETENTION),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Opening or flushing the database failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The distributor URL is not usable.
    #[error("invalid --distributor {url}: {reason}")]
    Distributor {
        /// The URL given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The security settings cannot be used (or would expose the service).
    #[error(transparent)]
    Security(#[from] seccomp_server::security::SecurityError),
    /// The listener has no address.
    #[error("listener: {0}")]
    Listener(std::io::Error),
    /// The standard services could not be built.
    #[error(transparent)]
    Reflection(#[from] seccomp_server::grpc::ReflectionError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serve the registry on `listener` until `shutdown` completes, then stop accepting, let
/// in-flight calls finish (at most [`Config::shutdown_grace`]), wait for publishes in
/// progress and flush the database.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let addr = listener.local_addr().map_err(RunError::Listener)?;
    config.security.check(addr)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Opening may wait for the lock of a database being let go of, and replays the journal.
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || ProfileStore::open(&dir))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    let usage: Arc<dyn UsageCheck> = match &config.distributor {
        Some(url) => Arc::new(
            usage::DistributorUsage::new(url, &config.distributor_credentials).map_err(|e| {
                RunError::Distributor {
                    url: url.clone(),
                    reason: e.to_string(),
                }
            })?,
        ),
        None => {
            warn!(
                "no --distributor: hard deletes are not checked against rollouts and nodes that use the version"
            );
            Arc::new(NoUsageTracking)
        }
    };
    let registry = Registry::new(
        store,
        Limits {
            max_profile_bytes: config.max_profile_bytes,
        },
        usage,
    );

    let grpc_metrics = config.metrics.as_ref().map(|m| {
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        registry.set_metrics(metrics::RegistryMetrics::register(&mut m, &registry));
        GrpcMetrics::register(&mut m)
    });
    let security = config
        .security
        .prepare(addr, Arc::new(grpc::AuditRefusals(registry.clone())))?;
    let router = seccomp_server::grpc::server_builder(&config.limits)
        .layer(MapResponseLayer::new(
            seccomp_server::grpc::oversize_as_resource_exhausted,
        ))
        .layer(tower::util::option_layer(grpc_metrics))
        .layer(security.layer)
        .add_service(grpc::service(registry.clone()));
    let (router, health) =
        seccomp_server::grpc::add_health_and_reflection(router, &[SERVICE_NAME]).await?;

    let (stop_pruning, pruning_stopped) = tokio::sync::oneshot::channel::<()>();
    let pruning = config.audit_retention.map(|retention| {
        let registry = registry.clone();
        tokio::spawn(seccomp_server::retention::prune_until(
            retention,
            move |before| registry.prune_audit(before),
            async {
                let _ = pruning_stopped.await;
            },
        ))
    });
    info!(%addr, tls = security.tls.is_some(), data_dir = %config.data_dir.display(), "registry serving");
    config.readiness.set(true);
    let served = seccomp_server::grpc::serve(
        router,
        &health,
        &[SERVICE_NAME],
        listener,
        security.tls,
        shutdown,
        config.shutdown_grace,
        || {},
    )
    .await;
    config.readiness.set(false);
    served?;
    let _ = stop_pruning.send(());
    if let Some(task) = pruning {
        let _ = task.await;
    }
    registry.drain().await?;
    info!("registry stopped, data flushed");
    Ok(())
}
