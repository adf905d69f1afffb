//! `--check-pods` over the real distributor, with the cluster a fake API server (kube's
//! `tower_test` mock) whose pods the distributor watches: until they are listed, a change
//! that takes a file away is refused as UNAVAILABLE; then one that takes a file from a node
//! where a pod names it is refused, naming the pod, and nothing changes; `force` takes it
//! anyway. Changes that remove nothing are never held up.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{AutoAgent, Behaviour, distributor_with, publish, registry, wait_state};
use http::{Request, Response};
use kube::client::Body;
use seccomp_k8s::PodWatch;
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
    let broken = Arc::new(AtomicBool::new(true));
    let broken2 = Arc::clone(&broken);
    let api = tokio::spawn(async move {
        let mut handle = pin!(handle);
        // Lists fail while `broken`; then one lists the pod; watches are held open.
        while let Some((req, send)) = handle.next_request().await {
            assert_eq!(req.uri().path(), "/api/v1/pods");
            if req.uri().query().unwrap_or("").contains("watch=true") {
                tokio::spawn(async move {
                    let _held = send;
                    std::future::pending::<()>().await;
                });
                continue;
            }
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
                "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "3"},
                "items": [{
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "api-0", "namespace": "web", "resourceVersion": "3"},
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
    let watch = PodWatch::new(kube::Client::new(service, "default"));

    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.pod_watch = Some(watch);
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
    // Nothing to remove: not held up by pods that are not listed yet.
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
    let sent = three.desired_count();

    // The pods are not listed yet (the API refuses): a removal is refused as unavailable.
    let err = dc.create_rollout(narrowing(false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("--force"), "{}", err.message());

    // Listed: node-3 runs a pod that names web.json, so taking it is refused, naming it.
    broken.store(false, Ordering::SeqCst);
    common::eventually("the pods to be listed", Duration::from_secs(30), || async {
        let mut dc = dc.clone();
        match dc.create_rollout(narrowing(false)).await {
            Err(e) if e.code() == tonic::Code::Unavailable => false,
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
                assert!(
                    e.message().contains(
                        "pod web/api-0 on node-3 names /var/lib/kubelet/seccomp/web.json"
                    ),
                    "{}",
                    e.message()
                );
                true
            }
            Ok(r) => panic!("a removal the pods forbid was accepted: {r:?}"),
        }
    })
    .await;
    let listed = dc
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rollouts;
    assert_eq!(listed.len(), 1, "nothing stored");
    assert_eq!(three.desired_count(), sent, "nothing sent");

    // Forced: node-3 loses the file.
    let forced = dc
        .create_rollout(narrowing(true))
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    wait_state(&dc, &forced.id, pb::RolloutState::Completed).await;
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
