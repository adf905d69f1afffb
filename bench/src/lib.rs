//! `seccomp-bench`: how fast a rollout reaches a fleet, measured next to the floor under
//! any Kubernetes-API-based delivery, an etcd fan-out, on the same machine in the same run.
//!
//! - [`converge`]: the real registry and distributor in this process (on their own tokio
//!   runtime), N simulated agents in a child process (this binary, `agents`), each a real
//!   `AgentSync` stream that answers every `Desired` with the sha256 it computes of what it
//!   was sent; one rollout per round, timed from `CreateRollout` to `Completed`.
//! - [`etcd_peer`]: Debian's `etcd` on loopback; one put of the same profile, N watchers over
//!   a number of connections, each putting an acknowledgement with the digest of what it
//!   saw; the writer waits, by a watch of its own, for all N.
//! - [`compare`]: both, alternately, each in a process of its own, and the ratios.
//!
//! Figures and the commands that made them are in `BENCHMARKS.md`.

pub mod agents;
pub mod compare;
pub mod converge;
pub mod etcd_peer;
pub mod procstat;

use std::path::Path;

/// The profile every measurement sends: the bytes of `path`, or, without one, Docker's
/// default profile from the project's shared fixtures when they are there, or else a
/// profile of about the same size (every x86_64 syscall name allowed).
pub fn profile_bytes(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    if let Some(p) = path {
        return std::fs::read(p).with_context(|| format!("reading the profile {}", p.display()));
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/profiles/accept/valid-docker-default.json");
    if let Ok(bytes) = std::fs::read(&fixture) {
        return Ok(bytes);
    }
    let names: Vec<String> = syscalls::x86_64::Sysno::iter()
        .map(|n| format!("\"{}\"", n.name()))
        .collect();
    Ok(format!(
        "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":1,\"architectures\":[\"SCMP_ARCH_X86_64\"],\"syscalls\":[{{\"names\":[{}],\"action\":\"SCMP_ACT_ALLOW\"}}]}}\n",
        names.join(",")
    )
    .into_bytes())
}

/// The same profile, different bytes for round `round` (a new version each round): the
/// errno of the default action.
pub fn profile_round(base: &[u8], round: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(base);
    let mut v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => return base.to_vec(),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("defaultErrnoRet".into(), serde_json::json!(round));
    }
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_else(|_| base.to_vec());
    out.push(b'\n');
    out
}

/// Raise the open-file limit to its maximum (every agent stream is a socket on each side).
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}
