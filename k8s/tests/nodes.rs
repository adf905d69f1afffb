//! `--watch-nodes` against a fake API server (kube's `tower_test` mock): the watcher lists
//! the nodes, then watches from the list's resource version; added, relabelled and deleted
//! nodes arrive as events, and the next watch resumes from the last version seen.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeMap;
use std::pin::pin;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use seccomp_k8s::{NodeEvent, NodeWatch};
use serde_json::{Value, json};
use tower_test::mock;

fn node(name: &str, rv: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": rv, "labels": labels}})
}

fn query(req: &Request<Body>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn nodes_are_listed_then_watched_for_additions_relabels_and_deletions() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (resumed_tx, resumed_rx) = tokio::sync::oneshot::channel::<BTreeMap<String, String>>();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        // The list.
        let (req, send) = handle.next_request().await.expect("a list");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/api/v1/nodes");
        assert!(!query(&req).contains_key("watch"), "{:?}", req.uri());
        let list = json!({"apiVersion": "v1", "kind": "NodeList",
        "metadata": {"resourceVersion": "10"},
        "items": [
            node("node-1", "5", json!({"kubernetes.io/os": "linux", "zone": "a"})),
            node("node-2", "6", json!({"kubernetes.io/os": "linux"})),
        ]});
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&list).unwrap()))
                .unwrap(),
        );
        // The watch from the list's version: an addition, a relabel, a deletion.
        let (req, send) = handle.next_request().await.expect("a watch");
        let q = query(&req);
        assert_eq!(q.get("watch").map(String::as_str), Some("true"));
        assert_eq!(q.get("resourceVersion").map(String::as_str), Some("10"));
        let events = [
            json!({"type": "ADDED", "object": node("node-3", "11", json!({"kubernetes.io/os": "linux"}))}),
            json!({"type": "MODIFIED", "object": node("node-1", "12", json!({"kubernetes.io/os": "linux", "zone": "b"}))}),
            json!({"type": "DELETED", "object": node("node-2", "13", json!({"kubernetes.io/os": "linux"}))}),
        ];
        let body: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                let mut line = serde_json::to_vec(e).unwrap();
                line.push(b'\n');
                line
            })
            .collect();
        send.send_response(Response::builder().body(Body::from(body)).unwrap());
        // That watch ended: the next one resumes after the last event.
        let (req, _held) = handle.next_request().await.expect("a second watch");
        resumed_tx.send(query(&req)).unwrap();
        // Keep the second watch open until the test is done.
        std::future::pending::<()>().await;
    });

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(
        NodeWatch::new(kube::Client::new(service, "default")).run(move |e| {
            let _ = tx.send(e);
        }),
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .unwrap();
        seen.push(e);
    }
    assert_eq!(
        seen,
        [
            NodeEvent::All(
                [
                    (
                        "node-1".to_owned(),
                        labels(&[("kubernetes.io/os", "linux"), ("zone", "a")])
                    ),
                    (
                        "node-2".to_owned(),
                        labels(&[("kubernetes.io/os", "linux")])
                    ),
                ]
                .into()
            ),
            NodeEvent::Applied("node-3".into(), labels(&[("kubernetes.io/os", "linux")])),
            NodeEvent::Applied(
                "node-1".into(),
                labels(&[("kubernetes.io/os", "linux"), ("zone", "b")])
            ),
            NodeEvent::Deleted("node-2".into()),
        ]
    );
    let resumed = tokio::time::timeout(Duration::from_secs(10), resumed_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resumed.get("resourceVersion").map(String::as_str),
        Some("13")
    );
    watch.abort();
    server.abort();
}
