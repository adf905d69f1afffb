//! `--auth-kubernetes` against a fake API server (kube's `tower_test` mock): a bearer token
//! that is not in the auth file is sent in a TokenReview (method, path, audiences and token
//! checked), and the answer decides who the caller is: a node agent by the node its token
//! is bound to, a caller by its service account's group, nobody for a token the API calls
//! invalid or one it accepts for another audience.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::pin::pin;
use std::sync::Arc;

use http::{Method, Request, Response};
use kube::client::Body;
use seccomp_k8s::KubeTokenReview;
use seccomp_server::auth::{Authenticator, Identities, Principal, Role};
use serde_json::{Value, json};
use tower_test::mock;

fn headers(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    h
}

#[tokio::test]
async fn tokens_are_reviewed_by_the_api_server() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut handle = pin!(handle);
        for _ in 0..4 {
            let (req, send) = handle.next_request().await.expect("a TokenReview");
            assert_eq!(req.method(), Method::POST);
            assert_eq!(
                req.uri().path(),
                "/apis/authentication.k8s.io/v1/tokenreviews"
            );
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["kind"], "TokenReview");
            assert_eq!(body["spec"]["audiences"], json!(["seccomp-distributor"]));
            let status = match body["spec"]["token"].as_str().unwrap() {
                "agent-token" => json!({
                    "authenticated": true,
                    "audiences": ["seccomp-distributor"],
                    "user": {
                        "username": "system:serviceaccount:seccomp-system:seccomp-node-agent",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:seccomp-system"],
                        "extra": {"authentication.kubernetes.io/node-name": ["worker-3"]}
                    }
                }),
                "ci-token" => json!({
                    "authenticated": true,
                    "audiences": ["seccomp-distributor"],
                    "user": {
                        "username": "system:serviceaccount:ci:deployer",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:ci"]
                    }
                }),
                // Valid, but for the API server: a reviewer that ignores audiences says so.
                "api-token" => json!({
                    "authenticated": true,
                    "audiences": ["https://kubernetes.default.svc"],
                    "user": {"username": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts:ci"]}
                }),
                _ => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            let mut answer = body.clone();
            answer["status"] = status;
            send.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    let client = kube::Client::new(service, "default");
    let reviewer = KubeTokenReview::new(client, vec!["seccomp-distributor".to_owned()]);
    let identities =
        Identities::parse("- {name: ci, kubernetes: system:serviceaccounts:ci, role: operator}")
            .unwrap()
            .with_kubernetes_agents(
                "system:serviceaccount:seccomp-system:seccomp-node-agent".to_owned(),
            );
    let auth = Authenticator::new(identities).with_token_review(Arc::new(reviewer));

    let agent = auth
        .authenticate(&headers("agent-token"), None)
        .await
        .unwrap();
    assert_eq!(
        agent,
        Principal::Node {
            node: "worker-3".into()
        }
    );
    let ci = auth.authenticate(&headers("ci-token"), None).await.unwrap();
    assert_eq!(
        ci,
        Principal::Caller {
            name: "ci".into(),
            role: Role::Operator
        }
    );
    let err = auth
        .authenticate(&headers("api-token"), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unauthenticated,
        "a token for another audience"
    );
    let err = auth
        .authenticate(&headers("stolen-token"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(!err.message().contains("stolen-token"));
    server.await.unwrap();
}
