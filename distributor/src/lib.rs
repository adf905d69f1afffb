//! `seccomp-distributor`: turns rollouts (profile version, node selector, priority,
//! strategy) into Shturval NodeConfigItems and per-node file sets, and ships them.
//!
//! The domain (NCIs, selectors, file sets, strategies, the engine's decisions, records) is
//! the pure `seccomp-rollout` crate; this crate adds time, storage, transport and sinks.
//!
//! Layout:
//! - [`clock`]: the time deadlines run on (monotonic, so a wall-clock step fails nothing);
//! - [`hub`]: agent sessions and per-node state (what was sent, acknowledged, observed), and
//!   when to send a node its set;
//! - [`store`]: rollout records and node sightings behind a small backend trait, with the
//!   sled backend;
//! - [`service`]: the operations, transport-free: what is desired, the commands (create,
//!   pause, resume, abort, roll back), the driver (the engine tick, settling, sink syncs) and
//!   the views (counts, waves, conflicts, watch events);
//! - [`metrics`]: the distributor's Prometheus metrics (`--metrics-listen`);
//! - [`pods`]: the cluster's pods, asked which profile files they name before a change
//!   takes one away (`--check-pods`);
//! - [`leader`]: one leader among replicas that share an etcd: the election, and the fence
//!   every write of the leader is conditioned on;
//! - [`replica`]: replicas that all serve: what each takes from the others through etcd
//!   (records, node facts, presence), and the commands passed to the leader;
//! - [`events`]: the seccomp events agents report (from the logs they follow), bounded in
//!   memory, told by pod and profile;
//! - [`sinks`]: where NCIs go besides the agents: a YAML directory for GitOps, a cluster
//!   (the only module that uses kube);
//! - [`grpc`]: the only module that uses tonic: the `AgentSync` stream, the `Distributor`
//!   service, the registry client, and the conversions between proto and domain types;
//! - [`run`]: the server, given a bound listener and a shutdown future.

pub mod clock;
pub mod error;
pub mod events;
pub mod grpc;
pub mod hub;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod replica;
pub mod service;
pub mod sinks;
pub mod store;
mod tasks;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use seccomp_server::client::Credentials;
use seccomp_server::security::Security;
use tokio::net::TcpListener;

pub use error::{Error, Result};

/// A boxed future, so the traits of [`service::ProfileSource`], [`sinks::NciSink`] and
/// [`store::Backend`] stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The gRPC service names this server reports healthy.
pub const SERVICES: [&str; 2] = [
    seccomp_proto::distributor::v1::distributor_server::SERVICE_NAME,
    seccomp_proto::agent::v1::agent_sync_server::SERVICE_NAME,
];

/// What [`Config::on_start`] calls.
pub type OnStart = Arc<dyn Fn(Arc<service::Distributor>) + Send + Sync>;

/// Server settings.
#[derive(Clone)]
pub struct Config {
    /// sled database directory.
    pub data_dir: PathBuf,
    /// Registry URL (`http://127.0.0.1:50051`).
    pub registry: String,
    /// Silence after which a disconnected node is Unknown.
    pub unknown_after: Duration,
    /// How long to wait for in-flight calls on shutdown.
    pub shutdown_grace: Duration,
    /// Also write the NCIs as YAML files into this directory (GitOps).
    pub yaml_dir: Option<PathBuf>,
    /// Also apply the NCIs to the cluster of the kubeconfig (server-side apply, prune).
    pub apply_to_cluster: bool,
    /// Before a change takes a file from a node, ask which pods name it (this watch of the
    /// cluster's pods keeps the answer), and refuse the change when one does (unless
    /// forced): `--check-pods`.
    pub pod_watch: Option<seccomp_k8s::PodWatch>,
    /// Where the metrics go (`--metrics-listen` serves it): gRPC requests and the
    /// distributor's own ([`metrics`]); `None`: none are kept.
    pub metrics_registry: Option<Arc<std::sync::Mutex<prometheus_client::registry::Registry>>>,
    /// Set while the distributor serves with its engine running (`GET /readyz`).
    pub readiness: seccomp_server::metrics::Readiness,
    /// Take node labels and membership from the cluster's Node objects (`--watch-nodes`):
    /// agents' own labels are ignored, and a deleted Node leaves every rollout.
    pub node_watch: Option<seccomp_k8s::NodeWatch>,
    /// Asked which pods use a file before it is taken away (tests inject one; `check_pods`
    /// sets the cluster's).
    pub profile_users: Option<Arc<dyn service::ProfileUsers>>,
    /// Which pod a container id runs in, to tell the seccomp events agents report by pod
    /// and profile (tests inject one; `pod_watch` sets the cluster's).
    pub container_pods: Option<Arc<dyn events::ContainerPods>>,
    /// Further sinks (for a program that embeds the distributor, and tests).
    pub sinks: Vec<Arc<dyn sinks::NciSink>>,
    /// Called with the distributor once it is made (for a program that embeds it, and tests).
    pub on_start: Option<OnStart>,
    /// The time deadlines and timers run on.
    pub clock: Arc<dyn clock::Clock>,
    /// Nodes whose agents have been gone this long are forgotten (their records too).
    pub forget_nodes_after: Duration,
    /// What NCIs may put on nodes (the allowed root).
    pub policy: seccomp_rollout::policy::Policy,
    /// How the distributor identifies itself to the registry.
    pub registry_credentials: Credentials,
    /// TLS and who may call (both APIs).
    pub security: Security,
    /// How long a new agent stream may take to send its Hello.
    pub hello_deadline: Duration,
    /// Streams, headers and keepalive (a silent agent's stream ends within
    /// `keepalive_interval + keepalive_timeout`, and the node is Unknown `unknown_after` later).
    pub limits: seccomp_server::grpc::Limits,
    /// Audit entries older than this are deleted; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
    /// Finished rollouts nothing reads any more (not the newest of their NCI, its stable
    /// one, or the newest completed one) are forgotten this long after they finished;
    /// `None` keeps them all.
    pub history_retention: Option<Duration>,
    /// How often the rollout engine looks at rollouts when nothing changed: deadlines,
    /// timed pauses and silent nodes are seen this late at most. Confirmations, new nodes
    /// and commands are acted on at once, whatever this is.
    pub engine_tick: Duration,
    /// Keep the state in etcd instead of sled in `data_dir` (`--etcd-endpoints`).
    pub etcd: Option<store::EtcdSettings>,
    /// Serve beside other replicas on the same etcd, one of them elected to run the
    /// engine (see [`replica`]); `None`: this process runs the engine alone.
    pub replica: Option<ReplicaSettings>,
    /// How many seccomp events agents report are kept, and how long.
    pub events: events::EventSettings,
}

impl Config {
    /// Defaults with the given data directory and registry.
    pub fn new(data_dir: impl Into<PathBuf>, registry: impl Into<String>) -> Self {
        Config {
            data_dir: data_dir.into(),
            registry: registry.into(),
            unknown_after: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            yaml_dir: None,
            apply_to_cluster: false,
            pod_watch: None,
            node_watch: None,
            metrics_registry: None,
            readiness: seccomp_server::metrics::Readiness::default(),
            profile_users: None,
            container_pods: None,
            sinks: Vec::new(),
            on_start: None,
            clock: Arc::new(clock::MonotonicClock::new()),
            forget_nodes_after: Duration::from_secs(7 * 24 * 3600),
            policy: seccomp_rollout::policy::Policy::default(),
            registry_credentials: Credentials::default(),
            security: Security::none(),
            hello_deadline: Duration::from_secs(10),
            limits: seccomp_server::grpc::Limits::default(),
            audit_retention: Some(seccomp_server::retention::DEFAULT_RETENTION),
            history_retention: Some(seccomp_server::retention::DEFAULT_RETENTION),
            engine_tick: Duration::from_millis(500),
            events: events::EventSettings::default(),
            etcd: None,
            replica: None,
        }
    }
}

/// How a replica takes part among several (#18).
#[derive(Clone)]
pub struct ReplicaSettings {
    /// Its id and the election's lease.
    pub election: leader::ElectionSettings,
    /// Label this pod `seccomp.dev/leader=true` while it leads (`--leader-pod`).
    pub leader_pod: Option<seccomp_k8s::LeaderPod>,
    /// How long a command passed to the leader waits for its answer.
    pub command_wait: Duration,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// State could not be opened or loaded.
    #[error(transparent)]
    State(#[from] Error),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The security settings cannot be used (or would expose the service).
    #[error(transparent)]
    Security(#[from] seccomp_server::security::SecurityError),
    /// The listener has no address.
    #[error("listener: {0}")]
    Listener(std::io::Error),
    /// Reflection could not be built.
    #[error(transparent)]
    Reflection(#[from] seccomp_server::grpc::ReflectionError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Resolves once `stop` says true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve the distributor on `listener` until `shutdown` completes. On shutdown the agent
/// streams are closed (agents keep their files and reconnect), in-flight calls get the grace
/// period, and the database is released before this returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let addr = listener.local_addr().map_err(RunError::Listener)?;
    config.security.check(addr)?;
    let mut shared = None;
    let store = match &config.etcd {
        Some(settings) => {
            let mut settings = settings.clone();
            if let Some(r) = &config.replica {
                settings.presence = Some((r.election.replica_id.clone(), r.election.lease_ttl));
            }
            let backend = Arc::new(store::EtcdBackend::connect(settings).await?);
            shared = Some(Arc::clone(&backend));
            store::RolloutStore::shared(backend)?
        }
        None => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
            store::RolloutStore::open(&config.data_dir)?
        }
    };
    let hub = Arc::new(hub::Hub::new(
        seccomp_rollout::fileset::Fleet::new(&[]).map_err(Error::from)?,
        config.unknown_after,
    ));
    let source = Arc::new(grpc::RegistrySource::new(
        &config.registry,
        &config.registry_credentials,
    )?);
    let mut sinks: Vec<Arc<dyn sinks::NciSink>> = config.sinks.clone();
    if let Some(dir) = &config.yaml_dir {
        sinks.push(Arc::new(sinks::DirSink::new(dir)));
    }
    if config.apply_to_cluster {
        sinks.push(Arc::new(sinks::ClusterSink::from_default_config().await?));
    }
    if config.node_watch.is_some() {
        hub.watch_cluster_nodes();
    }
    let (grpc_metrics, metrics) = match &config.metrics_registry {
        Some(registry) => {
            let mut r = registry.lock().unwrap_or_else(|e| e.into_inner());
            let grpc = seccomp_server::metrics::GrpcMetrics::register(&mut r);
            let ours = metrics::DistributorMetrics::register(&mut r);
            hub.set_metrics(Arc::clone(&ours));
            (Some(grpc), Some(ours))
        }
        None => (None, None),
    };
    let mut profile_users = config.profile_users.clone();
    let pod_index = config
        .pod_watch
        .as_ref()
        .map(|_| seccomp_k8s::PodIndex::default());
    if let Some(index) = &pod_index {
        profile_users = Some(Arc::new(pods::ClusterPods(index.clone())));
    }
    let seccomp_events = Arc::new(events::EventStore::new(
        config.events,
        pod_index
            .clone()
            .map(|i| Arc::new(i) as Arc<dyn events::ContainerPods>)
            .or_else(|| config.container_pods.clone()),
    ));
    let distributor = Arc::new(service::Distributor::new(
        store,
        Arc::clone(&hub),
        source,
        sinks,
        service::Settings {
            settle: config.unknown_after,
            policy: config.policy.clone(),
            clock: Arc::clone(&config.clock),
            forget_nodes_after: config.forget_nodes_after,
            history_retention: config.history_retention,
            profile_users,
            metrics,
            engine_tick: config.engine_tick,
            events: Arc::clone(&seccomp_events),
        },
    )?);
    if let Some(registry) = &config.metrics_registry {
        metrics::DistributorMetrics::register_gauges(
            &mut registry.lock().unwrap_or_else(|e| e.into_inner()),
            Arc::clone(&distributor),
        );
    }
    if let Some(on_start) = &config.on_start {
        on_start(Arc::clone(&distributor));
    }
    let replica = shared.zip(config.replica.as_ref()).map(|(backend, r)| {
        replica::Replica::new(r.election.replica_id.clone(), backend, r.command_wait)
    });
    let security = config.security.prepare(
        addr,
        Arc::new(grpc::AuditRefusals(Arc::clone(&distributor))),
    )?;
    let router = seccomp_server::grpc::server_builder(&config.limits)
        .layer(tower::util::option_layer(grpc_metrics))
        .layer(security.layer)
        .add_service(grpc::agent_service(
            Arc::clone(&hub),
            Arc::clone(&distributor),
            seccomp_events,
            config.hello_deadline,
        ))
        .add_service(grpc::distributor_service(
            Arc::clone(&distributor),
            replica.clone(),
        ));
    let (router, health) =
        seccomp_server::grpc::add_health_and_reflection(router, &SERVICES).await?;
    let (stop_tasks, tasks_stopped) = tokio::sync::watch::channel(false);
    // The engine, the sinks and the audit pruning: here, or on the elected replica.
    let (leader_tasks, replication) = match (&replica, &config.replica) {
        (Some(replica), Some(settings)) => {
            let etcd = config
                .etcd
                .clone()
                .ok_or_else(|| Error::invalid("replicas need etcd"))?;
            let context = tasks::Context {
                replica: Arc::clone(replica),
                distributor: Arc::clone(&distributor),
                hub: Arc::clone(&hub),
                health: health.clone(),
                readiness: config.readiness.clone(),
                audit_retention: config.audit_retention,
                settings: settings.clone(),
            };
            (None, Some(tasks::start(context, &etcd).await?))
        }
        _ => (
            Some(tasks::LeaderTasks::start(
                &distributor,
                &health,
                &config.readiness,
                config.audit_retention,
            )),
            None,
        ),
    };
    let nodes = config.node_watch.clone().map(|watch| {
        let hub = Arc::clone(&hub);
        let stop = stopped(tasks_stopped.clone());
        tokio::spawn(async move {
            let events = watch.run(move |e| match e {
                seccomp_k8s::NodeEvent::All(all) => hub.cluster_nodes(all),
                seccomp_k8s::NodeEvent::Applied(name, labels) => hub.cluster_node(name, labels),
                seccomp_k8s::NodeEvent::Deleted(name) => hub.cluster_node_gone(&name),
            });
            tokio::select! {
                () = events => {}
                () = stop => {}
            }
        })
    });
    let pod_task = config
        .pod_watch
        .clone()
        .zip(pod_index)
        .map(|(watch, index)| {
            let stop = stopped(tasks_stopped.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = watch.run(index) => {}
                    () = stop => {}
                }
            })
        });
    drop(tasks_stopped);
    let state = match &config.etcd {
        Some(e) => format!("etcd {} under {}", e.endpoints.join(","), e.prefix),
        None => config.data_dir.display().to_string(),
    };
    tracing::info!(%addr, tls = security.tls.is_some(), %state, registry = %config.registry, "distributor serving");
    config.readiness.set(true);
    // Agent streams never end on their own: close them so connections can drain.
    let streams = Arc::clone(&hub);
    seccomp_server::grpc::serve(
        router,
        &health,
        &SERVICES,
        listener,
        security.tls,
        shutdown,
        config.shutdown_grace,
        move || streams.close_all(),
    )
    .await?;
    config.readiness.set(false);
    // Stop the engine between ticks, so the database is released with nothing half-done.
    let _ = stop_tasks.send(true);
    if let Some(tasks) = leader_tasks {
        tasks.stop().await;
        if let Err(e) = distributor.persist().await {
            tracing::error!(error = %e, "the last rollout states could not be stored");
        }
    }
    if let Some(replication) = replication {
        replication.stop().await;
    }
    if let Some(task) = nodes {
        let _ = task.await;
    }
    if let Some(task) = pod_task {
        let _ = task.await;
    }
    Ok(())
}
