//! `--check-pods` against a fake API server (kube's `tower_test` mock): a watch of every
//! pod (a list, then a watch from its resource version) keeps an index of the profile files
//! pods name; a pod names a file when its own or any container's seccompProfile is
//! `Localhost` with that path under kubelet's root. Pods on other nodes, finished pods and
//! other files do not count; added and deleted pods move the answer; before the first list
//! there is no answer, only an error.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeMap;
use std::pin::pin;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use seccomp_k8s::{PodIndex, PodUse, PodWatch};
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
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
        "spec": spec,
        "status": {"phase": phase}
    })
}

const APP: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
const SIDECAR: &str = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
const TOOL: &str = "7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d7d";

/// `pod` with running containers of these names and ids (containerd's `containerd://`).
fn with_containers(mut pod: Value, ids: &[(&str, &str)]) -> Value {
    pod["status"]["containerStatuses"] = ids
        .iter()
        .map(|(name, id)| json!({"name": name, "containerID": format!("containerd://{id}"), "image": "i", "imageID": "", "ready": true, "restartCount": 0}))
        .collect();
    pod
}

fn localhost(file: &str) -> Value {
    json!({"seccompProfile": {"type": "Localhost", "localhostProfile": file}})
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn use_of(node: &str, path: &str, pod: &str) -> PodUse {
    PodUse {
        node: node.into(),
        path: format!("/var/lib/kubelet/seccomp/{path}"),
        pod: pod.into(),
    }
}

/// Poll `index` until it answers `files` with `want`.
async fn answers(index: &PodIndex, files: &BTreeMap<String, Vec<String>>, want: &[PodUse]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match index.users(files) {
            Ok(found) if found == want => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the index answers {other:?}, not {want:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_watch_of_the_pods_indexes_the_files_they_name() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (events, mut script) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        // The first list fails (a forbidden answer): no answer until one succeeds.
        let (req, send) = handle.next_request().await.expect("a list");
        assert_eq!(req.uri().path(), "/api/v1/pods");
        respond(
            send,
            403,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "pods is forbidden", "reason": "Forbidden", "code": 403}),
        );
        let (req, send) = handle.next_request().await.expect("a list again");
        assert_eq!(req.uri().path(), "/api/v1/pods");
        assert!(!req.uri().query().unwrap_or("").contains("watch=true"));
        respond(
            send,
            200,
            &json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"},
                "items": [
                    // Pod level, on the node losing the file: counts.
                    pod("web", "api-0", "node-3", "Running", json!({"securityContext": localhost("web.json")})),
                    // Another file on that node: does not.
                    pod("web", "api-1", "node-3", "Running", json!({"securityContext": localhost("other.json")})),
                    // The file, on a node that keeps it: does not.
                    with_containers(pod("web", "api-2", "node-1", "Running", json!({
                        "securityContext": localhost("web.json"),
                        "containers": [
                            {"name": "app", "image": "app"},
                            {"name": "sidecar", "image": "s", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
                            {"name": "tool", "image": "t", "securityContext": localhost("tool.json")},
                        ],
                    })), &[("app", APP), ("sidecar", SIDECAR), ("tool", TOOL)]),
                    // Finished: starts no container again.
                    pod("batch", "job-0", "node-3", "Succeeded", json!({"securityContext": localhost("web.json")})),
                    // An init container, in a subdirectory spelled with a leading slash.
                    pod("ops", "tool-0", "node-3", "Pending", json!({
                        "initContainers": [{"name": "init", "image": "init", "securityContext": localhost("/team/x.json")}]
                    })),
                    // RuntimeDefault names no file.
                    pod("ops", "tool-1", "node-3", "Running", json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}})),
                ]
            }),
        );
        // Each watch gets the next scripted event.
        while let Some((req, send)) = handle.next_request().await {
            assert!(req.uri().query().unwrap_or("").contains("watch=true"));
            let Some(event) = script.recv().await else {
                return;
            };
            let mut line = serde_json::to_vec(&event).unwrap();
            line.push(b'\n');
            send.send_response(Response::builder().body(Body::from(line)).unwrap());
        }
    });
    let index = PodIndex::default();
    let losing: BTreeMap<String, Vec<String>> = [(
        "node-3".to_owned(),
        vec![
            "/var/lib/kubelet/seccomp/web.json".to_owned(),
            "/var/lib/kubelet/seccomp/team/x.json".to_owned(),
        ],
    )]
    .into();
    let err = index.users(&losing).unwrap_err();
    assert!(err.to_string().contains("not listed yet"), "{err}");
    let watch =
        tokio::spawn(PodWatch::new(kube::Client::new(service, "default")).run(index.clone()));
    answers(
        &index,
        &losing,
        &[
            use_of("node-3", "team/x.json", "ops/tool-0"),
            use_of("node-3", "web.json", "web/api-0"),
        ],
    )
    .await;
    // Containers by id: the pod's file, a container's own that is not Localhost, its own file.
    let app = index.container(APP).expect("the app container is indexed");
    assert_eq!(
        (
            app.pod.as_str(),
            app.container.as_str(),
            app.path.as_deref()
        ),
        (
            "web/api-2",
            "app",
            Some("/var/lib/kubelet/seccomp/web.json")
        )
    );
    assert_eq!(index.container(SIDECAR).unwrap().path, None);
    assert_eq!(
        index.container(TOOL).unwrap().path.as_deref(),
        Some("/var/lib/kubelet/seccomp/tool.json")
    );
    assert_eq!(index.container(&"e".repeat(64)), None);
    events
        .send(json!({"type": "DELETED", "object": pod("web", "api-2", "node-1", "Running", json!({}))}))
        .unwrap();
    // A new pod naming the file, and the old one deleted.
    events
        .send(json!({"type": "ADDED", "object": pod("web", "api-9", "node-3", "Running", json!({"securityContext": localhost("web.json")}))}))
        .unwrap();
    events
        .send(json!({"type": "DELETED", "object": pod("web", "api-0", "node-3", "Running", json!({}))}))
        .unwrap();
    // One that finished stops counting.
    events
        .send(json!({"type": "MODIFIED", "object": pod("ops", "tool-0", "node-3", "Succeeded", json!({}))}))
        .unwrap();
    answers(
        &index,
        &losing,
        &[use_of("node-3", "web.json", "web/api-9")],
    )
    .await;
    assert_eq!(
        index.container(APP),
        None,
        "a deleted pod's containers are gone"
    );
    watch.abort();
    server.abort();
}
