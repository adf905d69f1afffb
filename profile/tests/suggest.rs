//! The next version of a complain-mode profile from the syscalls it logged: on the seed's
//! own example (`myprofile`, defaultAction SCMP_ACT_LOG) after `getppid` and `openat` were
//! logged.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use seccomp_profile::suggest::suggest;

/// The seed's `myprofile.json` (shared/fixtures/seed), as the demo publishes it.
const MYPROFILE: &str = r#"{
"defaultAction": "SCMP_ACT_LOG",
"architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
"syscalls": [
{"names": ["arch_prctl", "sched_yield", "futex", "write", "mmap", "exit_group", "madvise",
  "rt_sigprocmask", "getpid", "gettid", "tgkill", "rt_sigaction", "read", "getpgrp"],
 "action": "SCMP_ACT_ALLOW"},
{"names": ["add_key", "keyctl", "ptrace"], "action": "SCMP_ACT_ERRNO"}
]
}
"#;

fn allows(p: &seccomp_profile::Profile, name: &str) -> bool {
    p.rules.iter().any(|r| {
        r.action.name == "SCMP_ACT_ALLOW"
            && r.is_unconditional()
            && r.names.iter().any(|n| n == name)
    })
}

#[test]
fn logged_syscalls_are_allowed_and_the_rest_kept() {
    let s = suggest(MYPROFILE.as_bytes(), ["getppid", "openat", "read"], false).unwrap();
    assert!(s.report.is_valid(), "{:?}", s.report.diagnostics);
    let p = s.report.profile.as_ref().unwrap();
    assert!(allows(p, "getppid") && allows(p, "openat"));
    assert_eq!(s.allowed, ["getppid", "openat"], "read was allowed already");
    assert_eq!(
        p.default_action.name, "SCMP_ACT_LOG",
        "not enforced unless asked"
    );
    assert!(!s.enforced);
    // Everything else of the base is there as it was.
    let base = seccomp_profile::validate_default(MYPROFILE.as_bytes())
        .profile
        .unwrap();
    assert_eq!(p.architectures, base.architectures);
    assert_eq!(&p.rules[..base.rules.len()], &base.rules[..]);
    assert_eq!(p.rules.len(), base.rules.len() + 1);
}

#[test]
fn enforce_turns_the_log_default_into_eperm() {
    let s = suggest(MYPROFILE.as_bytes(), ["getppid", "openat"], true).unwrap();
    assert!(s.report.is_valid(), "{:?}", s.report.diagnostics);
    let p = s.report.profile.as_ref().unwrap();
    assert!(s.enforced);
    assert_eq!(p.default_action.name, "SCMP_ACT_ERRNO");
    assert_eq!(p.default_action.ret, Some(1));
    assert!(allows(p, "getppid") && allows(p, "openat"));
}

#[test]
fn an_explicit_deny_is_not_lifted_behind_its_rule() {
    let s = suggest(MYPROFILE.as_bytes(), ["ptrace", "getppid"], false).unwrap();
    assert_eq!(s.kept_denied, ["ptrace"]);
    assert_eq!(s.allowed, ["getppid"]);
    assert!(!allows(s.report.profile.as_ref().unwrap(), "ptrace"));
}

#[test]
fn nothing_new_observed_changes_nothing_but_enforcement() {
    let s = suggest(MYPROFILE.as_bytes(), ["read", "write"], false).unwrap();
    assert!(s.allowed.is_empty());
    let p = s.report.profile.unwrap();
    let base = seccomp_profile::validate_default(MYPROFILE.as_bytes())
        .profile
        .unwrap();
    assert_eq!(p, base);
}

#[test]
fn an_invalid_base_is_refused_with_the_reason() {
    let e = suggest(b"{\"defaultAction\": \"SCMP_ACT_NOPE\"}", ["read"], true).unwrap_err();
    assert!(e.to_string().contains("not valid"), "{e}");
}

#[test]
fn syscalls_seen_on_different_architectures_get_a_rule_each_naming_them() {
    use seccomp_profile::suggest::{Observation, suggest_observed};
    let seen = |arch: &str, syscall: &str| Observation {
        arch: arch.into(),
        syscall: syscall.into(),
    };
    let observed = [
        seen("SCMP_ARCH_X86_64", "getppid"),
        seen("SCMP_ARCH_X86", "getppid"),
        seen("SCMP_ARCH_X86", "socketcall"),
        seen("SCMP_ARCH_X86_64", "socket"),
    ];
    let s = suggest_observed(MYPROFILE.as_bytes(), &observed, false).unwrap();
    assert!(s.report.is_valid(), "{:?}", s.report.diagnostics);
    assert_eq!(s.allowed, ["getppid", "socket", "socketcall"]);
    let doc: serde_json::Value = serde_json::from_slice(&s.bytes).unwrap();
    let rules = doc["syscalls"].as_array().unwrap();
    let added: Vec<(Vec<&str>, &str)> = rules
        .iter()
        .filter(|r| {
            r["comment"]
                .as_str()
                .is_some_and(|c| c.contains("seccompctl profile suggest"))
        })
        .map(|r| {
            (
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap())
                    .collect(),
                r["comment"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(added.len(), 3, "{added:?}");
    let comment_of = |name: &str| {
        added
            .iter()
            .find(|(names, _)| names.contains(&name))
            .map(|(_, c)| *c)
            .unwrap()
    };
    assert!(comment_of("getppid").contains("SCMP_ARCH_X86, SCMP_ARCH_X86_64"));
    assert!(comment_of("socketcall").contains("on SCMP_ARCH_X86 "));
    assert!(comment_of("socket").contains("on SCMP_ARCH_X86_64 "));
    assert_eq!(
        s.seen_on["socketcall"].iter().collect::<Vec<_>>(),
        ["SCMP_ARCH_X86"]
    );
    // Seen on one architecture set only: one rule, as before.
    let one = suggest_observed(
        MYPROFILE.as_bytes(),
        &[
            seen("SCMP_ARCH_X86_64", "getppid"),
            seen("SCMP_ARCH_X86_64", "openat"),
        ],
        false,
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&one.bytes).unwrap();
    let base: serde_json::Value = serde_json::from_str(MYPROFILE).unwrap();
    assert_eq!(
        doc["syscalls"].as_array().unwrap().len(),
        base["syscalls"].as_array().unwrap().len() + 1
    );
}
