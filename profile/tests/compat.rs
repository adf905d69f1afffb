//! Compatibility modes between versions: each accepts and refuses the right publishes,
//! naming every syscall and architecture that breaks the rule.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use seccomp_profile::compat::{CompatMode, Treatment, check};
use seccomp_profile::{Profile, validate_default};

const ARCHES: &str = r#"["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]"#;

fn profile(default: &str, allow: &[&str], deny: &[&str]) -> Profile {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut rules = vec![format!(
        "{{\"names\": [{}], \"action\": \"SCMP_ACT_ALLOW\"}}",
        list(allow)
    )];
    if !deny.is_empty() {
        rules.push(format!(
            "{{\"names\": [{}], \"action\": \"SCMP_ACT_ERRNO\"}}",
            list(deny)
        ));
    }
    let errno = if default == "SCMP_ACT_ERRNO" {
        ", \"defaultErrnoRet\": 1"
    } else {
        ""
    };
    let text = format!(
        "{{\"defaultAction\": \"{default}\"{errno}, \"architectures\": {ARCHES}, \"syscalls\": [{}]}}",
        rules.join(",")
    );
    let report = validate_default(text.as_bytes());
    report
        .profile
        .unwrap_or_else(|| panic!("{text}: {:?}", report.diagnostics))
}

fn broken(v: &[seccomp_profile::compat::Violation]) -> Vec<(String, String)> {
    v.iter()
        .map(|v| (v.syscall.clone(), v.arch.clone()))
        .collect()
}

#[test]
fn no_new_denies_refuses_stopping_what_ran_and_accepts_loosening() {
    let old = profile("SCMP_ACT_LOG", &["read", "write"], &["ptrace"]);
    // Enforcing the complain-mode default stops every call no rule names.
    let enforced = profile("SCMP_ACT_ERRNO", &["read", "write"], &["ptrace"]);
    let v = check(CompatMode::NoNewDenies, &old, &enforced);
    assert_eq!(
        broken(&v),
        [
            ("(default)".to_owned(), "SCMP_ARCH_X32".to_owned()),
            ("(default)".to_owned(), "SCMP_ARCH_X86".to_owned()),
            ("(default)".to_owned(), "SCMP_ARCH_X86_64".to_owned()),
        ]
    );
    assert_eq!(
        (v[0].before, v[0].after),
        (Treatment::Allowed, Treatment::Denied)
    );
    // Denying `read` names it on every architecture.
    let denies_read = profile("SCMP_ACT_LOG", &["write"], &["ptrace", "read"]);
    let v = check(CompatMode::NoNewDenies, &old, &denies_read);
    assert_eq!(v.len(), 3);
    assert!(v.iter().all(|v| v.syscall == "read"));
    // Allowing ptrace loosens: accepted.
    let loosened = profile("SCMP_ACT_LOG", &["read", "write", "ptrace"], &[]);
    assert!(check(CompatMode::NoNewDenies, &old, &loosened).is_empty());
}

#[test]
fn tighten_only_refuses_letting_run_what_was_stopped_and_accepts_enforcing() {
    let old = profile("SCMP_ACT_LOG", &["read", "write"], &["ptrace"]);
    let loosened = profile("SCMP_ACT_LOG", &["read", "write", "ptrace"], &[]);
    let v = check(CompatMode::TightenOnly, &old, &loosened);
    assert_eq!(v.len(), 3, "ptrace on each architecture: {v:?}");
    assert!(v.iter().all(|v| v.syscall == "ptrace"));
    let enforced = profile("SCMP_ACT_ERRNO", &["read", "write"], &["ptrace"]);
    assert!(check(CompatMode::TightenOnly, &old, &enforced).is_empty());
}

#[test]
fn a_syscall_is_judged_only_where_it_exists() {
    // socketcall is i386's alone (x86_64 and x32 have socket and friends instead).
    let old = profile("SCMP_ACT_ERRNO", &["read", "socketcall"], &[]);
    let new = profile("SCMP_ACT_ERRNO", &["read"], &[]);
    let v = check(CompatMode::NoNewDenies, &old, &new);
    assert_eq!(
        broken(&v),
        [("socketcall".to_owned(), "SCMP_ARCH_X86".to_owned())]
    );
}

#[test]
fn none_accepts_anything_and_modes_have_names() {
    let old = profile("SCMP_ACT_LOG", &["read"], &[]);
    let new = profile("SCMP_ACT_ERRNO", &["write"], &[]);
    assert!(check(CompatMode::None, &old, &new).is_empty());
    for m in [
        CompatMode::None,
        CompatMode::NoNewDenies,
        CompatMode::TightenOnly,
    ] {
        assert_eq!(CompatMode::parse(m.name()), Some(m));
    }
    assert_eq!(CompatMode::parse("strict"), None);
}
