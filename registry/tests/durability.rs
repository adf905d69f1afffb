//! Durability under `kill -9`: the real `seccomp-registry` binary, several clients publishing
//! in a loop, SIGKILL at a random moment, restart on the same data directory. Every
//! acknowledged version must be there with its exact bytes, and each profile's numbering
//! must be 1..=n with no gap and no duplicate. Several rounds on the same directory.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seccomp_proto::registry::v1 as pb;
use seccomp_proto::registry::v1::registry_client::RegistryClient;
use tonic::transport::Channel;

const ROUNDS: usize = 5;
const CLIENTS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(30);

/// A running registry process.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(data: &Path, log: &Path) -> Registry {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_seccomp-registry"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        // The binary prints `listening on ADDR` once bound; read it without blocking forever.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("registry printed its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Registry { child, addr }
    }

    async fn client(&self) -> RegistryClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        RegistryClient::new(channel)
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per profile: acknowledged versions and their bytes, and every content ever attempted.
#[derive(Default, Clone)]
struct Ledger {
    acked: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
    attempted: BTreeMap<String, BTreeSet<Vec<u8>>>,
}

fn content(counter: usize) -> Vec<u8> {
    // Distinct bytes per publish (the whitespace differs), each a valid profile.
    format!(
        "{{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{{\"names\":[\"read\"],\"action\":\"SCMP_ACT_ALLOW\"}}]{}}}",
        " ".repeat(counter)
    )
    .into_bytes()
}

async fn all_versions(c: &mut RegistryClient<Channel>, name: &str) -> Vec<pb::ProfileVersion> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .history(pb::HistoryRequest {
                name: name.to_owned(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.versions);
        token = page.next_page_token;
        if token.is_empty() {
            return out;
        }
    }
}

async fn verify(registry: &Registry, ledger: &Ledger) -> usize {
    let mut c = registry.client().await;
    let mut checked = 0;
    for (name, attempted) in &ledger.attempted {
        let versions = all_versions(&mut c, name).await;
        let numbers: Vec<u64> = versions.iter().rev().map(|v| v.version).collect();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(
            numbers, expected,
            "{name}: numbering has a gap or a duplicate"
        );
        let acked = ledger.acked.get(name).cloned().unwrap_or_default();
        assert!(
            acked.keys().all(|v| *v <= numbers.len() as u64),
            "{name}: acknowledged versions {:?} but only {} stored",
            acked.keys().collect::<Vec<_>>(),
            numbers.len()
        );
        let mut seen = BTreeSet::new();
        for v in versions {
            let stored = c
                .get_profile(pb::GetProfileRequest {
                    name: name.clone(),
                    selector: Some(pb::get_profile_request::Selector::Version(v.version)),
                    include_content: Some(true),
                })
                .await
                .unwrap()
                .into_inner()
                .profile
                .unwrap();
            if let Some(bytes) = acked.get(&v.version) {
                assert_eq!(&stored.content, bytes, "{name}@{}: bytes differ", v.version);
                checked += 1;
            }
            // An unacknowledged version may exist (the reply was lost), but only with bytes
            // some client sent, and never twice.
            assert!(
                attempted.contains(&stored.content),
                "{name}@{}: unknown bytes",
                v.version
            );
            assert!(
                seen.insert(stored.content),
                "{name}@{}: duplicate content",
                v.version
            );
        }
    }
    checked
}

fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(Instant::now()) % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("registry.log");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let mut registry = Registry::start(&data, &log);
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let mut c = registry.client().await;
            let (ledger, counter, stop, acks) =
                (ledger.clone(), counter.clone(), stop.clone(), acks.clone());
            clients.push(tokio::spawn(async move {
                let name = format!("durable-{i}");
                while !stop.load(Ordering::Relaxed) {
                    let bytes = content(counter.fetch_add(1, Ordering::Relaxed));
                    ledger
                        .lock()
                        .unwrap()
                        .attempted
                        .entry(name.clone())
                        .or_default()
                        .insert(bytes.clone());
                    let request = pb::PublishRequest {
                        name: name.clone(),
                        content: bytes.clone(),
                        description: format!("round {round}"),
                        expected_latest_version: None,
                    };
                    match c.publish(request).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            assert!(r.created, "distinct bytes always create a version");
                            let mut l = ledger.lock().unwrap();
                            let prev = l
                                .acked
                                .entry(name.clone())
                                .or_default()
                                .insert(r.version, bytes);
                            assert!(prev.is_none(), "{name}@{} acknowledged twice", r.version);
                            drop(l);
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        // The server was killed under this call: not acknowledged.
                        Err(_) => break,
                    }
                }
            }));
        }

        // Let some publishes through, then kill at a random moment within the next second.
        let deadline = Instant::now() + DEADLINE;
        while acks.load(Ordering::Relaxed) < 20 {
            assert!(Instant::now() < deadline, "round {round}: no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(random_below(1000))).await;
        registry.kill_9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            tokio::time::timeout(DEADLINE, c).await.unwrap().unwrap();
        }

        registry = Registry::start(&data, &log);
        let snapshot = ledger.lock().unwrap().clone();
        let checked = verify(&registry, &snapshot).await;
        eprintln!(
            "round {round}: {} acknowledged this round, {checked} verified in total",
            acks.load(Ordering::Relaxed)
        );
        assert!(checked > 0);
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "bounded in time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("registry.log");
    let mut registry = Registry::start(&data, &log);
    let mut c = registry.client().await;
    let bytes = content(7);
    let request = pb::PublishRequest {
        name: "graceful".into(),
        content: bytes.clone(),
        description: String::new(),
        expected_latest_version: None,
    };
    assert_eq!(c.publish(request).await.unwrap().into_inner().version, 1);

    let pid = registry.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = registry.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "{exit:?}\n{logged}");
    drop(registry);

    let registry = Registry::start(&data, &log);
    let mut c = registry.client().await;
    let stored = c
        .get_profile(pb::GetProfileRequest {
            name: "graceful".into(),
            selector: None,
            include_content: None,
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert_eq!(stored.content, bytes);
}
