//! `--check-pods` over the real distributor, with the cluster a fake API server (kube's
//! `tower_test` mock): a change that takes a file from a node where a pod names it is
//! refused, naming the pod, and nothing changes; `force` takes it anyway; a cluster that
//! cannot answer refuses the removal too. Changes that remove nothing never ask.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{AutoAgent, Behaviour, distributor_with, publish, registry, wait_state};
use http::{Method, Request, Response};
use kube::client::Body;
use seccomp_distributor::pods::ClusterPods;
use seccomp_k8s::PodProfiles;
use seccomp_proto::distributor::v1 as pb;
use serde_json::json;
use tower_test::mock;

fn narrowing(force: bool) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        profile: "web".into(),
        target: Some(pb::Target {
            selector: [("zone".to_owned(), "b".to_owned())].into(),
            ..Default::default()
        }),
        strategy: Some(pb::Strategy {
            waves: vec!["100%".into()],
            ..Default::default()
        }),
        allow_removal: true,
        force,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_pod_names_is_not_taken_from_its_node_unless_forced() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let asked = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(AtomicBool::new(false));
    let (asked2, broken2) = (Arc::clone(&asked), Arc::clone(&broken));
    let api = tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), "/api/v1/pods");
            asked2.fetch_add(1, Ordering::SeqCst);
            if broken2.load(Ordering::SeqCst) {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "pods is forbidden", "reason": "Forbidden", "code": 403});
                send.send_response(
                    Response::builder()
                        .status(403)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                        .unwrap(),
                );
                continue;
            }
            let list = json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {},
                "items": [{
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "api-0", "namespace": "web"},
                    "spec": {
                        "nodeName": "node-3",
                        "containers": [{"name": "api", "image": "api", "securityContext": {
                            "seccompProfile": {"type": "Localhost", "localhostProfile": "web.json"}
                        }}]
                    },
                    "status": {"phase": "Running"}
                }]
            });
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
        }
    });
    let pods = ClusterPods(PodProfiles::new(kube::Client::new(service, "default")));

    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.profile_users = Some(Arc::new(pods));
    })
    .await;
    publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n").await;
    let one = AutoAgent::start(
        &dist.url,
        "node-1",
        &[("os", "linux"), ("zone", "b")],
        Behaviour::Apply,
    )
    .await;
    let three = AutoAgent::start(
        &dist.url,
        "node-3",
        &[("os", "linux"), ("zone", "a")],
        Behaviour::Apply,
    )
    .await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let mut everywhere = narrowing(false);
    everywhere.target.as_mut().unwrap().selector = [("os".to_owned(), "linux".to_owned())].into();
    let first = dc
        .create_rollout(everywhere)
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    wait_state(&dc, &first.id, pb::RolloutState::Completed).await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "a change that removes nothing asks nobody"
    );
    let sent = three.desired_count();

    // node-3 runs a pod that names web.json: refused, naming it; nothing changes.
    let err = dc.create_rollout(narrowing(false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("pod web/api-0 on node-3 names /var/lib/kubelet/seccomp/web.json"),
        "{}",
        err.message()
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // A cluster that cannot answer refuses it too.
    broken.store(true, Ordering::SeqCst);
    let err = dc.create_rollout(narrowing(false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("--force"), "{}", err.message());
    let listed = dc
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rollouts;
    assert_eq!(listed.len(), 1, "nothing stored");
    assert_eq!(three.desired_count(), sent, "nothing sent");

    // Forced: not asked, and node-3 loses the file.
    let before = asked.load(Ordering::SeqCst);
    let forced = dc
        .create_rollout(narrowing(true))
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    wait_state(&dc, &forced.id, pb::RolloutState::Completed).await;
    assert_eq!(asked.load(Ordering::SeqCst), before);
    common::eventually(
        "node-3 to be sent a set without the file",
        Duration::from_secs(20),
        || async { three.log.lock().unwrap().last().is_some_and(Vec::is_empty) },
    )
    .await;
    one.leave();
    three.leave();
    dist.stop().await;
    reg.stop().await;
    api.abort();
}
