#![allow(clippy::unwrap_used)]
//! Runs the README's commands, so the README cannot drift from what the code does.
//!
//! Every fenced block of `README.md` must follow a marker line saying how it is checked:
//! - `<!-- readme-test: ci -->`: the quickstart; its test command must be the one `.ci/run`
//!   runs, and its `dev` command is what `cli/tests/dev.rs` runs (and this test too);
//! - `<!-- readme-test: dev -->`: a shell script run with `sh -e` against `seccompctl dev`
//!   (started here on free ports, its data dir `./.seccomp-dev` in a scratch working
//!   directory; the script's `export` of the default URLs is pointed at those ports);
//! - `<!-- readme-test: dev-console -->`: `$ ` commands run against the same stack, each
//!   followed by the lines it must print (exactly, in order; `...` stands for any lines);
//! - `<!-- readme-test: processes -->`: the separately started programs: the part before
//!   `# Terminal 2:` runs in the background (as root only: the agent sets owners), the rest
//!   with `sh -e` once the agent has connected.
//!
//! Blocks run in README order, in one working directory, so later blocks use the files
//! and the state earlier ones made. `cargo run --release --bin NAME --` is replaced by the
//! binary `cargo test` built, and `seccompctl` is found on `PATH`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use integration_tests::{Proc, bin, poll};

const DEADLINE: Duration = Duration::from_secs(60);

struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    marker: String,
    body: String,
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// Every fenced block with the marker above it (`""` when there is none).
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    let mut previous = "";
    while let Some((i, line)) = lines.next() {
        if line.starts_with("```") {
            let marker = previous
                .strip_prefix("<!-- readme-test: ")
                .and_then(|m| m.strip_suffix(" -->"))
                .unwrap_or("")
                .to_owned();
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            out.push(Block {
                line: i + 1,
                marker,
                body,
            });
            previous = "";
        } else if !line.trim().is_empty() {
            previous = line;
        }
    }
    out
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `PATH` with the workspace binaries first.
fn path_with_bins() -> String {
    let dir = bin("seccompctl").parent().unwrap().to_path_buf();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The script with `cargo run --release --bin NAME --` replaced by the built binary.
fn with_binaries(script: &str) -> String {
    let mut out = script.to_owned();
    for name in [
        "seccomp-registry",
        "seccomp-distributor",
        "seccomp-node-agent",
        "seccompctl",
    ] {
        out = out.replace(
            &format!("cargo run --release --bin {name} --"),
            &bin(name).display().to_string(),
        );
    }
    out
}

struct Env {
    cwd: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    fn sh(&self, script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-e")
            .arg("-c")
            .arg(with_binaries(script))
            .current_dir(&self.cwd)
            .env("PATH", path_with_bins())
            .env_remove("SECCOMP_OUTPUT");
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run `script` to its end, killed after [`DEADLINE`] (so a hang fails instead of
    /// blocking the test run).
    fn run(&self, script: &str) -> Output {
        let cmd = self.sh(script);
        let mut limited = Command::new("timeout");
        limited
            .arg("--signal=KILL")
            .arg(DEADLINE.as_secs().to_string())
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(&self.cwd);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => limited.env(k, v),
                None => limited.env_remove(k),
            };
        }
        limited.output().unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `actual` shows `expected` (lines in order; `...` matches any run of lines).
fn shows(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| shows(rest, &actual[skip..])),
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| a.trim_end() == first.trim_end() && shows(rest, more)),
    }
}

fn run_console(env: &Env, block: &Block) {
    let mut steps: Vec<(String, Vec<&str>)> = Vec::new();
    for line in block.body.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_owned(), Vec::new())),
            None => steps
                .last_mut()
                .unwrap_or_else(|| panic!("README line {}: output before a command", block.line))
                .1
                .push(line),
        }
    }
    for (cmd, expected) in steps {
        let out = env.run(&cmd);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let actual: Vec<&str> = stdout.lines().collect();
        assert!(
            shows(&expected, &actual),
            "README block at line {}: `{cmd}` printed something else than shown\n{}",
            block.line,
            text(&out)
        );
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run_processes(cwd: &Path, block: &Block) {
    if !is_root() {
        eprintln!(
            "skipping the README block at line {}: it runs the node agent, which sets file \
             owners, so it needs root (CI runs as root)",
            block.line
        );
        return;
    }
    let (background, foreground) = block
        .body
        .split_once("# Terminal 2:")
        .unwrap_or_else(|| panic!("README line {}: no `# Terminal 2:` line", block.line));
    let (registry, distributor) = (free_port(), free_port());
    let env = Env {
        cwd: cwd.join("processes"),
        vars: vec![
            (
                "SECCOMP_REGISTRY_LISTEN".into(),
                format!("127.0.0.1:{registry}"),
            ),
            (
                "SECCOMP_DISTRIBUTOR_LISTEN".into(),
                format!("127.0.0.1:{distributor}"),
            ),
            (
                "SECCOMP_REGISTRY".into(),
                format!("https://127.0.0.1:{registry}"),
            ),
            (
                "SECCOMP_DISTRIBUTOR".into(),
                format!("https://127.0.0.1:{distributor}"),
            ),
            // What terminal 2 exports, for the wait below.
            ("SECCOMP_CA".into(), "./pki/ca.crt".into()),
            ("SECCOMP_TOKEN_FILE".into(), "./pki/admin.token".into()),
        ],
    };
    std::fs::create_dir_all(&env.cwd).unwrap();
    // Its own process group, so the background programs can be stopped together.
    let logs = env.cwd.join("terminal-1.log");
    let log = std::fs::File::create(&logs).unwrap();
    let mut terminal1 = env
        .sh(background)
        .process_group(0)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let group = terminal1.id();
    let stop = || {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
    };
    let connected = std::panic::catch_unwind(|| {
        poll("the README's agent to connect", DEADLINE, || {
            let out = env.run("seccompctl nodes -o json");
            let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            nodes
                .as_array()?
                .iter()
                .any(|n| n["name"] == "node-a" && n["connected"] == true)
                .then_some(())
        });
    });
    let out = connected.is_ok().then(|| env.run(foreground));
    stop();
    let _ = terminal1.wait();
    let log = std::fs::read_to_string(&logs).unwrap_or_default();
    assert!(
        connected.is_ok(),
        "README block at line {}: the agent never connected; terminal 1 printed:\n{log}",
        block.line
    );
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "README block at line {} failed:\n{}\nterminal 1 printed:\n{log}",
        block.line,
        text(&out)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("kind: NodeConfigItem"), "{yaml}");
}

#[test]
fn every_readme_command_runs() {
    let text_ = readme();
    let all = blocks(&text_);
    for b in &all {
        assert!(
            ["ci", "dev", "dev-console", "processes"].contains(&b.marker.as_str()),
            "README block at line {} has no `<!-- readme-test: ci|dev|dev-console|processes -->` \
             marker line above it, so nothing checks it",
            b.line
        );
    }

    // The quickstart: the test command is what CI runs, the main job is `seccompctl dev`.
    let ci =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run")).unwrap();
    let quickstart = all.iter().find(|b| b.marker == "ci").unwrap();
    let commands: Vec<&str> = quickstart
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        commands,
        [
            "cargo test --workspace --locked",
            "cargo build --release --locked --bins && target/release/seccompctl dev"
        ]
    );
    assert!(
        ci.lines().any(|l| l.starts_with(commands[0])),
        ".ci/run must run the README's test command"
    );

    // `seccompctl dev` as the quickstart runs it, on free ports.
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    let (registry, distributor) = (free_port(), free_port());
    let args: Vec<String> = [
        "dev",
        "--data-dir",
        &cwd.join(".seccomp-dev").display().to_string(),
        "--registry-port",
        &registry.to_string(),
        "--distributor-port",
        &distributor.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    std::fs::create_dir_all(cwd.join("logs")).unwrap();
    let mut dev = Proc::spawn(
        "seccompctl",
        "seccompctl-dev",
        &cwd.join("logs"),
        &args,
        &[],
    );
    dev.wait_line("demo complete", DEADLINE);
    let env = Env {
        cwd: cwd.clone(),
        vars: vec![
            (
                "SECCOMP_REGISTRY".into(),
                format!("https://127.0.0.1:{registry}"),
            ),
            (
                "SECCOMP_DISTRIBUTOR".into(),
                format!("https://127.0.0.1:{distributor}"),
            ),
            ("SECCOMP_CA".into(), ".seccomp-dev/pki/ca.crt".into()),
            (
                "SECCOMP_TOKEN_FILE".into(),
                ".seccomp-dev/pki/admin.token".into(),
            ),
        ],
    };
    for b in all.iter().filter(|b| b.marker.starts_with("dev")) {
        if b.marker == "dev-console" {
            run_console(&env, b);
            continue;
        }
        let script = b
            .body
            .replace("127.0.0.1:50051", &format!("127.0.0.1:{registry}"))
            .replace("127.0.0.1:50052", &format!("127.0.0.1:{distributor}"));
        let out = env.run(&script);
        assert!(
            out.status.success(),
            "README block at line {} failed:\n{}\n{}",
            b.line,
            text(&out),
            dev.logs()
        );
        // What the comments promise: deleting a version the nodes hold is refused.
        if script.contains("profile delete web@1 --yes") {
            let shown = text(&out);
            assert!(
                shown.contains("FAILED_PRECONDITION")
                    && shown.contains("web\" version 1 is in use")
                    && shown.contains("exit 1"),
                "{shown}"
            );
        }
    }
    dev.signal("INT");
    assert!(dev.wait_exit(DEADLINE).success(), "{}", dev.logs());

    for b in all.iter().filter(|b| b.marker == "processes") {
        run_processes(&cwd, b);
    }
}
