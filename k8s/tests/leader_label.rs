//! `--leader-pod` against a fake API server (kube's `tower_test` mock): the leading replica
//! patches its own pod's labels, a JSON merge patch setting `seccomp.dev/leader: "true"`,
//! and removing it (null) when it stops leading; a refused patch is an error naming the pod.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::pin::pin;

use http::{Request, Response};
use kube::client::Body;
use seccomp_k8s::{LEADER_LABEL, LeaderPod};
use serde_json::{Value, json};
use tower_test::mock;

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "seccomp-distributor-1", "namespace": "seccomp-system"}})
}

#[tokio::test]
async fn the_leader_labels_its_own_pod_and_takes_the_label_off() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let mut bodies = Vec::new();
        for status in [200, 200, 403] {
            let (req, send) = handle.next_request().await.expect("a patch");
            assert_eq!(req.method(), http::Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/api/v1/namespaces/seccomp-system/pods/seccomp-distributor-1"
            );
            assert_eq!(
                req.headers()["content-type"],
                "application/merge-patch+json"
            );
            let bytes = req.into_body().collect_bytes().await.unwrap();
            bodies.push(serde_json::from_slice::<Value>(&bytes).unwrap());
            let body = if status == 200 {
                pod()
            } else {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "pods \"seccomp-distributor-1\" is forbidden", "reason": "Forbidden", "code": 403})
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
        bodies
    });
    let leader = LeaderPod::new(
        kube::Client::new(service, "default"),
        "seccomp-system",
        "seccomp-distributor-1",
    );
    leader.set(true).await.unwrap();
    leader.set(false).await.unwrap();
    let refused = leader.set(true).await.unwrap_err().to_string();
    assert!(
        refused.contains("seccomp-system/seccomp-distributor-1") && refused.contains("forbidden"),
        "{refused}"
    );
    let bodies = server.await.unwrap();
    assert_eq!(
        bodies[0],
        json!({"metadata": {"labels": {LEADER_LABEL: "true"}}})
    );
    assert_eq!(
        bodies[1],
        json!({"metadata": {"labels": {LEADER_LABEL: null}}})
    );
}
