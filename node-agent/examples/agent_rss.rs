#![allow(clippy::unwrap_used)]
//! Steady-state memory of the real `seccomp-node-agent` binary managing 100 profiles, connected
//! to the real distributor (DESIGN section 10: under 16 MiB RSS).
//!
//! ```sh
//! cargo build --release -p seccomp-node-agent --bin seccomp-node-agent
//! cargo run -p seccomp-node-agent --example agent_rss -- target/release/seccomp-node-agent
//! ```
//!
//! Runs the registry and the distributor in this process on loopback, starts the agent binary
//! (given as the argument) on a temp host root, then publishes 100 profiles the size of
//! Docker's default (13.5 KB; the shared fixture when present, a synthetic one otherwise) and
//! rolls each out to the agent's label, so the agent applies 100 growing sets. After the
//! distributor lists the node Applied with all 100 files, it edits 10 files by hand (each
//! repaired through inotify) and lets heartbeats and periodic full scans run for 30 s. Prints
//! the agent's VmRSS and VmHWM (peak) from `/proc/<pid>/status` along the way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;

const FILES: usize = 100;
const ROOT: &str = "/var/lib/kubelet/seccomp";

fn status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_owned())
        .unwrap_or_default()
}

fn report(pid: u32, when: &str) {
    println!(
        "{when}: VmRSS {}, VmHWM {}, threads {}",
        status(pid, "VmRSS:"),
        status(pid, "VmHWM:"),
        status(pid, "Threads:")
    );
}

fn template() -> String {
    ["../shared", "../../shared", "shared"]
        .iter()
        .find_map(|dir| {
            std::fs::read_to_string(
                Path::new(dir).join("fixtures/profiles/accept/valid-docker-default.json"),
            )
            .ok()
        })
        .unwrap_or_else(|| {
            format!(
                "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"pad\":\"{}\"}}",
                "x".repeat(13_400)
            )
        })
}

/// Distinct bytes per profile: an extra (ignored) key in front.
fn profile(template: &str, i: usize) -> Vec<u8> {
    let rest = template.trim_start().trim_start_matches('{');
    format!("{{\"comment\":\"p{i:03}\",{rest}").into_bytes()
}

async fn until<F, Fut>(what: &str, deadline: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agent_bin = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/release/seccomp-node-agent".to_owned()),
    );
    assert!(agent_bin.exists(), "no agent binary at {agent_bin:?}");
    let template = template();
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("etc")).unwrap();
    std::fs::create_dir_all(host.join("var/lib/kubelet/seccomp")).unwrap();
    std::fs::write(host.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(host.join("etc/group"), "root:x:0:\n").unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = format!("http://{}", listener.local_addr().unwrap());
    let config = seccomp_registry::Config::new(tmp.path().join("registry"));
    tokio::spawn(async move {
        seccomp_registry::run(config, listener, std::future::pending())
            .await
            .unwrap();
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let distributor = format!("http://{}", listener.local_addr().unwrap());
    let config = seccomp_distributor::Config::new(tmp.path().join("distributor"), &registry);
    tokio::spawn(async move {
        seccomp_distributor::run(config, listener, std::future::pending())
            .await
            .unwrap();
    });

    let mut agent = Command::new(&agent_bin)
        .arg("--distributor")
        .arg(&distributor)
        .args(["--node-name", "rss-node", "--label", "rss=yes"])
        .arg("--host-root")
        .arg(&host)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--heartbeat", "2s", "--scan-interval", "5s"])
        .env_remove("SECCOMP_AGENT_PAUSE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = agent.id();

    let connect = |url: String| async move {
        pb::distributor_client::DistributorClient::connect(url)
            .await
            .ok()
    };
    let node = |url: String| async move {
        let mut client = connect(url).await?;
        let nodes = client
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .ok()?
            .into_inner()
            .nodes;
        nodes.into_iter().find(|n| n.name == "rss-node")
    };
    until("the agent to connect", Duration::from_secs(30), || {
        let url = distributor.clone();
        async move { node(url).await.is_some_and(|n| n.connected) }
    })
    .await;
    report(pid, "connected, nothing managed");

    let started = Instant::now();
    let mut rc = reg::registry_client::RegistryClient::connect(registry.clone())
        .await
        .unwrap();
    let mut dc = connect(distributor.clone()).await.unwrap();
    for i in 0..FILES {
        let name = format!("p{i:03}");
        rc.publish(reg::PublishRequest {
            name: name.clone(),
            content: profile(&template, i),
            description: String::new(),
            expected_latest_version: None,
        })
        .await
        .unwrap();
        dc.create_rollout(pb::CreateRolloutRequest {
            profile: name,
            target: Some(pb::Target {
                selector: [("rss".to_owned(), "yes".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    until("100 files applied", Duration::from_secs(120), || {
        let url = distributor.clone();
        async move {
            node(url).await.is_some_and(|n| {
                n.state == pb::NodeState::Applied as i32
                    && n.revision == n.desired_revision
                    && n.files.len() == FILES + 1
            })
        }
    })
    .await;
    println!(
        "managed files: {FILES} of about {} bytes; 100 rollouts applied in {:?}",
        template.len(),
        started.elapsed()
    );
    report(pid, "converged");

    let dir = host.join(ROOT.trim_start_matches('/'));
    for round in 0..10 {
        let path = dir.join(format!("p{:03}.json", round * 7));
        let want = std::fs::read(&path).unwrap();
        std::fs::write(&path, "edited by hand").unwrap();
        until("a repair", Duration::from_secs(30), || {
            let ok = std::fs::read(&path).is_ok_and(|b| b == want);
            async move { ok }
        })
        .await;
    }
    report(pid, "after 10 hand edits, each repaired");
    for second in [10, 20, 30] {
        tokio::time::sleep(Duration::from_secs(10)).await;
        report(
            pid,
            &format!("steady state, {second} s later (heartbeats, full scans every 5 s)"),
        );
    }
    let node = node(distributor.clone()).await.unwrap();
    println!(
        "distributor: node connected {}, revision {} (desired {})",
        node.connected, node.revision, node.desired_revision
    );

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = agent.wait().unwrap();
    println!("agent exit after SIGTERM: {status}");
}
