//! One small profile per validation rule, each checked for the exact diagnostics (code and
//! JSON pointer) it must produce, and nothing else.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use seccomp_profile::{Options, Severity, validate};

/// Validate `input` and compare every diagnostic's `(code, path)` with `expected`, in order.
fn check(input: &str, expected: &[(&str, &str)]) {
    let report = validate(input.as_bytes(), &Options::default());
    let got: Vec<(&str, &str)> = report
        .diagnostics
        .iter()
        .map(|d| (d.code.as_str(), d.path.as_str()))
        .collect();
    assert_eq!(
        got, expected,
        "input: {input}\ndiagnostics: {:#?}",
        report.diagnostics
    );
    let has_error = report
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    assert_eq!(
        report.profile.is_none(),
        has_error,
        "profile present iff no error"
    );
    for d in &report.diagnostics {
        assert!(!d.message.is_empty());
        assert!(
            !d.message.ends_with('.'),
            "messages have no trailing period: {}",
            d.message
        );
    }
}

const OK: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;

#[test]
fn clean_profiles() {
    check(OK, &[]);
    check(r#"{"defaultAction":"SCMP_ACT_LOG"}"#, &[]);
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
            "flags":["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls":[{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"valueTwo":0,"op":"SCMP_CMP_EQ"}]},
                        {"names":["mount"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                        {"names":["ptrace"],"action":"SCMP_ACT_TRACE","errnoRet":7},
                        {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967295,"valueTwo":16,"op":"SCMP_CMP_MASKED_EQ"}]},
                        {"names":["ioctl"],"action":"SCMP_ACT_NOTIFY"}],
            "listenerPath":"/run/seccomp.sock","listenerMetadata":"x"}"#,
        &[],
    );
    // A value of u64::MAX fits.
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":18446744073709551615,"op":"SCMP_CMP_NE"}]}]}"#,
        &[],
    );
}

#[test]
fn document_level_errors() {
    check("", &[("empty-file", "")]);
    check("  \n", &[("empty-file", "")]);
    check(
        "\u{feff}{\"defaultAction\":\"SCMP_ACT_LOG\"}",
        &[("bom", "")],
    );
    check(
        "{\"defaultAction\": \"SCMP_ACT_LOG\",}",
        &[("invalid-json", "")],
    );
    check(
        "{\"defaultAction\": \"SCMP_ACT_LOG\"} // note",
        &[("invalid-json", "")],
    );
    check(
        "/* c */ {\"defaultAction\": \"SCMP_ACT_LOG\"}",
        &[("invalid-json", "")],
    );
    check("[]", &[("not-object", "")]);
    check("\"SCMP_ACT_LOG\"", &[("not-object", "")]);
    check("{}", &[("missing-default-action", "")]);
    check(
        r#"{"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("missing-default-action", "")],
    );
    let bad_utf8 = b"{\"defaultAction\":\"SCMP_ACT_LOG\xff\"}";
    let report = validate(bad_utf8, &Options::default());
    assert_eq!(report.diagnostics[0].code.as_str(), "not-utf8");
}

#[test]
fn duplicate_keys_and_types() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultAction":"SCMP_ACT_ALLOW"}"#,
        &[("duplicate-key", "/defaultAction")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","action":"SCMP_ACT_ERRNO"}]}"#,
        &[("duplicate-key", "/syscalls/0/action")],
    );
    check(
        r#"{"defaultAction":1}"#,
        &[("wrong-type", "/defaultAction")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":{}}"#,
        &[("wrong-type", "/syscalls")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":["read"]}"#,
        &[("wrong-type", "/syscalls/0")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","architectures":"SCMP_ARCH_X86_64"}"#,
        &[("wrong-type", "/architectures")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read",7],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("wrong-type", "/syscalls/0/names/1")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":"1"}"#,
        &[("wrong-type", "/defaultErrnoRet")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":-1}"#,
        &[("wrong-type", "/defaultErrnoRet")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1.5}"#,
        &[("wrong-type", "/defaultErrnoRet")],
    );
}

#[test]
fn number_overflow() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":18446744073709551616,"op":"SCMP_CMP_EQ"}]}]}"#,
        &[("number-overflow", "/syscalls/0/args/0/value")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"valueTwo":99999999999999999999999,"op":"SCMP_CMP_EQ"}]}]}"#,
        &[("number-overflow", "/syscalls/0/args/0/valueTwo")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":4294967296}]}"#,
        &[("number-overflow", "/syscalls/0/errnoRet")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":4294967296,"op":"SCMP_CMP_EQ"}]}]}"#,
        &[("number-overflow", "/syscalls/0/args/0/index")],
    );
}

#[test]
fn actions() {
    check(
        r#"{"defaultAction":"SCMP_ACT_DENY"}"#,
        &[("unknown-action", "/defaultAction")],
    );
    check(
        r#"{"defaultAction":"scmp_act_errno"}"#,
        &[("unknown-action", "/defaultAction")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"ALLOW"}]}"#,
        &[("unknown-action", "/syscalls/0/action")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"]}]}"#,
        &[("missing-action", "/syscalls/0")],
    );
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
    ] {
        check(&format!(r#"{{"defaultAction":"{action}"}}"#), &[]);
    }
}

#[test]
fn errno_ret_rules() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
        &[("errno-ret-not-allowed", "/syscalls/0/errnoRet")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#,
        &[("default-errno-ret-not-allowed", "/defaultErrnoRet")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO","errnoRet":4095}]}"#,
        &[("errno-ret-too-large", "/syscalls/0/errnoRet")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO","errnoRet":4094}]}"#,
        &[],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":5000}"#,
        &[("errno-ret-too-large", "/defaultErrnoRet")],
    );
}

#[test]
fn architectures() {
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["SCMP_ARCH_NATIVE"]}"#,
        &[("unknown-arch", "/architectures/0")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["x86_64"]}"#,
        &[("unknown-arch", "/architectures/0")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_PARISC"]}"#,
        &[("arch-unsupported-by-runc", "/architectures/1")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["SCMP_ARCH_X86_64"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}]}"#,
        &[
            ("architectures-and-archmap", "/archMap"),
            ("runtime-ignored-field", "/archMap"),
        ],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_AMD64"]}]}"#,
        &[
            ("unknown-arch", "/archMap/0/subArchitectures/0"),
            ("runtime-ignored-field", "/archMap"),
        ],
    );
}

#[test]
fn syscall_names() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["opnat"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("unknown-syscall", "/syscalls/0/names/0")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("empty-names", "/syscalls/0/names")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read",""],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("empty-name", "/syscalls/0/names/1")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("missing-names", "/syscalls/0")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","names":["write"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("name-and-names", "/syscalls/0/name")],
    );
    // ARM private calls that libseccomp resolves, as Docker's default profile uses them.
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["breakpoint","cacheflush","set_tls","usr26","usr32"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[],
    );
    // libseccomp 2.5.4 resolves both, so `seccompctl validate` must not call them unknown:
    // x86's `break` (which the `syscalls` crate spells `r#break`) and ARM's private `get_tls`.
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["break","get_tls"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86","SCMP_ARCH_ARM"],"syscalls":[{"names":["break","get_tls"],"action":"SCMP_ACT_ERRNO"}]}"#,
        &[],
    );
    // Exists, but not on the listed architecture.
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_AARCH64"],"syscalls":[{"names":["read","arch_prctl"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("syscall-not-on-listed-arch", "/syscalls/0/names/1")],
    );
}

#[test]
fn arguments() {
    let rule = |args: &str| {
        format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":{args}}}]}}"#
        )
    };
    check(
        &rule(r#"[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]"#),
        &[("arg-index-out-of-range", "/syscalls/0/args/0/index")],
    );
    check(
        &rule(r#"[{"index":0,"value":0,"op":"SCMP_CMP_EQUAL"}]"#),
        &[("unknown-operator", "/syscalls/0/args/0/op")],
    );
    check(
        &rule(r#"[{"index":0,"value":0}]"#),
        &[("missing-op", "/syscalls/0/args/0")],
    );
    check(
        &rule(r#"[{"value":0,"op":"SCMP_CMP_EQ"}]"#),
        &[("missing-index", "/syscalls/0/args/0")],
    );
    let seven: Vec<String> = (0..7)
        .map(|i| format!(r#"{{"index":{},"value":0,"op":"SCMP_CMP_EQ"}}"#, i % 6))
        .collect();
    check(
        &rule(&format!("[{}]", seven.join(","))),
        &[
            ("duplicate-arg-index", "/syscalls/0/args/6/index"),
            ("too-many-args", "/syscalls/0/args"),
        ]
        .iter()
        .rev()
        .copied()
        .collect::<Vec<_>>(),
    );
    check(
        &rule(
            r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]"#,
        ),
        &[("duplicate-arg-index", "/syscalls/0/args/1/index")],
    );
    check(
        &rule(r#"[{"index":0,"value":15,"valueTwo":16,"op":"SCMP_CMP_MASKED_EQ"}]"#),
        &[("masked-eq-unreachable", "/syscalls/0/args/0")],
    );
    check(&rule("[]"), &[]);
    check(&rule("null"), &[]);
}

#[test]
fn flags_and_listener() {
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_NEW_LISTENER"]}"#,
        &[("unknown-flag", "/flags/1")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_LOG","listenerMetadata":"m"}"#,
        &[("listener-metadata-without-path", "/listenerMetadata")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/run/s.sock"}"#,
        &[("notify-default-action", "/defaultAction")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/s.sock","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        &[("notify-on-write", "/syscalls/0/names/1")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        &[("notify-without-listener", "/syscalls/0/action")],
    );
}

#[test]
fn includes_excludes_and_min_kernel() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"],"minKernel":"4.8"}}]}"#,
        &[("runtime-ignored-field", "/syscalls/0/includes")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ALLOW","excludes":{"minKernel":"4"}}]}"#,
        &[
            ("bad-min-kernel", "/syscalls/0/excludes/minKernel"),
            ("runtime-ignored-field", "/syscalls/0/excludes"),
        ]
        .iter()
        .take(1)
        .copied()
        .collect::<Vec<_>>(),
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"v4.8"}}]}"#,
        &[("bad-min-kernel", "/syscalls/0/includes/minKernel")],
    );
    // Empty includes/excludes objects (Docker writes them) say nothing and warn about nothing.
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{},"excludes":{}}]}"#,
        &[],
    );
}

#[test]
fn runtime_ignored_fields_are_counted_once() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW","comment":"a"},{"name":"write","action":"SCMP_ACT_ALLOW","comment":"b"}]}"#,
        &[
            ("runtime-ignored-field", "/syscalls/0/name"),
            ("runtime-ignored-field", "/syscalls/0/comment"),
        ],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrno":"EPERM","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO","errno":"EACCES"}]}"#,
        &[
            ("rule-equals-default", "/syscalls/0/action"),
            ("runtime-ignored-field", "/defaultErrno"),
        ],
    );
    let report = validate(
        br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW"},{"name":"write","action":"SCMP_ACT_ALLOW"}]}"#,
        &Options::default(),
    );
    assert!(
        report.diagnostics[0].message.contains("(2 places)"),
        "{}",
        report.diagnostics[0].message
    );
}

#[test]
fn unknown_keys_warn_with_a_hint() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defualtErrnoRet":38}"#,
        &[("unknown-key", "/defualtErrnoRet")],
    );
    let report = validate(
        br#"{"defaultAction":"SCMP_ACT_ERRNO","defualtErrnoRet":38}"#,
        &Options::default(),
    );
    assert!(
        report.diagnostics[0]
            .message
            .contains("did you mean \"defaultErrnoRet\"")
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ","vaule2":3}]}]}"#,
        &[("unknown-key", "/syscalls/0/args/0/vaule2")],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","a/b~c":1}"#,
        &[("unknown-key", "/a~1b~0c")],
    );
}

#[test]
fn cross_rule_warnings() {
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_KILL"},{"names":["read","mkdir"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("conflicting-actions", "/syscalls/1/action")],
    );
    // Conditional rules do not conflict with unconditional ones.
    check(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_KILL"},{"names":["mkdir"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        &[],
    );
    check(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        &[("rule-equals-default", "/syscalls/0/action")],
    );
}

#[test]
fn size_limits() {
    let opts = Options { max_bytes: 10 };
    let report = validate(OK.as_bytes(), &opts);
    assert_eq!(report.diagnostics.len(), 1);
    assert_eq!(report.diagnostics[0].code.as_str(), "file-too-large");

    // 4,100 conditional rules on one syscall exceed the kernel's BPF limit.
    let rules: Vec<String> = (0..4100)
        .map(|i| format!(r#"{{"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[{{"index":1,"value":{i},"op":"SCMP_CMP_EQ"}}]}}"#))
        .collect();
    let big = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
        rules.join(",")
    );
    check(&big, &[("filter-too-large", "/syscalls")]);
    // 1,000 is fine.
    let small = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
        rules[..1000].join(",")
    );
    check(&small, &[]);
}

#[test]
fn digest_and_model() {
    let report = validate(OK.as_bytes(), &Options::default());
    assert_eq!(report.digest, seccomp_profile::digest(OK.as_bytes()));
    assert_eq!(report.size, OK.len());
    let p = report.profile.expect("valid");
    assert_eq!(p.default_action.name, "SCMP_ACT_ERRNO");
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].names, vec!["read"]);
}
