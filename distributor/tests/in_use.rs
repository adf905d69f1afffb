//! A registry started with `--distributor` refuses to hard-delete a version that a rollout
//! or the nodes use (DESIGN section 3), with the real registry, distributor and scripted
//! agents in-process on loopback.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::time::Duration;

use common::{
    AutoAgent, Behaviour, Dist, distributor_on, eventually, publish, registry_with, wait_state,
};
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;
use tonic::Code;

const V1: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n";
const V2: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n";
const V3: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ALLOW\"}\n";
const WAIT: Duration = Duration::from_secs(15);

type Reg = reg::registry_client::RegistryClient<tonic::transport::Channel>;

async fn roll_out(dc: &mut Dist, version: u64, manual: bool) -> String {
    let rollout = dc
        .create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            version,
            target: Some(pb::Target::default()),
            strategy: Some(pb::Strategy {
                waves: vec!["1".into(), "100%".into()],
                max_unavailable: "100%".into(),
                pause: manual.then_some(pb::strategy::Pause::Manual(true)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    rollout.id
}

async fn delete(rc: &mut Reg, version: u64) -> Result<(), tonic::Status> {
    rc.delete_version(reg::DeleteVersionRequest {
        name: "web".into(),
        version,
    })
    .await
    .map(|_| ())
}

fn refused_in_use(result: Result<(), tonic::Status>, user: &str) {
    let status = result.expect_err("deleted a version in use");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains(user), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_in_use_cannot_be_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dist_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dist_url = format!("http://{}", dist_listener.local_addr().unwrap());
    let registry = registry_with(&tmp.path().join("registry"), |c| {
        c.distributor = Some(dist_url.clone());
    })
    .await;
    for content in [V1, V2, V3] {
        publish(&registry.url, "web", content).await;
    }
    let dist = distributor_on(
        dist_listener,
        &tmp.path().join("distributor"),
        &registry.url,
        |_| {},
    )
    .await;
    let agents = [
        AutoAgent::start(&dist.url, "n1", &[("zone", "a")], Behaviour::Apply).await,
        AutoAgent::start(&dist.url, "n2", &[("zone", "b")], Behaviour::Apply).await,
    ];
    let mut dc = Dist::connect(dist.url.clone()).await.unwrap();
    let mut rc = Reg::connect(registry.url.clone()).await.unwrap();
    eventually("two nodes", WAIT, || {
        let mut dc = dc.clone();
        async move {
            let nodes = dc
                .list_nodes(pb::ListNodesRequest::default())
                .await
                .unwrap();
            nodes.into_inner().nodes.len() == 2
        }
    })
    .await;

    // v1 completes: the nodes hold it.
    let first = roll_out(&mut dc, 1, false).await;
    wait_state(&dc, &first, pb::RolloutState::Completed).await;
    refused_in_use(delete(&mut rc, 1).await, "2 nodes, e.g. n1 at ");

    // v2 stops after its first wave: it is being rolled out, and v1 is what nodes return to.
    let second = roll_out(&mut dc, 2, true).await;
    wait_state(&dc, &second, pb::RolloutState::Paused).await;
    refused_in_use(delete(&mut rc, 2).await, &format!("rollout {second} "));
    refused_in_use(delete(&mut rc, 1).await, "returns nodes to it on rollback");
    // v3 is used by nothing.
    delete(&mut rc, 3).await.unwrap();

    // Once v2 has completed everywhere, nothing holds v1 any more; the nodes hold v2.
    dc.resume_rollout(pb::ResumeRolloutRequest { id: second.clone() })
        .await
        .unwrap();
    wait_state(&dc, &second, pb::RolloutState::Completed).await;
    delete(&mut rc, 1).await.unwrap();
    refused_in_use(
        delete(&mut rc, 2).await,
        "its file set carries it and it is on disk",
    );

    // Refusals are audited with their reason.
    let audit = rc
        .list_audit(reg::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let refusals = audit
        .iter()
        .filter(|e| e.method == "DeleteVersion" && e.result == "FAILED_PRECONDITION")
        .count();
    assert_eq!(refusals, 4);

    // Without an answer from the distributor, nothing is deleted.
    for agent in agents {
        agent.disconnect();
    }
    dist.stop().await;
    let status = delete(&mut rc, 2).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(&dist_url), "{}", status.message());
    registry.stop().await;
}
