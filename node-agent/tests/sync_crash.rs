#![allow(clippy::unwrap_used)]
//! SIGKILL in the middle of writes, through the real `seccomp-node-agent` binary connected to
//! the real distributor. Every round publishes a new version and rolls it out, then starts the
//! agent with `SECCOMP_AGENT_PAUSE` so it stops inside the atomic write at a chosen point, and
//! kills it there (or releases it and kills it right after). The final path must always hold
//! the complete old file or the complete new one, with the mode that goes with it. A
//! restarted agent then converges, cleans up after its killed predecessors, and stops
//! cleanly on SIGTERM.

mod common;
mod stack;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Node, SECCOMP_ID, machine_name, stat_cli};
use seccomp_node_agent::PausePoint;
use seccomp_node_agent::hook::PAUSE_ENV;
use seccomp_proto::distributor::v1 as pb;
use stack::{Stack, sha256};

const BIN: &str = env!("CARGO_BIN_EXE_seccomp-node-agent");
const WEB: &str = "/var/lib/kubelet/seccomp/web.json";
/// Each pause point twice: killed exactly there, then released and killed right after.
const ROUNDS: usize = 8;
const BUDGET: Duration = Duration::from_secs(120);
const STEP_DEADLINE: Duration = Duration::from_secs(20);

/// A large, distinct, self-describing profile per version, so a torn file cannot pass as one.
fn content(version: usize) -> Vec<u8> {
    let pad = char::from(b'a' + (version % 26) as u8)
        .to_string()
        .repeat(256 * 1024);
    format!("{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"version\":{version},\"pad\":\"{pad}\"}}")
        .into_bytes()
}

/// The mode each version is rolled out with, so a mode can be matched to its content.
fn mode(version: usize) -> u32 {
    if version.is_multiple_of(2) {
        0o644
    } else {
        0o640
    }
}

/// The real agent binary, its stdout lines delivered through a channel so that waiting for a
/// pause has a deadline; its log goes to a file.
struct AgentProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl AgentProcess {
    fn spawn(url: &str, node: &Node, pause: Option<PausePoint>) -> Self {
        let labels = node.tmp.path().join("labels");
        // As the Downward API writes them.
        std::fs::write(&labels, "kubernetes.io/os=\"linux\"\nrole=\"crash-test\"\n").unwrap();
        let log = node.tmp.path().join("agent.log");
        let mut command = Command::new(BIN);
        command
            .arg("--distributor")
            .arg(url)
            .args(["--node-name", "node-a", "--labels-file"])
            .arg(&labels)
            .arg("--host-root")
            .arg(&node.host)
            .arg("--state-dir")
            .arg(&node.state)
            .args(["--heartbeat", "1s", "--scan-interval", "1m"])
            .env_remove("NODE_NAME")
            .env_remove("SECCOMP_AGENT_LABELS")
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        match pause {
            Some(point) => command.env(PAUSE_ENV, point.as_str()),
            None => command.env_remove(PAUSE_ENV),
        };
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (with a deadline) for the announcement of the pause.
    fn wait_paused(&mut self, point: PausePoint, path: &str) {
        let line = self.lines.recv_timeout(STEP_DEADLINE).unwrap_or_else(|_| {
            let _ = self.child.kill();
            panic!("the agent never paused at {point}:\n{}", self.log())
        });
        assert_eq!(line, format!("paused {point} {path}"), "{}", self.log());
    }

    fn release(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (with a deadline) for the exit.
    async fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        stack::eventually("the agent exits after SIGTERM", STEP_DEADLINE, || {
            let exited = self.child.try_wait().unwrap();
            async move { exited }
        })
        .await
    }
}

async fn roll_out(stack: &Stack, version: usize) {
    stack.publish("web", &content(version)).await;
    stack
        .rollout(
            "web",
            pb::Target {
                selector: [("kubernetes.io/os".to_owned(), "linux".to_owned())].into(),
                mode: format!("{:04o}", mode(version)),
                group: "seccompgroup".into(),
                ..Default::default()
            },
            None,
        )
        .await;
}

/// Which version the file at `path` holds, complete; fails on anything else.
fn version_on_disk(path: &Path, candidates: &[usize], round: usize, point: PausePoint) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let found = candidates
        .iter()
        .copied()
        .find(|v| bytes == content(*v))
        .unwrap_or_else(|| {
            let other = (0..=ROUNDS + 1).find(|v| bytes == content(*v));
            panic!(
                "round {round} ({point}): {} bytes at the final path, none of versions \
                 {candidates:?} complete (complete version: {other:?})",
                bytes.len()
            )
        });
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.gid()),
        (mode(found), SECCOMP_ID),
        "round {round} ({point}): mode and group go with the content"
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_leaves_old_or_new_and_a_restarted_agent_converges() {
    let started = Instant::now();
    let stack = Stack::start().await;
    let url = stack.distributor_url();
    let node = Node::new();
    let target = node.path(WEB);

    // Version 1 lands; SIGTERM stops the agent cleanly.
    roll_out(&stack, 1).await;
    let agent = AgentProcess::spawn(&url, &node, None);
    let listed = stack
        .converged("node-a", WEB, Some(&sha256(&content(1))))
        .await;
    assert_eq!(
        listed.labels["role"], "crash-test",
        "labels from the labels file"
    );
    let log = agent.log();
    let status = agent.terminate().await;
    assert!(status.success(), "SIGTERM: {status:?}\n{log}");
    let mut current = version_on_disk(&target, &[1], 0, PausePoint::TempCreated);

    for round in 0..ROUNDS {
        assert!(
            started.elapsed() < BUDGET,
            "out of time after {round} rounds"
        );
        let point = PausePoint::ALL[round % PausePoint::ALL.len()];
        let release = round >= PausePoint::ALL.len();
        let new = round + 2;
        roll_out(&stack, new).await;

        let mut agent = AgentProcess::spawn(&url, &node, Some(point));
        agent.wait_paused(point, WEB);
        if release {
            agent.release();
        }
        agent.kill();

        let found = version_on_disk(&target, &[current, new], round, point);
        if !release {
            // Killed exactly there: before the rename the old file stays, after it the new.
            let expected = if point == PausePoint::AfterRename {
                new
            } else {
                current
            };
            assert_eq!(found, expected, "round {round}: killed at {point}");
        }
        current = found;
    }

    // A restarted agent converges on the last version and removes its predecessors' temp files.
    let last = ROUNDS + 1;
    let agent = AgentProcess::spawn(&url, &node, None);
    let listed = stack
        .converged("node-a", WEB, Some(&sha256(&content(last))))
        .await;
    assert_eq!(
        version_on_disk(&target, &[last], ROUNDS, PausePoint::AfterRename),
        last
    );
    assert_eq!(
        stat_cli(&target),
        format!(
            "{:o} root {}",
            mode(last),
            machine_name("/etc/group", SECCOMP_ID)
        )
    );
    assert_eq!(listed.revision, listed.desired_revision);
    assert!(
        node.temp_leftovers().is_empty(),
        "{:?}",
        node.temp_leftovers()
    );
    let log = agent.log();
    let status = agent.terminate().await;
    assert!(status.success(), "SIGTERM: {status:?}\n{log}");
    assert!(started.elapsed() < BUDGET);
    stack.stop().await;
}
