//! A node agent that never reads its stream, while its set changes again and again: the
//! distributor keeps only the newest set for it (as xDS does), so its memory stays bounded
//! instead of growing by a whole set per generation.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Generations of the stuck node's set.
const GENERATIONS: usize = 30;
/// Big profiles always in the set (4 MiB each): every generation's set is over 12 MiB.
const BIG: usize = 3;

/// This process's resident memory, in MiB (Linux).
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

fn rollout(profile: &str, version: u64, i: usize) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        profile: profile.into(),
        version,
        nci_name: Some(format!("seccomp-{profile}-{i}")),
        target: Some(pb::Target {
            selector: [("os".to_owned(), "linux".to_owned())].into(),
            path: format!("/var/lib/kubelet/seccomp/{profile}-{i}.json"),
            ..Default::default()
        }),
        strategy: Some(pb::Strategy {
            waves: vec!["100%".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The stuck node's desired revision once it is not `previous` (polled, 30 s at most).
async fn new_revision(url: &str, previous: &str) -> String {
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = common::node(url, "stuck").await.desired_revision;
        if !now.is_empty() && now != previous {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the stuck node's set never changed from {previous:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_reads_costs_one_set_not_one_per_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = common::registry_with(&tmp.path().join("registry"), |c| {
        c.max_profile_bytes = 5 << 20;
    })
    .await;
    let dist = common::distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.yaml_dir = None;
    })
    .await;
    let big = format!(
        "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"comment\":\"{}\"}}",
        "x".repeat(4 << 20)
    );
    common::publish(&reg.url, "big", big.as_bytes()).await;
    for v in 1..=2 {
        let tiny = format!("{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"comment\":\"v{v}\"}}");
        common::publish(&reg.url, "tiny", tiny.as_bytes()).await;
    }

    // The stuck agent: says Hello, then neither reads nor writes.
    let mut client = agent::agent_sync_client::AgentSyncClient::connect(dist.url.clone())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(agent::AgentMessage {
        message: Some(agent::agent_message::Message::Hello(agent::Hello {
            node_name: "stuck".into(),
            labels: [("os".to_owned(), "linux".to_owned())].into(),
            agent_version: "test".into(),
            ..Default::default()
        })),
    })
    .unwrap();
    let _unread = client
        .sync(UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    for i in 0..BIG {
        dc.create_rollout(rollout("big", 1, i)).await.unwrap();
    }
    common::eventually(
        "the big profiles in the stuck node's set",
        Duration::from_secs(30),
        || {
            let url = dist.url.clone();
            async move {
                let node = common::node(&url, "stuck").await;
                node.files
                    .iter()
                    .filter(|f| f.path.ends_with(".json"))
                    .count()
                    == BIG
            }
        },
    )
    .await;
    let mut last = new_revision(&dist.url, "").await;
    let before = rss_mib();

    // Each generation: the tiny profile's other version reaches the node (a new set of over
    // 12 MiB for it), then that rollout is aborted so the next may start.
    for g in 0..GENERATIONS {
        let r = dc
            .create_rollout(rollout("tiny", 1 + (g % 2) as u64, 0))
            .await
            .unwrap()
            .into_inner()
            .rollout
            .unwrap();
        last = new_revision(&dist.url, &last).await;
        dc.abort_rollout(pb::AbortRolloutRequest {
            id: r.id,
            reason: "next generation".into(),
        })
        .await
        .unwrap();
    }
    let after = rss_mib();
    let grown = after.saturating_sub(before);
    eprintln!(
        "resident memory: {before} MiB before, {after} MiB after {GENERATIONS} generations of a {} MiB set",
        BIG * 4
    );
    // Kept generations would be 30 x 12 MiB = 360 MiB; one set (and its encoding in flight)
    // is a few dozen.
    assert!(
        grown < 150,
        "memory grew by {grown} MiB over {GENERATIONS} generations a reader never took"
    );
    drop(tx);
    dist.stop().await;
    reg.stop().await;
}
