//! `--watch-nodes` over the real distributor, with the cluster a fake API server that lists
//! the nodes and then serves watch events one at a time (kube's `tower_test` mock): labels
//! come from the Node objects, not from what agents claim; a deleted Node leaves the rollout
//! it held up; an added Node gets its set; a relabelled Node moves into a selector.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::pin::pin;
use std::time::Duration;

use common::{AutoAgent, Behaviour, distributor_with, eventually, publish, registry, wait_state};
use http::{Request, Response};
use kube::client::Body;
use seccomp_k8s::NodeWatch;
use seccomp_proto::distributor::v1 as pb;
use serde_json::{Value, json};
use tower_test::mock;

const WAIT: Duration = Duration::from_secs(20);

fn node(name: &str, rv: u64, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": rv.to_string(), "labels": labels}})
}

fn rollout(selector: &[(&str, &str)], name: &str) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        profile: "web".into(),
        nci_name: Some(name.into()),
        target: Some(pb::Target {
            selector: selector
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            path: format!("/var/lib/kubelet/seccomp/{name}.json"),
            ..Default::default()
        }),
        strategy: Some(pb::Strategy {
            waves: vec!["100%".into()],
            max_unavailable: "100%".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn labels_of(dc: &common::Dist, name: &str) -> std::collections::HashMap<String, String> {
    let nodes = dc
        .clone()
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    nodes.into_iter().find(|n| n.name == name).unwrap().labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_their_labels_come_from_the_cluster() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (events, mut script) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let api = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let (req, send) = handle.next_request().await.expect("a list");
        assert_eq!(req.uri().path(), "/api/v1/nodes");
        let list = json!({"apiVersion": "v1", "kind": "NodeList",
        "metadata": {"resourceVersion": "1"},
        "items": [
            node("node-1", 1, json!({"os": "linux", "zone": "a"})),
            node("node-2", 1, json!({"os": "linux"})),
        ]});
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&list).unwrap()))
                .unwrap(),
        );
        // Each watch gets the next scripted event, then ends (the watcher watches again
        // from that event's version).
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(req.uri().path(), "/api/v1/nodes");
            assert!(req.uri().query().unwrap_or("").contains("watch=true"));
            let Some(event) = script.recv().await else {
                return;
            };
            let mut line = serde_json::to_vec(&event).unwrap();
            line.push(b'\n');
            send.send_response(Response::builder().body(Body::from(line)).unwrap());
        }
    });
    let watch = NodeWatch::new(kube::Client::new(service, "default"));

    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.node_watch = Some(watch);
    })
    .await;
    publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n").await;
    // node-1 claims a label its Node object does not have; node-2 never answers; node-3 is
    // not in the cluster yet.
    let one = AutoAgent::start(
        &dist.url,
        "node-1",
        &[("os", "linux"), ("pool", "secure")],
        Behaviour::Apply,
    )
    .await;
    let two = AutoAgent::start(&dist.url, "node-2", &[("os", "linux")], Behaviour::Silent).await;
    let three = AutoAgent::start(&dist.url, "node-3", &[("os", "linux")], Behaviour::Apply).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    eventually("the Node objects' labels", WAIT, || async {
        labels_of(&dc, "node-1")
            .await
            .get("zone")
            .map(String::as_str)
            == Some("a")
    })
    .await;
    assert!(
        !labels_of(&dc, "node-1").await.contains_key("pool"),
        "the agent's claim is ignored"
    );

    // What node-1 claims matches no node.
    let err = dc
        .create_rollout(rollout(&[("pool", "secure")], "secure"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // node-2 holds the rollout up until its Node is deleted; then it completes without it.
    let all = dc
        .create_rollout(rollout(&[("os", "linux")], "web"))
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    eventually("node-1 to get the file", WAIT, || async {
        !one.received().is_empty()
    })
    .await;
    assert_eq!(
        three.desired_count(),
        0,
        "a node the cluster does not have gets nothing"
    );
    let view = dc
        .get_rollout(pb::GetRolloutRequest {
            id: all.id.clone(),
            include_nodes: false,
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(view.state, pb::RolloutState::Progressing as i32);
    events
        .send(json!({"type": "DELETED", "object": node("node-2", 2, json!({"os": "linux"}))}))
        .unwrap();
    wait_state(&dc, &all.id, pb::RolloutState::Completed).await;

    // node-3 joins the cluster: it gets what its labels select.
    events
        .send(json!({"type": "ADDED", "object": node("node-3", 3, json!({"os": "linux"}))}))
        .unwrap();
    eventually("node-3 to get the file", WAIT, || async {
        !three.received().is_empty()
    })
    .await;

    // node-1 is relabelled: now pool=secure selects it.
    events
        .send(json!({"type": "MODIFIED", "object": node("node-1", 4, json!({"os": "linux", "zone": "a", "pool": "secure"}))}))
        .unwrap();
    eventually("node-1's new label", WAIT, || async {
        labels_of(&dc, "node-1")
            .await
            .get("pool")
            .map(String::as_str)
            == Some("secure")
    })
    .await;
    let secure = dc
        .create_rollout(rollout(&[("pool", "secure")], "secure"))
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    wait_state(&dc, &secure.id, pb::RolloutState::Completed).await;
    eventually("node-1 to get both files", WAIT, || async {
        one.log
            .lock()
            .unwrap()
            .last()
            .is_some_and(|files| files.len() == 2)
    })
    .await;
    one.leave();
    two.leave();
    three.leave();
    dist.stop().await;
    reg.stop().await;
    api.abort();
}
