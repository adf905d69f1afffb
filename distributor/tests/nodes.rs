//! Nodes outlive the distributor's process: an offline node (its agent gone) is still known
//! after a restart, with what its agent last reported on disk, so the registry's in-use
//! check still sees the versions it holds; it is forgotten once gone for longer than
//! `--forget-nodes-after`.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::time::Duration;

use common::{
    AutoAgent, Behaviour, distributor_on, distributor_with, eventually, publish, registry,
};
use seccomp_proto::distributor::v1 as pb;

const PROFILE: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n";
const WAIT: Duration = Duration::from_secs(20);

async fn nodes(url: &str) -> Vec<pb::Node> {
    let mut dc = pb::distributor_client::DistributorClient::connect(url.to_owned())
        .await
        .unwrap();
    dc.list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_node_is_known_after_a_restart_until_it_is_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    publish(&reg.url, "web", PROFILE).await;
    let dir = tmp.path().join("distributor");
    let dist = distributor_with(&dir, &reg.url, |_| {}).await;
    let agent = AutoAgent::start(&dist.url, "n1", &[("os", "linux")], Behaviour::Apply).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    dc.create_rollout(pb::CreateRolloutRequest {
        profile: "web".into(),
        target: Some(pb::Target {
            selector: [("os".to_owned(), "linux".to_owned())].into(),
            ..Default::default()
        }),
        strategy: Some(pb::Strategy {
            waves: vec!["100%".into()],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = dist.url.clone();
    eventually("n1 holds the profile", WAIT, || {
        let url = url.clone();
        async move {
            nodes(&url)
                .await
                .iter()
                .any(|n| n.name == "n1" && n.state == pb::NodeState::Applied as i32)
        }
    })
    .await;
    // The agent goes away, then the distributor restarts without it.
    agent.leave();
    eventually("n1 disconnected", WAIT, || {
        let url = url.clone();
        async move {
            nodes(&url)
                .await
                .iter()
                .any(|n| n.name == "n1" && !n.connected)
        }
    })
    .await;
    let addr = dist.url.trim_start_matches("http://").to_owned();
    dist.stop().await;
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let dist = distributor_on(listener, &dir, &reg.url, |_| {}).await;
    let after = nodes(&dist.url).await;
    let n1 = after
        .iter()
        .find(|n| n.name == "n1")
        .expect("n1 is still known");
    assert!(!n1.connected);
    let file = n1
        .files
        .iter()
        .find(|f| f.path.ends_with("/web.json"))
        .expect("its file");
    let observed = file
        .observed
        .as_ref()
        .expect("what its agent last reported");
    assert_eq!(
        format!("sha256:{}", observed.sha256),
        seccomp_profile::digest(PROFILE)
    );
    dist.stop().await;

    // With a short memory, the node is forgotten, and stays forgotten after a restart.
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let dist = distributor_on(listener, &dir, &reg.url, |c| {
        c.forget_nodes_after = Duration::from_millis(1);
    })
    .await;
    let url = dist.url.clone();
    eventually("n1 forgotten", WAIT, || {
        let url = url.clone();
        async move { !nodes(&url).await.iter().any(|n| n.name == "n1") }
    })
    .await;
    dist.stop().await;
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let dist = distributor_on(listener, &dir, &reg.url, |_| {}).await;
    assert!(!nodes(&dist.url).await.iter().any(|n| n.name == "n1"));
    dist.stop().await;
    reg.stop().await;
}
