//! The Kubernetes sink against a fake API server (kube's `tower_test` mock): every request's
//! method, path, query (field manager, force, label selector), content type and body is
//! checked. Plus an opt-in test against a real cluster.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::pin::pin;

use http::{Method, Request, Response};
use kube::client::Body;
use seccomp_distributor::sinks::ClusterSink;
use seccomp_rollout::nci::{self, NodeConfigItem, ProfileRef, Target};
use seccomp_rollout::selector;
use serde_json::{Value, json};
use tower_test::mock;

fn nci(name: &str) -> NodeConfigItem {
    let t = Target::new(selector::parse("kubernetes.io/os=linux").unwrap());
    nci::render(
        ProfileRef {
            name: "web",
            version: 4,
            content: b"{\"defaultAction\":\"SCMP_ACT_LOG\"}",
        },
        &t,
        Some(name),
        Some("r-9"),
    )
    .unwrap()
}

fn respond(send: mock::SendResponse<Response<Body>>, status: u16, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn query(req: &Request<Body>) -> Vec<(String, String)> {
    let q = req.uri().query().unwrap_or("");
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.replace("%2F", "/").replace("%3D", "="))
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn applies_with_server_side_apply_then_prunes_stale_objects() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let desired = vec![nci("seccomp-web"), nci("seccomp-web-canary")];
    let expected = desired.clone();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        // 1. One server-side apply per NCI.
        for n in &expected {
            let (req, send) = handle.next_request().await.expect("apply request");
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(
                req.uri().path(),
                format!(
                    "/apis/node.shturval.tech/v1beta2/nodeconfigitems/{}",
                    n.metadata.name
                )
            );
            assert_eq!(
                query(&req),
                [
                    ("fieldManager".to_owned(), "seccomp-distributor".to_owned()),
                    ("force".to_owned(), "true".to_owned())
                ]
            );
            assert_eq!(
                req.headers()["content-type"],
                "application/apply-patch+yaml"
            );
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(
                body,
                serde_json::to_value(n).unwrap(),
                "the body is the NCI itself"
            );
            assert_eq!(body["apiVersion"], "node.shturval.tech/v1beta2");
            assert_eq!(body["kind"], "NodeConfigItem");
            assert_eq!(body["spec"]["files"][1]["mode"], "0644");
            respond(send, 200, body);
        }
        // 2. List ours by label.
        let (req, send) = handle.next_request().await.expect("list request");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/node.shturval.tech/v1beta2/nodeconfigitems"
        );
        assert!(
            query(&req).contains(&(
                "labelSelector".to_owned(),
                "app.kubernetes.io/managed-by=seccomp-distributor".to_owned()
            )),
            "{:?}",
            req.uri()
        );
        let item = |name: &str| {
            json!({"apiVersion": "node.shturval.tech/v1beta2", "kind": "NodeConfigItem",
                   "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "seccomp-distributor"}},
                   "spec": {"files": [], "nodeconfigselector": {}, "priority": 100}})
        };
        respond(
            send,
            200,
            json!({"apiVersion": "node.shturval.tech/v1beta2", "kind": "NodeConfigItemList", "metadata": {},
                   "items": [item("seccomp-web"), item("seccomp-old"), item("seccomp-web-canary")]}),
        );
        // 3. Delete the stale one only.
        let (req, send) = handle.next_request().await.expect("delete request");
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(
            req.uri().path(),
            "/apis/node.shturval.tech/v1beta2/nodeconfigitems/seccomp-old"
        );
        respond(
            send,
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        );
    });

    let sink = ClusterSink::new(kube::Client::new(service, "default"));
    let report = sink.sync(&desired).await.unwrap();
    assert_eq!(report.applied, ["seccomp-web", "seccomp-web-canary"]);
    assert_eq!(report.pruned, ["seccomp-old"]);
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn api_errors_are_reported_with_the_object_name() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let (_req, send) = handle.next_request().await.expect("apply request");
        respond(
            send,
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404}),
        );
    });
    let sink = ClusterSink::new(kube::Client::new(service, "default"));
    let err = sink
        .sync(&[nci("seccomp-web")])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("applying NodeConfigItem \"seccomp-web\""),
        "{err}"
    );
    assert!(
        err.contains("could not find the requested resource"),
        "{err}"
    );
    server.await.unwrap();
}

/// Opt-in: with `SECCOMP_KUBE_E2E=1` and a reachable cluster in `KUBECONFIG` that has the
/// NodeConfigItem CRD (`deploy/nodeconfigitem-crd.yaml`), apply, re-apply and prune for real.
#[tokio::test]
async fn real_cluster_when_opted_in() {
    if std::env::var_os("SECCOMP_KUBE_E2E").is_none() || std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("SKIPPED: set SECCOMP_KUBE_E2E=1 and KUBECONFIG to run against a real cluster");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sink = ClusterSink::from_default_config().await.unwrap();
    let first = sink
        .sync(&[nci("seccomp-e2e-a"), nci("seccomp-e2e-b")])
        .await
        .unwrap();
    assert_eq!(first.applied.len(), 2);
    let second = sink.sync(&[nci("seccomp-e2e-a")]).await.unwrap();
    assert!(
        second.pruned.contains(&"seccomp-e2e-b".to_owned()),
        "{second:?}"
    );
    let last = sink.sync(&[]).await.unwrap();
    assert!(
        last.pruned.contains(&"seccomp-e2e-a".to_owned()),
        "{last:?}"
    );
}
