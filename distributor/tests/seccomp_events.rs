//! The seccomp events agents report (#19), through the real distributor in-process: kept
//! per node and kind, told by pod (the cluster's pods, injected here) and by the profile
//! and version the node has at the file the pod names; `ListSeccompEvents` filters by
//! profile, node, selector and time, with the unattributed ones only when asked.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Agent, Dist, distributor_with, eventually, observe, publish, registry};
use seccomp_distributor::events::{ContainerPods, PodFile};
use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use tonic::Code;

const WEB: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n";
const WEB_PATH: &str = "/var/lib/kubelet/seccomp/web.json";
const WAIT: Duration = Duration::from_secs(15);

/// The cluster's pods: c1 is web/api-0's container, under web.json.
struct Pods;

impl ContainerPods for Pods {
    fn pod_of(&self, id: &str) -> Option<PodFile> {
        (id == "c1").then(|| ("web/api-0".to_owned(), Some(WEB_PATH.to_owned())))
    }
}

fn now() -> prost_types::Timestamp {
    SystemTime::now().into()
}

fn event(container: &str, syscall: &str, count: u64) -> agent::SeccompEvent {
    agent::SeccompEvent {
        container_id: container.into(),
        exe: "/usr/bin/app".into(),
        arch: "SCMP_ARCH_X86_64".into(),
        syscall: syscall.into(),
        action: "SCMP_ACT_LOG".into(),
        count,
        first_seen: Some(now()),
        last_seen: Some(now()),
    }
}

async fn list(dc: &mut Dist, r: pb::ListSeccompEventsRequest) -> pb::ListSeccompEventsResponse {
    dc.list_seccomp_events(r).await.unwrap().into_inner()
}

fn kinds(r: &pb::ListSeccompEventsResponse) -> Vec<(String, String, String, u64)> {
    let mut k: Vec<_> = r
        .events
        .iter()
        .map(|e| {
            (
                e.node.clone(),
                e.container_id.clone(),
                e.syscall.clone(),
                e.count,
            )
        })
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn events_are_told_by_pod_and_profile_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&dir.path().join("reg")).await;
    let dist = distributor_with(&dir.path().join("dist"), &reg.url, |c| {
        c.container_pods = Some(Arc::new(Pods));
    })
    .await;
    let version = publish(&reg.url, "web", WEB).await;
    let mut a = Agent::connect(&dist.url, "node-1", &[("zone", "a")], "", vec![]).await;
    let mut b = Agent::connect(&dist.url, "node-2", &[("zone", "b")], "", vec![]).await;
    let mut dc = Dist::connect(dist.url.clone()).await.unwrap();
    dc.create_rollout(pb::CreateRolloutRequest {
        profile: "web".into(),
        version,
        target: Some(pb::Target::default()),
        strategy: Some(pb::Strategy {
            waves: vec!["100%".into()],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    for agent in [&mut a, &mut b] {
        let d = agent.desired().await;
        agent.send(agent::agent_message::Message::Ack(agent::Ack {
            revision: d.revision.clone(),
            nonce: d.nonce.clone(),
            observed: observe(&d),
        }));
    }

    let send = |to: &Agent, events: Vec<agent::SeccompEvent>, dropped: u64| {
        to.send(agent::agent_message::Message::SeccompEvents(
            agent::SeccompEvents { events, dropped },
        ));
    };
    send(
        &a,
        vec![event("c1", "getppid", 2), event("c2", "openat", 1)],
        0,
    );
    send(&a, vec![event("c1", "getppid", 3)], 4);
    send(&b, vec![event("c3", "getppid", 7)], 0);
    eventually("the events of both nodes", WAIT, || {
        let mut dc = dc.clone();
        async move {
            let all = list(&mut dc, pb::ListSeccompEventsRequest::default()).await;
            kinds(&all)
                == [
                    ("node-1".into(), "c1".into(), "getppid".into(), 5),
                    ("node-1".into(), "c2".into(), "openat".into(), 1),
                    ("node-2".into(), "c3".into(), "getppid".into(), 7),
                ]
        }
    })
    .await;
    let all = list(&mut dc, pb::ListSeccompEventsRequest::default()).await;
    assert_eq!(all.dropped, 4, "the agent's dropped records are counted");
    let c1 = all.events.iter().find(|e| e.container_id == "c1").unwrap();
    assert_eq!(
        (
            c1.pod.as_str(),
            c1.path.as_str(),
            c1.profile.as_str(),
            c1.version
        ),
        ("web/api-0", WEB_PATH, "web", version),
        "told by pod, then by what node-1 has at the pod's file"
    );
    let c2 = all.events.iter().find(|e| e.container_id == "c2").unwrap();
    assert_eq!((c2.pod.as_str(), c2.profile.as_str()), ("", ""));

    // Under the profile: only what a pod ties to it.
    let web = list(
        &mut dc,
        pb::ListSeccompEventsRequest {
            profile: "web".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        kinds(&web),
        [("node-1".into(), "c1".into(), "getppid".into(), 5)]
    );
    // With the unattributed ones of the selected nodes.
    let zone_a = list(
        &mut dc,
        pb::ListSeccompEventsRequest {
            profile: "web".into(),
            include_unattributed: true,
            selector: [("zone".to_owned(), "a".to_owned())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        kinds(&zone_a),
        [
            ("node-1".into(), "c1".into(), "getppid".into(), 5),
            ("node-1".into(), "c2".into(), "openat".into(), 1),
        ]
    );
    let other = list(
        &mut dc,
        pb::ListSeccompEventsRequest {
            profile: "other".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(other.events.is_empty());
    let node_2 = list(
        &mut dc,
        pb::ListSeccompEventsRequest {
            node: "node-2".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        kinds(&node_2),
        [("node-2".into(), "c3".into(), "getppid".into(), 7)]
    );
    let later = list(
        &mut dc,
        pb::ListSeccompEventsRequest {
            since: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
            ..Default::default()
        },
    )
    .await;
    assert!(later.events.is_empty(), "since is by the last time seen");
    let one = list(
        &mut dc,
        pb::ListSeccompEventsRequest {
            limit: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((one.events.len(), one.truncated), (1, true));

    // Records older than the retention (7 days by default) are not kept.
    let old = prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    let mut stale = event("c1", "ptrace", 1);
    stale.first_seen = Some(old);
    stale.last_seen = Some(old);
    send(&b, vec![stale, event("c3", "uname", 1)], 0);
    eventually("uname from node-2", WAIT, || {
        let mut dc = dc.clone();
        async move {
            let all = list(&mut dc, pb::ListSeccompEventsRequest::default()).await;
            all.events.iter().any(|e| e.syscall == "uname")
        }
    })
    .await;
    let all = list(&mut dc, pb::ListSeccompEventsRequest::default()).await;
    assert!(all.events.iter().all(|e| e.syscall != "ptrace"));

    let refused = dc
        .list_seccomp_events(pb::ListSeccompEventsRequest {
            include_unattributed: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    dist.stop().await;
    reg.stop().await;
}
