//! Publish latency through the real gRPC server against a bare sled insert + flush of the
//! same bytes, measured in the same run (DESIGN section 10: publish p99 within 1.5x of the
//! bare flush).
//!
//! `cargo bench -p seccomp-registry --bench publish`. Docker's default profile comes from
//! `$SECCOMP_FIXTURES/profiles/accept/valid-docker-default.json` (default: the shared
//! fixtures beside the repository); the benchmark skips with a message when it is absent.
//! `SECCOMP_BENCH_ITERS` sets the number of measured publishes (default 2000).
//!
//! Each iteration appends a different run of spaces to the profile, so every publish stores
//! a new version, and runs the bare insert + flush and the publish in the same loop, so both
//! see the same disk conditions. The loop also times the parts of a publish on their own
//! (validation as a library call, a trivial RPC, `ValidateProfile` over gRPC, and the
//! registry's store commit without gRPC) to show where the time goes. A last phase publishes
//! from four clients at once and reports the throughput.
//!
//! The benchmark uses the allocator the `seccomp-registry` binary uses (mimalloc), so the
//! in-process server behaves as the real one would; the bare sled side gets it too.

#![allow(clippy::unwrap_used)] // a benchmark may panic on what it did not expect

use std::path::PathBuf;
use std::time::{Duration, Instant};

use seccomp_proto::registry::v1 as pb;
use seccomp_proto::registry::v1::registry_client::RegistryClient;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WARMUP: usize = 50;

fn fixture() -> Option<Vec<u8>> {
    let dir = std::env::var_os("SECCOMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let path = dir.join("profiles/accept/valid-docker-default.json");
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot read {} ({e}); set SECCOMP_FIXTURES",
                path.display()
            );
            None
        }
    }
}

/// The profile with `i` extra spaces at the end: same meaning, distinct bytes.
fn variant(base: &[u8], i: usize) -> Vec<u8> {
    let mut bytes = base.to_vec();
    bytes.extend(std::iter::repeat_n(b' ', i % 4096));
    bytes.push(b'\n');
    bytes.extend(std::iter::repeat_n(b'\n', i / 4096));
    bytes
}

struct Stats {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Stats {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: *samples.last().unwrap(),
        mean: samples.iter().sum::<Duration>() / samples.len() as u32,
    }
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this with `--bench` absent; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("publish benchmark: run with `cargo bench -p seccomp-registry --bench publish`");
        return;
    }
    let Some(base) = fixture() else { return };
    let iterations: usize = std::env::var("SECCOMP_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    let dir = tempfile::tempdir().unwrap();
    let bare = sled::open(dir.path().join("bare")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = seccomp_registry::Config::new(dir.path().join("registry"));
    // The server runs on a runtime of its own, as it would in its own process; set
    // SECCOMP_BENCH_SHARED_RUNTIME=1 to run it on the client's runtime instead (how the
    // earlier figures in BENCHMARKS.md were taken).
    let shared = std::env::var_os("SECCOMP_BENCH_SHARED_RUNTIME").is_some();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let serve = async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        seccomp_registry::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
    };
    let server: Box<dyn FnOnce() + Send> = if shared {
        let task = tokio::spawn(serve);
        Box::new(move || {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(task)
                    .unwrap()
                    .unwrap();
            });
        })
    } else {
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(serve)
                .unwrap();
        });
        Box::new(move || thread.join().unwrap())
    };
    let mut client = RegistryClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let store = seccomp_registry::ProfileStore::open(&dir.path().join("store")).unwrap();
    let mut publish_samples = Vec::with_capacity(iterations);
    let mut bare_samples = Vec::with_capacity(iterations);
    let mut validate_samples = Vec::with_capacity(iterations);
    let mut store_samples = Vec::with_capacity(iterations);
    let mut lib_samples = Vec::with_capacity(iterations);
    let mut rpc_samples = Vec::with_capacity(iterations);
    for i in 0..WARMUP + iterations {
        let bytes = variant(&base, i);

        let started = Instant::now();
        bare.insert((i as u64).to_be_bytes(), bytes.as_slice())
            .unwrap();
        // The same flush the registry does: a blocking flush on the blocking pool (sled
        // 0.34's flush_async can hang under concurrency, spacejam/sled#1241).
        let db = bare.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .unwrap()
            .unwrap();
        let bare_time = started.elapsed();

        let started = Instant::now();
        let report = seccomp_profile::validate_default(&bytes);
        let lib_time = started.elapsed();
        assert!(report.is_valid());

        let started = Instant::now();
        client
            .list_profiles(pb::ListProfilesRequest {
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap();
        let rpc_time = started.elapsed();

        let started = Instant::now();
        let v = client
            .validate_profile(pb::ValidateProfileRequest {
                content: bytes.clone(),
                name: "docker-default".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let validate_time = started.elapsed();
        assert!(v.valid);

        let started = Instant::now();
        {
            use seccomp_registry::store::*;
            let now = UnixNanos::now();
            let meta = VersionMeta {
                name: "docker-default".into(),
                version: i as u64 + 1,
                digest: seccomp_profile::digest(&bytes),
                size: bytes.len() as u64,
                created_at: now,
                author: "anonymous".into(),
                description: String::new(),
                warnings: Vec::new(),
                deprecation: None,
            };
            let audit = AuditEntry {
                time: now,
                actor: "anonymous".into(),
                method: "Publish".into(),
                target: format!("docker-default@{}", i + 1),
                result: "OK".into(),
                message: format!("created version {}", i + 1),
            };
            let record = ProfileRecord {
                next_version: i as u64 + 2,
                latest_live: i as u64 + 1,
                stored: i as u64 + 1,
                compat: None,
            };
            // Journal, flush, apply: durable when it returns, as in a publish.
            store
                .insert_version(NewVersion {
                    record: &record,
                    meta: &meta,
                    content: &bytes,
                    audit: &audit,
                })
                .await
                .unwrap();
        }
        let store_time = started.elapsed();

        let request = pb::PublishRequest {
            name: "docker-default".into(),
            content: bytes,
            description: String::new(),
            expected_latest_version: None,
        };
        let started = Instant::now();
        let reply = client.publish(request).await.unwrap().into_inner();
        let publish_time = started.elapsed();
        assert!(reply.created && reply.version == i as u64 + 1);

        if i >= WARMUP {
            bare_samples.push(bare_time);
            publish_samples.push(publish_time);
            validate_samples.push(validate_time);
            store_samples.push(store_time);
            lib_samples.push(lib_time);
            rpc_samples.push(rpc_time);
        }
    }
    // Throughput with several publishers at once (commits are durable one after another).
    let clients = 4;
    let each = (iterations / clients).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = client.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let request = pb::PublishRequest {
                    name: format!("concurrent-{c}"),
                    content: variant(&base, i),
                    description: String::new(),
                    expected_latest_version: None,
                };
                client.publish(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = started.elapsed();
    let _ = stop.send(());
    server();
    println!(
        "server runtime: {}",
        if shared {
            "shared with the client"
        } else {
            "its own"
        }
    );

    let b = stats(bare_samples);
    let p = stats(publish_samples);
    println!(
        "publish latency, Docker's default profile ({} bytes), {iterations} iterations after {WARMUP} warm-up",
        base.len()
    );
    println!("| | p50 µs | p90 µs | p99 µs | max µs | mean µs |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let v = stats(validate_samples);
    let st = stats(store_samples);
    for (what, s) in [
        ("bare sled insert + flush", &b),
        ("validate (library call)", &stats(lib_samples)),
        ("ListProfiles over gRPC (page of 1)", &stats(rpc_samples)),
        ("ValidateProfile over gRPC", &v),
        ("store commit (journal + flush + apply)", &st),
        ("publish over gRPC", &p),
    ] {
        println!(
            "| {what} | {} | {} | {} | {} | {} |",
            us(s.p50),
            us(s.p90),
            us(s.p99),
            us(s.max),
            us(s.mean)
        );
    }
    println!(
        "p99 ratio publish / bare: {:.2} (target <= 1.5); p50 ratio: {:.2}",
        p.p99.as_secs_f64() / b.p99.as_secs_f64(),
        p.p50.as_secs_f64() / b.p50.as_secs_f64()
    );
    println!(
        "{clients} concurrent publishers, {} publishes: {:.0} publishes/s ({} µs each on average)",
        clients * each,
        (clients * each) as f64 / concurrent.as_secs_f64(),
        us(concurrent / (clients * each) as u32)
    );
}
