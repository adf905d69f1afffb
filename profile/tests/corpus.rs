//! Runs the validator over the shared corpus of real and crafted profiles
//! (`../shared/fixtures/profiles/{accept,reject,flag}`): every file in a folder is a case, so a
//! file added there is tested without code changes. Point `SECCOMP_FIXTURES` at another
//! fixtures folder to use it; when the folder is absent the test says so and skips.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::PathBuf;

use seccomp_profile::{Severity, validate_default};

fn fixtures() -> Option<PathBuf> {
    let dir = match std::env::var_os("SECCOMP_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"),
    };
    if dir.join("profiles").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: profile corpus not found at {} (set SECCOMP_FIXTURES to the fixtures folder)",
            dir.display()
        );
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Accept,
    Reject,
    Flag,
}

#[test]
fn corpus_verdicts() {
    let Some(dir) = fixtures() else { return };
    let mut failures = Vec::new();
    let mut counted = 0;
    for (folder, expect) in [
        ("accept", Expect::Accept),
        ("reject", Expect::Reject),
        ("flag", Expect::Flag),
    ] {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("profiles").join(folder))
            .unwrap_or_else(|e| panic!("reading {folder}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{folder}/ holds no files");
        for path in files {
            let bytes = std::fs::read(&path).unwrap();
            let report = validate_default(&bytes);
            let errors = report.errors().count();
            let warnings = report.warnings().count();
            let ok = match expect {
                Expect::Accept => errors == 0,
                Expect::Reject => errors > 0,
                Expect::Flag => errors > 0 || warnings > 0,
            };
            let name = format!("{folder}/{}", path.file_name().unwrap().to_string_lossy());
            println!(
                "{} {name}: {errors} errors, {warnings} warnings",
                if ok { "ok  " } else { "FAIL" }
            );
            for d in &report.diagnostics {
                println!("       {d}");
            }
            if !ok {
                failures.push(name);
            }
            counted += 1;
        }
    }
    println!("{counted} corpus files checked");
    assert!(failures.is_empty(), "wrong verdicts: {failures:?}");
}

#[test]
fn seed_profile_is_clean() {
    let Some(dir) = fixtures() else { return };
    let bytes = std::fs::read(dir.join("seed/myprofile.json")).unwrap();
    let report = validate_default(&bytes);
    assert!(report.is_valid(), "{:?}", report.diagnostics);
    assert!(
        report
            .diagnostics
            .iter()
            .all(|d| d.severity != Severity::Error),
        "{:?}",
        report.diagnostics
    );
}
