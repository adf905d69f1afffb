//! `seccompctl validate` as a user runs it: the real binary, real files, exit statuses.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

mod common;

fn seccompctl() -> Command {
    let mut cmd = Command::cargo_bin("seccompctl").unwrap();
    cmd.env_remove("SECCOMP_OUTPUT")
        .env_remove("SECCOMP_MAX_BYTES");
    cmd
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn verdicts_and_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(dir.path(), "ok.json", r#"{"defaultAction":"SCMP_ACT_LOG"}"#);
    let warn = write(
        dir.path(),
        "warn.json",
        r#"{"defaultAction":"SCMP_ACT_LOG","defualtErrnoRet":1}"#,
    );
    let bad = write(
        dir.path(),
        "bad.json",
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["opnat"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );

    let out = seccompctl().arg("validate").arg(&ok).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), format!("{}: ok\n", ok.display()));

    let out = seccompctl()
        .arg("validate")
        .arg(&ok)
        .arg(&warn)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{}: ok with 1 warning\n", warn.display())),
        "{text}"
    );
    assert!(
        text.contains("  /defualtErrnoRet: warning[unknown-key]: "),
        "{text}"
    );

    let out = seccompctl()
        .arg("validate")
        .arg(&ok)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{}: invalid (1 error)\n", bad.display())),
        "{text}"
    );
    assert!(
        text.contains("  /syscalls/0/names/0: error[unknown-syscall]: no architecture has a syscall named \"opnat\""),
        "{text}"
    );
}

#[test]
fn json_output() {
    let dir = tempfile::tempdir().unwrap();
    let content = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"scmp_act_allow"}]}"#;
    let bad = write(dir.path(), "bad.json", content);
    let out = seccompctl()
        .args(["validate", "-o", "json"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &doc["results"][0];
    assert_eq!(r["file"], bad.display().to_string());
    assert_eq!(r["valid"], false);
    assert_eq!(r["digest"], seccomp_profile_digest(content.as_bytes()));
    let d = &r["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "unknown-action");
    assert_eq!(d["path"], "/syscalls/0/action");
    assert!(d["message"].as_str().unwrap().contains("case-sensitive"));

    let out = seccompctl()
        .args(["validate", "-o", "yaml"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(stdout(&out).contains("code: unknown-action"));
}

fn seccomp_profile_digest(bytes: &[u8]) -> String {
    // Independent of the library: the digest is sha256 over the exact bytes.
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    format!(
        "sha256:{}",
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    )
}

#[test]
fn io_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = seccompctl()
        .arg("validate")
        .arg(dir.path().join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.json: cannot read: No such file or directory"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = seccompctl()
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));

    let out = seccompctl().arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no file is a usage error");
    let out = seccompctl()
        .args(["validate", "--max-bytes", "lots", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn huge_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB, as gen-huge.py writes: sparse, so the test itself stays cheap. The size check
    // happens on metadata before any read.
    let path = dir.path().join("huge.json");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 * 1024 * 1024).unwrap();
    let started = std::time::Instant::now();
    let out = seccompctl().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(
            "error[file-too-large]: the file is 67108864 bytes, over the limit of 1048576 bytes"
        ),
        "{text}"
    );
    // Not a timing assertion on speed, only a guard against reading 64 MiB byte by byte.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // A raised limit is honoured.
    let small = write(dir.path(), "s.json", r#"{"defaultAction":"SCMP_ACT_LOG"}"#);
    let out = seccompctl()
        .args(["validate", "--max-bytes", "10"])
        .arg(&small)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn stdin_is_bounded_too() {
    let big = vec![b' '; 2 * 1024 * 1024];
    let out = seccompctl()
        .args(["validate", "-"])
        .write_stdin(big)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("file-too-large"));

    let out = seccompctl()
        .args(["validate", "-"])
        .write_stdin(r#"{"defaultAction":"SCMP_ACT_LOG"}"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "-: ok\n");
}

#[test]
fn corpus_verdicts_through_the_cli() {
    let dir = std::env::var_os("SECCOMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let profiles = dir.join("profiles");
    if !profiles.is_dir() {
        eprintln!(
            "SKIPPED: profile corpus not found at {} (set SECCOMP_FIXTURES)",
            profiles.display()
        );
        return;
    }
    for (folder, expected) in [("accept", 0), ("reject", 1)] {
        let files: Vec<PathBuf> = std::fs::read_dir(profiles.join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        for f in files {
            let out = seccompctl().arg("validate").arg(&f).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(expected),
                "{}: {}",
                f.display(),
                stdout(&out)
            );
        }
    }
    // flag/: invalid, or valid with at least one warning.
    for f in std::fs::read_dir(profiles.join("flag")).unwrap() {
        let f = f.unwrap().path();
        let out = seccompctl()
            .args(["validate", "-o", "json"])
            .arg(&f)
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = &doc["results"][0];
        let flagged = r["valid"] == false || !r["diagnostics"].as_array().unwrap().is_empty();
        assert!(flagged, "{} passed silently", f.display());
    }
}

#[test]
fn a_reader_that_goes_away_ends_it_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.json",
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["opnat"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let ok = write(dir.path(), "ok.json", r#"{"defaultAction":"SCMP_ACT_LOG"}"#);
    // Far more output than a pipe holds (64 KiB), so writes go on after the reader is gone.
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("seccompctl"));
    cmd.env_remove("SECCOMP_OUTPUT").arg("validate").arg(&bad);
    for _ in 0..(128 << 10) / ok.as_os_str().len() {
        cmd.arg(&ok);
    }
    let closed = common::head_1(cmd);
    assert_eq!(
        closed.first_line,
        format!("{}: invalid (1 error)\n", bad.display())
    );
    // The verdict still decides the status: one file is invalid.
    common::assert_quiet(&closed, 1);
}
