//! Helpers shared by the distributor's end-to-end tests: the real registry and distributor
//! in-process on loopback, scripted agents speaking `seccomp.agent.v1`, polling.

#![allow(clippy::unwrap_used, dead_code)] // test helpers; not every test uses every one

use std::collections::HashMap;
use std::time::Duration;

use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

pub struct Server {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The URL of a server on `listener`: `https://` with TLS.
fn url_of(listener: &tokio::net::TcpListener, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", listener.local_addr().unwrap())
}

pub async fn registry(dir: &std::path::Path) -> Server {
    registry_with(dir, |_| {}).await
}

/// A registry adjusted by `tune`.
pub async fn registry_with(
    dir: &std::path::Path,
    tune: impl FnOnce(&mut seccomp_registry::Config),
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let mut config = seccomp_registry::Config::new(dir);
    tune(&mut config);
    let url = url_of(&listener, config.security.tls.is_some());
    let task = tokio::spawn(async move {
        seccomp_registry::run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        url,
        stop: Some(tx),
        task,
    }
}

pub async fn distributor(dir: &std::path::Path, registry: &str) -> Server {
    distributor_with(dir, registry, |_| {}).await
}

/// A distributor with test defaults (a GitOps directory under `dir`), adjusted by `tune`.
pub async fn distributor_with(
    dir: &std::path::Path,
    registry: &str,
    tune: impl FnOnce(&mut seccomp_distributor::Config),
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    distributor_on(listener, dir, registry, tune).await
}

/// [`distributor_with`] on a listener bound beforehand (to hand its address to a registry).
pub async fn distributor_on(
    listener: tokio::net::TcpListener,
    dir: &std::path::Path,
    registry: &str,
    tune: impl FnOnce(&mut seccomp_distributor::Config),
) -> Server {
    let (tx, rx) = oneshot::channel::<()>();
    let mut config = seccomp_distributor::Config::new(dir, registry);
    config.shutdown_grace = Duration::from_millis(200);
    config.yaml_dir = Some(dir.join("gitops"));
    tune(&mut config);
    let url = url_of(&listener, config.security.tls.is_some());
    let task = tokio::spawn(async move {
        seccomp_distributor::run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        url,
        stop: Some(tx),
        task,
    }
}

/// A scripted agent: send messages, receive Desired.
pub struct Agent {
    pub tx: mpsc::UnboundedSender<agent::AgentMessage>,
    pub rx: tonic::Streaming<agent::DistributorMessage>,
}

impl Agent {
    pub async fn connect(
        url: &str,
        node: &str,
        labels: &[(&str, &str)],
        revision: &str,
        observed: Vec<agent::ObservedFile>,
    ) -> Agent {
        let mut client = agent::agent_sync_client::AgentSyncClient::connect(url.to_owned())
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(agent::AgentMessage {
            message: Some(agent::agent_message::Message::Hello(agent::Hello {
                node_name: node.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<HashMap<_, _>>(),
                agent_version: "test".into(),
                current_revision: revision.into(),
                observed,
            })),
        })
        .unwrap();
        let rx = client
            .sync(UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Agent { tx, rx }
    }

    pub async fn desired(&mut self) -> agent::Desired {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.rx.next())
            .await
            .expect("a Desired in time")
            .unwrap()
            .unwrap();
        let Some(agent::distributor_message::Message::Desired(d)) = msg.message else {
            panic!("not a Desired")
        };
        d
    }

    pub async fn nothing_within(&mut self, d: Duration) {
        assert!(
            tokio::time::timeout(d, self.rx.next()).await.is_err(),
            "no message expected"
        );
    }

    pub fn send(&self, m: agent::agent_message::Message) {
        self.tx
            .send(agent::AgentMessage { message: Some(m) })
            .unwrap();
    }
}

/// What a perfect agent observes after applying `d`.
pub fn observe(d: &agent::Desired) -> Vec<agent::ObservedFile> {
    d.files
        .iter()
        .map(|f| agent::ObservedFile {
            path: f.path.clone(),
            exists: true,
            r#type: f.r#type,
            sha256: f.sha256.clone(),
            size: f.content.len() as u64,
            mode: f.mode,
            uid: 0,
            gid: 0,
            owner: "root".into(),
            group: "root".into(),
        })
        .collect()
}

pub async fn node(url: &str, name: &str) -> pb::Node {
    let mut c = pb::distributor_client::DistributorClient::connect(url.to_owned())
        .await
        .unwrap();
    let nodes = c
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    nodes.into_iter().find(|n| n.name == name).unwrap()
}

/// Poll `f` until it is true, or fail after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A distributor client.
pub type Dist = pb::distributor_client::DistributorClient<tonic::transport::Channel>;

/// Poll rollout `id` until it is in `state`, or fail after 20 s.
pub async fn wait_state(dc: &Dist, id: &str, state: pb::RolloutState) {
    wait_states(dc, id, &[state]).await;
}

/// Poll rollout `id` until it is in one of `states`, or fail after 20 s.
pub async fn wait_states(dc: &Dist, id: &str, states: &[pb::RolloutState]) {
    eventually(
        &format!("rollout {id} {states:?}"),
        Duration::from_secs(20),
        || {
            let mut dc = dc.clone();
            let id = id.to_owned();
            async move {
                let r = dc
                    .get_rollout(pb::GetRolloutRequest {
                        id,
                        include_nodes: false,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .rollout
                    .unwrap();
                states.iter().any(|s| r.state == *s as i32)
            }
        },
    )
    .await;
}

/// Publish `content` as `name`; returns the version.
pub async fn publish(registry: &str, name: &str, content: &[u8]) -> u64 {
    use seccomp_proto::registry::v1 as reg;
    let mut rc = reg::registry_client::RegistryClient::connect(registry.to_owned())
        .await
        .unwrap();
    rc.publish(reg::PublishRequest {
        name: name.into(),
        content: content.to_vec(),
        description: String::new(),
        expected_latest_version: None,
    })
    .await
    .unwrap()
    .into_inner()
    .version
}

/// What an [`AutoAgent`] does with a Desired.
#[derive(Clone)]
pub enum Behaviour {
    /// Acknowledge with perfect observations.
    Apply,
    /// Refuse any set containing this content (as an agent does for an unknown owner); apply
    /// others.
    Refuse(Vec<u8>),
    /// Never answer.
    Silent,
}

/// An agent task that answers every Desired as its [`Behaviour`] says and logs the contents
/// of the files it was sent (one entry per Desired, sorted by path).
pub struct AutoAgent {
    pub node: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<Vec<Vec<u8>>>>>,
    /// Revision and observations of the last applied set, to reconnect with.
    pub applied: std::sync::Arc<std::sync::Mutex<(String, Vec<agent::ObservedFile>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl AutoAgent {
    /// Close the stream, as an agent that goes away does.
    pub fn leave(self) {
        self.task.abort();
    }

    pub async fn start(
        url: &str,
        node: &str,
        labels: &[(&str, &str)],
        behaviour: Behaviour,
    ) -> Self {
        Self::resume(url, node, labels, behaviour, (String::new(), Vec::new())).await
    }

    /// Connect reporting `applied` (revision, observations) as what is on disk.
    pub async fn resume(
        url: &str,
        node: &str,
        labels: &[(&str, &str)],
        behaviour: Behaviour,
        applied: (String, Vec<agent::ObservedFile>),
    ) -> Self {
        let mut a = Agent::connect(url, node, labels, &applied.0, applied.1.clone()).await;
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let applied = std::sync::Arc::new(std::sync::Mutex::new(applied));
        let (log2, applied2) = (log.clone(), applied.clone());
        let task = tokio::spawn(async move {
            while let Some(Ok(msg)) = a.rx.next().await {
                let Some(agent::distributor_message::Message::Desired(d)) = msg.message else {
                    continue;
                };
                let contents: Vec<Vec<u8>> = d
                    .files
                    .iter()
                    .filter(|f| f.r#type == agent::FileType::File as i32)
                    .map(|f| f.content.to_vec())
                    .collect();
                log2.lock().unwrap().push(contents.clone());
                let refuse = match &behaviour {
                    Behaviour::Silent => continue,
                    Behaviour::Apply => None,
                    Behaviour::Refuse(bad) => d.files.iter().find(|f| f.content == *bad),
                };
                let reply = match refuse {
                    Some(f) => {
                        let current = applied2.lock().unwrap().clone();
                        agent::agent_message::Message::Nack(agent::Nack {
                            revision: d.revision.clone(),
                            nonce: d.nonce.clone(),
                            last_good_revision: current.0,
                            errors: vec![agent::FileError {
                                path: f.path.clone(),
                                code: "unknown-owner".into(),
                                message: "user \"nosuchuser\" does not exist on this node".into(),
                            }],
                            observed: current.1,
                        })
                    }
                    None => {
                        *applied2.lock().unwrap() = (d.revision.clone(), observe(&d));
                        agent::agent_message::Message::Ack(agent::Ack {
                            revision: d.revision.clone(),
                            nonce: d.nonce.clone(),
                            observed: observe(&d),
                        })
                    }
                };
                if a.tx
                    .send(agent::AgentMessage {
                        message: Some(reply),
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        AutoAgent {
            node: node.to_owned(),
            log,
            applied,
            task,
        }
    }

    /// Every file content this agent was ever sent.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.log.lock().unwrap().iter().flatten().cloned().collect()
    }

    /// Number of Desired messages received.
    pub fn desired_count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Disconnect (the stream ends); returns what it had applied.
    pub fn disconnect(self) -> (String, Vec<agent::ObservedFile>) {
        self.task.abort();
        self.applied.lock().unwrap().clone()
    }
}
