//! `seccomp-agent-apply SPEC.json`: applies one desired set, once, and prints the result as
//! JSON on stdout. Exit status 0 applied, 1 refused or failed, 2 usage or setup error.
//!
//! For crash tests (with `SECCOMP_AGENT_PAUSE=<pause point>` the write stops there until a
//! line arrives on stdin) and for trying a set by hand. The spec:
//!
//! ```json
//! {"host_root": "/", "allowed_root": "/var/lib/kubelet/seccomp", "state_dir": "/tmp/state",
//!  "revision": "r1", "adopt_existing": false,
//!  "files": [{"path": "/var/lib/kubelet/seccomp/a.json", "kind": "file",
//!             "content": "{\"defaultAction\": \"SCMP_ACT_ERRNO\"}",
//!             "mode": 420, "owner": "root", "group": "root"}]}
//! ```
//!
//! `content` is text; the sha256 is computed here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use seccomp_node_agent::{Applier, Config, DesiredFile, DesiredKind, WriteHook};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default = "default_host_root")]
    host_root: PathBuf,
    #[serde(default = "default_allowed_root")]
    allowed_root: String,
    state_dir: PathBuf,
    #[serde(default)]
    revision: String,
    /// As the agent's `--adopt-existing`.
    #[serde(default)]
    adopt_existing: bool,
    files: Vec<SpecFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    path: String,
    kind: DesiredKind,
    #[serde(default)]
    content: String,
    mode: u32,
    owner: String,
    group: String,
}

fn default_host_root() -> PathBuf {
    Config::default().host_root
}

fn default_allowed_root() -> String {
    Config::default().allowed_root
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("seccomp-agent-apply: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut args = std::env::args_os().skip(1);
    let (Some(spec_path), None) = (args.next(), args.next()) else {
        bail!("usage: seccomp-agent-apply SPEC.json");
    };
    let text =
        std::fs::read_to_string(&spec_path).with_context(|| format!("reading {spec_path:?}"))?;
    let spec: Spec =
        serde_json::from_str(&text).with_context(|| format!("parsing {spec_path:?}"))?;
    let desired: Vec<DesiredFile> = spec
        .files
        .into_iter()
        .map(|f| match f.kind {
            DesiredKind::File => DesiredFile::file(f.path, f.content, f.mode, &f.owner, &f.group),
            DesiredKind::Directory => DesiredFile::directory(f.path, f.mode, &f.owner, &f.group),
        })
        .collect();
    let config = Config {
        host_root: spec.host_root,
        allowed_root: spec.allowed_root,
        state_dir: spec.state_dir,
    };
    let mut applier = Applier::open(config)?.with_adopt_existing(spec.adopt_existing);
    if let Some(hook) = WriteHook::stdio_pause_from_env() {
        applier = applier.with_hook(hook.map_err(anyhow::Error::msg)?);
    }
    let (ok, report) = match applier.apply(&spec.revision, &desired) {
        Ok(applied) => (
            true,
            serde_json::json!({
                "ok": true,
                "revision": applied.revision,
                "observed": applied.observed,
                "written": applied.written,
                "removed": applied.removed,
            }),
        ),
        Err(rejected) => (
            false,
            serde_json::json!({
                "ok": false,
                "errors": rejected.errors,
                "observed": rejected.observed,
                "last_good_revision": rejected.last_good_revision,
            }),
        ),
    };
    println!("{report}");
    Ok(ok)
}
