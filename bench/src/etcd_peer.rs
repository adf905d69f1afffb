//! `seccomp-bench etcd-peer`: the fan-out under any operator that delivers through the
//! Kubernetes API, measured on this machine: Debian's `etcd` (package `etcd-server`) on
//! loopback in a temporary directory, N watchers of one key over C client connections, one
//! put of the profile, each watcher putting an acknowledgement (the sha256 it computed of
//! the value it saw), and the writer waiting, on a watch of its own, until it has seen all N
//! acknowledgements with the right digest.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use etcd_client::{Client, EventType, WatchOptions};
use serde::Serialize;
use sha2::Digest as _;

/// Setup steps must end within this.
const SETUP: Duration = Duration::from_secs(300);
/// A fan-out must end within this.
const ROUND: Duration = Duration::from_secs(300);

const VALUE_KEY: &str = "/seccomp-bench/profile";
const ACK_PREFIX: &str = "/seccomp-bench/ack/";

/// `etcd-peer`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdPeerArgs {
    /// Watchers (one per simulated node).
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// Client connections the watchers share.
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// Puts, one after another (each waits for all acknowledgements).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd: String,
    /// The value put (default: the profile `converge` rolls out).
    #[arg(long)]
    pub profile: Option<std::path::PathBuf>,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

/// What `etcd-peer --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Watchers.
    pub watchers: usize,
    /// Client connections.
    pub connections: usize,
    /// Bytes of the value.
    pub value_bytes: usize,
    /// etcd's version (`etcd --version`, first line).
    pub etcd_version: String,
    /// Of the last round: the put to the writer having seen every acknowledgement.
    pub seconds: f64,
    /// Of the last round: etcd's CPU seconds.
    pub etcd_cpu_seconds: f64,
    /// Every round's seconds.
    pub rounds: Vec<f64>,
    /// Acknowledgements etcd refused at first ("too many requests") and that were sent
    /// again, over all rounds.
    pub retried_puts: usize,
}

/// Whether `etcd` can be run, and its version line.
pub fn etcd_version(etcd: &str) -> Option<String> {
    let out = Command::new(etcd).arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    })
}

/// A free port on loopback (bound and let go: etcd needs numbers on its command line).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An etcd on loopback in a temporary directory, killed when dropped.
pub struct Etcd {
    child: std::process::Child,
    /// Its client URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Start `etcd` and wait until it answers.
    pub async fn start(etcd: &str) -> anyhow::Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(etcd)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {etcd}"))?;
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let end = Instant::now() + SETUP;
        loop {
            if let Ok(mut c) = Client::connect([&etcd.url], None).await
                && c.status().await.is_ok()
            {
                return Ok(etcd);
            }
            anyhow::ensure!(Instant::now() < end, "etcd did not answer at {}", etcd.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Run the measurement.
pub fn run(args: &EtcdPeerArgs) -> anyhow::Result<Report> {
    crate::raise_fd_limit();
    let etcd_version = etcd_version(&args.etcd).with_context(|| {
        format!(
            "cannot run {:?}: install Debian's etcd-server package (apt-get install -y etcd-server) or give --etcd PATH",
            args.etcd
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(fan_out(args, etcd_version))
}

async fn fan_out(args: &EtcdPeerArgs, etcd_version: String) -> anyhow::Result<Report> {
    let profile = crate::profile_bytes(args.profile.as_deref())?;
    let etcd = Etcd::start(&args.etcd).await?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(Client::connect([&etcd.url], None).await?);
    }
    let retries = Arc::new(AtomicUsize::new(0));
    // Every watcher's watch is created before the first put.
    let created = Arc::new(tokio::sync::Semaphore::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut watchers = tokio::task::JoinSet::new();
    for i in 0..args.watchers {
        let mut client = clients[i % clients.len()].clone();
        let created = Arc::clone(&created);
        let retries = Arc::clone(&retries);
        let permit = Arc::clone(&limit).acquire_owned().await?;
        watchers.spawn(async move {
            let mut stream = client.watch(VALUE_KEY, None).await?;
            while let Some(resp) = stream.message().await? {
                if resp.created() {
                    drop(permit);
                    created.add_permits(1);
                    break;
                }
            }
            let key = format!("{ACK_PREFIX}{i:05}");
            while let Some(resp) = stream.message().await? {
                for ev in resp.events() {
                    if ev.event_type() != EventType::Put {
                        continue;
                    }
                    if let Some(kv) = ev.kv() {
                        let ack = digest(kv.value());
                        // etcd refuses proposals while too many wait to be applied ("too
                        // many requests"); a client tries again, as any etcd client does.
                        let mut tries = 0;
                        while let Err(e) = client.put(key.as_str(), ack.as_str(), None).await {
                            tries += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            if tries > 100 {
                                return Err(e.into());
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    let end = Instant::now() + SETUP;
    while created.available_permits() < args.watchers {
        anyhow::ensure!(
            Instant::now() < end,
            "the watches were not all created in time"
        );
        if let Some(Ok(Err(e))) = watchers.try_join_next() {
            return Err(e).context("a watcher failed");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut writer = Client::connect([&etcd.url], None).await?;
    let mut rounds = Vec::new();
    let mut cpu = 0.0;
    for round in 1..=args.rounds {
        let value = crate::profile_round(&profile, round);
        let want = digest(&value);
        let mut acks = writer
            .watch(ACK_PREFIX, Some(WatchOptions::new().with_prefix()))
            .await?;
        while let Some(resp) = acks.message().await? {
            if resp.created() {
                break;
            }
        }
        let cpu0 = crate::procstat::cpu_seconds(&etcd.pid().to_string())?;
        let t0 = Instant::now();
        writer.put(VALUE_KEY, value, None).await?;
        let mut seen = std::collections::HashSet::new();
        while seen.len() < args.watchers {
            let resp = tokio::time::timeout_at((t0 + ROUND).into(), acks.message())
                .await
                .with_context(|| {
                    format!(
                        "only {} of {} acknowledgements within {ROUND:?}",
                        seen.len(),
                        args.watchers
                    )
                })??
                .context("the writer's watch ended")?;
            for ev in resp.events() {
                if let Some(kv) = ev.kv()
                    && kv.value() == want.as_bytes()
                {
                    seen.insert(kv.key().to_vec());
                }
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        cpu = crate::procstat::cpu_seconds(&etcd.pid().to_string())? - cpu0;
        if !args.json {
            println!(
                "round {round}: etcd fan-out to {} watchers over {} connections: {seconds:.3} s (etcd CPU {cpu:.2} s, {} puts retried so far)",
                args.watchers,
                args.connections,
                retries.load(Ordering::Relaxed)
            );
        }
        rounds.push(seconds);
        // Dropping the stream ends the writer's watch.
        drop(acks);
    }
    watchers.abort_all();
    Ok(Report {
        watchers: args.watchers,
        connections: args.connections,
        value_bytes: profile.len(),
        etcd_version,
        seconds: rounds.last().copied().unwrap_or_default(),
        etcd_cpu_seconds: cpu,
        rounds,
        retried_puts: retries.load(Ordering::Relaxed),
    })
}
