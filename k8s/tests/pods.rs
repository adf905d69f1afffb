//! `--check-pods` against a fake API server (kube's `tower_test` mock): the pods are listed
//! cluster-wide page by page (method, path, limit and continue token checked), and a pod
//! names a file when its own or any container's seccompProfile is `Localhost` with that path
//! under kubelet's root; pods on other nodes, finished pods and other files do not count.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeMap;
use std::pin::pin;

use http::{Method, Request, Response};
use kube::client::Body;
use seccomp_k8s::{PodProfiles, PodUse};
use serde_json::{Value, json};
use tower_test::mock;

fn pod(ns: &str, name: &str, node: &str, phase: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "app", "image": "app"}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
        "status": {"phase": phase}
    })
}

fn localhost(file: &str) -> Value {
    json!({"seccompProfile": {"type": "Localhost", "localhostProfile": file}})
}

#[tokio::test]
async fn the_pods_that_name_a_file_on_its_node_are_found_across_pages() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let pages = [
            (
                None,
                vec![
                    // Pod level, on the node losing the file: counts.
                    pod(
                        "web",
                        "api-0",
                        "node-3",
                        "Running",
                        json!({"securityContext": localhost("web.json")}),
                    ),
                    // Another file on that node: does not.
                    pod(
                        "web",
                        "api-1",
                        "node-3",
                        "Running",
                        json!({"securityContext": localhost("other.json")}),
                    ),
                    // The file, on a node that keeps it: does not.
                    pod(
                        "web",
                        "api-2",
                        "node-1",
                        "Running",
                        json!({"securityContext": localhost("web.json")}),
                    ),
                ],
                "page-2",
            ),
            (
                Some("page-2"),
                vec![
                    // Finished: starts no container again.
                    pod(
                        "batch",
                        "job-0",
                        "node-3",
                        "Succeeded",
                        json!({"securityContext": localhost("web.json")}),
                    ),
                    // An init container, in a subdirectory spelled with a leading slash.
                    pod(
                        "ops",
                        "tool-0",
                        "node-3",
                        "Pending",
                        json!({
                            "initContainers": [{"name": "init", "image": "init", "securityContext": localhost("/team/x.json")}]
                        }),
                    ),
                    // RuntimeDefault names no file.
                    pod(
                        "ops",
                        "tool-1",
                        "node-3",
                        "Running",
                        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}),
                    ),
                ],
                "",
            ),
        ];
        for (token, items, next) in pages {
            let (req, send) = handle.next_request().await.expect("a pod list");
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), "/api/v1/pods");
            let query: BTreeMap<String, String> = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(query.get("limit").map(String::as_str), Some("500"));
            assert_eq!(query.get("continue").map(String::as_str), token);
            let list = json!({
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"continue": next},
                "items": items
            });
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
        }
    });
    let pods = PodProfiles::new(kube::Client::new(service, "default"));
    let losing: BTreeMap<String, Vec<String>> = [(
        "node-3".to_owned(),
        vec![
            "/var/lib/kubelet/seccomp/web.json".to_owned(),
            "/var/lib/kubelet/seccomp/team/x.json".to_owned(),
        ],
    )]
    .into();
    let found = pods.users(&losing).await.unwrap();
    assert_eq!(
        found,
        [
            PodUse {
                node: "node-3".into(),
                path: "/var/lib/kubelet/seccomp/team/x.json".into(),
                pod: "ops/tool-0".into(),
            },
            PodUse {
                node: "node-3".into(),
                path: "/var/lib/kubelet/seccomp/web.json".into(),
                pod: "web/api-0".into(),
            },
        ]
    );
    server.await.unwrap();
}

#[tokio::test]
async fn an_api_error_is_an_error_not_an_empty_answer() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let (_, send) = handle.next_request().await.expect("a pod list");
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "pods is forbidden", "reason": "Forbidden", "code": 403});
        send.send_response(
            Response::builder()
                .status(403)
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
                .unwrap(),
        );
    });
    let pods = PodProfiles::new(kube::Client::new(service, "default"));
    let losing = [(
        "node-3".to_owned(),
        vec!["/var/lib/kubelet/seccomp/web.json".to_owned()],
    )]
    .into();
    let err = pods.users(&losing).await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
    server.await.unwrap();
}
