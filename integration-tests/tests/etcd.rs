#![allow(clippy::unwrap_used)]
//! The distributor with its state in a real etcd (`--etcd-endpoints`, #18), over the real
//! binaries: what it acknowledged survives a SIGKILL with its data directory never made,
//! numbering goes on, keys stay under the prefix, and an etcd restarted under a stream of
//! commands loses nothing that was acknowledged. Skipped, loudly, without Debian's etcd.

use std::time::Duration;

use integration_tests::etcd::EtcdCluster;
use integration_tests::{Stack, Tuning, poll, sha256_hex};

const WEB: &str = "/var/lib/kubelet/seccomp/web.json";
const DEADLINE: Duration = Duration::from_secs(30);
const PROFILE: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\"}]}";

fn stack_on(etcd: &EtcdCluster, prefix: &str) -> Stack {
    let tuning = Tuning {
        distributor_args: vec![
            "--etcd-endpoints".into(),
            etcd.endpoints(),
            "--etcd-prefix".into(),
            prefix.into(),
            "--etcd-timeout".into(),
            "2s".into(),
            "--leader-lease".into(),
            "3s".into(),
        ],
        // Fixed: a leader that stepped down while etcd was away listens there again.
        distributor_port: std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
        ..Tuning::default()
    };
    Stack::start_tuned(
        &[("node-1", &["os=linux"][..]), ("node-2", &["os=linux"][..])],
        tuning,
    )
}

/// `rollout create` of version 1 to every node in one wave, printing JSON.
const CREATE_ONE_WAVE: [&str; 9] = [
    "rollout",
    "create",
    "web@1",
    "--selector",
    "os=linux",
    "--waves",
    "100%",
    "-o",
    "json",
];

/// The id in what `rollout create -o json` printed.
fn rollout_id(out: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(out).unwrap();
    v["id"]
        .as_str()
        .or_else(|| v["rollout"]["id"].as_str())
        .unwrap_or_else(|| panic!("rollout create: {v}"))
        .to_owned()
}

fn publish(stack: &Stack) {
    let file = stack.dir.path().join("web.json");
    std::fs::write(&file, PROFILE).unwrap();
    stack.ctl_ok(&["profile", "publish", "web", file.to_str().unwrap()]);
}

fn rollouts(stack: &Stack) -> Vec<(String, String)> {
    let out: serde_json::Value =
        serde_json::from_str(&stack.ctl_ok(&["rollout", "list", "-o", "json"])).unwrap();
    let list = out
        .as_array()
        .or_else(|| out["rollouts"].as_array())
        .unwrap_or_else(|| panic!("rollout list: {out}"));
    list.iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn state_in_etcd_survives_a_sigkill_without_a_data_dir_and_numbering_goes_on() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let mut stack = stack_on(&etcd, "/test-a");
    publish(&stack);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--waves",
        "1,100%",
        "--wait",
    ]);
    let expected = format!("0644 root:root sha256:{}", &sha256_hex(PROFILE)[..12]);
    for node in ["node-1", "node-2"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }
    let data_dir = stack.dir.path().join("distributor");
    assert!(
        !data_dir.exists(),
        "with --etcd-endpoints the distributor makes no sled database"
    );

    stack.take_distributor().kill();
    let port = stack.distributor_addr.port();
    stack.start_distributor(port);
    assert_eq!(
        rollouts(&stack),
        [("r1".to_owned(), "Completed".to_owned())]
    );
    let audit = stack.ctl_ok(&["audit", "--service", "distributor", "-o", "json"]);
    assert!(audit.contains("CreateRollout"), "{audit}");
    // The nodes it knew are known again, and the agents get nothing new.
    for node in ["node-1", "node-2"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }
    // Numbers are never reused: the next rollout is r2.
    let out = stack.ctl_ok(&CREATE_ONE_WAVE);
    let id = rollout_id(out.as_bytes());
    assert_eq!(id, "r2");
    assert!(!data_dir.exists());
    drop(stack);

    // Another prefix is another distributor's state: nothing of the first one.
    let other = stack_on(&etcd, "/test-b");
    assert!(rollouts(&other).is_empty());
}

#[test]
fn etcd_restarted_under_a_stream_of_commands_loses_nothing_acknowledged() {
    let Some(mut etcd) = EtcdCluster::start(1) else {
        return;
    };
    let mut stack = stack_on(&etcd, "/test-load");
    publish(&stack);
    // A second replica: every other command goes through it (passed to the leader).
    let leader = stack.distributor_addr;
    let follower = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut args = stack.tuning.distributor_args.clone();
    args.extend(["--replica-id".to_owned(), "follower".to_owned()]);
    let replica = stack.spawn_replica("follower", follower, &args);
    poll("the follower to listen", DEADLINE, || {
        std::net::TcpStream::connect(follower).ok().map(|_| ())
    });
    // Create a rollout that waits after its first wave and abort it, over and over; kill
    // etcd part way and start it again: every rollout whose creation was acknowledged, and
    // every acknowledged command, is there afterwards.
    let mut acknowledged = 0;
    let mut created = Vec::new();
    let mut refused = 0;
    let mut current: Option<String> = None;
    let mut turn = 0usize;
    // Acknowledged through the follower, before the kill and after the restart.
    let mut passed = [0, 0];
    let mut restarted = false;
    // One create-or-abort, on the leader and the follower in turn; whether it was
    // acknowledged.
    let mut step = |stack: &mut Stack, restarted: bool| -> bool {
        turn += 1;
        let on_follower = turn.is_multiple_of(2);
        stack.distributor_addr = if on_follower { follower } else { leader };
        let out = match &current {
            None => stack.ctl(&[
                "rollout",
                "create",
                "web@1",
                "--selector",
                "os=linux",
                "--waves",
                "1,100%",
                "--pause",
                "manual",
                "-o",
                "json",
            ]),
            Some(id) => stack.ctl(&["rollout", "abort", id]),
        };
        if !out.status.success() {
            refused += 1;
            return false;
        }
        acknowledged += 1;
        if on_follower {
            passed[usize::from(restarted)] += 1;
        }
        if current.take().is_none() {
            let id = rollout_id(&out.stdout);
            created.push(id.clone());
            current = Some(id);
        }
        true
    };
    for _ in 0..10 {
        step(&mut stack, restarted);
    }
    etcd.kill(0);
    for _ in 0..10 {
        step(&mut stack, restarted);
    }
    etcd.restart(0);
    restarted = true;
    // Back once the distributor has its leadership again (it stepped down without etcd).
    poll("a command acknowledged again", DEADLINE, || {
        step(&mut stack, restarted).then_some(())
    });
    for _ in 0..10 {
        step(&mut stack, restarted);
    }
    assert!(refused > 0, "commands were refused while etcd was down");
    assert!(acknowledged >= 20, "{acknowledged} acknowledged");
    assert!(
        passed[0] > 0 && passed[1] > 0,
        "commands passed through the follower before and after etcd's restart: {passed:?}"
    );
    // Both replicas SIGKILLed after the stream: the acknowledged ones are all in etcd.
    replica.kill();
    stack.distributor_addr = leader;
    stack.take_distributor().kill();
    let port = stack.distributor_addr.port();
    stack.start_distributor(port);
    let audit: serde_json::Value = poll("the audit log", DEADLINE, || {
        let out = stack.ctl(&["audit", "--service", "distributor", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    });
    let ok = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            (e["method"] == "CreateRollout" || e["method"] == "AbortRollout") && e["result"] == "OK"
        })
        .count();
    assert_eq!(ok, acknowledged, "{audit}");
    let kept: Vec<String> = rollouts(&stack).into_iter().map(|(id, _)| id).collect();
    for id in &created {
        assert!(
            kept.contains(id),
            "{id} was acknowledged and is gone: {kept:?}"
        );
    }
    // Through it all, no node was sent anything but version 1 or its removal.
    let v1 = sha256_hex(PROFILE);
    for (i, node) in stack.nodes.iter().enumerate() {
        for (at, files) in stack.history(i) {
            if let Some(sha) = files.get(WEB) {
                assert_eq!(*sha, v1, "{} was sent other content at {at}", node.name);
            }
        }
    }
}

#[test]
fn a_quorum_lost_refuses_commands_and_when_it_is_back_nothing_acknowledged_is_lost() {
    let Some(mut etcd) = EtcdCluster::start(3) else {
        return;
    };
    let mut stack = stack_on(&etcd, "/test-quorum");
    let port = stack.distributor_addr.port();
    publish(&stack);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--waves",
        "100%",
        "--wait",
    ]);

    // Two of three members gone: no quorum, no write, so no command is acknowledged.
    etcd.kill(1);
    etcd.kill(2);
    let refused = stack.ctl(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--waves",
        "100%",
    ]);
    assert!(
        !refused.status.success(),
        "a command was acknowledged without a quorum: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    // Unanswered, not refused: the proposal may still be committed once the quorum is back,
    // and the error says so.
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    let unknown = said.contains("may or may not have been applied");
    assert!(
        unknown || said.contains("no longer the leader") || said.contains("cannot connect"),
        "{said}"
    );

    // The quorum back: the distributor (elected again if it stepped down) acknowledges again.
    etcd.restart(1);
    etcd.restart(2);
    let out = poll(
        "a command acknowledged again",
        Duration::from_secs(60),
        || {
            let out = stack.ctl(&CREATE_ONE_WAVE);
            out.status.success().then_some(out)
        },
    );
    let id = rollout_id(&out.stdout);

    // Everything acknowledged is there after a SIGKILL, and nothing else.
    stack.take_distributor().kill();
    stack.start_distributor(port);
    let kept: Vec<String> = rollouts(&stack).into_iter().map(|(id, _)| id).collect();
    assert!(kept.iter().any(|k| k == "r1"), "{kept:?}");
    assert!(kept.contains(&id), "{id} acknowledged and gone: {kept:?}");
    // And nothing else, but the one whose outcome was said to be unknown, if it was.
    assert!(
        kept.len() == 2 || (unknown && kept.len() == 3),
        "only what was acknowledged: {kept:?}"
    );
}
