//! `seccompctl render`, `rollout` and `nodes` as a user runs them: the real binary against a
//! registry, a distributor and a node agent running in this test process on loopback.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use seccomp_proto::distributor::v1 as pb;
use tokio::sync::oneshot;

mod common;

/// Registry, distributor and one agent (`node-a`, `kubernetes.io/os=linux`) on a background
/// runtime for the duration of a test.
struct Stack {
    registry: String,
    distributor: String,
    host: std::path::PathBuf,
    stops: Vec<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bind = || {
            runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap()
        };
        let (reg_listener, dist_listener) = (bind(), bind());
        let registry = format!("http://{}", reg_listener.local_addr().unwrap());
        let distributor = format!("http://{}", dist_listener.local_addr().unwrap());
        let mut stops = Vec::new();
        let mut stopper = || {
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            async move {
                let _ = rx.await;
            }
        };
        runtime.spawn(seccomp_registry::run(
            seccomp_registry::Config::new(dir.path().join("registry")),
            reg_listener,
            stopper(),
        ));
        let mut dconfig =
            seccomp_distributor::Config::new(dir.path().join("distributor"), &registry);
        dconfig.shutdown_grace = Duration::from_millis(200);
        runtime.spawn(seccomp_distributor::run(dconfig, dist_listener, stopper()));

        // The node: its own host root with the accounts the rollout names.
        let host = dir.path().join("node-a");
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::create_dir_all(host.join("var/lib/kubelet")).unwrap();
        std::fs::write(
            host.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nseccompuser:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(host.join("etc/group"), "root:x:0:\nseccompgroup:x:65534:\n").unwrap();
        let files = seccomp_node_agent::Config {
            host_root: host.clone(),
            allowed_root: "/var/lib/kubelet/seccomp".into(),
            state_dir: dir.path().join("agent-state"),
        };
        let mut agent = seccomp_node_agent::sync::Config::new(&distributor, "node-a", files);
        agent.labels = [("kubernetes.io/os".to_owned(), "linux".to_owned())].into();
        let agent_stop = stopper();
        runtime.spawn(async move {
            let _ = seccomp_node_agent::sync::run(agent, agent_stop).await;
        });
        // Rollouts are refused while their selector matches no known node: wait for it.
        runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let connected =
                    match pb::distributor_client::DistributorClient::connect(distributor.clone())
                        .await
                    {
                        Ok(mut c) => c
                            .list_nodes(pb::ListNodesRequest::default())
                            .await
                            .is_ok_and(|r| r.into_inner().nodes.iter().any(|n| n.connected)),
                        Err(_) => false,
                    };
                if connected {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node-a never connected"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Stack {
            registry,
            distributor,
            host,
            stops,
            runtime: Some(runtime),
            dir,
        }
    }

    fn ctl(&self) -> Command {
        let mut cmd = Command::cargo_bin("seccompctl").unwrap();
        cmd.env_remove("SECCOMP_OUTPUT")
            .env("SECCOMP_REGISTRY", &self.registry)
            .env("SECCOMP_DISTRIBUTOR", &self.distributor)
            .timeout(Duration::from_secs(60));
        cmd
    }

    /// Publish `content` as profile `web`.
    fn publish_web(&self, content: &str) {
        let file = self.write("web.json", content);
        ok(&self
            .ctl()
            .args(["profile", "publish", "web"])
            .arg(&file)
            .output()
            .unwrap());
    }

    fn write(&self, name: &str, content: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stat(path: &Path) -> String {
    let out = std::process::Command::new("stat")
        .args(["-c", "%a %U %G"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const PROFILE: &str = "{\n  \"defaultAction\": \"SCMP_ACT_LOG\"\n}\n";

#[test]
fn render_rollout_and_nodes() {
    let stack = Stack::start();
    let file = stack.write("web.json", PROFILE);
    let out = stack
        .ctl()
        .args(["profile", "publish", "web"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // render: YAML by default, JSON on request; the content is the published bytes.
    let out = stack
        .ctl()
        .args([
            "render",
            "web@1",
            "--selector",
            "kubernetes.io/os=linux",
            "--name",
            "seccomp-profile",
            "--mode",
            "0600",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nci: serde_json::Value = serde_yaml_ng::from_str(&stdout(&out)).unwrap();
    assert_eq!(nci["apiVersion"], "node.shturval.tech/v1beta2");
    assert_eq!(nci["metadata"]["name"], "seccomp-profile");
    assert_eq!(nci["spec"]["files"][1]["content"], PROFILE);
    assert_eq!(nci["spec"]["files"][1]["mode"], "0600");
    assert_eq!(
        nci["spec"]["nodeconfigselector"]["kubernetes.io/os"],
        "linux"
    );
    // Only where profiles go: the distributor's policy, checked here before anything reaches
    // a GitOps repository.
    for (extra, rule) in [
        (&["--path", "/etc/passwd"][..], "outside-root"),
        (&["--mode", "4755"][..], "mode"),
    ] {
        let out = stack
            .ctl()
            .args(["render", "web@1", "--selector", "kubernetes.io/os=linux"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(stdout(&out).is_empty(), "{extra:?}: nothing rendered");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(rule), "{extra:?}: {err}");
    }
    let out = stack
        .ctl()
        .args([
            "render",
            "web",
            "--selector",
            "kubernetes.io/os=linux",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["metadata"]["name"], "seccomp-web");

    // Bad input: a clear message, exit 2, before any network call.
    for (args, needle) in [
        (
            vec!["render", "web", "--selector", "bad key=x"],
            "not a valid label key",
        ),
        (
            vec!["render", "web", "--selector", "a=b", "--mode", "999"],
            "octal",
        ),
        (
            vec!["render", "web", "--selector", "a=b", "--owner", "Root"],
            "owner",
        ),
        (
            vec![
                "render",
                "web",
                "--selector",
                "a=b",
                "--path",
                "relative.json",
            ],
            "absolute",
        ),
        (
            vec!["rollout", "create", "web", "--selector", "a=b,a=c"],
            "twice",
        ),
    ] {
        let out = stack.ctl().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = stack
        .ctl()
        .args(["render", "missing", "--selector", "a=b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"));

    // rollout create --wait: the agent writes the file and the distributor confirms it.
    let out = stack
        .ctl()
        .args([
            "rollout",
            "create",
            "web",
            "--selector",
            "kubernetes.io/os=linux",
            "--mode",
            "0640",
            "--owner",
            "seccompuser",
            "--group",
            "seccompgroup",
            "--wait",
            "--timeout",
            "30s",
        ])
        .output()
        .unwrap();
    let text = stdout(&out);
    if out.status.code() != Some(0) {
        let nodes = stack.ctl().args(["nodes", "-o", "json"]).output().unwrap();
        panic!(
            "{text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            stdout(&nodes)
        );
    }
    assert!(text.contains("Completed, wave 3/3, 1/1 applied"), "{text}");
    let path = stack.host.join("var/lib/kubelet/seccomp/web.json");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), PROFILE);
    assert_eq!(
        stat(&path),
        "640 nobody nogroup",
        "65534 is nobody:nogroup on this machine"
    );

    // nodes: what the agent observed, and it agrees with stat.
    let out = stack.ctl().args(["nodes", "-o", "json"]).output().unwrap();
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = &nodes[0];
    assert_eq!(node["name"], "node-a");
    assert_eq!(node["state"], "Applied");
    assert_eq!(node["labels"]["kubernetes.io/os"], "linux");
    assert!(
        node["last_seen"].as_str().unwrap().starts_with("20"),
        "{node}"
    );
    assert_eq!(node["revision"], node["desired_revision"]);
    let file = |path: &str| {
        node["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap()
            .clone()
    };
    let web = file("/var/lib/kubelet/seccomp/web.json");
    assert_eq!(web["state"], "Applied");
    assert_eq!(web["source"], "web@1 (r1)");
    let observed = web["observed"].as_str().unwrap();
    assert!(
        observed.starts_with("0640 seccompuser:seccompgroup sha256:"),
        "{observed}"
    );
    let out = stack
        .ctl()
        .args([
            "nodes",
            "--selector",
            "kubernetes.io/os=windows",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    // The NCI's directory entry has no content, so no digest: `-`, not a bare `sha256:`.
    let dir = file("/var/lib/kubelet/seccomp");
    for side in ["desired", "observed"] {
        let text = dir[side].as_str().unwrap();
        assert!(text.ends_with(" -") && !text.contains("sha256"), "{dir}");
    }
    let out = stack.ctl().arg("nodes").output().unwrap();
    let table = stdout(&out);
    assert!(table.contains("node-a"));
    let row = table
        .lines()
        .find(|l| l.contains("/var/lib/kubelet/seccomp "))
        .unwrap();
    assert!(!row.contains("sha256:"), "{table}");

    // list and status.
    let out = stack.ctl().args(["rollout", "list"]).output().unwrap();
    assert!(stdout(&out).contains("Completed"), "{}", stdout(&out));
    let out = stack
        .ctl()
        .args(["rollout", "status", "r1"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("node-a: Applied"), "{text}");
    // --watch on a completed rollout: the snapshot, then exit 0.
    let out = stack
        .ctl()
        .args(["rollout", "status", "r1", "--watch"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("Completed, wave 3/3, 1/1 applied"),
        "{}",
        stdout(&out)
    );
    let out = stack
        .ctl()
        .args(["rollout", "status", "r404"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // An owner the node does not know: the rollout fails and --wait says so.
    let out = stack
        .ctl()
        .args([
            "rollout",
            "create",
            "web",
            "--selector",
            "kubernetes.io/os=linux",
            "--owner",
            "www-data",
            "--wait",
            "--timeout",
            "30s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        PROFILE,
        "nothing written"
    );
}

#[test]
fn an_unreachable_distributor_is_a_clear_error() {
    let out = Command::cargo_bin("seccompctl")
        .unwrap()
        .env_remove("SECCOMP_OUTPUT")
        .args(["--distributor", "http://127.0.0.1:9", "nodes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the distributor at http://127.0.0.1:9"),
        "{err}"
    );
}

const PROFILE_V2: &str = "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\"\n}\n";

fn ok(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

#[test]
fn staged_flags_pause_resume_abort_and_rollback() {
    let stack = Stack::start();
    for content in [PROFILE, PROFILE_V2] {
        stack.publish_web(content);
    }
    let path = stack.host.join("var/lib/kubelet/seccomp/web.json");
    let create = |reference: &str, extra: &[&str]| {
        let mut cmd = stack.ctl();
        cmd.args([
            "rollout",
            "create",
            reference,
            "--selector",
            "kubernetes.io/os=linux",
        ])
        .args(extra);
        cmd.output().unwrap()
    };

    // Strategy flags are checked before any connection: exit 2 with the reason.
    for (extra, needle) in [
        (vec!["--waves", "0%,100%"], "reaches no node"),
        (vec!["--waves", "50%,25%,100%"], "does not increase"),
        (vec!["--waves", "1,50%"], "must be \"100%\""),
        (vec!["--max-unavailable", "0"], "would stall"),
        (vec!["--pause", "soon"], "--pause"),
    ] {
        let out = create("web", &extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }

    // Version 1 in one wave; --wait exits 0 once completed.
    ok(&create(
        "web@1",
        &["--waves", "100%", "--wait", "--timeout", "30s"],
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), PROFILE);

    // Version 2 with a manual pause after the first wave: the only node is in wave 1, so
    // the rollout pauses before its (empty) second wave; resume finishes it.
    let out = ok(&create(
        "web@2",
        &["--waves", "1,100%", "--pause", "manual"],
    ));
    assert!(out.contains("created r2"), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = stack
            .ctl()
            .args(["rollout", "status", "r2", "-o", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
        if v["rollout"]["state"] == "Paused" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "r2 never paused after wave 1: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = ok(&stack
        .ctl()
        .args(["rollout", "status", "r2"])
        .output()
        .unwrap());
    assert!(text.contains("wave 1 (1)"), "{text}");
    assert!(text.contains("1/1 applied"), "{text}");
    assert!(text.contains("pause manual"), "{text}");
    assert!(text.contains("resume to start wave 2"), "{text}");
    assert!(text.contains("stable version: 1"), "{text}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), PROFILE_V2);
    let out = ok(&stack
        .ctl()
        .args(["rollout", "resume", "r2"])
        .output()
        .unwrap());
    assert!(out.contains("resumed r2"), "{out}");
    ok(&stack
        .ctl()
        .args(["rollout", "status", "r2", "--watch"])
        .output()
        .unwrap());

    // Pausing or aborting a finished rollout: refused, exit 1, the reason given.
    for verb in ["pause", "abort", "resume"] {
        let out = stack.ctl().args(["rollout", verb, "r2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{verb}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("FAILED_PRECONDITION"),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Manual rollback: version 1's bytes are back; the list shows the rollback revision.
    let out = ok(&stack
        .ctl()
        .args([
            "rollback",
            "web",
            "--wait",
            "--timeout",
            "30s",
            "-o",
            "json",
        ])
        .output()
        .unwrap());
    let ended: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        ended.as_array().map(Vec::len),
        Some(1),
        "one document, a list: {out}"
    );
    assert_eq!(
        (
            &ended[0]["id"],
            &ended[0]["version"],
            &ended[0]["state"],
            &ended[0]["rollback"]
        ),
        (
            &serde_json::json!("r3"),
            &serde_json::json!(1),
            &serde_json::json!("Completed"),
            &serde_json::json!(true)
        ),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), PROFILE);
    let list = ok(&stack.ctl().args(["rollout", "list"]).output().unwrap());
    assert!(list.contains("3 (rollback)"), "{list}");

    // Abort mid-way: a manual pause holds version 2 on wave 1; abort ends it.
    ok(&create(
        "web@2",
        &["--waves", "1,100%", "--pause", "manual"],
    ));
    let out = ok(&stack
        .ctl()
        .args(["rollout", "abort", "r4", "--reason", "wrong ticket"])
        .output()
        .unwrap());
    assert!(
        out.contains("aborted r4") && out.contains("wrong ticket"),
        "{out}"
    );
    // --watch of an aborted rollout: exit 1 with the reason.
    let out = stack
        .ctl()
        .args(["rollout", "status", "r4", "--watch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was aborted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = stack.ctl().args(["rollback", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_reader_that_goes_away_ends_rollout_list_quietly() {
    const ROLLOUTS: usize = 60;
    let stack = Stack::start();
    stack.publish_web(PROFILE);
    // As JSON (about 2 KiB each) far more than a pipe holds (64 KiB), so writes go on after
    // the reader is gone. Each on its own NCI and on no node, so none waits for another.
    stack.runtime.as_ref().unwrap().block_on(async {
        let mut c = pb::distributor_client::DistributorClient::connect(stack.distributor.clone())
            .await
            .unwrap();
        for i in 0..ROLLOUTS {
            let target = pb::Target {
                selector: [("pool".to_owned(), "none".to_owned())].into(),
                mode: "0644".into(),
                owner: "root".into(),
                group: "root".into(),
                ..Default::default()
            };
            c.create_rollout(pb::CreateRolloutRequest {
                profile: "web".into(),
                version: 1,
                target: Some(target),
                strategy: None,
                nci_name: Some(format!("seccomp-pipe-{i}")),
                // Rollouts only to list: they match no node.
                allow_empty: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("seccompctl"));
    cmd.env_remove("SECCOMP_OUTPUT")
        .env("SECCOMP_DISTRIBUTOR", &stack.distributor)
        .args(["rollout", "list", "-o", "json"]);
    let closed = common::head_1(cmd);
    assert_eq!(closed.first_line, "[\n");
    common::assert_quiet(&closed, 0);
}

#[test]
fn dry_runs_show_the_plan_and_the_guards_refuse_empty_selectors_and_removals() {
    let stack = Stack::start();
    stack.publish_web(PROFILE);
    let old = stack.host.join("var/lib/kubelet/seccomp/web.json");
    let moved = stack.host.join("var/lib/kubelet/seccomp/moved.json");
    let create = |selector: &str, extra: &[&str]| {
        stack
            .ctl()
            .args([
                "rollout",
                "create",
                "web@1",
                "--selector",
                selector,
                "--waves",
                "100%",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    ok(&create(
        "kubernetes.io/os=linux",
        &["--wait", "--timeout", "30s"],
    ));
    assert!(old.exists());

    // A selector without its prefix matches nothing: refused, naming the key meant.
    let out = create("os=linux", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean kubernetes.io/os?"), "{err}");

    // Another path takes web.json away: refused without --allow-removal, and nothing moves.
    let elsewhere = ["--path", "/var/lib/kubelet/seccomp/moved.json"];
    let out = create("kubernetes.io/os=linux", &elsewhere);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node-a loses") && err.contains("--allow-removal"),
        "{err}"
    );

    // The plan says so on its first line, and as JSON one entry per node with its action.
    let plan = ok(&create(
        "kubernetes.io/os=linux",
        &[elsewhere[0], elsewhere[1], "--dry-run"],
    ));
    assert!(
        plan.lines()
            .next()
            .unwrap()
            .starts_with("plan: REMOVES FILES from 1 node(s) (node-a)"),
        "{plan}"
    );
    assert!(
        plan.contains("remove /var/lib/kubelet/seccomp/web.json"),
        "{plan}"
    );
    let json = ok(&create(
        "kubernetes.io/os=linux",
        &[elsewhere[0], elsewhere[1], "--dry-run", "-o", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["removals"], 1);
    assert_eq!(v["nodes"][0]["node"], "node-a");
    assert_eq!(v["nodes"][0]["action"], "remove");
    let actions: Vec<(&str, &str)> = v["nodes"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("/var/lib/kubelet/seccomp/moved.json", "add"),
            ("/var/lib/kubelet/seccomp/web.json", "remove")
        ]
    );
    assert!(old.exists() && !moved.exists(), "a dry run changes nothing");

    // Allowed: the plan first, then the rollout moves the file.
    let out = ok(&create(
        "kubernetes.io/os=linux",
        &[
            elsewhere[0],
            elsewhere[1],
            "--allow-removal",
            "--wait",
            "--timeout",
            "30s",
        ],
    ));
    assert!(out.starts_with("plan: REMOVES FILES"), "{out}");
    assert!(moved.exists() && !old.exists());

    // Retiring the NodeConfigItem: the plan, then the file goes.
    let remove = |extra: &[&str]| {
        stack
            .ctl()
            .args(["rollout", "remove", "seccomp-web", "--waves", "100%"])
            .args(extra)
            .output()
            .unwrap()
    };
    let plan = ok(&remove(&["--dry-run"]));
    assert!(
        plan.starts_with("plan: REMOVES FILES from 1 node(s) (node-a)"),
        "{plan}"
    );
    assert!(moved.exists(), "a dry run changes nothing");
    let out = ok(&remove(&["--wait", "--timeout", "30s"]));
    assert!(out.contains("retiring r"), "{out}");
    assert!(!moved.exists() && !old.exists());

    // A rollback's plan: the file comes back.
    let plan = ok(&stack
        .ctl()
        .args(["rollback", "web", "--dry-run"])
        .output()
        .unwrap());
    assert!(
        plan.starts_with("plan: no file is removed; 1 of 1 known node(s) change"),
        "{plan}"
    );
    assert!(
        plan.contains("add /var/lib/kubelet/seccomp/moved.json"),
        "{plan}"
    );
    assert!(!moved.exists(), "a dry run changes nothing");
}
