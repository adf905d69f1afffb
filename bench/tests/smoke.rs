//! A smoke run of every `seccomp-bench` command with a small fleet (the real measurements
//! are in BENCHMARKS.md; the test command only checks the commands work and report what
//! they say). The etcd ones need Debian's `etcd-server` package and skip, loudly, without.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_seccomp-bench"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seccomp-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn etcd() -> bool {
    let found = seccomp_bench::etcd_peer::etcd_version("etcd").is_some();
    if !found {
        eprintln!(
            "SKIPPED: `etcd` is not installed (Debian package etcd-server; .ci/run installs it)"
        );
    }
    found
}

#[test]
fn converge_rolls_out_to_every_agent_and_reports_it() {
    let r = bench(&[
        "converge",
        "--agents",
        "24",
        "--waves",
        "1,50%,100%",
        "--max-unavailable",
        "50%",
        "--rounds",
        "2",
        "--per-connection",
        "10",
    ]);
    assert_eq!(r["agents"], 24);
    assert_eq!(r["tls"], false);
    assert_eq!(r["connections"], 3);
    assert_eq!(r["rounds"].as_array().unwrap().len(), 2);
    for round in r["rounds"].as_array().unwrap() {
        let seconds = round["seconds"].as_f64().unwrap();
        assert!(seconds > 0.0 && seconds < 60.0, "{round}");
        assert!(
            round["all_acked_seconds"].as_f64().unwrap() > 0.0,
            "{round}"
        );
    }
    assert!(r["distributor_rss_bytes_idle"].as_u64().unwrap() > 0);
    assert!(r["profile_bytes"].as_u64().unwrap() > 1000);
}

#[test]
fn converge_with_mtls_gives_every_agent_its_own_connection_and_certificate() {
    let r = bench(&["converge", "--agents", "8", "--tls"]);
    assert_eq!(r["tls"], true);
    assert_eq!(r["connections"], 8);
    assert!(r["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn converge_with_the_state_in_etcd() {
    if !etcd() {
        return;
    }
    let r = bench(&["converge", "--agents", "20", "--etcd", "--rounds", "2"]);
    assert_eq!(r["store"], "etcd");
    assert_eq!(r["rounds"].as_array().unwrap().len(), 2);
    assert!(r["seconds"].as_f64().unwrap() > 0.0);
    // Three replicas, the agents spread over them: every round completes.
    let r = bench(&[
        "converge",
        "--agents",
        "30",
        "--per-connection",
        "5",
        "--etcd",
        "--replicas",
        "3",
        "--rounds",
        "2",
    ]);
    assert_eq!(r["replicas"], 3);
    assert_eq!(r["connections"], 6);
    assert_eq!(r["rounds"].as_array().unwrap().len(), 2);
}

#[test]
fn etcd_peer_counts_every_acknowledgement() {
    if !etcd() {
        return;
    }
    let r = bench(&[
        "etcd-peer",
        "--watchers",
        "30",
        "--connections",
        "4",
        "--rounds",
        "2",
    ]);
    assert_eq!(r["watchers"], 30);
    assert_eq!(r["rounds"].as_array().unwrap().len(), 2);
    assert!(r["seconds"].as_f64().unwrap() > 0.0);
    assert!(r["etcd_version"].as_str().unwrap().contains("etcd"));
}

#[test]
fn compare_runs_both_and_prints_the_ratios() {
    if !etcd() {
        return;
    }
    let r = bench(&["compare", "--agents", "10", "--runs", "1"]);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let ratio = run["default_ratio"].as_f64().unwrap();
    let expected = run["default_seconds"].as_f64().unwrap() / run["etcd_seconds"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{run}");
    assert!(run["one_wave_ratio"].as_f64().unwrap() > 0.0);
}
