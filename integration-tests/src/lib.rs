//! End-to-end tests of the whole system: the real binaries started as child processes
//! on loopback, with temporary data directories, killed with signals for fault tests.
//!
//! The scenarios live in `tests/scenarios.rs`; this library holds the small fixtures that
//! start and stop processes ([`Proc`], [`Stack`]) and poll for conditions with deadlines
//! ([`poll`]).
//!
//! # Where the binaries come from
//!
//! Cargo only exposes `CARGO_BIN_EXE_<name>` to the tests of the package that owns the
//! binary, and a dependency on a crate builds its library, not its binaries. So [`bin`]
//! looks for `seccomp-registry`, `seccomp-distributor`, `seccomp-node-agent` and `seccompctl`
//! next to the test executable's directory (`target/<profile>/deps/..`, i.e.
//! `target/<profile>/<name>`). `cargo test --workspace` builds every binary of the workspace
//! before running any test (each binary crate's own integration tests need it), so the
//! documented test command is enough. Running only this crate
//! (`cargo test -p integration-tests`) does **not** build them: run
//! `cargo build --workspace --bins` first, or a missing (or stale) binary is used; a missing
//! one fails the test with a message saying so.
//!
//! # Scenarios
//!
//! 1. publish, roll out to a selector in two waves (in order), every matching node confirmed
//!    (sha256, mode, owner), `seccompctl nodes` agrees with `stat` and the bytes on disk,
//!    non-matching nodes empty;
//! 2. SIGKILL the registry during a publish loop: every acknowledged version survives;
//! 3. SIGKILL the distributor mid-rollout (between two waves): restarted on the same data
//!    dir and port, the agents reconnect, the rollout goes on and completes;
//! 4. SIGKILL an agent mid-write (`SECCOMP_AGENT_PAUSE`): no partial file, converges after
//!    restart;
//! 5. SIGTERM the distributor for a while: files stay untouched; after the restart the
//!    agents reconnect and nothing is rewritten (inode and mtime unchanged);
//! 6. a version with an owner no node has fails in the first wave and is rolled back by
//!    itself, the other nodes never touched (inode and mtime unchanged); a manual
//!    `seccompctl rollback` puts the old bytes back on every node;
//! 7. a profile edited by hand on a node is repaired.
//! 8. an agent killed mid-rollout pauses the rollout when a wave reaches its node; it goes on
//!    by itself once the agent is back.
//! 9. an agent stopped with SIGSTOP mid-rollout (its connection open, its process silent) is
//!    Unknown once the keepalive pings go unanswered and the grace period passes, and the
//!    rollout pauses; after SIGCONT it reconnects and the rollout completes;
//! 10. the distributor's wall clock stepped two hours forward (libfaketime, Debian's
//!     `faketime`) while a node applies does not time the node out: deadlines run on the
//!     monotonic clock.

pub mod etcd;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How often [`poll`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Deadline for a process to print that it listens, or to exit after a signal.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// uid and gid of the node-only `seccompuser` and `seccompgroup`.
pub const SECCOMP_ID: u32 = 65534;

/// The node's `/etc/passwd`.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    seccompuser:x:65534:65534:only on this node:/nonexistent:/usr/sbin/nologin\n";
/// The node's `/etc/group`.
pub const GROUP: &str = "root:x:0:\nseccompgroup:x:65534:\n";

/// Path of a workspace binary, built by `cargo test --workspace` (see the crate docs).
///
/// # Panics
/// When the test executable's location is unknown or the binary is not built.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .unwrap_or_else(|| panic!("no directory above {}", exe.display()));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (which builds every binary of the \
         workspace) or `cargo build --workspace --bins` before `cargo test -p integration-tests`",
        path.display()
    );
    path
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some`, for at most `deadline`.
///
/// # Panics
/// When the deadline passes, naming `what`.
pub fn poll<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A child process with stdout and stderr captured to files; its logs are printed when a
/// test panics while it is alive, and it is SIGKILLed when dropped.
pub struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Starts binary `name` with `args` and `envs`; logs go to `<logs>/<label>.{out,err}`
    /// (appended, so a restarted process keeps its predecessor's log).
    ///
    /// # Panics
    /// When the binary is missing or cannot be started.
    pub fn spawn(
        name: &str,
        label: &str,
        logs: &Path,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> Self {
        let stdout = logs.join(format!("{label}.out"));
        let stderr = logs.join(format!("{label}.err"));
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        // Start every incarnation's stdout afresh, so `listening on` is the current one.
        let _ = std::fs::remove_file(&stdout);
        let mut command = Command::new(bin(name));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("SECCOMP_AGENT_PAUSE")
            .stdin(Stdio::piped())
            .stdout(open(&stdout))
            .stderr(open(&stderr));
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdin = child.stdin.take();
        Self {
            label: label.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Its stdout and stderr so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "----- {} (pid {}) stdout -----", self.label, self.id());
        s.push_str(&self.stdout());
        let _ = writeln!(s, "----- {} stderr -----", self.label);
        s.push_str(&std::fs::read_to_string(&self.stderr).unwrap_or_default());
        s
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    ///
    /// # Panics
    /// When the process exits first or the deadline passes.
    pub fn wait_line(&mut self, prefix: &str, deadline: Duration) -> String {
        let what = format!("{} to print {prefix:?}", self.label);
        poll(&what, deadline, || {
            let out = self.stdout();
            if let Some(rest) = out.lines().find_map(|l| l.strip_prefix(prefix)) {
                return Some(rest.to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before printing {prefix:?}",
                    self.label
                );
            }
            None
        })
    }

    /// Waits for `listening on ADDR` and returns the address.
    pub fn wait_listening(&mut self) -> SocketAddr {
        let addr = self.wait_line("listening on ", START_DEADLINE);
        addr.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad address {addr:?}: {e}", self.label))
    }

    /// Writes one line on its stdin (releases a pause point).
    pub fn release(&mut self) {
        use std::io::Write as _;
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n").and_then(|()| stdin.flush());
        }
    }

    /// Sends `signal` (`KILL`, `TERM`, ...) with `kill(1)`.
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{signal} {} failed", self.id());
    }

    /// Waits (with a deadline) for the process to exit.
    ///
    /// # Panics
    /// When it does not exit in time.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.label);
        poll(&what, deadline, || self.child.try_wait().ok().flatten())
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.signal("KILL");
        self.wait_exit(START_DEADLINE);
    }

    /// SIGTERM, wait for the exit, and return its status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(START_DEADLINE)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A node: its host root (with `etc/passwd`, `etc/group`, `var/lib/kubelet/`), state
/// directory and labels, and the agent process when running.
pub struct Node {
    /// Node name.
    pub name: String,
    /// `k=v` labels.
    pub labels: Vec<String>,
    /// Host root on this machine.
    pub host: PathBuf,
    /// The agent's state directory.
    pub state: PathBuf,
    /// The running agent.
    pub agent: Option<Proc>,
}

impl Node {
    /// Where node path `node_path` is on this machine.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.host.join(node_path.trim_start_matches('/'))
    }
}

/// Registry, distributor and node agents on loopback, with their data in one temp dir.
pub struct Stack {
    /// The registry, when running.
    pub registry: Option<Proc>,
    /// The distributor, when running.
    pub distributor: Option<Proc>,
    /// Registry address.
    pub registry_addr: SocketAddr,
    /// Distributor address.
    pub distributor_addr: SocketAddr,
    /// The nodes, in the order given to [`Stack::start`].
    pub nodes: Vec<Node>,
    /// How the distributor runs (at every start).
    pub tuning: Tuning,
    ctl_runs: std::sync::atomic::AtomicU64,
    /// Data dirs, node roots and logs. Declared last so that it is removed after the
    /// processes above were dropped (and printed their logs on failure).
    pub dir: tempfile::TempDir,
}

/// Extra arguments and environment of the distributor.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Appended to the registry's command line.
    pub registry_args: Vec<String>,
    /// Appended to every agent's command line.
    pub agent_args: Vec<String>,
    /// Node `i`'s agent is given `agent_urls[i]` (in that order) instead of the stack's
    /// distributor, when that list is there and not empty (agents spread over replicas).
    pub agent_urls: Vec<Vec<String>>,
    /// Appended to the distributor's command line.
    pub distributor_args: Vec<String>,
    /// Set in its environment.
    pub distributor_env: Vec<(String, String)>,
    /// The distributor's port (0: any free one). A fixed one for a distributor that may
    /// listen again on its own (a replica elected again).
    pub distributor_port: u16,
}

impl Stack {
    /// Starts the registry, the distributor and one agent per `(name, labels)`.
    ///
    /// # Panics
    /// When anything fails to start.
    pub fn start(nodes: &[(&str, &[&str])]) -> Self {
        Self::start_tuned(nodes, Tuning::default())
    }

    /// [`Stack::start`] with the distributor run as `tuning` says.
    ///
    /// # Panics
    /// When anything fails to start.
    pub fn start_tuned(nodes: &[(&str, &[&str])], tuning: Tuning) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        };
        mkdir(&dir.path().join("logs"));
        let unbound: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut stack = Self {
            dir,
            registry: None,
            distributor: None,
            registry_addr: unbound,
            distributor_addr: unbound,
            nodes: Vec::new(),
            tuning,
            ctl_runs: std::sync::atomic::AtomicU64::new(0),
        };
        stack.start_registry(0);
        stack.start_distributor(stack.tuning.distributor_port);
        for (name, labels) in nodes {
            let host = stack.dir.path().join("nodes").join(name);
            mkdir(&host.join("etc"));
            mkdir(&host.join("var/lib/kubelet"));
            let write = |p: PathBuf, s: &str| {
                std::fs::write(&p, s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            };
            write(host.join("etc/passwd"), PASSWD);
            write(host.join("etc/group"), GROUP);
            stack.nodes.push(Node {
                name: (*name).to_owned(),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                state: stack.dir.path().join("agent-state").join(name),
                host,
                agent: None,
            });
        }
        for i in 0..stack.nodes.len() {
            stack.start_agent(i, None);
        }
        stack
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// `http://` URL of the registry.
    pub fn registry_url(&self) -> String {
        format!("http://{}", self.registry_addr)
    }

    /// `http://` URL of the distributor.
    pub fn distributor_url(&self) -> String {
        format!("http://{}", self.distributor_addr)
    }

    /// Starts the registry on `port` (0: any) over its data dir and waits until it listens.
    pub fn start_registry(&mut self, port: u16) {
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            self.dir.path().join("registry").display().to_string(),
        ];
        args.extend(self.tuning.registry_args.iter().cloned());
        let mut p = Proc::spawn("seccomp-registry", "registry", &self.logs(), &args, &[]);
        self.registry_addr = p.wait_listening();
        self.registry = Some(p);
    }

    /// Starts the distributor on `port` (0: any) over its data dir and waits until it
    /// listens.
    pub fn start_distributor(&mut self, port: u16) {
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--registry".into(),
            self.registry_url(),
            "--data-dir".into(),
            self.dir.path().join("distributor").display().to_string(),
        ];
        args.extend(self.tuning.distributor_args.iter().cloned());
        let envs: Vec<(&str, &str)> = self
            .tuning
            .distributor_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut p = Proc::spawn(
            "seccomp-distributor",
            "distributor",
            &self.logs(),
            &args,
            &envs,
        );
        self.distributor_addr = p.wait_listening();
        self.distributor = Some(p);
    }

    /// Another distributor (a replica beside the stack's, `distributor-<id>` in the logs) on
    /// `addr`, with the stack's registry, its own data directory, and `args`; not waited for.
    pub fn spawn_replica(&self, id: &str, addr: SocketAddr, args: &[String]) -> Proc {
        let mut all = vec![
            "--listen".to_owned(),
            addr.to_string(),
            "--registry".into(),
            self.registry_url(),
            "--data-dir".into(),
            self.dir.path().join(id).display().to_string(),
        ];
        all.extend(args.iter().cloned());
        Proc::spawn(
            "seccomp-distributor",
            &format!("distributor-{id}"),
            &self.logs(),
            &all,
            &[],
        )
    }

    /// Takes the running registry out of the stack (to kill it).
    ///
    /// # Panics
    /// When it is not running.
    pub fn take_registry(&mut self) -> Proc {
        self.registry
            .take()
            .unwrap_or_else(|| panic!("no registry running"))
    }

    /// Takes the running distributor out of the stack (to kill it).
    ///
    /// # Panics
    /// When it is not running.
    pub fn take_distributor(&mut self) -> Proc {
        self.distributor
            .take()
            .unwrap_or_else(|| panic!("no distributor running"))
    }

    /// Starts node `i`'s agent, paused at `pause` (a `SECCOMP_AGENT_PAUSE` value) if given.
    pub fn start_agent(&mut self, i: usize, pause: Option<&str>) {
        let url = match self.tuning.agent_urls.get(i) {
            Some(urls) if !urls.is_empty() => urls.join(","),
            _ => self.distributor_url(),
        };
        let logs = self.logs();
        let node = &mut self.nodes[i];
        let mut args = vec![
            "--distributor".into(),
            url,
            "--node-name".into(),
            node.name.clone(),
            "--host-root".into(),
            node.host.display().to_string(),
            "--state-dir".into(),
            node.state.display().to_string(),
            "--heartbeat".into(),
            "1s".into(),
            "--scan-interval".into(),
            "2s".into(),
        ];
        for l in &node.labels {
            args.push("--label".into());
            args.push(l.clone());
        }
        args.extend(self.tuning.agent_args.iter().cloned());
        let history = self.dir.path().join("history");
        let _ = std::fs::create_dir_all(&history);
        let record = history
            .join(format!("{}.jsonl", node.name))
            .display()
            .to_string();
        let mut envs: Vec<(&str, &str)> = vec![("SECCOMP_AGENT_RECORD_DESIRED", &record)];
        envs.extend(pause.map(|p| ("SECCOMP_AGENT_PAUSE", p)));
        let label = format!("agent-{}", node.name);
        node.agent = Some(Proc::spawn(
            "seccomp-node-agent",
            &label,
            &logs,
            &args,
            &envs,
        ));
    }

    /// Every `Desired` node `i`'s agents were sent, in order: when it arrived (ms since the
    /// epoch) and its files (path to sha256), from the agents' history files.
    pub fn history(&self, i: usize) -> Vec<(u64, std::collections::BTreeMap<String, String>)> {
        let path = self
            .dir
            .path()
            .join("history")
            .join(format!("{}.jsonl", self.nodes[i].name));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()));
                let files = v["files"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                (v["at_ms"].as_u64().unwrap_or(0), files)
            })
            .collect()
    }

    /// Runs `seccompctl` with `--registry` and `--distributor` set, with a deadline.
    ///
    /// # Panics
    /// When it cannot be run or does not finish within 60 s.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let n = self
            .ctl_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("logs/ctl-{n}.out"));
        let err_path = self.dir.path().join(format!("logs/ctl-{n}.err"));
        let create =
            |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut child = Command::new(bin("seccompctl"))
            .arg("--registry")
            .arg(self.registry_url())
            .arg("--distributor")
            .arg(self.distributor_url())
            .args(args)
            .env_remove("SECCOMP_REGISTRY")
            .env_remove("SECCOMP_DISTRIBUTOR")
            .stdin(Stdio::null())
            .stdout(create(&out_path))
            .stderr(create(&err_path))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start seccompctl: {e}"));
        let what = format!("seccompctl {args:?}");
        let status = poll(&what, Duration::from_secs(60), || {
            child.try_wait().ok().flatten()
        });
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    /// Runs `seccompctl` and returns its stdout.
    ///
    /// # Panics
    /// When it exits non-zero.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "seccompctl {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `seccompctl nodes -o json`, or `None` when it fails (the distributor is down).
    pub fn nodes_json(&self) -> Option<serde_json::Value> {
        let out = self.ctl(&["nodes", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until node `name` is `Applied`, connected, at its desired revision, and its file
    /// at `node_path` is `Applied` with `observed` starting with `observed_prefix`; returns
    /// that file's entry from `seccompctl nodes -o json`.
    pub fn wait_applied(
        &self,
        name: &str,
        node_path: &str,
        observed_prefix: &str,
        deadline: Duration,
    ) -> serde_json::Value {
        let what = format!("{name}: {node_path} Applied as {observed_prefix:?}");
        poll(&what, deadline, || {
            let nodes = self.nodes_json()?;
            let node = nodes
                .as_array()?
                .iter()
                .find(|n| n["name"] == name)?
                .clone();
            let ok = node["state"] == "Applied"
                && node["connected"] == true
                && node["revision"] == node["desired_revision"];
            let file = node["files"]
                .as_array()?
                .iter()
                .find(|f| f["path"] == node_path)?
                .clone();
            (ok && file["state"] == "Applied"
                && file["observed"]
                    .as_str()
                    .is_some_and(|o| o.starts_with(observed_prefix)))
            .then_some(file)
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the data dirs, node roots and logs for a post-mortem.
            self.dir.disable_cleanup(true);
            eprintln!("stack data kept in {}", self.dir.path().display());
        }
    }
}
