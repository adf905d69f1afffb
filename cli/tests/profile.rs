//! `seccompctl profile ...` and `seccompctl audit` as a user runs them: the real binary
//! against a registry running in this test process on `127.0.0.1:0`.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tokio::sync::oneshot;

/// A registry served from a background runtime for the duration of a test.
struct Registry {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<Result<(), seccomp_registry::RunError>>>,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let config = seccomp_registry::Config::new(dir.path().join("data"));
        let task = runtime.spawn(seccomp_registry::run(config, listener, async {
            let _ = stopped.await;
        }));
        Registry {
            url,
            stop: Some(stop),
            runtime,
            task: Some(task),
            _dir: dir,
        }
    }

    fn ctl(&self) -> Command {
        let mut cmd = Command::cargo_bin("seccompctl").unwrap();
        cmd.env_remove("SECCOMP_OUTPUT")
            .env("SECCOMP_REGISTRY", &self.url)
            .env("USER", "tester");
        cmd
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(30), task).await
            });
        }
    }
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const V1: &[u8] = b"{\"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"syscalls\": [{\"names\": [\"read\", \"write\"], \"action\": \"SCMP_ACT_ALLOW\"}]}\n";
const V2: &[u8] = b"{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defualtErrnoRet\": 1,\n \"syscalls\": [{\"names\": [\"read\", \"write\", \"openat\"], \"action\": \"SCMP_ACT_ALLOW\"}]}\n";

#[test]
fn publish_get_history_diff_deprecate_audit() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = write(dir.path(), "v1.json", V1);
    let v2 = write(dir.path(), "v2.json", V2);

    let (code, out, err) = run(registry
        .ctl()
        .args(["profile", "publish", "web", "--description", "first cut"])
        .arg(&v1));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version:  1\n"), "{out}");
    assert!(
        out.contains(&format!("digest:   {}\n", seccomp_profile::digest(V1))),
        "{out}"
    );
    assert!(out.contains("created:  true\n"), "{out}");
    assert!(out.contains("warnings: 0\n"), "{out}");

    // Same bytes again: the same version, created false.
    let (code, out, _) = run(registry.ctl().args(["profile", "publish", "web"]).arg(&v1));
    assert_eq!(code, 0);
    assert!(
        out.contains("version:  1\n") && out.contains("created:  false"),
        "{out}"
    );

    // Warnings are printed in the validate format.
    let (code, out, _) = run(registry
        .ctl()
        .args(["profile", "publish", "web", "--expect-version", "1"])
        .arg(&v2));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("version:  2\n"), "{out}");
    assert!(
        out.contains("warnings: 1\n  /defualtErrnoRet: warning[unknown-key]: "),
        "{out}"
    );

    // JSON output of publish.
    let v3 = write(
        dir.path(),
        "v3.json",
        br#"{"defaultAction":"SCMP_ACT_LOG"}"#,
    );
    let (code, out, _) = run(registry
        .ctl()
        .args(["profile", "publish", "web", "-o", "json"])
        .arg(&v3));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 3);
    assert_eq!(doc["created"], true);

    // --raw: the exact bytes, by number, by digest, and latest.
    let out = registry
        .ctl()
        .args(["profile", "get", "web@1", "--raw"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, V1);
    let by_digest = format!("web@{}", seccomp_profile::digest(V2));
    let out = registry
        .ctl()
        .args(["profile", "get", &by_digest, "--raw"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, V2);
    let (_, out, _) = run(registry.ctl().args(["profile", "get", "web"]));
    assert!(out.contains("version:     3\n"), "{out}");
    assert!(out.contains("status:      live\n"), "{out}");
    assert!(out.contains("by unverified:tester"), "{out}");

    // YAML carries the content too.
    let (_, out, _) = run(registry
        .ctl()
        .args(["profile", "get", "web@1", "-o", "yaml"]));
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(doc["description"].as_str(), Some("first cut"));
    assert_eq!(doc["content"].as_str().unwrap().as_bytes(), V1);

    // Diff: openat added, default errno changed.
    let (code, out, _) = run(registry.ctl().args(["profile", "diff", "web", "1", "2"]));
    assert_eq!(code, 0);
    assert!(out.starts_with("web 1 -> 2 ("), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with('+')
            && l.contains("openat")
            && l.contains("(default action)")
            && l.contains("SCMP_ACT_ALLOW")),
        "{out}"
    );
    let (_, out, _) = run(registry
        .ctl()
        .args(["profile", "diff", "web", "1", "2", "-o", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["syscalls_added"][0]["name"], "openat");
    assert_eq!(doc["identical"], false);
    let (_, out, _) = run(registry.ctl().args(["profile", "diff", "web", "2", "2"]));
    assert!(out.contains("no semantic difference"), "{out}");

    // Deprecate the latest: latest falls back to 2.
    let (code, out, _) = run(registry.ctl().args([
        "profile",
        "deprecate",
        "web@3",
        "--reason",
        "too permissive",
    ]));
    assert_eq!(code, 0);
    assert!(out.starts_with("deprecated web@3\n"), "{out}");
    let (_, out, _) = run(registry.ctl().args(["profile", "get", "web@latest"]));
    assert!(out.contains("version:     2\n"), "{out}");

    // History and list, as tables and JSON.
    let (code, out, _) = run(registry.ctl().args(["profile", "history", "web"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("VERSION"), "{out}");
    assert!(
        lines[1].starts_with('3') && lines[1].contains("deprecated: too permissive"),
        "{out}"
    );
    assert!(
        lines[3].starts_with('1') && lines[3].contains("first cut"),
        "{out}"
    );
    let (_, out, _) = run(registry.ctl().args(["profile", "list", "-o", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["profiles"][0]["name"], "web");
    assert_eq!(doc["profiles"][0]["latest_version"], 2);
    assert_eq!(doc["profiles"][0]["version_count"], 3);
    let (_, out, _) = run(registry.ctl().args(["profile", "list"]));
    assert!(out.lines().nth(1).unwrap().starts_with("web"), "{out}");

    // The audit log saw all of it.
    let (code, out, _) = run(registry
        .ctl()
        .args(["audit", "--service", "registry", "-o", "json"]));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let methods: Vec<&str> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["Publish", "Publish", "Publish", "Publish", "Deprecate"]
    );
    let (_, out, _) = run(registry.ctl().args(["audit", "--service", "registry"]));
    assert!(out.lines().next().unwrap().starts_with("TIME"), "{out}");
    assert!(out.lines().nth(1).unwrap().contains("registry"), "{out}");
    assert!(out.contains("unverified:tester"), "{out}");
    let (_, out, _) = run(registry.ctl().args([
        "audit",
        "--service",
        "registry",
        "--since",
        "2999-01-01T00:00:00Z",
        "-o",
        "json",
    ]));
    assert_eq!(out.trim(), "{\n  \"entries\": []\n}");
}

#[test]
fn rejected_publish_prints_every_diagnostic_and_exits_1() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.json",
        br#"{"defaultAction":"SCMP_ACT_ERRNO","defualtErrnoRet":1,"syscalls":[{"names":["opnat"],"action":"scmp_act_allow"}]}"#,
    );
    let (code, out, err) = run(registry.ctl().args(["profile", "publish", "web"]).arg(&bad));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("web: rejected (2 errors, 1 warning)\n"),
        "{out}"
    );
    assert!(
        out.contains("  /defualtErrnoRet: warning[unknown-key]: "),
        "{out}"
    );
    assert!(out.contains("  /syscalls/0/names/0: error[unknown-syscall]: no architecture has a syscall named \"opnat\""), "{out}");
    assert!(
        out.contains("  /syscalls/0/action: error[unknown-action]: "),
        "{out}"
    );

    let (code, out, _) = run(registry
        .ctl()
        .args(["profile", "publish", "web", "-o", "json"])
        .arg(&bad));
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["error"], "INVALID_ARGUMENT");
    assert_eq!(doc["diagnostics"].as_array().unwrap().len(), 3);

    // Other refusals: one line on stderr naming the thing, exit 1.
    let good = write(
        dir.path(),
        "good.json",
        br#"{"defaultAction":"SCMP_ACT_LOG"}"#,
    );
    let (code, _, err) = run(registry
        .ctl()
        .args(["profile", "publish", "Bad_Name"])
        .arg(&good));
    assert_eq!(code, 1);
    assert!(
        err.starts_with("seccompctl: INVALID_ARGUMENT: invalid profile name \"Bad_Name\""),
        "{err}"
    );
    let (code, _, err) = run(registry
        .ctl()
        .args(["profile", "publish", "web", "--expect-version", "4"])
        .arg(&good));
    assert_eq!(code, 1);
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("expected latest version 4"),
        "{err}"
    );
    let (code, _, err) = run(registry.ctl().args(["profile", "get", "nope@3"]));
    assert_eq!(code, 1);
    assert_eq!(err, "seccompctl: NOT_FOUND: profile \"nope\" not found\n");
    let (code, _, err) = run(registry.ctl().args(["profile", "history", "nope"]));
    assert_eq!(code, 1);
    assert!(err.contains("profile \"nope\" not found"), "{err}");

    // Usage and local I/O errors exit 2.
    let (code, _, err) = run(registry.ctl().args(["profile", "deprecate", "web"]));
    assert_eq!(code, 2);
    assert!(err.contains("NAME@VERSION"), "{err}");
    let (code, _, err) = run(registry.ctl().args(["profile", "get", "web@x"]));
    assert_eq!(code, 2);
    assert!(err.contains("invalid version \"x\""), "{err}");
    let (code, _, err) = run(registry
        .ctl()
        .args(["profile", "publish", "web"])
        .arg(dir.path().join("missing.json")));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read") && err.contains("missing.json"),
        "{err}"
    );
}

#[test]
fn unreachable_registry_is_one_line_and_exit_2() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["profile", "list"][..],
        &["profile", "get", "web"],
        &["audit"],
    ] {
        let out = Command::cargo_bin("seccompctl")
            .unwrap()
            .args(args)
            .args(["--registry", &url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "seccompctl: cannot connect to the registry at {url}: "
            )),
            "{err}"
        );
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }
    let out = Command::cargo_bin("seccompctl")
        .unwrap()
        .args(["profile", "list", "--registry", "not a url"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn delete_needs_yes_and_never_reuses_the_number() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    for (i, content) in [V1, V2].into_iter().enumerate() {
        let file = write(dir.path(), &format!("v{i}.json"), content);
        let (code, _, err) = run(registry
            .ctl()
            .args(["profile", "publish", "web"])
            .arg(&file));
        assert_eq!(code, 0, "{err}");
    }

    // Without --yes nothing is asked of the registry: a usage error.
    let (code, _, err) = run(registry.ctl().args(["profile", "delete", "web@2"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("--yes") && err.contains("profile deprecate"),
        "{err}"
    );
    let (code, _, err) = run(registry.ctl().args(["profile", "delete", "web", "--yes"]));
    assert_eq!(code, 2);
    assert!(err.contains("NAME@VERSION"), "{err}");

    let (code, out, err) = run(registry.ctl().args(["profile", "delete", "web@2", "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "deleted web@2 (its number will not be reused)\n");
    let (code, _, err) = run(registry.ctl().args(["profile", "get", "web@2"]));
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    let (code, _, err) = run(registry.ctl().args(["profile", "delete", "web@2", "--yes"]));
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");

    // JSON output, and the next publish gets 3, not 2.
    let (code, out, _) = run(registry
        .ctl()
        .args(["profile", "delete", "web@1", "--yes", "-o", "json"]));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["deleted"], true);
    let file = write(dir.path(), "again.json", V1);
    let (_, out, _) = run(registry
        .ctl()
        .args(["profile", "publish", "web", "-o", "json"])
        .arg(&file));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 3);
}

#[test]
fn a_compatibility_rule_refuses_a_publish_that_breaks_it() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let complain = write(
        dir.path(),
        "complain.json",
        b"{\"defaultAction\": \"SCMP_ACT_LOG\", \"architectures\": [\"SCMP_ARCH_X86_64\"], \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALLOW\"}]}\n",
    );
    let enforced = write(
        dir.path(),
        "enforced.json",
        b"{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 1, \"architectures\": [\"SCMP_ARCH_X86_64\"], \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALLOW\"}]}\n",
    );
    let (code, _, err) = run(registry
        .ctl()
        .args(["profile", "publish", "web"])
        .arg(&complain));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        run(registry
            .ctl()
            .args(["profile", "policy", "web", "--compat", "no-new-denies"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "web: compatibility no-new-denies (was none)\n");
    let (code, _, err) = run(registry
        .ctl()
        .args(["profile", "publish", "web"])
        .arg(&enforced));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no-new-denies") && err.contains("(default) on SCMP_ARCH_X86_64"),
        "{err}"
    );
    // An unknown rule is refused before anything is sent.
    let (code, _, err) = run(registry
        .ctl()
        .args(["profile", "policy", "web", "--compat", "strict"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tighten-only"), "{err}");
}
