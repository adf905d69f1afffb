//! The programs `seccompctl dev` runs: the real `seccomp-registry`, `seccomp-distributor` and
//! `seccomp-node-agent` binaries as child processes, found next to this executable (so
//! `target/<profile>/` under cargo) or else on `PATH`.
//!
//! Each child gets only the flags dev gives it: the `SECCOMP_*` and `NODE_NAME` variables
//! every service also reads flags from are removed, so a shell's settings (a cluster to apply
//! to, another registry) do not leak into the local stack. Logs go to this process's standard
//! error, filtered by `RUST_LOG` when it is set and off otherwise, as they were when the
//! services ran inside dev. Each runs in its own process group, so a Ctrl-C at the terminal
//! reaches only dev, which then stops the children with one SIGTERM each (a second signal
//! would make a service exit without draining). `SECCOMP_EXIT_WITH_PARENT` asks each child to
//! have the kernel send it SIGTERM when dev dies (see `seccomp-server`'s `shutdown` module),
//! so even a SIGKILLed dev leaves nothing running.

use std::ffi::{OsStr, OsString};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use rustix::process::{Pid, Signal};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::output::errln;

/// The registry's binary.
pub const REGISTRY: &str = "seccomp-registry";
/// The distributor's binary.
pub const DISTRIBUTOR: &str = "seccomp-distributor";
/// The node agent's binary.
pub const AGENT: &str = "seccomp-node-agent";

/// The variable of `seccomp_server::shutdown::EXIT_WITH_PARENT_ENV` (not a dependency of the
/// CLI, which would bring in the whole server stack for one name).
const EXIT_WITH_PARENT_ENV: &str = "SECCOMP_EXIT_WITH_PARENT";

/// How long a service may take to print `listening on ADDR`.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often exits are checked while waiting for them.
const POLL: Duration = Duration::from_millis(50);

/// Where the three service binaries are.
pub struct Binaries {
    /// `seccomp-registry`.
    pub registry: PathBuf,
    /// `seccomp-distributor`.
    pub distributor: PathBuf,
    /// `seccomp-node-agent`.
    pub agent: PathBuf,
}

impl Binaries {
    /// Find each next to this executable, else on `PATH`.
    pub fn find() -> Result<Binaries> {
        let exe = std::env::current_exe().context("cannot find seccompctl's own executable")?;
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let path = std::env::var_os("PATH").unwrap_or_default();
        Ok(Binaries {
            registry: find(REGISTRY, dir, &path)?,
            distributor: find(DISTRIBUTOR, dir, &path)?,
            agent: find(AGENT, dir, &path)?,
        })
    }
}

/// `name` in `dir`, else in the directories of `path` (a `PATH` value).
fn find(name: &str, dir: &Path, path: &OsStr) -> Result<PathBuf> {
    std::iter::once(dir.to_path_buf())
        .chain(std::env::split_paths(path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "cannot find {name}: it is neither next to seccompctl in {} nor on PATH; \
                 build every binary with `cargo build --release --bins` and run \
                 target/release/seccompctl",
                dir.display()
            )
        })
}

/// A running service.
struct Child {
    /// `registry`, `distributor`, `agent node-1`.
    label: String,
    child: std::process::Child,
    /// Set once its exit was seen (and reported when unexpected).
    exited: Option<ExitStatus>,
}

impl Child {
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }
}

/// The services started so far; dropped without [`Services::stop`] (a panic, an early
/// error), it kills what is still running.
#[derive(Default)]
pub struct Services {
    children: Vec<Child>,
}

impl Services {
    /// Start `program` with `args` as the service `label`. With `listens`, wait for its
    /// `listening on ADDR` line and return the address.
    pub async fn start(
        &mut self,
        label: &str,
        program: &Path,
        args: &[OsString],
        listens: bool,
    ) -> Result<Option<SocketAddr>> {
        let mut command = Command::new(program);
        command.args(args);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("SECCOMP_") || key_text == "NODE_NAME" {
                command.env_remove(&key);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "off");
        }
        // A failing service's error is one line, as dev printed it when they ran inside it,
        // not an anyhow backtrace because the shell has RUST_BACKTRACE set.
        if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            command.env("RUST_LIB_BACKTRACE", "0");
        }
        command
            .env(EXIT_WITH_PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        // The kernel's parent-death signal follows the thread that forked the child, so this
        // must run on the main thread (dev's runtime is a current-thread one, driven by
        // `block_on` there), never on a thread that may end before dev does.
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no standard output of {label}"))?;
        self.children.push(Child {
            label: label.to_owned(),
            child,
            exited: None,
        });
        let address = forward_stdout(label, stdout);
        if !listens {
            return Ok(None);
        }
        let deadline = Instant::now() + START_DEADLINE;
        let line = tokio::select! {
            line = address => line.ok(),
            () = tokio::time::sleep_until(deadline) => bail!(
                "{label} did not say where it listens within {}s",
                START_DEADLINE.as_secs()
            ),
        };
        let Some(line) = line else {
            // Its standard output closed without the line: it is exiting.
            let status = self.wait_for_exit(deadline).await;
            bail!(
                "{label} ({}) stopped before it was listening: {}",
                program.display(),
                status.map_or_else(|| "it closed its output".to_owned(), |s| s.to_string())
            );
        };
        line.trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{label} printed an unreadable address {line:?}"))
    }

    /// The last child's exit status, if it exits before `deadline`.
    async fn wait_for_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let child = self.children.last_mut()?;
        loop {
            if let Some(status) = child.poll_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Say which services have stopped on their own since the last call; the others keep
    /// running, as a stack with one component down is still worth looking at.
    pub fn report_exits(&mut self) {
        for c in &mut self.children {
            if c.exited.is_none()
                && let Some(status) = c.poll_exit()
            {
                errln!("seccompctl dev: {} stopped: {status}", c.label);
            }
        }
    }

    /// SIGTERM every running service, wait for all of them until `grace` has passed, then
    /// SIGKILL the rest; an error names those that had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> Result<()> {
        self.report_exits();
        let mut stopping = Vec::new();
        for (i, c) in self.children.iter_mut().enumerate() {
            if c.exited.is_none() {
                stopping.push(i);
                let pid = i32::try_from(c.child.id()).ok().and_then(Pid::from_raw);
                if let Some(pid) = pid {
                    // Only fails when it has exited meanwhile, which the wait below sees.
                    let _ = rustix::process::kill_process(pid, Signal::TERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.children.iter_mut().any(|c| c.poll_exit().is_none())
        {
            tokio::time::sleep(POLL).await;
        }
        let mut killed = Vec::new();
        for i in stopping {
            let Some(c) = self.children.get_mut(i) else {
                continue;
            };
            match c.poll_exit() {
                Some(status) if !status.success() => {
                    errln!("seccompctl dev: {} exited with {status}", c.label);
                }
                Some(_) => {}
                None => {
                    errln!(
                        "seccompctl dev: {} did not stop within {}s, killing it",
                        c.label,
                        grace.as_secs()
                    );
                    let _ = c.child.kill();
                    c.exited = c.child.wait().ok();
                    killed.push(c.label.clone());
                }
            }
        }
        if killed.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("{} did not stop in time", killed.join(", ")))
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for c in &mut self.children {
            if c.poll_exit().is_none() {
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
        }
    }
}

/// Read a child's standard output on a thread of its own: the address of its first
/// `listening on ADDR` line goes to the returned receiver, every other line to standard
/// error under the child's label, and reading goes on so the child never blocks on a full
/// pipe. The receiver sees the sender dropped when the output ends without that line.
fn forward_stdout(label: &str, stdout: std::process::ChildStdout) -> oneshot::Receiver<String> {
    let (tx, rx) = oneshot::channel();
    let label = label.to_owned();
    std::thread::spawn(move || {
        let mut address = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match line.strip_prefix("listening on ") {
                Some(addr) if address.is_some() => {
                    if let Some(tx) = address.take() {
                        let _ = tx.send(addr.to_owned());
                    }
                }
                _ => errln!("{label}: {line}"),
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_found_next_to_seccompctl_then_on_path() {
        let own = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        std::fs::write(on_path.path().join(AGENT), "").unwrap();
        let path = std::env::join_paths([on_path.path()]).unwrap();
        assert_eq!(
            find(AGENT, own.path(), &path).unwrap(),
            on_path.path().join(AGENT)
        );
        std::fs::write(own.path().join(AGENT), "").unwrap();
        assert_eq!(
            find(AGENT, own.path(), &path).unwrap(),
            own.path().join(AGENT)
        );

        let e = find(REGISTRY, own.path(), &path).unwrap_err().to_string();
        for needle in [
            REGISTRY,
            &own.path().display().to_string(),
            "PATH",
            "cargo build --release --bins",
        ] {
            assert!(e.contains(needle), "{needle:?} in {e}");
        }
    }
}
