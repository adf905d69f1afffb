//! The distributor refuses rollouts that would put anything but a seccomp profile where
//! profiles go: a file outside the allowed root (`/etc/passwd`, and with it a `/etc/`
//! directory entry), a name that is not `*.json`, a set-id, sticky, executable or
//! other-writable mode. Each refusal is INVALID_ARGUMENT naming the rule, and nothing is
//! stored or written to the sinks. The allowed root can be moved (`--allowed-root`), and the
//! default path follows it.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use common::{distributor_with, publish, registry};
use seccomp_proto::distributor::v1 as pb;
use tonic::Code;

const PROFILE: &[u8] = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;

fn request(path: &str, mode: &str) -> pb::CreateRolloutRequest {
    pb::CreateRolloutRequest {
        profile: "web".into(),
        target: Some(pb::Target {
            selector: [("os".to_owned(), "linux".to_owned())].into(),
            path: path.into(),
            mode: mode.into(),
            ..Default::default()
        }),
        // No agent connects in these tests: the policy is checked before any node.
        allow_empty: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_only_put_profiles_where_profiles_go() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    publish(&reg.url, "web", PROFILE).await;
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, |_| {}).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();

    for (path, mode, rule) in [
        ("/etc/passwd", "", "outside-root"),
        (
            "/var/lib/kubelet/seccomp/../../../etc/cron.d/x.json",
            "",
            "path",
        ),
        (
            "/var/lib/kubelet/seccomp-other/web.json",
            "",
            "outside-root",
        ),
        ("/var/lib/kubelet/seccomp/web.sh", "", "not-json"),
        ("", "4755", "mode"),
        ("", "0755", "mode"),
        ("", "0666", "mode"),
    ] {
        let err = dc.create_rollout(request(path, mode)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path} {mode}: {err:?}");
        assert!(
            err.message().contains(rule),
            "{path} {mode}: {}",
            err.message()
        );
        let err = dc
            .render_nci(pb::RenderNciRequest {
                profile: "web".into(),
                target: request(path, mode).target,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "render {path} {mode}");
    }
    let listed = dc
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rollouts;
    assert!(listed.is_empty(), "nothing stored: {listed:?}");
    let sink: Vec<_> = std::fs::read_dir(tmp.path().join("distributor/gitops"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(sink.is_empty(), "nothing in the YAML sink: {sink:?}");

    // A profile where profiles go is fine.
    dc.create_rollout(request("/var/lib/kubelet/seccomp/team/web.json", "0640"))
        .await
        .unwrap();
    dist.stop().await;
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_allowed_root_moves_the_default_path_too() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(&tmp.path().join("registry")).await;
    publish(&reg.url, "web", PROFILE).await;
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.policy = seccomp_rollout::policy::Policy::new("/opt/profiles").unwrap();
    })
    .await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let rollout = dc
        .create_rollout(request("", ""))
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(rollout.target.unwrap().path, "/opt/profiles/web.json");
    let err = dc
        .create_rollout(request("/var/lib/kubelet/seccomp/web.json", ""))
        .await
        .unwrap_err();
    assert!(err.message().contains("/opt/profiles"), "{}", err.message());
    dist.stop().await;
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_would_overfill_a_nodes_set_or_bring_an_endless_reason_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = common::registry_with(&tmp.path().join("registry"), |c| {
        c.max_profile_bytes = 5 << 20;
    })
    .await;
    // A valid profile of 4 MiB: a long comment (a warning, not an error).
    let big = format!(
        "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"comment\":\"{}\"}}",
        "x".repeat(4 << 20)
    );
    publish(&reg.url, "big", big.as_bytes()).await;
    // No YAML directory: 60 MiB of manifests written per change would only slow this down.
    let dist = distributor_with(&tmp.path().join("distributor"), &reg.url, |c| {
        c.yaml_dir = None;
    })
    .await;
    // A known node for the sets to be computed for.
    let _agent = common::Agent::connect(&dist.url, "n1", &[("os", "linux")], "", vec![]).await;
    let mut dc = pb::distributor_client::DistributorClient::connect(dist.url.clone())
        .await
        .unwrap();
    let create = |i: usize| pb::CreateRolloutRequest {
        profile: "big".into(),
        nci_name: Some(format!("seccomp-big-{i}")),
        target: Some(pb::Target {
            selector: [("os".to_owned(), "linux".to_owned())].into(),
            path: format!("/var/lib/kubelet/seccomp/big-{i}.json"),
            ..Default::default()
        }),
        strategy: Some(pb::Strategy {
            waves: vec!["100%".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    // 14 x 4 MiB fit in the 60 MiB a node's set may hold; a 15th is just over it.
    for i in 0..14 {
        dc.create_rollout(create(i)).await.unwrap();
    }
    let err = dc.create_rollout(create(14)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("n1") && err.message().contains("MiB"),
        "{}",
        err.message()
    );

    let err = dc
        .pause_rollout(pb::PauseRolloutRequest {
            id: "r1".into(),
            reason: "x".repeat(2000),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reason"), "{}", err.message());
    dist.stop().await;
    reg.stop().await;
}
