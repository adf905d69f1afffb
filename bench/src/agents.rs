//! The simulated agents (`seccomp-bench agents`, started by `converge` as a child process so
//! that the distributor's process holds only the distributor): N real `AgentSync` streams.
//! Each says Hello, answers every `Desired` with an `Ack` whose observations carry the
//! sha256 it computes of each file's bytes, and counts, per round, the agents that
//! acknowledged a set with files.
//!
//! Talks to its parent by lines: it connects the first `--first` agents and prints `ready`
//! once each acknowledged its first set, connects the others when it reads `more` on
//! standard input and prints `ready` again; each `arm` line read on standard input starts a round (it answers `armed N`), and
//! `acked N` is printed when every agent acknowledged a set with files in round N. It exits
//! when standard input closes.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use seccomp_proto::agent::v1 as agent;
use sha2::Digest as _;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// What the child is told.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentsArgs {
    /// The distributor (`http://` or, with --tls-dir, `https://`); several replicas
    /// comma-separated, the connections spread over them in turn.
    #[arg(long)]
    pub url: String,
    /// How many agents.
    #[arg(long)]
    pub count: usize,
    /// How many to connect before the first `ready` (the rest after `more`); all when not
    /// given.
    #[arg(long)]
    pub first: Option<usize>,
    /// Agent streams per HTTP/2 connection (1 with TLS: each agent has its own certificate).
    #[arg(long, default_value_t = 100)]
    pub per_connection: usize,
    /// Directory with `ca.crt` and `agents.jsonl` (one `{"cert","key"}` per agent, in
    /// order): mTLS, each agent as its node.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
}

/// Counts shared by the agents.
struct Shared {
    /// Agents that acknowledged their first set.
    first: AtomicUsize,
    /// The current round (0 before the first `arm`).
    round: AtomicU64,
    /// Agents that acknowledged a set with files in the current round.
    acked: AtomicUsize,
    count: usize,
    done: tokio::sync::Notify,
}

fn observe(d: &agent::Desired) -> Vec<agent::ObservedFile> {
    d.files
        .iter()
        .map(|f| {
            let file = f.r#type == agent::FileType::File as i32;
            agent::ObservedFile {
                path: f.path.clone(),
                exists: true,
                r#type: f.r#type,
                sha256: if file {
                    hex::encode(sha2::Sha256::digest(&f.content))
                } else {
                    String::new()
                },
                size: if file { f.content.len() as u64 } else { 0 },
                mode: f.mode,
                uid: 0,
                gid: 0,
                owner: f.owner.clone(),
                group: f.group.clone(),
            }
        })
        .collect()
}

async fn run_agent(channel: tonic::transport::Channel, name: String, shared: Arc<Shared>) {
    let mut client =
        agent::agent_sync_client::AgentSyncClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let hello = agent::Hello {
        labels: HashMap::from([
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            (
                "topology.kubernetes.io/zone".to_owned(),
                format!("zone-{}", name.len() % 3),
            ),
        ]),
        node_name: name,
        agent_version: "seccomp-bench".into(),
        current_revision: String::new(),
        observed: Vec::new(),
    };
    if tx
        .send(agent::AgentMessage {
            message: Some(agent::agent_message::Message::Hello(hello)),
        })
        .is_err()
    {
        return;
    }
    let mut incoming = match client.sync(UnboundedReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            eprintln!("agent stream refused: {e}");
            return;
        }
    };
    let mut first = true;
    let mut my_round = 0;
    while let Some(Ok(msg)) = incoming.next().await {
        let Some(agent::distributor_message::Message::Desired(d)) = msg.message else {
            continue;
        };
        let ack = agent::AgentMessage {
            message: Some(agent::agent_message::Message::Ack(agent::Ack {
                revision: d.revision.clone(),
                nonce: d.nonce.clone(),
                observed: observe(&d),
            })),
        };
        if tx.send(ack).is_err() {
            return;
        }
        if first {
            first = false;
            shared.first.fetch_add(1, Ordering::AcqRel);
            shared.done.notify_one();
        }
        let round = shared.round.load(Ordering::Acquire);
        if !d.files.is_empty() && round > my_round {
            my_round = round;
            if shared.acked.fetch_add(1, Ordering::AcqRel) + 1 == shared.count {
                shared.done.notify_one();
            }
        }
    }
}

type Ids = Option<(tonic::transport::Certificate, Vec<(String, String)>)>;

/// Connect agents `range` (`per` to a connection; with `tls`, each with its certificate)
/// and wait until each acknowledged its first set.
async fn connect(
    args: &AgentsArgs,
    tls: &Ids,
    per: usize,
    range: std::ops::Range<usize>,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    // Connections are opened a few at a time (TLS handshakes cost the server CPU).
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = tokio::task::JoinSet::new();
    let end = range.end;
    let mut start = range.start;
    let urls: Vec<&str> = args.url.split(',').collect();
    while start < end {
        let stop = (start + per).min(end);
        let url = urls[(start / per) % urls.len()];
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(30));
        if let Some((ca, ids)) = tls {
            let (cert, key) = &ids[start];
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )?;
        }
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let shared = Arc::clone(shared);
        opening.spawn(async move {
            let channel = endpoint.connect().await?;
            drop(permit);
            for i in start..stop {
                tokio::spawn(run_agent(
                    channel.clone(),
                    format!("node-{i:05}"),
                    Arc::clone(&shared),
                ));
            }
            anyhow::Ok(())
        });
        start = stop;
    }
    while let Some(r) = opening.join_next().await {
        r??;
    }
    while shared.first.load(Ordering::Acquire) < end {
        shared.done.notified().await;
    }
    Ok(())
}

/// Run the agents until standard input closes.
pub async fn run(args: AgentsArgs) -> anyhow::Result<()> {
    crate::raise_fd_limit();
    let shared = Arc::new(Shared {
        first: AtomicUsize::new(0),
        round: AtomicU64::new(0),
        acked: AtomicUsize::new(0),
        count: args.count,
        done: tokio::sync::Notify::new(),
    });
    let tls = match &args.tls_dir {
        Some(dir) => {
            let ca = std::fs::read(dir.join("ca.crt")).context("reading ca.crt")?;
            let certs = std::fs::read_to_string(dir.join("agents.jsonl"))
                .context("reading agents.jsonl")?;
            let ids: Vec<(String, String)> = certs
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l)?;
                    Ok((
                        v["cert"].as_str().unwrap_or_default().to_owned(),
                        v["key"].as_str().unwrap_or_default().to_owned(),
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
            anyhow::ensure!(
                ids.len() >= args.count,
                "agents.jsonl has too few certificates"
            );
            Some((tonic::transport::Certificate::from_pem(ca), ids))
        }
        None => None,
    };
    let per = if tls.is_some() {
        1
    } else {
        args.per_connection.max(1)
    };
    let first = args.first.unwrap_or(args.count).min(args.count);
    connect(&args, &tls, per, 0..first, &shared).await?;
    println!("ready");

    // More agents, then rounds, as the parent says; standard input is read on a thread of
    // its own.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        if line.trim() == "more" {
            connect(&args, &tls, per, first..args.count, &shared).await?;
            println!("ready");
            continue;
        }
        if line.trim() != "arm" {
            continue;
        }
        shared.acked.store(0, Ordering::Release);
        let round = shared.round.fetch_add(1, Ordering::AcqRel) + 1;
        println!("armed {round}");
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            while shared.acked.load(Ordering::Acquire) < shared.count {
                shared.done.notified().await;
            }
            println!("acked {round}");
        });
    }
    Ok(())
}
