#![allow(clippy::unwrap_used)]
//! SIGKILL in the middle of writes: the real apply binary is stopped at each pause point of
//! the atomic write (or released and killed right after), many times over. The final path
//! must always hold the old complete file or the new complete file (with the matching mode),
//! never a partial one; the record must always load; and a fresh apply afterwards converges,
//! removes the agent's temp leftovers, and still knows the file is its own.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Node, ROOT};
use seccomp_node_agent::hook::PAUSE_ENV;
use seccomp_node_agent::{Applier, PausePoint};

const BIN: &str = env!("CARGO_BIN_EXE_seccomp-agent-apply");
const ITERATIONS: usize = 50;
const BUDGET: Duration = Duration::from_secs(90);
const STEP_DEADLINE: Duration = Duration::from_secs(30);

/// A large, distinct, self-describing profile per version, so a torn file cannot pass as one.
fn content(version: usize) -> String {
    let pad = char::from(b'a' + (version % 26) as u8)
        .to_string()
        .repeat(256 * 1024);
    format!("{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"version\":{version},\"pad\":\"{pad}\"}}")
}

fn mode(version: usize) -> u32 {
    if version.is_multiple_of(2) {
        0o644
    } else {
        0o640
    }
}

fn write_spec(node: &Node, revision: &str, version: usize) -> PathBuf {
    let spec = serde_json::json!({
        "host_root": node.host,
        "allowed_root": ROOT,
        "state_dir": node.state,
        "revision": revision,
        "files": [{
            "path": format!("{ROOT}/web.json"),
            "kind": "file",
            "content": content(version),
            "mode": mode(version),
            "owner": "root",
            "group": "seccompgroup",
        }],
    });
    let path = node.tmp.path().join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

/// The apply binary, with its stdout lines delivered through a channel so waiting for the
/// pause announcement has a deadline.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn spawn(spec: &Path, pause: Option<PausePoint>) -> Self {
        let mut command = Command::new(BIN);
        command
            .arg(spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
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
        Self { child, lines }
    }

    /// Waits (with a deadline) for `paused <point> ...` on stdout.
    fn wait_paused(&mut self, point: PausePoint) {
        let deadline = Instant::now() + STEP_DEADLINE;
        let want = format!("paused {point} ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(&want) => return,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("agent never paused at {point}: {}", self.stderr());
                }
            }
        }
    }

    fn release(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    fn kill(mut self) {
        // SIGKILL; the process may have finished already after a release.
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }

    /// Runs to completion and returns (success, stdout).
    fn finish(mut self) -> (bool, String) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        let out: Vec<String> = self.lines.try_iter().collect();
        assert!(
            status.success() || !out.is_empty(),
            "agent failed: {}",
            self.stderr()
        );
        (status.success(), out.join("\n"))
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

#[test]
fn sigkill_mid_write_never_leaves_a_partial_file() {
    let node = Node::new();
    let target = node.path(&format!("{ROOT}/web.json"));
    let (ok, out) = Agent::spawn(&write_spec(&node, "v0", 0), None).finish();
    assert!(ok, "{out}");
    let mut current = 0usize;

    let started = Instant::now();
    let mut done = 0;
    let mut kept_old = 0;
    let mut got_new = 0;
    for i in 1..=ITERATIONS {
        if started.elapsed() > BUDGET {
            break;
        }
        let point = PausePoint::ALL[i % PausePoint::ALL.len()];
        let release = (i / PausePoint::ALL.len()) % 2 == 1;
        let mut agent = Agent::spawn(&write_spec(&node, &format!("v{i}"), i), Some(point));
        agent.wait_paused(point);
        if release {
            agent.release();
        }
        agent.kill();

        let bytes = std::fs::read(&target).unwrap();
        let meta = std::fs::symlink_metadata(&target).unwrap();
        let found = if bytes == content(i).as_bytes() {
            i
        } else {
            assert!(
                bytes == content(current).as_bytes(),
                "iteration {i} ({point}, release {release}): the file is neither version {current} nor {i} \
                 complete ({} bytes)",
                bytes.len()
            );
            current
        };
        assert_eq!(
            meta.mode() & 0o7777,
            mode(found),
            "iteration {i}: mode does not match the content"
        );
        assert_eq!(
            meta.gid(),
            common::SECCOMP_ID,
            "iteration {i}: group does not match the content"
        );
        if !release {
            // Killed exactly at the point: before the rename the old file stays, after it the new.
            let expected = if point == PausePoint::AfterRename {
                i
            } else {
                current
            };
            assert_eq!(found, expected, "iteration {i} ({point})");
        }
        if found == i {
            got_new += 1;
        } else {
            kept_old += 1;
        }
        current = found;
        // The record is never torn either: it always loads.
        drop(Applier::open(node.config()).unwrap());
        done += 1;
    }
    assert!(
        done >= 2 * PausePoint::ALL.len(),
        "only {done} iterations within {BUDGET:?}"
    );
    assert!(kept_old > 0 && got_new > 0, "old {kept_old}, new {got_new}");
    eprintln!(
        "{done} kills in {:?}: old kept {kept_old}, new landed {got_new}",
        started.elapsed()
    );

    let leftovers = node.temp_leftovers();
    assert!(
        !leftovers.is_empty(),
        "kills before the rename leave temp files for cleanup to find"
    );
    assert!(
        leftovers.iter().all(|p| p.starts_with(node.path(ROOT))),
        "{leftovers:?}"
    );

    // A fresh apply converges and removes the leftovers.
    let last = 1000;
    let (ok, out) = Agent::spawn(&write_spec(&node, "final", last), None).finish();
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(&target).unwrap(), content(last).as_bytes());
    assert_eq!(
        std::fs::metadata(&target).unwrap().mode() & 0o7777,
        mode(last)
    );
    assert_eq!(node.temp_leftovers(), Vec::<PathBuf>::new());

    // And the agent still knows the file is its own: it removes it once it is no longer desired.
    let mut applier = Applier::open(node.config()).unwrap();
    assert_eq!(applier.revision(), "final");
    assert!(applier.check_drift().is_empty());
    let applied = applier.apply("empty", &[]).unwrap();
    assert_eq!(applied.removed, vec![format!("{ROOT}/web.json")]);
    assert!(!target.exists());
}

#[test]
fn a_crash_before_the_first_write_is_cleaned_up_and_the_file_is_still_the_agents() {
    // Killed before the first rename of a brand-new file: the write-ahead record already names
    // it, so if it later lands and is then no longer desired, the agent removes it; and a file
    // that never landed is simply forgotten.
    let node = Node::new();
    let target = node.path(&format!("{ROOT}/web.json"));
    let mut agent = Agent::spawn(&write_spec(&node, "v1", 1), Some(PausePoint::BeforeRename));
    agent.wait_paused(PausePoint::BeforeRename);
    agent.kill();
    assert!(!target.exists());
    assert_eq!(node.temp_leftovers().len(), 1);

    let mut applier = Applier::open(node.config()).unwrap();
    assert_eq!(
        applier.revision(),
        "",
        "an interrupted apply is not a complete revision"
    );
    let applied = applier.apply("empty", &[]).unwrap();
    assert!(applied.removed.is_empty());
    drop(applier);

    let mut agent = Agent::spawn(&write_spec(&node, "v2", 2), Some(PausePoint::AfterRename));
    agent.wait_paused(PausePoint::AfterRename);
    agent.kill();
    assert_eq!(std::fs::read(&target).unwrap(), content(2).as_bytes());
    let mut applier = Applier::open(node.config()).unwrap();
    let applied = applier.apply("empty", &[]).unwrap();
    assert_eq!(applied.removed, vec![format!("{ROOT}/web.json")]);
    assert!(
        node.temp_leftovers().is_empty(),
        "{:?}",
        node.temp_leftovers()
    );
}
