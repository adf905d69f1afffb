//! Replicas that all serve (#18), in-process over a real etcd: agents on either replica
//! get the same set; a command given to the follower runs on the leader (its answer and its
//! errors passed back as they are, audited with the caller); the follower's agents'
//! confirmations reach the leader's engine; a command no leader takes within the wait is
//! taken back and refused as not applied, with nothing left in etcd. Skipped, loudly,
//! without Debian's etcd.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::time::Duration;

use common::{AutoAgent, Behaviour, Dist, eventually, wait_state};
use integration_tests::etcd::EtcdCluster;
use seccomp_distributor::leader::{self, ElectionSettings};
use seccomp_distributor::store::{EtcdSettings, etcd};
use seccomp_proto::distributor::v1 as pb;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "/replicas-test";
const PROFILE: &[u8] = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;

fn settings(cluster: &EtcdCluster) -> EtcdSettings {
    let mut s = EtcdSettings::new(vec![cluster.members[0].client_url.clone()]);
    s.prefix = PREFIX.into();
    s
}

fn election(id: &str) -> ElectionSettings {
    ElectionSettings {
        replica_id: id.into(),
        lease_ttl: Duration::from_secs(2),
    }
}

/// Replica `id` in-process, its commands waiting `wait` for the leader.
async fn replica(
    dir: &std::path::Path,
    registry: &str,
    cluster: &EtcdCluster,
    id: &str,
    wait: Duration,
) -> common::Server {
    let etcd = settings(cluster);
    let id = id.to_owned();
    common::distributor_with(&dir.join(&id), registry, move |c| {
        c.etcd = Some(etcd);
        c.replica = Some(seccomp_distributor::ReplicaSettings {
            election: election(&id),
            leader_pod: None,
            command_wait: wait,
        });
    })
    .await
}

async fn client(url: &str) -> Dist {
    pb::distributor_client::DistributorClient::connect(url.to_owned())
        .await
        .unwrap()
}

async fn leader_is(cluster: &EtcdCluster, id: &str) {
    let client = etcd::election_client(&settings(cluster)).await.unwrap();
    eventually(&format!("{id} to lead"), Duration::from_secs(20), || {
        let client = client.clone();
        async move { leader::current_leader(&client, PREFIX).await.as_deref() == Some(id) }
    })
    .await;
}

fn create(profile: &str) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        profile: profile.into(),
        target: Some(pb::Target {
            selector: [("os".to_owned(), "linux".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The keys under `prefix` in etcd.
async fn keys(cluster: &EtcdCluster, under: &str) -> Vec<String> {
    let client = etcd::client(&settings(cluster)).await.unwrap();
    let reply = client
        .kv_client()
        .get(
            format!("{PREFIX}/{under}"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    reply
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_on_a_follower_run_on_the_leader_and_its_agents_count() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry(&dir.path().join("registry")).await;
    common::publish(&registry.url, "web", PROFILE).await;
    let a = replica(
        dir.path(),
        &registry.url,
        &cluster,
        "a",
        Duration::from_secs(10),
    )
    .await;
    leader_is(&cluster, "a").await;
    let b = replica(
        dir.path(),
        &registry.url,
        &cluster,
        "b",
        Duration::from_secs(10),
    )
    .await;
    let on_a = AutoAgent::start(&a.url, "node-a", &[("os", "linux")], Behaviour::Apply).await;
    let on_b = AutoAgent::start(&b.url, "node-b", &[("os", "linux")], Behaviour::Apply).await;
    let (mut dc_a, mut dc_b) = (client(&a.url).await, client(&b.url).await);
    // Each replica knows both nodes, the other's as connected.
    for dc in [&dc_a, &dc_b] {
        eventually("both nodes connected", Duration::from_secs(10), || {
            let mut dc = dc.clone();
            async move {
                let nodes = dc
                    .list_nodes(pb::ListNodesRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .nodes;
                nodes.iter().filter(|n| n.connected).count() == 2
            }
        })
        .await;
    }

    // A plan on the follower sees every node, wherever its agent is.
    let plan = dc_b
        .plan_rollout(pb::PlanRolloutRequest {
            change: Some(pb::plan_rollout_request::Change::Create(create("web"))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.matching_nodes, 2, "{plan:?}");

    // Created on the follower: run by the leader, the answer passed back.
    let r = dc_b
        .create_rollout(create("web"))
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(r.id, "r1");
    // The follower's agent's confirmation reaches the leader's engine: it completes.
    wait_state(&dc_a, "r1", pb::RolloutState::Completed).await;
    wait_state(&dc_b, "r1", pb::RolloutState::Completed).await;
    for agent in [&on_a, &on_b] {
        assert_eq!(agent.received(), vec![PROFILE.to_vec()], "{}", agent.node);
    }

    // The leader's refusals come back as they are.
    let err = dc_b
        .pause_rollout(pb::PauseRolloutRequest {
            id: "r404".into(),
            reason: "test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("r404"), "{err:?}");
    let err = dc_b.create_rollout(create("")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = dc_b.create_rollout(create("nosuch")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // Audited once, on the leader's log in etcd, whichever replica is asked.
    for dc in [&mut dc_a, &mut dc_b] {
        let audit = dc
            .list_audit(pb::ListAuditRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries;
        let creates: Vec<_> = audit
            .iter()
            .filter(|e| e.method == "CreateRollout" && e.result == "OK")
            .collect();
        assert_eq!(creates.len(), 1, "{audit:?}");
    }
    // Nothing of the commands left behind.
    assert!(keys(&cluster, "commands/").await.is_empty());
    assert!(keys(&cluster, "results/").await.is_empty());

    // The leader goes (resigns): b leads, and runs commands itself.
    a.stop().await;
    leader_is(&cluster, "b").await;
    let r2 = dc_b
        .rollback(pb::RollbackRequest {
            profile: "web".into(),
            ..Default::default()
        })
        .await;
    // Nothing to go back to (one version only): refused by b itself, as the leader.
    assert_eq!(r2.unwrap_err().code(), tonic::Code::FailedPrecondition);
    on_a.leave();
    on_b.leave();
    b.stop().await;
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_no_leader_takes_is_refused_as_not_applied() {
    let Some(cluster) = EtcdCluster::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry(&dir.path().join("registry")).await;
    common::publish(&registry.url, "web", PROFILE).await;
    // A leader that runs nothing: the test's own campaign.
    let election_client = etcd::election_client(&settings(&cluster)).await.unwrap();
    let stop = CancellationToken::new();
    let ghost = leader::campaign(&election_client, PREFIX, &election("ghost"), &stop)
        .await
        .unwrap()
        .unwrap();
    let b = replica(
        dir.path(),
        &registry.url,
        &cluster,
        "b",
        Duration::from_secs(1),
    )
    .await;
    let mut dc = client(&b.url).await;
    let started = std::time::Instant::now();
    let request = pb::CreateRolloutRequest {
        allow_empty: true,
        ..create("web")
    };
    let err = dc.create_rollout(request.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("not applied") && !err.message().contains("may or may not"),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(keys(&cluster, "commands/").await.is_empty());
    assert!(keys(&cluster, "rollouts/").await.is_empty());
    // Once the ghost resigns, b leads and the same command works.
    ghost.resign().await;
    leader_is(&cluster, "b").await;
    let r = dc.create_rollout(request).await.unwrap().into_inner();
    assert_eq!(r.rollout.unwrap().id, "r1");
    b.stop().await;
    registry.stop().await;
}
