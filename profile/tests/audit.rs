//! Kernel seccomp audit records in the forms node logs hold them, decoded by the record's
//! architecture.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use seccomp_profile::audit::{AuditAction, AuditArch, parse_line};

#[test]
fn auditd_lines_on_x86_64() {
    let r = parse_line(
        "type=SECCOMP msg=audit(1700000000.123:456): auid=4294967295 uid=0 gid=0 ses=4294967295 subj=unconfined pid=1234 comm=\"curl\" exe=\"/usr/bin/curl\" sig=0 arch=c000003e syscall=41 compat=0 ip=0x7f1234567890 code=0x7ffc0000",
    )
    .unwrap();
    assert_eq!(r.time_ms, 1_700_000_000_123);
    assert_eq!(r.serial, 456);
    assert_eq!(r.pid, 1234);
    assert_eq!((r.comm.as_str(), r.exe.as_str()), ("curl", "/usr/bin/curl"));
    assert_eq!(r.arch, Some(AuditArch::X86_64));
    assert_eq!(r.syscall, Some("socket"));
    assert_eq!(r.action, Some(AuditAction::Log));
    assert!(r.action.unwrap().allowed());
}

#[test]
fn the_kernels_own_line_through_syslog() {
    let r = parse_line(
        "Dec  1 10:00:00 node-1 kernel: [12345.678901] audit: type=1326 audit(1700000001.500:457): auid=4294967295 uid=1000 gid=1000 ses=4294967295 pid=99 comm=\"myapp\" exe=\"/app/myapp\" sig=0 arch=c000003e syscall=110 compat=0 ip=0x4a1b2c code=0x50001",
    )
    .unwrap();
    assert_eq!(r.time_ms, 1_700_000_001_500);
    assert_eq!(r.syscall, Some("getppid"));
    assert_eq!(r.action, Some(AuditAction::Errno(1)));
    assert_eq!(r.action.unwrap().scmp_name(), "SCMP_ACT_ERRNO");
    assert!(!r.action.unwrap().allowed());
}

#[test]
fn a_32_bit_process_on_x86_64_is_named_by_i386s_table() {
    // getppid is 64 on i386 (110 on x86_64, where 64 is semget).
    let r = parse_line(
        "type=SECCOMP msg=audit(1700000002.000:458): pid=7 comm=\"a.out\" exe=\"/tmp/a.out\" sig=0 arch=40000003 syscall=64 compat=1 ip=0xf7f0 code=0x7ffc0000",
    )
    .unwrap();
    assert_eq!(r.arch, Some(AuditArch::X86));
    assert_eq!(r.arch.unwrap().scmp_name(), "SCMP_ARCH_X86");
    assert_eq!(r.syscall, Some("getppid"));
}

#[test]
fn x32_by_the_x32_bit_with_its_own_calls() {
    let line = |nr: u64| {
        format!(
            "type=SECCOMP msg=audit(1700000003.000:459): pid=8 comm=\"x\" exe=\"/x\" sig=0 arch=c000003e syscall={nr} compat=0 ip=0x1 code=0x7ffc0000"
        )
    };
    let shared = parse_line(&line(0x4000_0000 + 41)).unwrap();
    assert_eq!(shared.arch, Some(AuditArch::X32));
    assert_eq!(shared.syscall, Some("socket"));
    // 512 and up are x32's own: 512 is rt_sigaction (13 on x86_64).
    let own = parse_line(&line(0x4000_0000 + 512)).unwrap();
    assert_eq!(own.syscall, Some("rt_sigaction"));
    assert_eq!(
        parse_line(&line(0x4000_0000 + 547)).unwrap().syscall,
        Some("pwritev2")
    );
}

#[test]
fn aarch64_by_its_own_numbers() {
    let line = |nr: u32| {
        format!(
            "type=SECCOMP msg=audit(1700000004.250:460): pid=9 comm=\"app\" exe=\"/app\" sig=0 arch=c00000b7 syscall={nr} compat=0 ip=0xffff code=0x7ffc0000"
        )
    };
    assert_eq!(parse_line(&line(173)).unwrap().syscall, Some("getppid"));
    assert_eq!(parse_line(&line(56)).unwrap().syscall, Some("openat"));
    assert_eq!(
        parse_line(&line(56)).unwrap().arch.unwrap().scmp_name(),
        "SCMP_ARCH_AARCH64"
    );
}

#[test]
fn actions_by_code() {
    for (code, action) in [
        (0x8000_0000u32, AuditAction::KillProcess),
        (0x0000_0000, AuditAction::KillThread),
        (0x0003_0000, AuditAction::Trap),
        (0x0005_000d, AuditAction::Errno(13)),
        (0x7fc0_0000, AuditAction::Notify),
        (0x7ff0_0007, AuditAction::Trace(7)),
        (0x7fff_0000, AuditAction::Allow),
    ] {
        assert_eq!(AuditAction::from_code(code), Some(action), "{code:#x}");
    }
    assert_eq!(AuditAction::from_code(0x1234_0000), None);
}

#[test]
fn hex_encoded_names_and_unknown_architectures() {
    // audit writes a value with a space in it as hex, without quotes.
    let r = parse_line(
        "type=SECCOMP msg=audit(1700000005.000:461): pid=10 comm=6D7920617070 exe=\"/opt/my app\" sig=0 arch=c000003e syscall=257 compat=0 ip=0x1 code=0x7ffc0000",
    )
    .unwrap();
    assert_eq!(r.comm, "my app");
    assert_eq!(r.syscall, Some("openat"));
    // An architecture we have no table for: kept raw, not guessed.
    let r = parse_line(
        "type=SECCOMP msg=audit(1700000005.000:462): pid=11 comm=\"m\" exe=\"/m\" sig=0 arch=8 syscall=4 compat=0 ip=0x1 code=0x7ffc0000",
    )
    .unwrap();
    assert_eq!((r.arch, r.syscall, r.arch_code), (None, None, 8));
}

#[test]
fn other_lines_are_not_records() {
    for line in [
        "",
        "type=SYSCALL msg=audit(1700000000.123:456): arch=c000003e syscall=41 success=yes",
        "Dec  1 10:00:00 node-1 kernel: [1.0] usb 1-1: new device",
        "type=SECCOMP msg=audit(garbage",
        "type=SECCOMP msg=audit(1700000000.123:456): pid=1 comm=\"x\" arch=zz syscall=1 code=0x7ffc0000",
    ] {
        assert_eq!(parse_line(line), None, "{line:?}");
    }
}

/// The syscalls of a record are named as libseccomp names them, on each architecture a
/// record can come from (Debian's `seccomp` package; skipped, saying so, without it).
#[test]
fn names_agree_with_libseccomp() {
    let resolve = |arch: &str, nr: u64| -> Option<Option<String>> {
        let out = std::process::Command::new("scmp_sys_resolver")
            .args(["-a", arch, &nr.to_string()])
            .output()
            .ok()?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Some(
            (out.status.success() && !name.is_empty() && !name.starts_with("UNKNOWN"))
                .then_some(name),
        )
    };
    if resolve("x86_64", 0).is_none() {
        eprintln!(
            "SKIPPED: cannot run scmp_sys_resolver; install Debian's `seccomp` package (.ci/run does)"
        );
        return;
    }
    let cases: &[(&str, &str, u64, std::ops::Range<u64>)] = &[
        ("x86_64", "c000003e", 0, 0..335),
        ("x86", "40000003", 0, 0..385),
        ("x32", "c000003e", 0x4000_0000, 0..335),
        ("x32", "c000003e", 0x4000_0000, 512..548),
        ("aarch64", "c00000b7", 0, 0..295),
    ];
    let mut compared = 0;
    for (arch, code, bit, range) in cases {
        for n in range.clone() {
            let Some(Some(want)) = resolve(arch, n + bit) else {
                continue;
            };
            let line = format!(
                "type=SECCOMP msg=audit(1.000:1): pid=1 comm=\"x\" exe=\"/x\" sig=0 arch={code} syscall={} compat=0 ip=0x1 code=0x7ffc0000",
                n + bit
            );
            let got = parse_line(&line).unwrap().syscall;
            assert_eq!(got, Some(want.as_str()), "{arch} {n}");
            compared += 1;
        }
    }
    assert!(compared > 1000, "only {compared} numbers compared");
}
