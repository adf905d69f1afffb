//! How long a rollout to N simulated agents takes to converge (every node confirmed), with
//! the real registry and distributor in this process on loopback and N scripted agents that
//! acknowledge every Desired at once with perfect observations.
//!
//! ```sh
//! cargo run --release -p seccomp-distributor --example rollout_scale -- 2000 [WAVES] [MAX_UNAVAILABLE] [ROUNDS]
//! ```
//!
//! Prints, per round (each round publishes a new version and rolls it out, so later rounds
//! run with the earlier rollouts in the distributor's history), the time from CreateRollout
//! to the rollout's Completed state, and to every agent having acknowledged (agents count
//! their own Acks).

#![allow(clippy::unwrap_used)] // a measuring tool: fail loudly

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

// The scripted agents' helpers (`observe`) are shared with the tests.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{eventually, observe};

/// Deadline for each setup step.
const SETUP: Duration = Duration::from_secs(120);

/// Agents per HTTP/2 connection.
const PER_CONNECTION: usize = 100;

/// One simulated agent: Hello, then an Ack for every Desired. Counts Acks of sets with files.
async fn run_agent(
    channel: tonic::transport::Channel,
    name: String,
    connected: Arc<AtomicUsize>,
    applied: Arc<AtomicUsize>,
) {
    let mut client = agent::agent_sync_client::AgentSyncClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(agent::AgentMessage {
        message: Some(agent::agent_message::Message::Hello(agent::Hello {
            node_name: name.clone(),
            labels: HashMap::from([
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                ("zone".to_owned(), format!("z{}", name.len() % 3)),
            ]),
            agent_version: "sim".into(),
            current_revision: String::new(),
            observed: Vec::new(),
        })),
    })
    .unwrap();
    let mut incoming = client
        .sync(UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    connected.fetch_add(1, Ordering::Relaxed);
    while let Some(Ok(msg)) = incoming.next().await {
        let Some(agent::distributor_message::Message::Desired(d)) = msg.message else {
            continue;
        };
        let ack = agent::AgentMessage {
            message: Some(agent::agent_message::Message::Ack(agent::Ack {
                revision: d.revision.clone(),
                nonce: d.nonce.clone(),
                observed: observe(&d),
            })),
        };
        if tx.send(ack).is_err() {
            return;
        }
        if !d.files.is_empty() {
            applied.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let waves: Vec<String> = args.get(2).map_or_else(
        || vec!["100%".to_owned()],
        |w| w.split(',').map(str::to_owned).collect(),
    );
    let max_unavailable = args.get(3).cloned().unwrap_or_else(|| "100%".to_owned());
    let rounds: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(seccomp_registry::run(
        seccomp_registry::Config::new(dir.path().join("registry")),
        listener,
        std::future::pending(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = seccomp_distributor::Config::new(dir.path().join("distributor"), &registry);
    tokio::spawn(seccomp_distributor::run(
        config,
        listener,
        std::future::pending(),
    ));

    eventually("the registry to listen", SETUP, || {
        let url = registry.clone();
        async move {
            reg::registry_client::RegistryClient::connect(url)
                .await
                .is_ok()
        }
    })
    .await;
    let mut rc = reg::registry_client::RegistryClient::connect(registry.clone())
        .await
        .unwrap();

    let connected = Arc::new(AtomicUsize::new(0));
    let applied = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).unwrap();
    for c in 0..n.div_ceil(PER_CONNECTION) {
        let channel = endpoint.connect().await.unwrap();
        for i in c * PER_CONNECTION..((c + 1) * PER_CONNECTION).min(n) {
            tokio::spawn(run_agent(
                channel.clone(),
                format!("node-{i:05}"),
                Arc::clone(&connected),
                Arc::clone(&applied),
            ));
        }
    }
    eventually("every agent to connect", SETUP, || {
        let done = connected.load(Ordering::Relaxed) >= n;
        async move { done }
    })
    .await;
    let mut dc = pb::distributor_client::DistributorClient::connect(url.clone())
        .await
        .unwrap();
    // Every agent got (and acknowledged) its empty set on connecting.
    eventually("the agents' empty sets acknowledged", SETUP, || {
        let mut dc = dc.clone();
        async move {
            let nodes = dc
                .list_nodes(pb::ListNodesRequest {
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .nodes;
            nodes.len() >= n.min(100)
                && nodes
                    .iter()
                    .all(|x| x.state == pb::NodeState::Applied as i32)
        }
    })
    .await;
    println!("{n} agents connected in {:.2?}", started.elapsed());

    for round in 1..=rounds {
        rc.publish(reg::PublishRequest {
            name: "web".into(),
            content: format!(
                "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":{round}}}\n"
            )
            .into_bytes(),
            description: String::new(),
            expected_latest_version: None,
        })
        .await
        .unwrap();
        applied.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let r = dc
            .create_rollout(pb::CreateRolloutRequest {
                profile: "web".into(),
                version: round as u64,
                target: Some(pb::Target {
                    selector: HashMap::from([("kubernetes.io/os".to_owned(), "linux".to_owned())]),
                    ..Default::default()
                }),
                strategy: Some(pb::Strategy {
                    waves: waves.clone(),
                    max_unavailable: max_unavailable.clone(),
                    ..Default::default()
                }),
                nci_name: None,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .rollout
            .unwrap();
        let mut all_acked = None;
        loop {
            if all_acked.is_none() && applied.load(Ordering::Relaxed) >= n {
                all_acked = Some(started.elapsed());
            }
            let now = dc
                .get_rollout(pb::GetRolloutRequest {
                    id: r.id.clone(),
                    include_nodes: false,
                })
                .await
                .unwrap()
                .into_inner()
                .rollout
                .unwrap();
            if now.state == pb::RolloutState::Completed as i32 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "no convergence: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let completed = started.elapsed();
        println!(
            "round {round}: rollout to {n} nodes, waves {}, max_unavailable {max_unavailable}: every agent acked after {:.2?}, Completed after {completed:.2?}",
            waves.join(","),
            all_acked.unwrap_or(completed)
        );
    }
}
