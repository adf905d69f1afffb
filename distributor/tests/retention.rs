//! `--audit-retention`: both services delete audit entries older than it while they run,
//! and keep younger ones.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;

const RETENTION: Duration = Duration::from_secs(2);

async fn registry_audit(url: &str) -> Vec<reg::AuditEntry> {
    let mut c = reg::registry_client::RegistryClient::connect(url.to_owned())
        .await
        .unwrap();
    c.list_audit(reg::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
}

async fn distributor_audit(url: &str) -> Vec<pb::AuditEntry> {
    let mut c = pb::distributor_client::DistributorClient::connect(url.to_owned())
        .await
        .unwrap();
    c.list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_older_than_the_retention_are_deleted_and_younger_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = common::registry_with(&tmp.path().join("registry"), |c| {
        c.audit_retention = Some(RETENTION);
    })
    .await;
    let dist = common::distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.audit_retention = Some(RETENTION);
    })
    .await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    // One audited call on each service (a refused pause is audited too).
    let made = std::time::Instant::now();
    common::publish(&reg.url, "old", br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).await;
    let _ = dc
        .pause_rollout(pb::PauseRolloutRequest {
            id: "r404".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(registry_audit(&reg.url).await.len(), 1);
    assert_eq!(distributor_audit(&dist.url).await.len(), 1);

    // Both go once they are older than the retention; an entry made meanwhile stays until
    // its own time comes.
    common::eventually(
        "the old entries to be pruned",
        Duration::from_secs(20),
        || async {
            let r = registry_audit(&reg.url).await;
            let d = distributor_audit(&dist.url).await;
            if r.iter().any(|e| e.target.starts_with("old")) || d.iter().any(|e| e.target == "r404")
            {
                // Keep a fresh entry on each side while waiting.
                common::publish(&reg.url, "young", br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).await;
                return false;
            }
            true
        },
    )
    .await;
    // (Less a little: the entries' times come from the wall clock.)
    assert!(
        made.elapsed() + Duration::from_millis(100) >= RETENTION,
        "pruned after {:?}, before the retention",
        made.elapsed()
    );
    let young = registry_audit(&reg.url).await;
    assert!(
        young.iter().all(|e| e.target.starts_with("young")),
        "{young:?}"
    );
    assert!(
        !young.is_empty(),
        "the young entries were pruned with the old"
    );
    dist.stop().await;
    reg.stop().await;
}

async fn rollout_of(dc: &mut common::Dist, version: u64) -> String {
    let r = dc
        .create_rollout(pb::CreateRolloutRequest {
            profile: "web".into(),
            version,
            target: Some(pb::Target {
                selector: [("os".to_owned(), "linux".to_owned())].into(),
                ..Default::default()
            }),
            strategy: Some(pb::Strategy {
                waves: vec!["100%".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    common::wait_state(dc, &r.id, pb::RolloutState::Completed).await;
    r.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_rollouts_past_the_history_retention_are_forgotten_but_not_what_nodes_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = common::registry(&tmp.path().join("registry")).await;
    let dir = tmp.path().join("distributor");
    let dist = common::distributor_with(&dir, &reg.url, |c| {
        c.history_retention = Some(Duration::from_secs(1));
    })
    .await;
    let v1 = common::publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_ERRNO\"}\n").await;
    let v2 = common::publish(&reg.url, "web", b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n").await;
    let agent = common::AutoAgent::start(
        &dist.url,
        "node-1",
        &[("os", "linux")],
        common::Behaviour::Apply,
    )
    .await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let first = rollout_of(&mut dc, v1).await;
    let second = rollout_of(&mut dc, v2).await;
    let third = rollout_of(&mut dc, v1).await;
    let sent_before = agent.desired_count();

    // The first is superseded and past the retention: it goes. The second is the third's
    // stable one (what a rollback restores) and the third is what the node holds.
    let get = |id: String| {
        let mut dc = dc.clone();
        async move {
            dc.get_rollout(pb::GetRolloutRequest {
                id,
                include_nodes: false,
            })
            .await
        }
    };
    common::eventually(
        "the first rollout to be forgotten",
        Duration::from_secs(20),
        || {
            let first = first.clone();
            async move {
                match get(first).await {
                    Err(s) => {
                        assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
                        true
                    }
                    Ok(_) => false,
                }
            }
        },
    )
    .await;
    let stable = get(third.clone())
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(stable.stable_version, Some(v2));
    get(second.clone()).await.unwrap();
    // Forgetting history changes no node's set.
    assert_eq!(agent.desired_count(), sent_before);
    let listed: Vec<String> = dc
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rollouts
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, [third.clone(), second.clone()], "newest first");
    dist.stop().await;

    // Durably: a restart does not bring it back.
    let dist = common::distributor_with(&dir, &reg.url, |c| c.history_retention = None).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let err = dc
        .get_rollout(pb::GetRolloutRequest {
            id: first,
            include_nodes: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    agent.leave();
    dist.stop().await;
    reg.stop().await;
}
