#![allow(clippy::unwrap_used)]
//! End-to-end scenarios over the real binaries (see the crate docs for the list).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use integration_tests::{SECCOMP_ID, Stack, Tuning, poll, sha256_hex};

const WEB: &str = "/var/lib/kubelet/seccomp/web.json";
const DEADLINE: Duration = Duration::from_secs(30);

/// A valid profile, distinct per `n`, padded to `pad` bytes of whitespace-free JSON.
fn profile(n: u32, pad: usize) -> Vec<u8> {
    let mut s = format!(
        "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":{n},\"syscalls\":[{{\"names\":[\"read\",\"write\"],\"action\":\"SCMP_ACT_ALLOW\"}}]"
    );
    if pad > 0 {
        // Many copies of a harmless rule make a large but valid file.
        let rule = ",{\"names\":[\"close\"],\"action\":\"SCMP_ACT_ALLOW\",\"comment\":\"pad\"}";
        s.truncate(s.len() - 1);
        while s.len() < pad {
            s.push_str(rule);
        }
        s.push(']');
    }
    s.push('}');
    s.into_bytes()
}

/// Publishes `bytes` as `name`, returns the version.
fn publish(stack: &Stack, name: &str, bytes: &[u8]) -> u64 {
    let file = stack.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, bytes).unwrap();
    let out = stack.ctl_ok(&[
        "profile",
        "publish",
        name,
        file.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["version"].as_u64().unwrap()
}

/// `stat -c '%a %u %g'` of a path.
fn stat(path: &Path) -> String {
    let out = Command::new("stat")
        .args(["-c", "%a %u %g"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "stat {}", path.display());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// What proves a file was not rewritten: inode, mtime, mode, owner and bytes.
fn fingerprint(path: &Path) -> (u64, i64, i64, u32, u32, u32, Vec<u8>) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.mode(),
        m.uid(),
        m.gid(),
        std::fs::read(path).unwrap(),
    )
}

fn observed(mode: &str, owner: &str, bytes: &[u8]) -> String {
    format!("{mode} {owner} sha256:{}", &sha256_hex(bytes)[..12])
}

/// Agents' temp files left in the seccomp directory.
fn temp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".seccomp-agent."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn s1_rollout_reaches_matching_nodes_with_exact_bytes_mode_and_owner() {
    let stack = Stack::start(&[
        ("node-1", &["os=linux", "pool=secure"]),
        ("node-2", &["os=linux", "pool=secure"]),
        ("node-3", &["os=linux", "pool=general"]),
    ]);
    let bytes = profile(1, 0);
    assert_eq!(publish(&stack, "web", &bytes), 1);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "pool=secure",
        "--waves",
        "1,100%",
        "--max-unavailable",
        "1",
        "--mode",
        "0640",
        "--owner",
        "seccompuser",
        "--group",
        "seccompgroup",
        "--wait",
        "--timeout",
        "30s",
    ]);

    let history: serde_json::Value =
        serde_json::from_str(&stack.ctl_ok(&["profile", "history", "web", "-o", "json"])).unwrap();
    assert_eq!(
        history["versions"][0]["digest"],
        format!("sha256:{}", sha256_hex(&bytes))
    );
    let expected = observed("0640", "seccompuser:seccompgroup", &bytes);
    let nodes = stack.nodes_json().unwrap();
    for node in &stack.nodes[..2] {
        let listed = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node.name.as_str())
            .unwrap();
        assert_eq!(listed["state"], "Applied", "{listed}");
        assert_eq!(listed["revision"], listed["desired_revision"], "{listed}");
        let file = listed["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == WEB)
            .unwrap();
        assert_eq!(file["state"], "Applied", "{file}");
        assert_eq!(file["desired"], expected.as_str(), "{file}");
        assert_eq!(file["observed"], expected.as_str(), "{file}");
        // What `nodes` says is what is on disk.
        let path = node.path(WEB);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(stat(&path), format!("640 {SECCOMP_ID} {SECCOMP_ID}"));
    }
    // Two waves, in order: node-1 alone, then the rest.
    let status = rollout_json(&stack, "r1");
    let reasons: Vec<&str> = status["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    let at = |needle: &str| reasons.iter().position(|r| r.contains(needle));
    assert!(
        at("wave 1 of 2 started") < at("wave 2 of 2 started"),
        "{reasons:?}"
    );
    assert_eq!(status["rollout"]["state"], "Completed");
    let waves = &status["rollout"]["waves"];
    assert_eq!(waves[0]["nodes"]["applied"], 1, "{waves}");
    assert_eq!(waves[1]["nodes"]["applied"], 1, "{waves}");
    let other = &stack.nodes[2];
    assert!(!other.path(WEB).exists());
    let listed = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node-3")
        .unwrap();
    assert!(listed["files"].as_array().unwrap().is_empty(), "{listed}");
}

#[test]
fn s2_sigkill_registry_during_publish_loop_keeps_every_acknowledged_version() {
    let mut stack = Stack::start(&[]);
    let acked: Mutex<Vec<(u64, Vec<u8>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let stack = &stack;
        let acked = &acked;
        let publisher = s.spawn(move || {
            for n in 1..200 {
                let bytes = profile(n, 0);
                let file = stack.dir.path().join(format!("loop-{n}.json"));
                std::fs::write(&file, &bytes).unwrap();
                let out = stack.ctl(&[
                    "profile",
                    "publish",
                    "loop",
                    file.to_str().unwrap(),
                    "-o",
                    "json",
                ]);
                if !out.status.success() {
                    return;
                }
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((v["version"].as_u64().unwrap(), bytes));
            }
            panic!("the registry was never killed");
        });
        poll("5 acknowledged publishes", DEADLINE, || {
            (acked.lock().unwrap().len() >= 5).then_some(())
        });
        stack.registry.as_ref().unwrap().signal("KILL");
        publisher.join().unwrap();
    });
    let mut killed = stack.take_registry();
    killed.wait_exit(DEADLINE);
    drop(killed);
    stack.start_registry(0);

    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= 5);
    for (version, bytes) in &acked {
        let out = stack.ctl(&["profile", "get", &format!("loop@{version}"), "--raw"]);
        assert!(out.status.success(), "loop@{version} is gone");
        assert_eq!(&out.stdout, bytes, "loop@{version} bytes");
    }
    // Numbering has no gaps up to the last acknowledged version.
    let versions: Vec<u64> = acked.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=acked.len() as u64).collect::<Vec<_>>());
}

#[test]
fn s3_sigkill_distributor_after_rollout_create_resumes_and_completes() {
    let mut stack = Stack::start(&[
        ("node-1", &["os=linux"]),
        ("node-2", &["os=linux"]),
        ("node-3", &["os=windows"]),
    ]);
    let bytes = profile(3, 0);
    publish(&stack, "web", &bytes);
    // Two waves with a pause between them, so the kill lands mid-rollout.
    create_in_two_waves(&stack, "1s");
    stack.take_distributor().kill();
    let port = stack.distributor_addr.port();
    stack.start_distributor(port);
    assert_eq!(stack.distributor_addr.port(), port);

    let expected = observed("0644", "root:root", &bytes);
    for node in ["node-1", "node-2"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }
    for node in &stack.nodes[..2] {
        assert_eq!(std::fs::read(node.path(WEB)).unwrap(), bytes);
    }
    assert!(!stack.nodes[2].path(WEB).exists());
    let status = rollout_json(&stack, "r1");
    assert_eq!(status["rollout"]["state"], "Completed", "{status}");
}

#[test]
fn s6_a_bad_version_rolls_back_by_itself_and_a_manual_rollback_restores_old_bytes() {
    let stack = Stack::start(&[
        ("node-1", &["os=linux"]),
        ("node-2", &["os=linux"]),
        ("node-3", &["os=linux"]),
    ]);
    let create = |reference: &str, extra: &[&str]| {
        let mut args = vec![
            "rollout",
            "create",
            reference,
            "--selector",
            "os=linux",
            "--waves",
            "1,100%",
            "--wait",
            "--timeout",
            "30s",
        ];
        args.extend_from_slice(extra);
        stack.ctl(&args)
    };
    let v1 = profile(61, 0);
    publish(&stack, "web", &v1);
    let out = create("web@1", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before: Vec<_> = stack
        .nodes
        .iter()
        .map(|n| fingerprint(&n.path(WEB)))
        .collect();

    // Version 2 names an owner no node has: node-1 (wave 1) refuses it, the rollout rolls
    // back by itself, and nodes 2 and 3 are never touched.
    let v2 = profile(62, 0);
    publish(&stack, "web", &v2);
    let out = create("web@2", &["--owner", "nosuchuser"]);
    assert_eq!(out.status.code(), Some(1), "--wait exits 1 on a rollback");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rolled back") && err.contains("node-1"),
        "{err}"
    );
    let status = rollout_json(&stack, "r2");
    assert_eq!(status["rollout"]["state"], "RolledBack", "{status}");
    let failed = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node-1")
        .unwrap();
    assert!(
        failed["state"] == "Applied",
        "node-1 is back on version 1: {failed}"
    );
    for (node, fp) in stack.nodes.iter().zip(&before) {
        assert_eq!(
            &fingerprint(&node.path(WEB)),
            fp,
            "{}: untouched",
            node.name
        );
    }
    let expected = observed("0644", "root:root", &v1);
    for node in ["node-1", "node-2", "node-3"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }

    // Version 3 completes; a manual rollback puts version 1's bytes back everywhere.
    let v3 = profile(63, 0);
    publish(&stack, "web", &v3);
    let out = create("web@3", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in &stack.nodes {
        assert_eq!(std::fs::read(node.path(WEB)).unwrap(), v3);
    }
    let out = stack.ctl_ok(&["rollback", "web", "--wait", "--timeout", "30s"]);
    assert!(out.contains("web@1"), "{out}");
    for node in &stack.nodes {
        assert_eq!(std::fs::read(node.path(WEB)).unwrap(), v1, "{}", node.name);
        assert_eq!(stat(&node.path(WEB)), "644 0 0");
    }
    for node in ["node-1", "node-2", "node-3"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }
}

#[test]
fn s4_sigkill_agent_mid_write_leaves_no_partial_file_and_it_converges() {
    let mut stack = Stack::start(&[("node-1", &["os=linux"])]);
    let old = profile(1, 0);
    publish(&stack, "web", &old);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--wait",
        "--timeout",
        "30s",
    ]);
    let target = stack.nodes[0].path(WEB);
    assert_eq!(std::fs::read(&target).unwrap(), old);

    // Each round: a new, large version; the agent is killed inside its atomic write.
    let mut current = old;
    for (round, point) in [
        "temp-created",
        "partly-written",
        "before-rename",
        "after-rename",
    ]
    .into_iter()
    .enumerate()
    {
        let status = stack.nodes[0].agent.take().unwrap().terminate();
        assert!(status.success(), "agent SIGTERM: {status}");
        let new = profile(10 + round as u32, 256 * 1024);
        let v = publish(&stack, "web", &new);
        stack.ctl_ok(&[
            "rollout",
            "create",
            &format!("web@{v}"),
            "--selector",
            "os=linux",
        ]);
        stack.start_agent(0, Some(point));
        let agent = stack.nodes[0].agent.as_mut().unwrap();
        let paused = agent.wait_line(&format!("paused {point} "), DEADLINE);
        assert_eq!(paused, WEB);
        stack.nodes[0].agent.take().unwrap().kill();
        let on_disk = std::fs::read(&target).unwrap();
        let expected = if point == "after-rename" {
            &new
        } else {
            &current
        };
        assert!(
            on_disk == *expected,
            "killed at {point}: {} bytes at the final path, not the expected complete file",
            on_disk.len()
        );
        current = on_disk;
        stack.start_agent(0, None);
        stack.wait_applied(
            "node-1",
            WEB,
            &observed("0644", "root:root", &new),
            DEADLINE,
        );
        assert_eq!(std::fs::read(&target).unwrap(), new);
        current.clone_from(&new);
        let dir = target.parent().unwrap();
        poll("temp files cleaned up", DEADLINE, || {
            temp_leftovers(dir).is_empty().then_some(())
        });
    }
}

#[test]
fn s5_distributor_outage_keeps_files_and_agents_reconnect_without_rewriting() {
    let mut stack = Stack::start(&[("node-1", &["os=linux"]), ("node-2", &["os=linux"])]);
    let bytes = profile(5, 0);
    publish(&stack, "web", &bytes);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--wait",
        "--timeout",
        "30s",
    ]);
    let before: Vec<_> = stack
        .nodes
        .iter()
        .map(|n| fingerprint(&n.path(WEB)))
        .collect();

    let status = stack.take_distributor().terminate();
    assert!(status.success(), "distributor SIGTERM: {status}");
    // A while without the distributor (several heartbeats and scans): nothing moves.
    let outage = std::time::Instant::now();
    poll("a 3 s outage", Duration::from_secs(10), || {
        for (node, fp) in stack.nodes.iter().zip(&before) {
            assert_eq!(
                &fingerprint(&node.path(WEB)),
                fp,
                "{} during the outage",
                node.name
            );
        }
        (outage.elapsed() >= Duration::from_secs(3)).then_some(())
    });

    let port = stack.distributor_addr.port();
    stack.start_distributor(port);
    let expected = observed("0644", "root:root", &bytes);
    for node in ["node-1", "node-2"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }
    for (node, fp) in stack.nodes.iter().zip(&before) {
        assert_eq!(
            &fingerprint(&node.path(WEB)),
            fp,
            "{} was rewritten",
            node.name
        );
    }
}

#[test]
fn s7_a_profile_edited_by_hand_is_repaired() {
    let stack = Stack::start(&[("node-1", &["os=linux"])]);
    let bytes = profile(7, 0);
    publish(&stack, "web", &bytes);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--mode",
        "0600",
        "--wait",
        "--timeout",
        "30s",
    ]);
    let path = stack.nodes[0].path(WEB);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // Edited in place, as an operator with an editor would.
    std::fs::write(&path, b"{\"defaultAction\":\"SCMP_ACT_ALLOW\"}").unwrap();
    poll("the hand edit repaired", DEADLINE, || {
        (std::fs::read(&path).ok()? == bytes).then_some(())
    });
    assert_eq!(stat(&path), "600 0 0");
    stack.wait_applied(
        "node-1",
        WEB,
        &observed("0600", "root:root", &bytes),
        DEADLINE,
    );
}

/// `rollout create web@1` to `os=linux` in two waves (`1,100%`) with `pause` between them.
fn create_in_two_waves(stack: &Stack, pause: &str) {
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--waves",
        "1,100%",
        "--pause",
        pause,
    ]);
}

/// `rollout status r<n> -o json`.
fn rollout_json(stack: &Stack, id: &str) -> serde_json::Value {
    serde_json::from_str(&stack.ctl_ok(&["rollout", "status", id, "-o", "json"])).unwrap()
}

#[test]
fn s8_an_agent_lost_mid_rollout_pauses_it_until_the_agent_is_back() {
    let mut stack = Stack::start(&[
        ("node-1", &["os=linux"]),
        ("node-2", &["os=linux"]),
        ("node-3", &["os=linux"]),
    ]);
    let bytes = profile(8, 0);
    publish(&stack, "web", &bytes);
    create_in_two_waves(&stack, "manual");
    poll("r1 paused after wave 1", DEADLINE, || {
        (rollout_json(&stack, "r1")["rollout"]["state"] == "Paused").then_some(())
    });
    // node-3's agent dies before wave 2 reaches it.
    stack.nodes[2].agent.take().unwrap().kill();
    stack.ctl_ok(&["rollout", "resume", "r1"]);
    let paused = poll("r1 paused for the lost node", DEADLINE, || {
        let s = rollout_json(&stack, "r1");
        let last = s["rollout"]["history"].as_array()?.last()?.clone();
        (s["rollout"]["state"] == "Paused" && last["reason"].as_str()?.contains("node-3"))
            .then_some(s)
    });
    assert!(!stack.nodes[2].path(WEB).exists(), "{paused}");

    stack.start_agent(2, None);
    poll("r1 completed once node-3 is back", DEADLINE, || {
        (rollout_json(&stack, "r1")["rollout"]["state"] == "Completed").then_some(())
    });
    for node in &stack.nodes {
        assert_eq!(
            std::fs::read(node.path(WEB)).unwrap(),
            bytes,
            "{}",
            node.name
        );
    }
}

#[test]
fn s9_an_agent_stopped_mid_rollout_turns_unknown_pauses_it_and_completes_it_after_sigcont() {
    // Pings every second, a second to answer, Unknown two seconds after the stream ends:
    // a silent agent is Unknown within about 4 s (the defaults would take 50 s, longer
    // than the deadlines below).
    let tuning = Tuning {
        distributor_args: [
            "--keepalive-interval",
            "1s",
            "--keepalive-timeout",
            "1s",
            "--unknown-after-secs",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..Tuning::default()
    };
    let stack = Stack::start_tuned(
        &[("node-1", &["os=linux"]), ("node-2", &["os=linux"])],
        tuning,
    );
    let bytes = profile(9, 0);
    publish(&stack, "web", &bytes);
    poll("both agents connected", DEADLINE, || {
        let nodes = stack.nodes_json()?;
        (nodes
            .as_array()?
            .iter()
            .filter(|n| n["connected"] == true)
            .count()
            == 2)
            .then_some(())
    });
    // node-2's agent stops: its TCP connection stays open, it answers nothing.
    let stopped = stack.nodes[1].agent.as_ref().unwrap();
    stopped.signal("STOP");
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--waves",
        "100%",
    ]);
    let paused = poll("r1 paused for the silent node", DEADLINE, || {
        let s = rollout_json(&stack, "r1");
        let last = s["rollout"]["history"].as_array()?.last()?.clone();
        (s["rollout"]["state"] == "Paused"
            && s["rollout"]["nodes"]["unknown"] == 1
            && last["reason"].as_str()?.contains("node-2"))
        .then_some(s)
    });
    assert_eq!(paused["rollout"]["nodes"]["applied"], 1, "{paused}");
    assert!(!stack.nodes[1].path(WEB).exists(), "{paused}");
    let node2 = stack.nodes_json().unwrap();
    let node2 = node2
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node-2")
        .unwrap();
    assert_eq!(node2["connected"], false, "{node2}");

    // Woken, the agent finds its stream closed, reconnects and applies.
    stack.nodes[1].agent.as_ref().unwrap().signal("CONT");
    poll("r1 completed once node-2 answers again", DEADLINE, || {
        (rollout_json(&stack, "r1")["rollout"]["state"] == "Completed").then_some(())
    });
    for node in &stack.nodes {
        assert_eq!(
            std::fs::read(node.path(WEB)).unwrap(),
            bytes,
            "{}",
            node.name
        );
    }
}

/// libfaketime, from Debian's `faketime` package (installed by `.ci/run`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn s10_a_wall_clock_step_forward_does_not_time_out_a_node_that_is_applying() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!(
            "SKIPPED s10: {LIBFAKETIME} is missing (apt-get install faketime); \
             the wall-clock step is not tested"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    // The distributor's wall clock comes from the file, read at every call; its monotonic
    // clock is left alone (as an NTP step leaves CLOCK_MONOTONIC alone).
    let tuning = Tuning {
        distributor_env: [
            ("LD_PRELOAD", LIBFAKETIME.to_owned()),
            ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec(),
        ..Tuning::default()
    };
    let mut stack = Stack::start_tuned(&[("node-1", &["os=linux"])], tuning);
    let bytes = profile(10, 0);
    publish(&stack, "web", &bytes);
    // node-1 holds its write just before the rename: Applying, for as long as the test says.
    stack.nodes[0].agent.take().unwrap().kill();
    stack.start_agent(0, Some("before-rename"));
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--waves",
        "100%",
        "--progress-deadline",
        "60s",
    ]);
    stack.nodes[0]
        .agent
        .as_mut()
        .unwrap()
        .wait_line("paused before-rename", DEADLINE);

    // Two hours forward, far past the 60 s deadline; seen by the distributor once a fresh
    // audit entry (wall-clock time) is stamped at least an hour ahead.
    std::fs::write(&offset, "+7200\n").unwrap();
    let an_hour_ahead =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3600))
            .to_string();
    poll("the distributor's clock to step", DEADLINE, || {
        let _ = stack.ctl(&["rollout", "pause", "r404"]);
        let audit = stack.ctl_ok(&["audit", "--service", "distributor", "-o", "json"]);
        let entries: serde_json::Value = serde_json::from_str(&audit).ok()?;
        let latest = entries["entries"].as_array()?.last()?["time"]
            .as_str()?
            .to_owned();
        (latest[..19] >= an_hour_ahead[..19]).then_some(())
    });
    // A failure would come at the next engine tick (every 500 ms): watch six of them (a
    // window for something that must not happen, not a wait for a condition).
    for _ in 0..30 {
        let s = rollout_json(&stack, "r1");
        assert_eq!(s["rollout"]["state"], "Progressing", "{s}");
        assert_eq!(s["rollout"]["nodes"]["failed"], 0, "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stack.nodes[0].agent.as_mut().unwrap().release();
    poll("r1 completed", DEADLINE, || {
        (rollout_json(&stack, "r1")["rollout"]["state"] == "Completed").then_some(())
    });
    let s = rollout_json(&stack, "r1");
    let states: Vec<&str> = s["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert!(!states.contains(&"RollingBack"), "{s}");
    assert_eq!(std::fs::read(stack.nodes[0].path(WEB)).unwrap(), bytes);
}
