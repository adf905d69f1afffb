//! The distributor over real gRPC on loopback, with the real registry in-process and scripted
//! agents speaking `seccomp.agent.v1`: a rollout reaches matching nodes only, an Ack with the
//! right observations makes a node Applied, stale nonces are ignored, reconnecting with the
//! same revision resends nothing, and a restarted distributor serves the same set.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::time::Duration;

use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

mod common;
use common::{Agent, distributor, eventually, node, observe, registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_reaches_matching_agents_and_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = registry(&tmp.path().join("registry")).await;
    let content = b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n".to_vec();
    let mut rc = reg::registry_client::RegistryClient::connect(registry.url.clone())
        .await
        .unwrap();
    rc.publish(reg::PublishRequest {
        name: "web".into(),
        content: content.clone(),
        description: String::new(),
        expected_latest_version: None,
    })
    .await
    .unwrap();

    let dist = distributor(&tmp.path().join("distributor"), &registry.url).await;
    let mut linux = Agent::connect(
        &dist.url,
        "node-a",
        &[("kubernetes.io/os", "linux")],
        "",
        vec![],
    )
    .await;
    let mut windows = Agent::connect(
        &dist.url,
        "node-b",
        &[("kubernetes.io/os", "windows")],
        "",
        vec![],
    )
    .await;
    // Nothing is targeted yet: both get the empty set once (they reported no revision).
    let empty = linux.desired().await;
    assert!(empty.files.is_empty());
    let _ = windows.desired().await;

    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let created = dc
        .create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            version: 0,
            target: Some(pb::Target {
                selector: [("kubernetes.io/os".to_owned(), "linux".to_owned())].into(),
                mode: "0640".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.nci_name, "seccomp-web");
    // A cluster NCI has one content for every node, so the GitOps directory gets it only
    // once the rollout completes.
    let gitops = tmp.path().join("distributor/gitops/seccomp-web.yaml");
    assert!(!gitops.exists(), "no NCI in the sinks before completion");

    // Watch it: a snapshot now, an event when it completes, then the stream ends.
    let mut watch = dc
        .watch_rollout(pb::WatchRolloutRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut events = Vec::new();
        let mut changed = Vec::new();
        while let Some(e) = watch.next().await {
            let e = e.unwrap();
            events.push((e.r#type, e.rollout.unwrap().state));
            changed.extend(e.changed_nodes.into_iter().map(|n| (n.node_name, n.state)));
        }
        (events, changed)
    });

    let d = linux.desired().await;
    let file = d
        .files
        .iter()
        .find(|f| f.path == "/var/lib/kubelet/seccomp/web.json")
        .unwrap();
    assert_eq!(file.content, content, "byte for byte");
    assert_eq!(file.mode, 0o640);
    windows.nothing_within(Duration::from_millis(300)).await;

    // A stale nonce changes nothing; the right one makes the node Applied.
    linux.send(agent::agent_message::Message::Ack(agent::Ack {
        revision: d.revision.clone(),
        nonce: "stale".into(),
        observed: observe(&d),
    }));
    linux.send(agent::agent_message::Message::Heartbeat(agent::Heartbeat {
        revision: String::new(),
        time: None,
    }));
    eventually("the heartbeat", Duration::from_secs(5), || async {
        node(&dist.url, "node-a").await.connected
    })
    .await;
    assert_eq!(
        node(&dist.url, "node-a").await.state,
        pb::NodeState::Applying as i32
    );
    linux.send(agent::agent_message::Message::Ack(agent::Ack {
        revision: d.revision.clone(),
        nonce: d.nonce.clone(),
        observed: observe(&d),
    }));
    eventually("node-a applied", Duration::from_secs(5), || async {
        node(&dist.url, "node-a").await.state == pb::NodeState::Applied as i32
    })
    .await;
    let a = node(&dist.url, "node-a").await;
    assert_eq!(a.revision, d.revision);
    let web = a
        .files
        .iter()
        .find(|f| f.path.ends_with("web.json"))
        .unwrap();
    assert_eq!(web.desired.as_ref().unwrap().mode, "0640");
    assert_eq!(
        (web.rollout_id.as_str(), web.profile.as_str(), web.version),
        (created.id.as_str(), "web", 1)
    );
    assert_eq!(web.observed.as_ref().unwrap().sha256, file.sha256);
    let rollout = dc
        .get_rollout(pb::GetRolloutRequest {
            id: created.id.clone(),
            include_nodes: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rollout.rollout.unwrap().state,
        pb::RolloutState::Completed as i32
    );
    let (events, changed) = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the watch ends once completed")
        .unwrap();
    assert_eq!(
        changed.last(),
        Some(&("node-a".to_owned(), pb::NodeState::Applied as i32)),
        "events name the nodes that changed: {changed:?}"
    );
    assert_eq!(
        events.first(),
        Some(&(
            pb::RolloutEventType::Snapshot as i32,
            pb::RolloutState::Progressing as i32
        )),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&(
            pb::RolloutEventType::StateChanged as i32,
            pb::RolloutState::Completed as i32
        )),
        "{events:?}"
    );
    assert_eq!(rollout.nodes.len(), 1, "only the matching node counts");
    // Now the GitOps directory holds the NCI, with the published bytes.
    eventually(
        "the NCI in the GitOps directory",
        Duration::from_secs(5),
        || async { gitops.exists() },
    )
    .await;
    let yaml = std::fs::read_to_string(&gitops).unwrap();
    let nci: seccomp_rollout::nci::NodeConfigItem = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(
        nci.spec.files[1].content.as_deref().map(str::as_bytes),
        Some(content.as_slice())
    );

    // Restart the distributor: the agent reconnects with what it has and gets nothing new.
    drop(linux);
    drop(windows);
    dist.stop().await;
    let dist = distributor(&tmp.path().join("distributor"), &registry.url).await;
    let mut again = Agent::connect(
        &dist.url,
        "node-a",
        &[("kubernetes.io/os", "linux")],
        &d.revision,
        observe(&d),
    )
    .await;
    again.nothing_within(Duration::from_millis(300)).await;
    eventually(
        "node-a applied after restart",
        Duration::from_secs(5),
        || async { node(&dist.url, "node-a").await.state == pb::NodeState::Applied as i32 },
    )
    .await;

    // Errors name the thing.
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let err = dc
        .create_rollout(pb::CreateRolloutRequest {
            profile: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("nope"), "{err:?}");
    let err = dc
        .create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            target: Some(pb::Target {
                mode: "rwx".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = dc
        .get_rollout(pb::GetRolloutRequest {
            id: "r999".into(),
            include_nodes: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    drop(again);
    dist.stop().await;
    registry.stop().await;
}

#[tokio::test]
async fn a_stream_must_start_with_hello() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = distributor(tmp.path(), "http://127.0.0.1:9").await;
    let mut client = agent::agent_sync_client::AgentSyncClient::connect(dist.url.clone())
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(agent::AgentMessage {
        message: Some(agent::agent_message::Message::Heartbeat(
            agent::Heartbeat::default(),
        )),
    })
    .unwrap();
    let err = client
        .sync(UnboundedReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("Hello"));
    dist.stop().await;
}

#[tokio::test]
async fn a_second_stream_for_a_node_ends_the_first_with_aborted() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = distributor(tmp.path(), "http://127.0.0.1:9").await;
    let mut first = Agent::connect(&dist.url, "n1", &[("os", "linux")], "", vec![]).await;
    // A fresh agent is sent its (empty) set first.
    assert!(first.desired().await.files.is_empty());
    let _second = Agent::connect(&dist.url, "n1", &[("os", "linux")], "", vec![]).await;
    let end = tokio::time::timeout(Duration::from_secs(10), first.rx.next())
        .await
        .expect("the first stream ends in time");
    let status = match end {
        Some(Err(status)) => status,
        other => panic!("expected ABORTED, got {other:?}"),
    };
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(status.message().contains("\"n1\""), "{}", status.message());
    dist.stop().await;
}

#[tokio::test]
async fn a_stream_without_hello_is_closed_at_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = common::distributor_with(tmp.path(), "http://127.0.0.1:9", |c| {
        c.hello_deadline = Duration::from_millis(200);
    })
    .await;
    let mut client = agent::agent_sync_client::AgentSyncClient::connect(dist.url.clone())
        .await
        .unwrap();
    // The sender stays open and says nothing.
    let (_tx, rx) = mpsc::unbounded_channel::<agent::AgentMessage>();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.sync(UnboundedReceiverStream::new(rx)),
    )
    .await
    .expect("an answer, not a wait")
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("no Hello"), "{}", err.message());
    dist.stop().await;
}

#[tokio::test]
async fn a_hello_with_too_many_labels_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = distributor(tmp.path(), "http://127.0.0.1:9").await;
    let mut client = agent::agent_sync_client::AgentSyncClient::connect(dist.url.clone())
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(agent::AgentMessage {
        message: Some(agent::agent_message::Message::Hello(agent::Hello {
            node_name: "n1".into(),
            labels: (0..200)
                .map(|i| (format!("k{i}"), "v".to_owned()))
                .collect(),
            ..Default::default()
        })),
    })
    .unwrap();
    let err = client
        .sync(UnboundedReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("labels"), "{}", err.message());
    dist.stop().await;
}
