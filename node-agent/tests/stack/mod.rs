//! The real registry and distributor on loopback, and node agents talking to them.
//!
//! Each server runs on a tokio runtime of its own thread, the way it would in its own process:
//! stopping one drops its runtime, which closes every connection it still holds (an
//! in-process `run` that returned would otherwise keep serving open agent streams from its
//! connection tasks). Agents run in-process through `sync::run`, each with its own host root
//! and state directory.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seccomp_node_agent::sync::{self, Backoff};
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;
use tokio::sync::oneshot;

use crate::common::Node;

/// How long any one condition may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it yields a value, or fails the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A server on a runtime of its own.
pub struct Service {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    fn spawn<F, Fut>(name: &str, listener: std::net::TcpListener, serve: F) -> Self
    where
        F: FnOnce(tokio::net::TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    serve(listener, stopped).await;
                });
                // Like a process exiting: whatever connection tasks remain are dropped.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .unwrap();
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits until its runtime, and every connection, is gone.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let thread = self.thread.take().unwrap();
        tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(move || thread.join()))
            .await
            .expect("the server stops in time")
            .unwrap()
            .expect("the server thread did not panic");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` (port 0 for any), retrying briefly while a just-closed socket lets go of it.
pub async fn bind(addr: SocketAddr) -> std::net::TcpListener {
    eventually(&format!("binding {addr}"), DEADLINE, || async move {
        std::net::TcpListener::bind(addr).ok()
    })
    .await
}

pub fn start_registry(dir: PathBuf, listener: std::net::TcpListener) -> Service {
    Service::spawn("registry", listener, move |listener, stopped| async move {
        let config = seccomp_registry::Config::new(dir);
        seccomp_registry::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    })
}

pub fn start_distributor(
    dir: PathBuf,
    registry: String,
    listener: std::net::TcpListener,
) -> Service {
    Service::spawn(
        "distributor",
        listener,
        move |listener, stopped| async move {
            let mut config = seccomp_distributor::Config::new(dir, registry);
            config.shutdown_grace = Duration::from_millis(200);
            seccomp_distributor::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        },
    )
}

/// The registry and the distributor, with their data in a temp dir.
pub struct Stack {
    pub tmp: tempfile::TempDir,
    pub registry: Service,
    pub distributor: Option<Service>,
}

impl Stack {
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let any = "127.0.0.1:0".parse().unwrap();
        let registry = start_registry(tmp.path().join("registry"), bind(any).await);
        let distributor = start_distributor(
            tmp.path().join("distributor"),
            registry.url(),
            bind(any).await,
        );
        Self {
            tmp,
            registry,
            distributor: Some(distributor),
        }
    }

    pub fn distributor_addr(&self) -> SocketAddr {
        self.distributor.as_ref().unwrap().addr
    }

    pub fn distributor_url(&self) -> String {
        format!("http://{}", self.distributor_addr())
    }

    /// Stops the distributor (its port is free afterwards).
    pub async fn stop_distributor(&mut self) -> SocketAddr {
        let distributor = self.distributor.take().unwrap();
        let addr = distributor.addr;
        distributor.stop().await;
        addr
    }

    /// Starts a new distributor on `addr` with the same data directory.
    pub async fn start_distributor_on(&mut self, addr: SocketAddr) {
        let listener = bind(addr).await;
        self.distributor = Some(start_distributor(
            self.tmp.path().join("distributor"),
            self.registry.url(),
            listener,
        ));
    }

    pub async fn stop(mut self) {
        if let Some(distributor) = self.distributor.take() {
            distributor.stop().await;
        }
        let Self { registry, .. } = self;
        registry.stop().await;
    }

    /// Publishes `content` as a new version of `name`; returns the version.
    pub async fn publish(&self, name: &str, content: &[u8]) -> u64 {
        let mut client = reg::registry_client::RegistryClient::connect(self.registry.url())
            .await
            .unwrap();
        let reply = client
            .publish(reg::PublishRequest {
                name: name.to_owned(),
                content: content.to_vec(),
                description: String::new(),
                expected_latest_version: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.created, "{name}: new bytes make a new version");
        reply.version
    }

    async fn distributor_client(
        &self,
    ) -> pb::distributor_client::DistributorClient<tonic::transport::Channel> {
        pb::distributor_client::DistributorClient::connect(self.distributor_url())
            .await
            .unwrap()
    }

    /// Creates a rollout of the latest version of `profile`, every matching node at once and
    /// without automatic rollback (these tests look at what agents do with what they are
    /// sent, so a refused set must stay refused), first aborting an active rollout of the
    /// profile (one may be paused because the tests kill agents).
    pub async fn rollout(
        &self,
        profile: &str,
        target: pb::Target,
        nci_name: Option<&str>,
    ) -> pb::Rollout {
        let mut client = self.distributor_client().await;
        let active = client
            .list_rollouts(pb::ListRolloutsRequest {
                profile: profile.to_owned(),
                active_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .rollouts;
        for r in active {
            client
                .abort_rollout(pb::AbortRolloutRequest {
                    id: r.id,
                    reason: "replaced by the test".into(),
                })
                .await
                .unwrap();
        }
        client
            .create_rollout(pb::CreateRolloutRequest {
                profile: profile.to_owned(),
                version: 0,
                target: Some(target),
                strategy: Some(pb::Strategy {
                    waves: vec!["100%".into()],
                    max_unavailable: "100%".into(),
                    auto_rollback: Some(false),
                    ..Default::default()
                }),
                nci_name: nci_name.map(str::to_owned),
                // The agent's tests, not the distributor's guards: a rollout may come
                // before the agent, or take a file away.
                allow_empty: true,
                allow_removal: true,
                force: false,
            })
            .await
            .unwrap()
            .into_inner()
            .rollout
            .unwrap()
    }

    /// Every node the distributor knows.
    pub async fn nodes(&self) -> Vec<pb::Node> {
        self.distributor_client()
            .await
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .nodes
    }

    pub async fn node(&self, name: &str) -> Option<pb::Node> {
        self.nodes().await.into_iter().find(|n| n.name == name)
    }

    /// Waits until `name` is Failed (it refused the set it was sent); returns it as listed.
    pub async fn failed(&self, name: &str) -> pb::Node {
        eventually(&format!("{name} Failed"), DEADLINE, || async {
            self.node(name)
                .await
                .filter(|n| n.state == pb::NodeState::Failed as i32)
        })
        .await
    }

    /// Waits until `name` is connected and Applied for the set the distributor wants it to
    /// have now, with `path` in that set holding `sha256` (or `path` absent from the set when
    /// `sha256` is `None`); returns the node as listed.
    pub async fn converged(&self, name: &str, path: &str, sha256: Option<&str>) -> pb::Node {
        eventually(
            &format!("{name} applied with {path} = {sha256:?}"),
            DEADLINE,
            || async {
                let node = self.node(name).await?;
                let file = node.files.iter().find(|f| f.path == path);
                let want = match (file, sha256) {
                    (None, None) => true,
                    (Some(f), Some(sha)) => {
                        f.desired.as_ref().is_some_and(|d| d.sha256 == sha)
                            && f.observed.as_ref().is_some_and(|o| o.sha256 == sha)
                    }
                    _ => false,
                };
                (want
                    && node.connected
                    && node.state == pb::NodeState::Applied as i32
                    && node.revision == node.desired_revision)
                    .then_some(node)
            },
        )
        .await
    }
}

/// The file status of `path` on a listed node.
pub fn file<'a>(node: &'a pb::Node, path: &str) -> &'a pb::FileStatus {
    node.files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{} has no {path}: {node:#?}", node.name))
}

/// An agent running in-process, with its own fake node.
pub struct Agent {
    pub name: String,
    pub node: Node,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<seccomp_node_agent::Result<()>>>,
}

impl Agent {
    /// A test agent's settings: quick heartbeats, a backoff capped at 2 s.
    pub fn config(url: &str, name: &str, labels: &[(&str, &str)], node: &Node) -> sync::Config {
        let mut config = sync::Config::new(url, name, node.config());
        config.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        config.heartbeat = Duration::from_secs(1);
        config.backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        };
        config
    }

    pub fn start(url: &str, name: &str, labels: &[(&str, &str)]) -> Self {
        Self::start_on(Node::new(), url, name, labels)
    }

    pub fn start_on(node: Node, url: &str, name: &str, labels: &[(&str, &str)]) -> Self {
        let config = Self::config(url, name, labels, &node);
        Self::start_with(node, config)
    }

    /// An agent with `config` (from [`Agent::config`], changed as a test needs) on `node`.
    pub fn start_with(node: Node, config: sync::Config) -> Self {
        let name = config.node_name.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sync::run(config, async {
            let _ = stopped.await;
        }));
        Self {
            name,
            node,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Where a node path is on this machine.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.node.path(node_path)
    }

    /// Waits (at most `deadline`) for the agent to end by itself, and returns how it ended.
    pub async fn finished(mut self, deadline: Duration) -> seccomp_node_agent::Result<()> {
        tokio::time::timeout(deadline, self.task.take().unwrap())
            .await
            .expect("the agent ends in time")
            .unwrap()
    }

    /// Stops the agent; it must end cleanly and promptly.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(DEADLINE, self.task.take().unwrap())
            .await
            .expect("the agent stops in time")
            .unwrap()
            .expect("the agent stops without an error");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A profile the registry accepts, with a tag that makes its bytes unique.
pub fn profile(tag: &str) -> Vec<u8> {
    crate::common::profile_text(tag).into_bytes()
}

/// Lowercase hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Everything under `dir` with type, size, mode, owner, inode, mtime and content: equal
/// snapshots mean nothing was written.
pub fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            use std::os::unix::fs::MetadataExt as _;
            let content = if meta.is_file() {
                sha256(&std::fs::read(&path).unwrap())
            } else {
                String::new()
            };
            out.push(format!(
                "{} {:?} {:o} {}:{} ino={} mtime={}.{} {content}",
                path.display(),
                meta.file_type(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
            ));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}
