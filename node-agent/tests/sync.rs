#![allow(clippy::unwrap_used)]
//! The agent against the real registry and distributor over gRPC on loopback, several agents
//! per test, each with its own host root and state directory: files land on matching nodes
//! only, exactly as desired, and the distributor's node list agrees; a higher-priority NCI wins
//! where it matches; an unknown owner refuses the whole set; hand edits are repaired and
//! reported; a restarted distributor finds the agents again and nothing is rewritten.

mod common;
mod stack;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::time::Duration;

use common::{Node, ROOT, SECCOMP_ID, machine_name, stat_cli};
use seccomp_proto::distributor::v1 as pb;
use stack::{Agent, DEADLINE, Stack, eventually, file, profile, sha256, snapshot};

const WEB: &str = "/var/lib/kubelet/seccomp/web.json";
const OS: &str = "kubernetes.io/os";

fn target(selector: &[(&str, &str)]) -> pb::Target {
    pb::Target {
        selector: selector
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

async fn stop_all(agents: Vec<Agent>, stack: Stack) {
    for agent in agents {
        agent.stop().await;
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_land_on_matching_nodes_only_with_content_mode_and_owner() {
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let web = profile("web v1");
    stack.publish("web", &web).await;
    let a = Agent::start(&url, "node-a", &[(OS, "linux"), ("pool", "web")]);
    let b = Agent::start(&url, "node-b", &[(OS, "linux")]);
    let c = Agent::start(&url, "node-c", &[(OS, "windows")]);

    // A user and group that exist only in the nodes' own passwd and group files (uid and gid
    // 65534, "nobody" on this machine).
    let rollout = stack
        .rollout(
            "web",
            pb::Target {
                mode: "0640".into(),
                owner: "seccompuser".into(),
                group: "seccompgroup".into(),
                ..target(&[(OS, "linux")])
            },
            None,
        )
        .await;
    assert_eq!(rollout.nci_name, "seccomp-web");

    let nobody = format!(
        "640 {} {}",
        machine_name("/etc/passwd", SECCOMP_ID),
        machine_name("/etc/group", SECCOMP_ID)
    );
    for agent in [&a, &b] {
        let node = stack.converged(&agent.name, WEB, Some(&sha256(&web))).await;
        assert_eq!(node.agent_version, env!("CARGO_PKG_VERSION"));
        let status = file(&node, WEB);
        assert_eq!(status.nci_name, "seccomp-web");
        assert_eq!(status.state, pb::NodeState::Applied as i32);
        let observed = status.observed.as_ref().unwrap();
        assert_eq!(
            (
                observed.mode.as_str(),
                observed.uid,
                observed.gid,
                observed.owner.as_str(),
                observed.group.as_str(),
                observed.size
            ),
            (
                "0640",
                SECCOMP_ID,
                SECCOMP_ID,
                "seccompuser",
                "seccompgroup",
                web.len() as u64
            ),
            "{}: names resolved against the node's own /etc/passwd and /etc/group",
            agent.name
        );
        let on_disk = agent.path(WEB);
        assert_eq!(std::fs::read(&on_disk).unwrap(), web, "byte for byte");
        assert_eq!(stat_cli(&on_disk), nobody);
        assert!(agent.node.temp_leftovers().is_empty());
    }

    // node-c matches nothing: it confirms an empty set and its disk stays untouched.
    let node = stack.converged("node-c", WEB, None).await;
    assert!(node.files.is_empty(), "{node:#?}");
    assert_eq!(
        std::fs::read_dir(c.path(ROOT)).unwrap().count(),
        0,
        "nothing written on a node that does not match"
    );

    stop_all(vec![a, b, c], stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_nci_wins_only_on_the_nodes_it_matches() {
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let web = profile("web v1");
    let strict = profile("web, strict edition");
    stack.publish("web", &web).await;
    stack.publish("web-strict", &strict).await;
    let a = Agent::start(&url, "node-a", &[(OS, "linux"), ("tier", "strict")]);
    let b = Agent::start(&url, "node-b", &[(OS, "linux")]);

    stack.rollout("web", target(&[(OS, "linux")]), None).await;
    for agent in [&a, &b] {
        stack.converged(&agent.name, WEB, Some(&sha256(&web))).await;
    }
    let b_before = snapshot(&b.node.host);

    // A second NCI for the same path, with a higher priority, on the strict tier only.
    let second = stack
        .rollout(
            "web-strict",
            pb::Target {
                priority: Some(200),
                path: WEB.into(),
                ..target(&[("tier", "strict")])
            },
            Some("seccomp-web-strict"),
        )
        .await;
    assert_eq!(second.nci_name, "seccomp-web-strict");

    let node_a = stack.converged("node-a", WEB, Some(&sha256(&strict))).await;
    assert_eq!(file(&node_a, WEB).nci_name, "seccomp-web-strict");
    assert_eq!(std::fs::read(a.path(WEB)).unwrap(), strict);
    assert_eq!(stat_cli(&a.path(WEB)), "644 root root");

    let node_b = stack.converged("node-b", WEB, Some(&sha256(&web))).await;
    assert_eq!(file(&node_b, WEB).nci_name, "seccomp-web");
    assert_eq!(std::fs::read(b.path(WEB)).unwrap(), web);
    assert_eq!(
        snapshot(&b.node.host),
        b_before,
        "a node the second NCI does not match is not touched"
    );

    stop_all(vec![a, b], stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_owner_is_refused_whole_and_nothing_is_written() {
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let web = profile("web v1");
    stack.publish("web", &web).await;
    stack.publish("audit", &profile("audit v1")).await;
    let a = Agent::start(&url, "node-a", &[(OS, "linux"), ("team", "payments")]);
    let b = Agent::start(&url, "node-b", &[(OS, "linux")]);
    stack.rollout("web", target(&[(OS, "linux")]), None).await;
    let mut applied = Vec::new();
    for agent in [&a, &b] {
        applied.push(stack.converged(&agent.name, WEB, Some(&sha256(&web))).await);
    }
    let before = [snapshot(&a.node.host), snapshot(&b.node.host)];

    // "www-data" exists on many machines, but not in the node's own /etc/passwd.
    let audit = "/var/lib/kubelet/seccomp/audit.json";
    stack
        .rollout(
            "audit",
            pb::Target {
                owner: "www-data".into(),
                ..target(&[("team", "payments")])
            },
            None,
        )
        .await;

    let node = stack.failed("node-a").await;
    let status = file(&node, audit);
    assert_eq!(status.state, pb::NodeState::Failed as i32);
    assert!(
        status.message.starts_with("unknown-owner: ") && status.message.contains(audit),
        "the Nack names the path and the cause: {:?}",
        status.message
    );
    assert!(
        status.observed.as_ref().is_none_or(|o| !o.exists),
        "{status:#?}"
    );
    assert_eq!(
        node.revision, applied[0].revision,
        "node-a still has the last set it applied"
    );
    assert_ne!(node.revision, node.desired_revision);
    assert!(!a.path(audit).exists());
    assert_eq!(
        snapshot(&a.node.host),
        before[0],
        "the whole set was refused: nothing written, web.json untouched"
    );

    // node-b is not targeted by the bad rollout.
    stack.converged("node-b", WEB, Some(&sha256(&web))).await;
    assert_eq!(snapshot(&b.node.host), before[1]);

    stop_all(vec![a, b], stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_and_chmod_are_repaired_and_reported() {
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let web = profile("web v1");
    stack.publish("web", &web).await;
    let a = Agent::start(&url, "node-a", &[(OS, "linux")]);
    let b = Agent::start(&url, "node-b", &[(OS, "linux")]);
    stack.rollout("web", target(&[(OS, "linux")]), None).await;
    for agent in [&a, &b] {
        stack.converged(&agent.name, WEB, Some(&sha256(&web))).await;
    }

    // node-a: someone replaces the file with other content, the way editors save.
    let edited = b"{\"defaultAction\":\"SCMP_ACT_ALLOW\"}\n";
    let scratch = a.node.host.join("edit.tmp");
    std::fs::write(&scratch, edited).unwrap();
    std::fs::rename(&scratch, a.path(WEB)).unwrap();
    eventually("node-a's file repaired", DEADLINE, || async {
        (std::fs::read(a.path(WEB)).ok()? == web).then_some(())
    })
    .await;
    assert_eq!(stat_cli(&a.path(WEB)), "644 root root");
    // Reported, and the distributor's view is what is on disk after the repair.
    eventually(
        "node-a's drift reported and its view repaired",
        DEADLINE,
        || async {
            let node = stack.node("node-a").await?;
            let observed = file(&node, WEB).observed.clone()?;
            (node.drift_reports >= 1
                && node.state == pb::NodeState::Applied as i32
                && observed.sha256 == sha256(&web))
            .then_some(())
        },
    )
    .await;

    // node-b: someone loosens the mode.
    std::fs::set_permissions(b.path(WEB), std::fs::Permissions::from_mode(0o666)).unwrap();
    eventually("node-b's mode repaired", DEADLINE, || async {
        let meta = std::fs::metadata(b.path(WEB)).ok()?;
        (meta.mode() & 0o7777 == 0o644).then_some(())
    })
    .await;
    assert_eq!(std::fs::read(b.path(WEB)).unwrap(), web);
    assert_eq!(stat_cli(&b.path(WEB)), "644 root root");
    eventually(
        "node-b's drift reported and its view repaired",
        DEADLINE,
        || async {
            let node = stack.node("node-b").await?;
            let observed = file(&node, WEB).observed.clone()?;
            (node.drift_reports >= 1
                && node.state == pb::NodeState::Applied as i32
                && observed.mode == "0644"
                && observed.sha256 == sha256(&web))
            .then_some(())
        },
    )
    .await;

    for agent in [&a, &b] {
        assert!(agent.node.temp_leftovers().is_empty());
    }
    stop_all(vec![a, b], stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_distributor_finds_the_agents_and_nothing_is_rewritten() {
    let mut stack = Stack::start().await;
    let url = stack.distributor_url();
    let web = profile("web v1");
    stack.publish("web", &web).await;
    let a = Agent::start(&url, "node-a", &[(OS, "linux")]);
    let b = Agent::start(&url, "node-b", &[(OS, "linux")]);
    stack
        .rollout(
            "web",
            pb::Target {
                owner: "seccompuser".into(),
                ..target(&[(OS, "linux")])
            },
            None,
        )
        .await;
    let mut revisions = Vec::new();
    for agent in [&a, &b] {
        revisions.push(
            stack
                .converged(&agent.name, WEB, Some(&sha256(&web)))
                .await
                .revision,
        );
    }
    let before = [snapshot(&a.node.host), snapshot(&b.node.host)];
    let inode = std::fs::metadata(a.path(WEB)).unwrap().ino();

    // The distributor goes away. Its port answers TCP but nothing else for a while: the
    // agents keep trying, more and more slowly.
    let addr = stack.stop_distributor().await;
    let dead = tokio::net::TcpListener::from_std({
        let listener = stack::bind(addr).await;
        listener.set_nonblocking(true).unwrap();
        listener
    })
    .unwrap();
    // Count the connections over a window that starts with the first one. Each agent waits
    // at least 100, 200, 400, 800 ms (half of 200 ms doubling, the shortest jitter) between
    // attempts, so within 1.2 s it makes at most 4 attempts; an attempt may open two TCP
    // connections (the channel's own reconnect after the dropped one). A tight loop would
    // make hundreds.
    let first = tokio::time::timeout(DEADLINE, dead.accept())
        .await
        .expect("the agents keep reconnecting")
        .unwrap();
    drop(first);
    let window_end = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut connections = 1;
    while let Ok(accepted) = tokio::time::timeout_at(window_end, dead.accept()).await {
        drop(accepted.unwrap());
        connections += 1;
    }
    assert!(
        connections <= 2 * 2 * 4,
        "{connections} connections within 1.2 s of the first: the agents are not backing off"
    );
    assert_eq!(
        [snapshot(&a.node.host), snapshot(&b.node.host)],
        before,
        "the files stay as they are while the distributor is unreachable"
    );
    drop(dead);

    stack.start_distributor_on(addr).await;
    for (agent, revision) in [&a, &b].into_iter().zip(&revisions) {
        let node = stack.converged(&agent.name, WEB, Some(&sha256(&web))).await;
        assert_eq!(&node.revision, revision);
        assert!(node.connected);
    }
    assert_eq!(
        [snapshot(&a.node.host), snapshot(&b.node.host)],
        before,
        "nothing rewritten: same inodes, same mtimes"
    );
    assert_eq!(std::fs::metadata(a.path(WEB)).unwrap().ino(), inode);

    stop_all(vec![a, b], stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_for_the_same_node_replaces_the_first_which_stops() {
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let web = profile("web v1");
    stack.publish("web", &web).await;
    let first = Agent::start(&url, "node-a", &[(OS, "linux")]);
    stack.rollout("web", target(&[(OS, "linux")]), None).await;
    stack.converged(&first.name, WEB, Some(&sha256(&web))).await;

    // Another agent (its own state directory) says it is node-a too.
    let second = Agent::start(&url, "node-a", &[(OS, "linux")]);
    let ended = first.finished(DEADLINE).await;
    let err = ended.expect_err("the replaced agent stops with an error");
    assert!(
        matches!(err, seccomp_node_agent::Error::Replaced(_)),
        "{err}"
    );
    assert!(err.to_string().contains("node-a"), "{err}");
    // The second one is the node now, and stays connected.
    stack
        .converged(&second.name, WEB, Some(&sha256(&web)))
        .await;
    stop_all(vec![second], stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_set_over_four_mib_is_received_and_applied() {
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let a = Agent::start(&url, "node-a", &[(OS, "linux")]);
    // Five profiles of 900 KiB: each within the registry's 1 MiB limit, together over tonic's
    // default decode limit of 4 MiB, which would have the agent reconnect forever.
    let big = |i: usize| profile(&format!("{i}{}", "x".repeat(900 << 10)));
    let count = 5;
    for i in 0..count {
        let name = format!("big-{i}");
        stack.publish(&name, &big(i)).await;
        stack.rollout(&name, target(&[(OS, "linux")]), None).await;
    }
    let last = format!("{ROOT}/big-{}.json", count - 1);
    let node = stack
        .converged("node-a", &last, Some(&sha256(&big(count - 1))))
        .await;
    let profiles = node.files.iter().filter(|f| f.path.ends_with(".json"));
    assert_eq!(profiles.count(), count, "{node:#?}");
    for i in 0..count {
        let on_disk = std::fs::read(a.path(&format!("{ROOT}/big-{i}.json"))).unwrap();
        assert!(on_disk == big(i), "big-{i}.json byte for byte");
    }
    stop_all(vec![a], stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_agent_did_not_place_is_refused_unless_it_may_take_it_over() {
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let web = profile("web v1");
    stack.publish("web", &web).await;
    let theirs = profile("put there by hand");
    let with_foreign_file = || {
        let node = Node::new();
        std::fs::write(node.path(WEB), &theirs).unwrap();
        node
    };
    let a = Agent::start_on(with_foreign_file(), &url, "node-a", &[(OS, "linux")]);
    let b_node = with_foreign_file();
    let mut b_config = Agent::config(&url, "node-b", &[(OS, "linux")], &b_node);
    b_config.adopt_existing = true;
    let b = Agent::start_with(b_node, b_config);
    let a_before = snapshot(&a.node.host);
    stack.rollout("web", target(&[(OS, "linux")]), None).await;

    // node-a: the Nack names the path and the cause, and the file stays as it was.
    let node = stack.failed("node-a").await;
    let status = file(&node, WEB);
    assert!(
        status.message.starts_with("foreign-file: ") && status.message.contains(WEB),
        "{:?}",
        status.message
    );
    assert_eq!(std::fs::read(a.path(WEB)).unwrap(), theirs);
    assert_eq!(snapshot(&a.node.host), a_before, "nothing written");

    // node-b runs with --adopt-existing: the file is taken over.
    stack.converged("node-b", WEB, Some(&sha256(&web))).await;
    assert_eq!(std::fs::read(b.path(WEB)).unwrap(), web);
    stop_all(vec![a, b], stack).await;
}
