#![allow(clippy::unwrap_used)]
//! Several distributor replicas on one real etcd (#18), over the real binaries: one leader
//! serves, the others stand by; a SIGKILLed leader is replaced within its lease, the agents
//! (given every replica's URL) reconnect to the new one, a paused rollout resumes there from
//! the same wave and completes, and no file whose bytes did not change is rewritten; a
//! leader stopped with SIGSTOP past its lease is replaced, and after SIGCONT it stops
//! serving instead of writing. Skipped, loudly, without Debian's etcd.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant};

use integration_tests::etcd::EtcdCluster;
use integration_tests::{Proc, Stack, Tuning, poll, sha256_hex};

const WEB: &str = "/var/lib/kubelet/seccomp/web.json";
const DEADLINE: Duration = Duration::from_secs(30);
const LEASE: &str = "3s";
const PROFILE: &[u8] = b"{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\",\"write\"],\"action\":\"SCMP_ACT_ALLOW\"}]}";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn replica_args(etcd: &EtcdCluster, id: &str) -> Vec<String> {
    [
        "--etcd-endpoints",
        &etcd.endpoints(),
        "--etcd-prefix",
        "/ha",
        "--replica-id",
        id,
        "--leader-lease",
        LEASE,
        "--unknown-after-secs",
        "5",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A standby replica listening (once elected) on `addr`.
fn standby(stack: &Stack, etcd: &EtcdCluster, id: &str, addr: SocketAddr) -> Proc {
    let mut args = vec![
        "--listen".to_owned(),
        addr.to_string(),
        "--registry".into(),
        stack.registry_url(),
        "--data-dir".into(),
        stack.dir.path().join(id).display().to_string(),
    ];
    args.extend(replica_args(etcd, id));
    Proc::spawn(
        "seccomp-distributor",
        &format!("distributor-{id}"),
        &stack.dir.path().join("logs"),
        &args,
        &[],
    )
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn rollout(stack: &Stack, id: &str) -> serde_json::Value {
    serde_json::from_str(&stack.ctl_ok(&["rollout", "status", id, "-o", "json"])).unwrap()
}

fn fingerprint(path: &std::path::Path) -> (u64, i64, i64, Vec<u8>) {
    let m = std::fs::metadata(path).unwrap();
    (
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        std::fs::read(path).unwrap(),
    )
}

#[test]
fn a_killed_leader_is_replaced_and_a_stopped_one_stops_writing() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (a1, a2) = (free_addr(), free_addr());
    let mut tuning = Tuning {
        distributor_args: replica_args(&etcd, "d0"),
        ..Tuning::default()
    };
    tuning.agent_args = vec!["--distributor".into(), format!("http://{a1},http://{a2}")];
    let mut stack = Stack::start_tuned(
        &[
            ("node-1", &["os=linux", "zone=a"][..]),
            ("node-2", &["os=linux", "zone=b"][..]),
            ("node-3", &["os=linux", "zone=c"][..]),
        ],
        tuning,
    );
    let d1 = standby(&stack, &etcd, "d1", a1);
    let d2 = standby(&stack, &etcd, "d2", a2);
    for d in [&d1, &d2] {
        poll("the replica to stand by", DEADLINE, || {
            d.logs().contains("standing by").then_some(())
        });
    }
    assert!(!listening(a1) && !listening(a2), "only the leader listens");

    let file = stack.dir.path().join("web.json");
    std::fs::write(&file, PROFILE).unwrap();
    stack.ctl_ok(&["profile", "publish", "web", file.to_str().unwrap()]);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@1",
        "--selector",
        "os=linux",
        "--waves",
        "1,100%",
        "--pause",
        "manual",
    ]);
    let status = poll("wave 1 done and paused", DEADLINE, || {
        let r = rollout(&stack, "r1");
        (r["rollout"]["state"] == "Paused").then_some(r)
    });
    let first: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "Applied")
        .map(|n| n["node"].as_str().or_else(|| n["name"].as_str()).unwrap())
        .collect();
    assert_eq!(first.len(), 1, "{status}");
    let wave1 = stack.nodes.iter().position(|n| n.name == first[0]).unwrap();
    let before = fingerprint(&stack.nodes[wave1].path(WEB));

    // SIGKILL the leader: a standby takes over within the lease (plus an election).
    let killed = Instant::now();
    stack.take_distributor().kill();
    let (leader, next) = poll("a new leader", DEADLINE, || {
        [(a1, &d1), (a2, &d2)]
            .into_iter()
            .find(|(a, _)| listening(*a))
            .map(|(a, d)| (a, d.id()))
    });
    let took = killed.elapsed();
    eprintln!("failover: leader SIGKILLed to a new leader listening in {took:?} (lease {LEASE})");
    stack.distributor_addr = leader;
    // seccompctl given every replica finds the one that serves.
    let all = format!("http://127.0.0.1:1,http://{a1},http://{a2}");
    let out = std::process::Command::new(integration_tests::bin("seccompctl"))
        .args(["--distributor", &all, "rollout", "list", "-o", "json"])
        .env_remove("SECCOMP_DISTRIBUTOR")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("r1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rollout is where it was, and resumes from the same wave on the new leader.
    let r = rollout(&stack, "r1");
    assert_eq!(r["rollout"]["state"], "Paused", "{r}");
    let resumed_ms = now_ms();
    stack.ctl_ok(&["rollout", "resume", "r1"]);
    let expected = format!("0644 root:root sha256:{}", &sha256_hex(PROFILE)[..12]);
    for node in ["node-1", "node-2", "node-3"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }
    poll("r1 completed", DEADLINE, || {
        (rollout(&stack, "r1")["rollout"]["state"] == "Completed").then_some(())
    });
    assert_eq!(
        fingerprint(&stack.nodes[wave1].path(WEB)),
        before,
        "the wave-1 node's file was not rewritten after the failover"
    );
    // The history of every node, through the failover: only version 1 ever sent, and to
    // the second wave's nodes only after the resume.
    let v1 = sha256_hex(PROFILE);
    for (i, node) in stack.nodes.iter().enumerate() {
        let got = stack.history(i);
        assert!(!got.is_empty(), "{}: no Desired recorded", node.name);
        for (at, files) in &got {
            if let Some(sha) = files.get(WEB) {
                assert_eq!(*sha, v1, "{} was sent other content at {at}", node.name);
                if i != wave1 {
                    assert!(
                        *at >= resumed_ms,
                        "{} (wave 2) got version 1 at {at}, before the resume at {resumed_ms}",
                        node.name
                    );
                }
            }
        }
    }

    // SIGSTOP the new leader past its lease: the last replica takes over; after SIGCONT the
    // stopped one finds itself deposed and stops serving.
    let (stopped, standby_proc, standby_addr) = if next == d1.id() {
        (&d1, &d2, a2)
    } else {
        (&d2, &d1, a1)
    };
    stopped.signal("STOP");
    poll("the last replica to lead", DEADLINE, || {
        standby_proc.logs().contains("elected leader").then_some(())
    });
    stopped.signal("CONT");
    poll("the stopped leader to step down", DEADLINE, || {
        let logs = stopped.logs();
        (logs.contains("stepping down") || logs.contains("no longer the leader")).then_some(())
    });
    poll("the deposed leader's port closed", DEADLINE, || {
        (!listening(leader)).then_some(())
    });
    stack.distributor_addr = standby_addr;
    poll("the third leader to answer", DEADLINE, || {
        stack
            .ctl(&["rollout", "list"])
            .status
            .success()
            .then_some(())
    });
    // The fleet carries on under it: a new version reaches every node.
    let v2: Vec<u8> = String::from_utf8(PROFILE.to_vec())
        .unwrap()
        .replace("\"write\"", "\"write\",\"close\"")
        .into_bytes();
    std::fs::write(&file, &v2).unwrap();
    stack.ctl_ok(&["profile", "publish", "web", file.to_str().unwrap()]);
    stack.ctl_ok(&[
        "rollout",
        "create",
        "web@2",
        "--selector",
        "os=linux",
        "--waves",
        "100%",
        "--wait",
    ]);
    let expected = format!("0644 root:root sha256:{}", &sha256_hex(&v2)[..12]);
    for node in ["node-1", "node-2", "node-3"] {
        stack.wait_applied(node, WEB, &expected, DEADLINE);
    }
    // Over the whole run, every node was only ever sent version 1 or version 2, and
    // version 1 never after version 2.
    let v2_sha = sha256_hex(&v2);
    for (i, node) in stack.nodes.iter().enumerate() {
        let mut seen_v2 = false;
        for (at, files) in stack.history(i) {
            match files.get(WEB).map(String::as_str) {
                Some(s) if s == v2_sha => seen_v2 = true,
                Some(s) if s == v1 => assert!(!seen_v2, "{}: back to version 1 at {at}", node.name),
                None => {}
                Some(other) => panic!("{}: sent {other} at {at}", node.name),
            }
        }
        assert!(seen_v2, "{}: never sent version 2", node.name);
    }
}

/// The requests a fake API server saw: method, path, body.
type Requests = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A fake Kubernetes API server on loopback: answers every request with a Pod and records
/// the method, path and body of each (HTTP/1.1, as kube speaks to an `http://` server).
fn fake_api() -> (SocketAddr, Requests) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Requests::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap_or("").to_owned(),
                        parts.next().unwrap_or("").to_owned(),
                    );
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = header.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    log.lock().unwrap().push((
                        method,
                        path,
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    let reply = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"seccomp-distributor-0","namespace":"seccomp-system"}}"#;
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn the_leader_labels_its_pod_and_takes_the_label_off_when_it_stops() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let (api, seen) = fake_api();
    let scratch = tempfile::tempdir().unwrap();
    let kubeconfig = scratch.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n"
        ),
    )
    .unwrap();
    let mut args = replica_args(&etcd, "d0");
    args.extend(
        [
            "--leader-pod",
            "seccomp-distributor-0",
            "--leader-pod-namespace",
            "seccomp-system",
        ]
        .map(str::to_owned),
    );
    let mut stack = Stack::start_tuned(
        &[],
        Tuning {
            distributor_args: args,
            distributor_env: vec![("KUBECONFIG".into(), kubeconfig.display().to_string())],
            ..Tuning::default()
        },
    );
    let label = |body: &str| -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(v["metadata"]["labels"]["seccomp.dev/leader"].clone())
    };
    poll("the leader's label set", DEADLINE, || {
        let seen = seen.lock().unwrap();
        seen.iter()
            .any(|(m, p, b)| {
                m == "PATCH"
                    && p.starts_with("/api/v1/namespaces/seccomp-system/pods/seccomp-distributor-0")
                    && label(b) == Some(serde_json::json!("true"))
            })
            .then_some(())
    });
    assert!(stack.take_distributor().terminate().success());
    let seen = seen.lock().unwrap().clone();
    let last = seen.last().unwrap();
    assert_eq!(
        label(&last.2),
        Some(serde_json::Value::Null),
        "the label is taken off on the way out: {seen:?}"
    );
}
