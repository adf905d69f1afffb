//! `seccompctl dev` as a user runs it: the real binary, its demo to the end, the files on the
//! simulated nodes, `seccompctl nodes` against the printed address, Ctrl-C, and a restart on
//! the same data that creates nothing new; an empty data directory is a first start; a
//! SIGKILLed dev leaves no service running.
//!
//! `dev` runs the service binaries, which `cargo test --workspace` builds next to
//! `seccompctl`; `cargo test -p seccompctl` alone does not, and then these tests say so and
//! skip.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The seed fixture's bytes (also checked against the fixture itself when it is present).
const SEED: &str = "{\n\"defaultAction\": \"SCMP_ACT_LOG\",\n\"architectures\": [\n\"SCMP_ARCH_X86_64\",\n\"SCMP_ARCH_X86\",\n\"SCMP_ARCH_X32\"\n],\n\"syscalls\": [\n{\n\"names\": [\n\"arch_prctl\",\n\"sched_yield\",\n\"futex\",\n\"write\",\n\"mmap\",\n\"exit_group\",\n\"madvise\",\n\"rt_sigprocmask\",\n\"getpid\",\n\"gettid\",\n\"tgkill\",\n\"rt_sigaction\",\n\"read\",\n\"getpgrp\"\n],\n\"action\": \"SCMP_ACT_ALLOW\"\n},\n{\n\"names\": [\n\"add_key\",\n\"keyctl\",\n\"ptrace\"\n],\n\"action\": \"SCMP_ACT_ERRNO\"\n}\n]\n}\n";

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("seccompctl")
}

/// The service binaries `dev` runs, as `cargo test --workspace` builds them.
const SERVICES: [&str; 3] = [
    "seccomp-registry",
    "seccomp-distributor",
    "seccomp-node-agent",
];

/// Whether the service binaries are built next to `seccompctl`; says so loudly when not.
fn services_built(test: &str) -> bool {
    let bin = bin();
    let dir = bin.parent().unwrap();
    let missing: Vec<&str> = SERVICES
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    // Past the test harness's capture (which only `eprintln!` goes through), so that a
    // passing run shows it too.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: `seccompctl dev` needs {}, not built in {}; build the \
         workspace (`cargo test --workspace`, or `cargo build --workspace --bins` first)",
        missing.join(", "),
        dir.display()
    );
    false
}

/// A running `seccompctl dev` and its standard output, line by line.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(data: &Path) -> Dev {
        let mut child = Command::new(bin())
            .env_remove("SECCOMP_OUTPUT")
            .args([
                "dev",
                "--nodes",
                "2",
                "--registry-port",
                "0",
                "--distributor-port",
                "0",
                "--data-dir",
            ])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Read lines until one contains `needle`, within `timeout`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no line with {needle:?} ({e:?}); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The value of `var` on the printed `export` line.
    fn exported(&self, var: &str) -> String {
        self.seen
            .iter()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .flat_map(str::split_whitespace)
            .find_map(|kv| kv.strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("no {var} on an export line"))
            .to_owned()
    }

    /// SIGINT, then the exit status within a deadline.
    fn interrupt(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "{}", self.seen.join("\n"));
                return;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("seccompctl dev did not stop within 30s after SIGINT");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ctl(dev: &Dev, args: &[&str]) -> String {
    let out = Command::new(bin())
        .env_remove("SECCOMP_OUTPUT")
        .env("SECCOMP_REGISTRY", dev.exported("SECCOMP_REGISTRY"))
        .env("SECCOMP_DISTRIBUTOR", dev.exported("SECCOMP_DISTRIBUTOR"))
        .env("SECCOMP_CA", dev.exported("SECCOMP_CA"))
        .env("SECCOMP_TOKEN_FILE", dev.exported("SECCOMP_TOKEN_FILE"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dev_runs_the_demo_stays_up_stops_and_restarts_without_duplicates() {
    if !services_built("dev_runs_the_demo_stays_up_stops_and_restarts_without_duplicates") {
        return;
    }
    if let Ok(fixture) = std::fs::read_to_string("../../shared/fixtures/seed/myprofile.json") {
        assert_eq!(fixture, SEED, "the embedded seed matches the fixture");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");

    // First start: the demo runs by itself, to the end.
    let mut dev = Dev::start(&data);
    dev.wait_for("demo complete", Duration::from_secs(60));
    let text = dev.seen.join("\n");
    for needle in [
        "export SECCOMP_REGISTRY=https://127.0.0.1:",
        "SECCOMP_CA=",
        "SECCOMP_TOKEN_FILE=",
        "wave 2 of 3 started",
        "Completed, wave 3/3, 2/2 applied",
        "mode 0644",
        "Pending: rollback by",
        "Completed, wave 1/1, 2/2 applied",
        "RolledBack: 1 touched node(s) back on version 1",
        "Completed, wave 1/1, 1/1 applied",
        "kind: NodeConfigItem",
        "localhostProfile: myprofile.json",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    for node in ["node-1", "node-2"] {
        let file = data.join(format!(
            "nodes/{node}/var/lib/kubelet/seccomp/myprofile.json"
        ));
        let bytes = std::fs::read_to_string(&file).unwrap();
        if node == "node-1" {
            assert_eq!(bytes, SEED, "pool=general keeps the seed");
        } else {
            assert!(bytes.contains("getppid"), "pool=secure got the new version");
        }
    }

    // A second terminal: every node applied.
    let nodes: serde_json::Value =
        serde_json::from_str(&ctl(&dev, &["nodes", "-o", "json"])).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for n in nodes {
        assert_eq!(n["state"], "Applied", "{n}");
    }
    let history = ctl(&dev, &["profile", "history", "myprofile", "-o", "json"]);
    assert!(history.contains("getppid"), "{history}");
    // Both services' audit logs, merged by time, name the demo's verified caller.
    let audit: serde_json::Value =
        serde_json::from_str(&ctl(&dev, &["audit", "-o", "json"])).unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let of = |service: &str, method: &str| {
        entries
            .iter()
            .any(|e| e["service"] == service && e["method"] == method && e["actor"] == "admin")
    };
    assert!(of("registry", "Publish"), "{audit}");
    assert!(of("distributor", "CreateRollout"), "{audit}");
    assert!(of("distributor", "Rollback"), "{audit}");
    let times: Vec<(i64, i32)> = entries
        .iter()
        .map(|e| {
            let t: prost_types::Timestamp = e["time"].as_str().unwrap().parse().unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    dev.interrupt();

    // Restart on the same data: the stack comes back, nothing new is stored.
    let mut dev = Dev::start(&data);
    dev.wait_for("seccompctl dev: ready", Duration::from_secs(60));
    dev.wait_for(
        "holds an earlier start's data: no demo",
        Duration::from_secs(10),
    );
    let again = ctl(&dev, &["profile", "history", "myprofile", "-o", "json"]);
    assert_eq!(again, history, "no new version on restart");
    dev.interrupt();
}

#[test]
fn an_empty_data_directory_is_a_first_start() {
    if !services_built("an_empty_data_directory_is_a_first_start") {
        return;
    }
    // As `mkdir` or a `tempfile` leaves it: it exists, nothing is stored yet.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(dir.path());
    dev.wait_for("seccompctl dev: ready", Duration::from_secs(60));
    dev.wait_for("== demo ==", Duration::from_secs(10));
    assert!(
        !dev.seen.iter().any(|l| l.contains("no demo")),
        "{}",
        dev.seen.join("\n")
    );
    dev.interrupt();
}

/// The children of process `parent`, with their command names and start times, from /proc.
fn children(parent: u32) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap() {
        let Ok(pid) = entry.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(stat) = stat(pid) else { continue };
        if stat.ppid == parent {
            out.push((pid, stat.comm, stat.start));
        }
    }
    out
}

struct Stat {
    comm: String,
    state: String,
    ppid: u32,
    start: String,
}

/// `/proc/PID/stat`: `pid (comm) state ppid ...`, the start time being field 22.
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        comm,
        state: fields.first()?.to_string(),
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.to_string(),
    })
}

#[test]
fn a_killed_dev_leaves_no_service_running() {
    if !services_built("a_killed_dev_leaves_no_service_running") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("dev"));
    dev.wait_for("seccompctl dev: ready", Duration::from_secs(60));
    let services = children(dev.child.id());
    let mut names: Vec<&str> = services.iter().map(|(_, comm, _)| comm.as_str()).collect();
    names.sort_unstable();
    // The kernel keeps 15 bytes of a command name.
    assert_eq!(
        names,
        [
            "seccomp-distrib",
            "seccomp-node-ag",
            "seccomp-node-ag",
            "seccomp-registr"
        ],
        "{services:?}"
    );

    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
    // Gone, a zombie nobody reaps, or its pid reused by another process: not running.
    let running = |&(pid, _, ref start): &(u32, String, String)| {
        stat(pid).is_some_and(|s| s.state != "Z" && s.start == *start)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<_> = services.iter().filter(|s| running(s)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after seccompctl dev was killed: {left:?} (stale service \
             binaries? `cargo build --workspace --bins`)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
