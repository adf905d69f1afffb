#![allow(clippy::unwrap_used)]
//! Several distributor replicas on one real etcd (#18), over the real binaries: every
//! replica serves agents and commands, one leads (runs the engine). Agents spread over the
//! three; a rollout created on a follower pauses after wave 1 (the confirmation from
//! whichever replica that node is on reaching the leader); the leader is SIGKILLed, another
//! leads within its lease, its agents reconnect to the others, `resume` on a follower
//! passes through etcd to the new leader and the rollout completes from the same wave, no
//! file whose bytes did not change rewritten; a leader SIGSTOPped past its lease is
//! replaced, and after SIGCONT it follows (and passes commands on) instead of writing. A
//! history check over all of it. Skipped, loudly, without Debian's etcd.

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

/// Another replica, listening on `addr`.
fn replica(stack: &Stack, etcd: &EtcdCluster, id: &str, addr: SocketAddr) -> Proc {
    stack.spawn_replica(id, addr, &replica_args(etcd, id))
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

/// Times a replica's log says it became the leader.
fn terms(logs: &str) -> usize {
    logs.matches("leading: the rollout engine runs here")
        .count()
}

/// The URL an agent's last session is with, from its log.
fn connected_to(logs: &str) -> Option<String> {
    logs.lines()
        .rfind(|l| l.contains("connected") && l.contains("distributor="))
        .and_then(|l| l.split("distributor=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// How many nodes the stack's distributor (whichever replica) says are connected.
fn connected_count(stack: &Stack) -> Option<usize> {
    let nodes = stack.nodes_json()?;
    Some(
        nodes
            .as_array()?
            .iter()
            .filter(|n| n["connected"] == true)
            .count(),
    )
}

#[test]
fn replicas_all_serve_and_survive_their_leader() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let addrs = [free_addr(), free_addr(), free_addr()];
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let mut stack = Stack::start_tuned(
        &[
            ("node-1", &["os=linux", "zone=a"][..]),
            ("node-2", &["os=linux", "zone=b"][..]),
            ("node-3", &["os=linux", "zone=c"][..]),
        ],
        Tuning {
            distributor_args: replica_args(&etcd, "d0"),
            distributor_port: addrs[0].port(),
            ..Tuning::default()
        },
    );
    poll("every agent on d0", DEADLINE, || {
        (connected_count(&stack)? == 3).then_some(())
    });
    // The others start with the agents already connected to d0: they learn it from what
    // they read at start, not from a change.
    let mut procs: Vec<Option<Proc>> = vec![
        None,
        Some(replica(&stack, &etcd, "d1", addrs[1])),
        Some(replica(&stack, &etcd, "d2", addrs[2])),
    ];
    for a in &addrs {
        poll("every replica to listen", DEADLINE, || {
            listening(*a).then_some(())
        });
    }
    // d0 came first: it leads.
    poll("d0 to lead", DEADLINE, || {
        (terms(&stack.distributor.as_ref().unwrap().logs()) == 1).then_some(())
    });
    for a in &addrs[1..] {
        stack.distributor_addr = *a;
        poll("d0's agents known to the others", DEADLINE, || {
            (connected_count(&stack)? == 3).then_some(())
        });
    }
    // Spread the agents: node i starts with replica i, then the others.
    stack.tuning.agent_urls = (0..3)
        .map(|i| (0..3).map(|k| urls[(i + k) % 3].clone()).collect())
        .collect();
    for i in 0..3 {
        stack.nodes[i].agent.take().unwrap().terminate();
        stack.start_agent(i, None);
    }
    for (i, node) in stack.nodes.iter().enumerate() {
        poll("each agent on its own replica", DEADLINE, || {
            let logs = node.agent.as_ref().unwrap().logs();
            (connected_to(&logs).as_deref() == Some(urls[i].as_str())).then_some(())
        });
    }

    // Commands on a follower: publish, then a rollout that pauses after its first wave.
    stack.distributor_addr = addrs[1];
    let file = stack.dir.path().join("web.json");
    std::fs::write(&file, PROFILE).unwrap();
    stack.ctl_ok(&["profile", "publish", "web", file.to_str().unwrap()]);
    // Every replica knows every node, wherever its agent is.
    for a in addrs {
        stack.distributor_addr = a;
        poll("every node on every replica", DEADLINE, || {
            (connected_count(&stack)? == 3).then_some(())
        });
    }
    stack.distributor_addr = addrs[1];
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
    // The follower's own view agrees with the leader's.
    stack.distributor_addr = addrs[0];
    assert_eq!(rollout(&stack, "r1")["rollout"]["state"], "Paused");

    // SIGKILL the leader: another replica leads within the lease (plus an election).
    let killed = Instant::now();
    let killed_ms = now_ms();
    stack.take_distributor().kill();
    let next = poll("a new leader", DEADLINE, || {
        (1..3).find(|&i| terms(&procs[i].as_ref().unwrap().logs()) == 1)
    });
    let took = killed.elapsed();
    eprintln!("failover: leader SIGKILLed to a new leader in {took:?} (lease {LEASE})");
    let other = 3 - next;
    // node-1's agent was on the killed replica: it is on another one now.
    poll("node-1's agent on another replica", DEADLINE, || {
        let logs = stack.nodes[0].agent.as_ref().unwrap().logs();
        connected_to(&logs).filter(|u| u != &urls[0]).map(|_| ())
    });
    // The rollout is where it was; `resume` on the follower goes to the new leader.
    stack.distributor_addr = addrs[other];
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
    // The audit log, kept in etcd, names the follower's caller for both commands.
    let audit = stack.ctl_ok(&["audit", "-o", "json"]);
    assert!(
        audit.contains("CreateRollout") && audit.contains("ResumeRollout"),
        "{audit}"
    );
    // The history of every node, through the failover: only version 1 ever sent, nothing
    // at all between the kill and the resume (a reconnected agent that has its set is sent
    // nothing), and to the second wave's nodes only after the resume.
    let v1 = sha256_hex(PROFILE);
    let mut wave2_at = u64::MAX;
    for (i, node) in stack.nodes.iter().enumerate() {
        let got = stack.history(i);
        assert!(!got.is_empty(), "{}: no Desired recorded", node.name);
        for (at, files) in &got {
            assert!(
                !(killed_ms..resumed_ms).contains(at),
                "{} was sent a set at {at}, between the kill and the resume",
                node.name
            );
            if i != wave1 && files.contains_key(WEB) {
                wave2_at = wave2_at.min(*at);
            }
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

    eprintln!(
        "failover: leader SIGKILLed to wave 2 moving in {} ms (resume given once a new leader was seen)",
        wave2_at.saturating_sub(killed_ms)
    );

    // SIGSTOP the new leader past its lease: the last replica leads; after SIGCONT the
    // stopped one finds itself deposed and follows, still serving.
    let stopped = procs[next].as_ref().unwrap();
    stopped.signal("STOP");
    poll("the last replica to lead", DEADLINE, || {
        (terms(&procs[other].as_ref().unwrap().logs()) == 1).then_some(())
    });
    stopped.signal("CONT");
    poll("the stopped leader to step down", DEADLINE, || {
        stopped
            .logs()
            .contains("no longer the leader")
            .then_some(())
    });
    assert!(listening(addrs[next]), "a deposed leader goes on serving");
    // A new version, created on the deposed one (passed to the leader), reaches every node.
    stack.distributor_addr = addrs[next];
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
    for p in procs.iter_mut().filter_map(Option::take) {
        assert!(p.terminate().success());
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
