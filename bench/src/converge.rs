//! `seccomp-bench converge`: the real registry and distributor in this process on a tokio
//! runtime of their own (two workers, the binaries' default on this machine), N simulated
//! agents in a child process ([`crate::agents`]), and R rounds of publish + rollout, each
//! timed from `CreateRollout` to every agent having acknowledged the new set (the agents'
//! process says so), and to the rollout's `Completed` (polled with `GetRollout` every 10 ms
//! from then on).
//!
//! The distributor's CPU time is this process's (the registry in it is idle during a
//! rollout: it serves one version fetch); its memory per agent stream is the growth of this
//! process's resident set from half the agents connected and idle to all of them, over the
//! second half (so what the first streams set up once, the store's cache and the
//! allocator's arenas, does not count as per-stream).

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;
use serde::Serialize;

/// Setup steps (connecting tens of thousands of agents included) must end within this.
const SETUP: Duration = Duration::from_secs(600);
/// A rollout must complete within this.
const ROUND: Duration = Duration::from_secs(300);
/// How often `GetRollout` is asked once every agent acknowledged (each answer reads every
/// node: asked every 2 ms it took a quarter of the distributor's time in the last 100 ms).
const POLL: Duration = Duration::from_millis(10);

/// `converge`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConvergeArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// The rollout's waves (the distributor's default strategy is `1,25%,100%` with
    /// max unavailable 25%).
    #[arg(long, default_value = "1,25%,100%")]
    pub waves: String,
    /// The rollout's max unavailable.
    #[arg(long, default_value = "25%")]
    pub max_unavailable: String,
    /// Rollouts, one after another (each publishes a new version first).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// mTLS on the distributor: every agent its own connection and node certificate, the
    /// bench's own calls with an admin certificate (the registry stays plain on loopback).
    #[arg(long)]
    pub tls: bool,
    /// Agent streams per HTTP/2 connection without TLS.
    #[arg(long, default_value_t = 100)]
    pub per_connection: usize,
    /// The profile to roll out (default: Docker's default from the shared fixtures, or one
    /// of the same size).
    #[arg(long)]
    pub profile: Option<std::path::PathBuf>,
    /// Keep the distributor's state in etcd instead of sled: start Debian's etcd on
    /// loopback (fsync on), and run the distributor as a replica does, elected and with
    /// every write fenced.
    #[arg(long)]
    pub etcd: bool,
    /// The etcd binary for --etcd.
    #[arg(long, default_value = "etcd")]
    pub etcd_binary: String,
    /// With --etcd: this many distributor replicas in this process (all serving, the first
    /// elected), the agents' connections spread over them in turn; the rollouts are made on
    /// the leader.
    #[arg(long, default_value_t = 1, requires = "etcd")]
    pub replicas: usize,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// CreateRollout to Completed.
    pub seconds: f64,
    /// CreateRollout to every agent having acknowledged the new set.
    pub all_acked_seconds: f64,
    /// CPU seconds of the distributor's process in that time.
    pub distributor_cpu_seconds: f64,
    /// The distributor process's resident set once Completed.
    pub distributor_rss_bytes_after: u64,
}

/// What `converge --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Simulated agents.
    pub agents: usize,
    /// The waves.
    pub waves: String,
    /// Max unavailable.
    pub max_unavailable: String,
    /// mTLS on.
    pub tls: bool,
    /// The distributor's store: `sled`, or `etcd` (elected, fenced).
    pub store: &'static str,
    /// Distributor replicas (1 on sled).
    pub replicas: usize,
    /// HTTP/2 connections the agents used.
    pub connections: usize,
    /// Bytes of the profile.
    pub profile_bytes: usize,
    /// Of the last round: CreateRollout to Completed.
    pub seconds: f64,
    /// Of the last round: CreateRollout to every agent having acknowledged.
    pub all_acked_seconds: f64,
    /// Of the last round: the distributor process's CPU seconds.
    pub distributor_cpu_seconds: f64,
    /// Of the last round: CPU microseconds per confirmed node.
    pub distributor_cpu_us_per_node: f64,
    /// Resident set growth of the distributor's process per connected idle agent (from half
    /// the agents to all).
    pub distributor_rss_bytes_per_stream: f64,
    /// Its resident set before the agents connected.
    pub distributor_rss_bytes_before: u64,
    /// Its resident set with half the agents connected and idle.
    pub distributor_rss_bytes_half: u64,
    /// Its resident set with every agent connected and idle.
    pub distributor_rss_bytes_idle: u64,
    /// Every agent connected and acknowledged its first set, from the child's start.
    pub connect_seconds: f64,
    /// Every round.
    pub rounds: Vec<Round>,
}

struct Tls {
    dir: tempfile::TempDir,
    admin: tonic::transport::ClientTlsConfig,
}

/// Make a CA, the distributor's certificate, an admin client certificate, an auth file
/// naming it, and one node certificate per agent (`agents.jsonl`, for the child).
fn make_tls(agents: usize) -> anyhow::Result<(Tls, seccomp_server::security::Security)> {
    use seccomp_server::pki::Ca;
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("seccomp-bench CA")?;
    ca.write_cert(&dir.path().join("ca.crt"))?;
    let server = ca.server(&["127.0.0.1"])?.write(dir.path(), "server")?;
    let admin = ca.client("seccomp-bench", &[])?;
    let auth = dir.path().join("auth.yaml");
    std::fs::write(
        &auth,
        "- name: seccomp-bench\n  certificate: \"cn:seccomp-bench\"\n  role: admin\n",
    )?;
    let mut lines = String::new();
    for i in 0..agents {
        let pem = ca.client(&format!("system:node:node-{i:05}"), &[])?;
        lines.push_str(&serde_json::to_string(
            &serde_json::json!({"cert": pem.cert, "key": pem.key}),
        )?);
        lines.push('\n');
    }
    std::fs::write(dir.path().join("agents.jsonl"), lines)?;
    let security = seccomp_server::security::SecurityArgs {
        tls_cert: Some(server.cert.clone()),
        tls_key: Some(server.key.clone()),
        client_ca: Some(dir.path().join("ca.crt")),
        auth_tokens: Some(auth),
        ..Default::default()
    }
    .security()?;
    let admin = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.cert_pem()))
        .identity(tonic::transport::Identity::from_pem(admin.cert, admin.key));
    Ok((Tls { dir, admin }, security))
}

/// The child's lines, read on a thread of their own.
fn child_lines(
    stdout: std::process::ChildStdout,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    rx
}

async fn expect_line(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    prefix: &str,
    within: Duration,
) -> anyhow::Result<Instant> {
    let end = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(end, lines.recv())
            .await
            .with_context(|| format!("the agents did not say {prefix:?} within {within:?}"))?;
        match next {
            Some((line, at)) if line.starts_with(prefix) => return Ok(at),
            Some(_) => {}
            None => anyhow::bail!("the agents' process ended before saying {prefix:?}"),
        }
    }
}

/// Run the benchmark.
pub fn run(args: &ConvergeArgs) -> anyhow::Result<Report> {
    crate::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("distributor")
        .enable_all()
        .build()?;
    runtime.block_on(converge(args))
}

async fn converge(args: &ConvergeArgs) -> anyhow::Result<Report> {
    let profile = crate::profile_bytes(args.profile.as_deref())?;
    let dir = tempfile::tempdir()?;
    let (tls, security) = if args.tls {
        let (t, s) = make_tls(args.agents)?;
        (Some(t), s)
    } else {
        (None, seccomp_server::security::Security::none())
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry = format!("http://{}", listener.local_addr()?);
    tokio::spawn(seccomp_registry::run(
        seccomp_registry::Config::new(dir.path().join("registry")),
        listener,
        std::future::pending(),
    ));
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Kept for the whole run: etcd is killed when dropped.
    let mut _etcd = None;
    let mut urls = Vec::new();
    let mut replicas = Vec::new();
    let etcd = if args.etcd {
        let etcd = crate::etcd_peer::Etcd::start(&args.etcd_binary).await?;
        let settings = seccomp_distributor::store::EtcdSettings::new(vec![etcd.url.clone()]);
        _etcd = Some(etcd);
        Some(settings)
    } else {
        None
    };
    for i in 0..args.replicas.max(1) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        urls.push(format!("{scheme}://{}", listener.local_addr()?));
        let mut config = seccomp_distributor::Config::new(
            dir.path().join(format!("distributor-{i}")),
            &registry,
        );
        config.security = security.clone();
        if let Some(settings) = &etcd {
            config.etcd = Some(settings.clone());
            config.replica = Some(seccomp_distributor::ReplicaSettings {
                election: seccomp_distributor::leader::ElectionSettings {
                    replica_id: format!("bench-{i}"),
                    lease_ttl: Duration::from_secs(10),
                },
                leader_pod: None,
                command_wait: Duration::from_secs(30),
            });
        }
        replicas.push(tokio::spawn(seccomp_distributor::run(
            config,
            listener,
            std::future::pending(),
        )));
        if let (0, Some(settings)) = (i, &etcd) {
            wait_leader(settings, "bench-0").await?;
        }
    }
    let url = urls[0].clone();
    let running = &replicas[0];

    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())?;
    if let Some(t) = &tls {
        endpoint = endpoint.tls_config(t.admin.clone())?;
    }
    let channel = connect(&endpoint, running).await?;
    let mut dc = pb::distributor_client::DistributorClient::new(channel);
    let mut rc = connect_registry(&registry).await?;
    // The servers are up and warm: the resident set from here on grows with the agents.
    let rss_before = crate::procstat::rss_bytes("self")?;

    let half = args.agents / 2;
    let mut child = Command::new(std::env::current_exe()?);
    child
        .arg("agents")
        .arg("--url")
        .arg(urls.join(","))
        .arg("--count")
        .arg(args.agents.to_string())
        .arg("--first")
        .arg(half.to_string())
        .arg("--per-connection")
        .arg(args.per_connection.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = &tls {
        child.arg("--tls-dir").arg(t.dir.path());
    }
    let started = Instant::now();
    let mut child = KillOnDrop(child.spawn().context("starting the agents' process")?);
    let mut stdin = child.0.stdin.take().context("the agents' stdin")?;
    let mut lines = child_lines(child.0.stdout.take().context("the agents' stdout")?);
    expect_line(&mut lines, "ready", SETUP).await?;
    let rss_half = idle_rss(args.agents).await?;
    writeln!(stdin, "more")?;
    stdin.flush()?;
    let ready = expect_line(&mut lines, "ready", SETUP).await?;
    let connect_seconds = ready.duration_since(started).as_secs_f64();
    let rss_idle = idle_rss(args.agents).await?;
    let per_stream = rss_idle.saturating_sub(rss_half) as f64 / (args.agents - half).max(1) as f64;
    if !args.json {
        println!(
            "{} agents connected in {connect_seconds:.2} s; distributor RSS {:.1} MiB before, {:.1} with half, {:.1} with all: {:.1} KiB per stream",
            args.agents,
            rss_before as f64 / 1048576.0,
            rss_half as f64 / 1048576.0,
            rss_idle as f64 / 1048576.0,
            per_stream / 1024.0
        );
    }

    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        rc.publish(reg::PublishRequest {
            name: "bench".into(),
            content: crate::profile_round(&profile, round),
            description: String::new(),
            expected_latest_version: None,
        })
        .await
        .context("publishing")?;
        writeln!(stdin, "arm")?;
        stdin.flush()?;
        expect_line(&mut lines, "armed", SETUP).await?;
        let cpu0 = crate::procstat::cpu_seconds("self")?;
        let t0 = Instant::now();
        let r = dc
            .create_rollout(pb::CreateRolloutRequest {
                profile: "bench".into(),
                version: round as u64,
                target: Some(pb::Target {
                    selector: HashMap::from([("kubernetes.io/os".to_owned(), "linux".to_owned())]),
                    ..Default::default()
                }),
                strategy: Some(pb::Strategy {
                    waves: args.waves.split(',').map(str::to_owned).collect(),
                    max_unavailable: args.max_unavailable.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .context("creating the rollout")?
            .into_inner()
            .rollout
            .context("no rollout in the reply")?;
        // No rollout completes before every agent acknowledged, so the distributor is asked
        // only from then on (asking all along would load the very thing measured: a
        // rollout's view reads every node).
        let acked_at = expect_line(&mut lines, "acked", ROUND).await?;
        let completed = loop {
            let now = dc
                .get_rollout(pb::GetRolloutRequest {
                    id: r.id.clone(),
                    include_nodes: false,
                })
                .await?
                .into_inner()
                .rollout
                .context("no rollout")?;
            if now.state == pb::RolloutState::Completed as i32 {
                break Instant::now();
            }
            anyhow::ensure!(
                t0.elapsed() < ROUND,
                "rollout {} did not complete within {ROUND:?}: {:?}",
                r.id,
                now.state
            );
            tokio::time::sleep(POLL).await;
        };
        let cpu = crate::procstat::cpu_seconds("self")? - cpu0;
        let figures = Round {
            seconds: completed.duration_since(t0).as_secs_f64(),
            all_acked_seconds: acked_at.saturating_duration_since(t0).as_secs_f64(),
            distributor_cpu_seconds: cpu,
            distributor_rss_bytes_after: crate::procstat::rss_bytes("self")?,
        };
        if !args.json {
            println!(
                "round {round}: {} agents, waves {}, max unavailable {}{}{}: all acked {:.3} s, Completed {:.3} s, distributor CPU {:.2} s, RSS {:.1} MiB after",
                args.agents,
                args.waves,
                args.max_unavailable,
                if args.tls { ", mTLS" } else { "" },
                if args.etcd {
                    format!(", etcd, {} replica(s)", args.replicas.max(1))
                } else {
                    String::new()
                },
                figures.all_acked_seconds,
                figures.seconds,
                figures.distributor_cpu_seconds,
                figures.distributor_rss_bytes_after as f64 / 1048576.0
            );
        }
        rounds.push(figures);
    }
    drop(stdin);
    let last = rounds.last().cloned().context("no rounds (--rounds 0)")?;
    let connections = if args.tls {
        args.agents
    } else {
        args.agents.div_ceil(args.per_connection.max(1))
    };
    Ok(Report {
        agents: args.agents,
        waves: args.waves.clone(),
        max_unavailable: args.max_unavailable.clone(),
        tls: args.tls,
        store: if args.etcd { "etcd" } else { "sled" },
        replicas: args.replicas.max(1),
        connections,
        profile_bytes: profile.len(),
        seconds: last.seconds,
        all_acked_seconds: last.all_acked_seconds,
        distributor_cpu_seconds: last.distributor_cpu_seconds,
        distributor_cpu_us_per_node: last.distributor_cpu_seconds * 1e6 / args.agents.max(1) as f64,
        distributor_rss_bytes_per_stream: per_stream,
        distributor_rss_bytes_before: rss_before,
        distributor_rss_bytes_half: rss_half,
        distributor_rss_bytes_idle: rss_idle,
        connect_seconds,
        rounds,
    })
}

/// Wait until `id` leads (the bench's first replica, before the others start).
async fn wait_leader(
    settings: &seccomp_distributor::store::EtcdSettings,
    id: &str,
) -> anyhow::Result<()> {
    let client = seccomp_distributor::store::etcd::client(settings).await?;
    let end = Instant::now() + SETUP;
    while seccomp_distributor::leader::current_leader(&client, &settings.prefix)
        .await
        .as_deref()
        != Some(id)
    {
        anyhow::ensure!(Instant::now() < end, "{id} was not elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// This process's resident set once `agents` agents are idle: what connecting left behind
/// (the first sets, the store's writes of the new nodes, a sightings record) is done after
/// a while (a millisecond per agent, at most 2 s); the smallest of three readings half that
/// apart.
async fn idle_rss(agents: usize) -> anyhow::Result<u64> {
    let settle = Duration::from_millis(agents as u64).min(Duration::from_secs(2));
    tokio::time::sleep(settle).await;
    let mut least = u64::MAX;
    for _ in 0..3 {
        least = least.min(crate::procstat::rss_bytes("self")?);
        tokio::time::sleep(settle / 2).await;
    }
    Ok(least)
}

/// The agents' process, killed when the benchmark ends however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(
    endpoint: &tonic::transport::Endpoint,
    running: &tokio::task::JoinHandle<Result<(), seccomp_distributor::RunError>>,
) -> anyhow::Result<tonic::transport::Channel> {
    let end = Instant::now() + SETUP;
    loop {
        anyhow::ensure!(
            !running.is_finished(),
            "the distributor stopped while starting"
        );
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > end => {
                return Err(e).context("connecting to the distributor");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn connect_registry(
    url: &str,
) -> anyhow::Result<reg::registry_client::RegistryClient<tonic::transport::Channel>> {
    let end = Instant::now() + SETUP;
    loop {
        match reg::registry_client::RegistryClient::connect(url.to_owned()).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > end => return Err(e).context("connecting to the registry"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
