#![allow(clippy::unwrap_used)]
//! Steady-state memory of the agent's file core managing 100 profiles (DESIGN section 10:
//! under 16 MiB RSS).
//!
//! ```sh
//! cargo run --release -p seccomp-node-agent --example rss
//! ```
//!
//! Applies 100 profiles the size of Docker's default (13.5 KB each; the shared fixture when
//! present, a synthetic one otherwise) into a temp host root, starts the inotify watcher and
//! the drift trigger on a 2-worker tokio runtime, then runs the drift loop: every round edits one file
//! by hand, waits for the trigger, repairs, and rescans everything. Prints VmRSS (now) and
//! VmHWM (peak) from `/proc/self/status` after the first apply and after the loop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seccomp_node_agent::watch::{ChangeWatcher, DriftTrigger};
use seccomp_node_agent::{Applier, Config, DesiredFile};

const FILES: usize = 100;
const ROUNDS: usize = 20;
const ROOT: &str = "/var/lib/kubelet/seccomp";

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_owned())
        .unwrap_or_default()
}

fn report(when: &str) {
    println!(
        "{when}: VmRSS {}, VmHWM {}",
        status("VmRSS:"),
        status("VmHWM:")
    );
}

fn profile(template: &str, i: usize) -> Vec<u8> {
    // Distinct bytes per file, same size as the template.
    let mut bytes = template.as_bytes().to_vec();
    let tag = format!("{i:04}");
    let at = bytes.len() / 2;
    bytes.splice(at..at + 4, tag.bytes());
    bytes
}

fn main() {
    let template =
        std::fs::read_to_string("../shared/fixtures/profiles/accept/valid-docker-default.json")
            .or_else(|_| {
                std::fs::read_to_string(
                    "../../shared/fixtures/profiles/accept/valid-docker-default.json",
                )
            })
            .unwrap_or_else(|_| {
                format!(
                    "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"pad\":\"{}\"}}",
                    "x".repeat(13_400)
                )
            });
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("etc")).unwrap();
    std::fs::create_dir_all(host.join("var/lib/kubelet")).unwrap();
    std::fs::write(host.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(host.join("etc/group"), "root:x:0:\n").unwrap();
    let config = Config {
        host_root: host.clone(),
        allowed_root: ROOT.to_owned(),
        state_dir: tmp.path().join("state"),
    };

    let mut desired = vec![DesiredFile::directory(ROOT, 0o755, "root", "root")];
    desired.extend((0..FILES).map(|i| {
        DesiredFile::file(
            format!("{ROOT}/p{i:03}.json"),
            profile(&template, i),
            0o644,
            "root",
            "root",
        )
    }));
    let mut applier = Applier::open(config).unwrap();
    applier.apply("r1", &desired).unwrap();
    drop(desired);
    println!("managed files: {FILES} of {} bytes", template.len());
    report("after first apply");

    // As the agent will run it: a multi-thread runtime, the applier behind a mutex, scans and
    // repairs on the blocking pool.
    let applier = Arc::new(Mutex::new(applier));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = applier.lock().unwrap().allowed_root_on_disk();
        let (_watcher, changes) = ChangeWatcher::channel(&dir).unwrap();
        let mut trigger = DriftTrigger::new(Some(changes), Duration::from_secs(1));
        let started = Instant::now();
        let mut repaired = 0;
        for round in 0..ROUNDS {
            std::fs::write(dir.join(format!("p{:03}.json", round % FILES)), "edited").unwrap();
            // Triggers from our own repair may be pending: scan until the edit is repaired.
            loop {
                trigger.next().await;
                let applier = applier.clone();
                let report = tokio::task::spawn_blocking(move || applier.lock().unwrap().repair())
                    .await
                    .unwrap();
                if report.is_some() {
                    repaired += 1;
                    break;
                }
            }
            let applier = applier.clone();
            let clean = tokio::task::spawn_blocking(move || applier.lock().unwrap().check_drift().is_empty())
                .await
                .unwrap();
            assert!(clean);
        }
        println!(
            "{ROUNDS} rounds (edit, inotify trigger, repair, full rescan) in {:?}, {repaired} repairs",
            started.elapsed()
        );
    });
    report("steady state after the drift loop");
}
