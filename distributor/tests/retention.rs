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
