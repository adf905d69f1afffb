//! Seccomp records attributed to containers by /proc (pid reuse included) and aggregated,
//! bounded.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::Path;

use seccomp_node_agent::seccomp_events::{Aggregator, container_of_cgroup};
use seccomp_profile::audit::parse_line;

const A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn record(pid: u32, time: &str, syscall: u32, code: &str) -> seccomp_profile::audit::SeccompRecord {
    parse_line(&format!(
        "type=SECCOMP msg=audit({time}:1): pid={pid} comm=\"app\" exe=\"/app\" sig=0 arch=c000003e syscall={syscall} compat=0 ip=0x1 code={code}"
    ))
    .unwrap()
}

fn process(proc: &Path, pid: u32, started: u64, cgroup: &str) {
    let dir = proc.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    // Fields 3 to 22 of stat(5), the command name with a space in it.
    let fields: Vec<String> = (3..22)
        .map(|i| {
            if i == 3 {
                "S".to_owned()
            } else {
                "0".to_owned()
            }
        })
        .collect();
    std::fs::write(
        dir.join("stat"),
        format!("{pid} (my app) {} {started} 0 0\n", fields.join(" ")),
    )
    .unwrap();
    std::fs::write(dir.join("cgroup"), cgroup).unwrap();
}

#[test]
fn container_ids_from_each_runtimes_cgroup_paths() {
    let cases = [
        (
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f1c2a9e_1b2c_4d5e_8f90_123456789abc.slice/cri-containerd-{A}.scope\n"
            ),
            Some(A),
        ),
        (
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{B}.scope\n"),
            Some(B),
        ),
        (format!("0::/system.slice/docker-{A}.scope\n"), Some(A)),
        (
            format!(
                "12:memory:/kubepods/besteffort/pod3f1c2a9e-1b2c-4d5e-8f90-123456789abc/{B}\n11:cpu:/kubepods/besteffort/pod3f1c2a9e-1b2c-4d5e-8f90-123456789abc/{B}\n"
            ),
            Some(B),
        ),
        (
            "0::/user.slice/user-1000.slice/session-2.scope\n".to_owned(),
            None,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(container_of_cgroup(&text).as_deref(), want, "{text}");
    }
}

#[test]
fn records_are_counted_by_kind_with_first_and_last_seen() {
    let proc = tempfile::tempdir().unwrap();
    process(
        proc.path(),
        42,
        100,
        &format!("0::/system.slice/docker-{A}.scope\n"),
    );
    let mut agg = Aggregator::new(proc.path(), 100);
    agg.add(&record(42, "1700000000.500", 110, "0x7ffc0000"));
    agg.add(&record(42, "1700000002.000", 110, "0x7ffc0000"));
    agg.add(&record(42, "1700000001.000", 257, "0x50001"));
    let (events, dropped) = agg.take();
    assert_eq!(dropped, 0);
    let kinds: Vec<(&str, &str, u64, u64, u64)> = events
        .iter()
        .map(|(k, c)| {
            (
                k.syscall.as_str(),
                k.action.as_str(),
                c.count,
                c.first_ms,
                c.last_ms,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "getppid",
                "SCMP_ACT_LOG",
                2,
                1_700_000_000_500,
                1_700_000_002_000
            ),
            (
                "openat",
                "SCMP_ACT_ERRNO(1)",
                1,
                1_700_000_001_000,
                1_700_000_001_000
            ),
        ]
    );
    assert!(
        events
            .keys()
            .all(|k| k.container == A && k.arch == "SCMP_ARCH_X86_64")
    );
    assert!(agg.take().0.is_empty(), "taken");
}

#[test]
fn a_reused_pid_is_looked_up_again_and_a_gone_one_is_not_guessed() {
    let proc = tempfile::tempdir().unwrap();
    process(
        proc.path(),
        42,
        100,
        &format!("0::/system.slice/docker-{A}.scope\n"),
    );
    let mut agg = Aggregator::new(proc.path(), 100);
    agg.add(&record(42, "1.000", 110, "0x7ffc0000"));
    // The process exits and another one, in another container, gets its pid.
    process(
        proc.path(),
        42,
        200,
        &format!("0::/system.slice/docker-{B}.scope\n"),
    );
    agg.add(&record(42, "2.000", 110, "0x7ffc0000"));
    std::fs::remove_dir_all(proc.path().join("42")).unwrap();
    agg.add(&record(42, "3.000", 110, "0x7ffc0000"));
    let containers: Vec<String> = agg.take().0.keys().map(|k| k.container.clone()).collect();
    assert_eq!(containers, ["", A, B]);
}

#[test]
fn kinds_are_bounded_and_what_is_dropped_is_counted() {
    let proc = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(proc.path(), 2);
    for nr in [0, 1, 2, 3, 0] {
        agg.add(&record(7, "1.000", nr, "0x7ffc0000"));
    }
    let (events, dropped) = agg.take();
    assert_eq!(events.len(), 2);
    assert_eq!(dropped, 2);
    assert_eq!(events.values().map(|c| c.count).sum::<u64>(), 3);
}
