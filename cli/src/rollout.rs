//! `seccompctl rollout create|list|status` and `seccompctl nodes`: rollouts and node state
//! from the distributor.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use seccomp_distributor::nci::{self, Target};
use seccomp_distributor::selector;
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::distributor::v1::distributor_client::DistributorClient;
use serde::Serialize;

use crate::Outcome;
use crate::client::{self, Actor};
use crate::output::{Format, print_structured, print_table, table};

/// Where and how a profile lands on nodes (shared by `rollout create` and `render`).
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Nodes to target: `k=v[,k=v]`; `k=` means "has the label k".
    #[arg(long, value_name = "K=V[,K=V]")]
    selector: String,

    /// Priority against other NodeConfigItems writing the same path (higher wins).
    #[arg(long, default_value_t = nci::DEFAULT_PRIORITY, allow_negative_numbers = true)]
    priority: i32,

    /// File path on nodes (default `/var/lib/kubelet/seccomp/<profile>.json`).
    #[arg(long)]
    path: Option<String>,

    /// File mode, octal.
    #[arg(long, default_value = "0644")]
    mode: String,

    /// File owner (a name on the node, or a numeric id).
    #[arg(long, default_value = "root")]
    owner: String,

    /// File group (a name on the node, or a numeric id).
    #[arg(long, default_value = "root")]
    group: String,
}

impl TargetArgs {
    /// Check every field and build the target.
    pub fn to_target(&self) -> Result<Target> {
        let mut t = Target::new(selector::parse(&self.selector)?);
        t.priority = self.priority;
        t.path = self.path.clone();
        if let Some(p) = &t.path {
            nci::check_file_path(p)?;
        }
        t.mode = nci::parse_mode(&self.mode)?;
        nci::check_principal("owner", &self.owner)?;
        nci::check_principal("group", &self.group)?;
        t.owner = self.owner.clone();
        t.group = self.group.clone();
        Ok(t)
    }
}

/// `seccompctl rollout ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Roll a profile version out to the nodes a selector picks.
    ///
    /// Every matching node's agent is sent its new file set at once (staged waves are not
    /// implemented yet). With --wait, follows progress until every matching node confirmed
    /// the exact content, mode and owner, and exits 1 when a node failed or time ran out.
    Create {
        /// Profile and version: `NAME` (latest) or `NAME@VERSION`.
        #[arg(value_name = "NAME[@VERSION]")]
        reference: String,
        /// Name of the NodeConfigItem (default `seccomp-<profile>`).
        #[arg(long, value_name = "NCI")]
        name: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// Wait until the rollout completes.
        #[arg(long)]
        wait: bool,
        /// With --wait, give up after this long (e.g. `90s`, `5m`).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List rollouts, newest first.
    List,
    /// Show one rollout and its nodes.
    Status {
        /// Rollout id (`r7`).
        id: String,
        /// Follow it live (a progress bar on a terminal, a line per change otherwise) until it
        /// completes; exit 0 when it completed.
        #[arg(long)]
        watch: bool,
    },
}

/// Arguments of `seccompctl nodes`.
#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    /// Only nodes whose labels match `k=v[,k=v]`.
    #[arg(long, value_name = "K=V[,K=V]")]
    selector: Option<String>,
}

type Client = DistributorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Actor>,
>;

async fn connect(url: &str) -> Result<Client> {
    Ok(DistributorClient::new(
        client::channel(url, "distributor").await?,
    ))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn state_name(s: i32) -> &'static str {
    match pb::RolloutState::try_from(s) {
        Ok(pb::RolloutState::Pending) => "Pending",
        Ok(pb::RolloutState::Progressing) => "Progressing",
        Ok(pb::RolloutState::Paused) => "Paused",
        Ok(pb::RolloutState::Completed) => "Completed",
        Ok(pb::RolloutState::RollingBack) => "RollingBack",
        Ok(pb::RolloutState::RolledBack) => "RolledBack",
        Ok(pb::RolloutState::Aborted) => "Aborted",
        _ => "Unknown",
    }
}

fn node_state_name(s: i32) -> &'static str {
    match pb::NodeState::try_from(s) {
        Ok(pb::NodeState::Pending) => "Pending",
        Ok(pb::NodeState::Applying) => "Applying",
        Ok(pb::NodeState::Applied) => "Applied",
        Ok(pb::NodeState::Failed) => "Failed",
        Ok(pb::NodeState::Drifted) => "Drifted",
        _ => "Unknown",
    }
}

#[derive(Serialize)]
struct RolloutOut {
    id: String,
    profile: String,
    version: u64,
    digest: String,
    nci: String,
    revision: u64,
    state: &'static str,
    nodes: CountsOut,
    conflicts: Vec<String>,
}

#[derive(Serialize)]
struct CountsOut {
    total: u32,
    applied: u32,
    applying: u32,
    pending: u32,
    failed: u32,
    drifted: u32,
    unknown: u32,
}

impl From<&pb::Rollout> for RolloutOut {
    fn from(r: &pb::Rollout) -> Self {
        let c = r.nodes.unwrap_or_default();
        RolloutOut {
            id: r.id.clone(),
            profile: r.profile.clone(),
            version: r.version,
            digest: r.digest.clone(),
            nci: r.nci_name.clone(),
            revision: r.revision,
            state: state_name(r.state),
            nodes: CountsOut {
                total: c.total,
                applied: c.applied,
                applying: c.applying,
                pending: c.pending,
                failed: c.failed,
                drifted: c.drifted,
                unknown: c.unknown,
            },
            conflicts: r
                .conflicts
                .iter()
                .map(|c| {
                    format!(
                        "{} lost to {} (priority {})",
                        c.path, c.winning_nci, c.winning_priority
                    )
                })
                .collect(),
        }
    }
}

fn progress_line(r: &RolloutOut) -> String {
    let n = &r.nodes;
    format!(
        "{} {}@{} -> {}: {}, {}/{} applied, {} applying, {} failed, {} unknown",
        r.id,
        r.profile,
        r.version,
        r.nci,
        r.state,
        n.applied,
        n.total,
        n.applying,
        n.failed,
        n.unknown
    )
}

/// Run a `rollout` subcommand against the distributor at `dist`.
pub fn run(command: Command, dist: &str, format: Format) -> Result<Outcome> {
    if let Command::Create { target, .. } = &command {
        target.to_target()?; // bad flags are usage errors before any connection
    }
    runtime()?.block_on(async {
        let mut c = connect(dist).await?;
        match command {
            Command::Create {
                reference,
                name,
                target,
                wait,
                timeout,
            } => {
                let (profile, version) = match reference.split_once('@') {
                    Some((p, v)) => (
                        p.to_owned(),
                        v.parse::<u64>().map_err(|_| {
                            anyhow!("invalid version {v:?} in {reference:?}: expected a number")
                        })?,
                    ),
                    None => (reference.clone(), 0),
                };
                let t = target.to_target()?;
                let request = pb::CreateRolloutRequest {
                    profile,
                    version,
                    target: Some(pb::Target {
                        selector: t.selector.into_iter().collect(),
                        priority: Some(t.priority),
                        path: t.path.unwrap_or_default(),
                        mode: nci::format_mode(t.mode),
                        owner: t.owner,
                        group: t.group,
                    }),
                    strategy: None,
                    nci_name: name,
                };
                let rollout = match c.create_rollout(request).await {
                    Ok(r) => r
                        .into_inner()
                        .rollout
                        .ok_or_else(|| anyhow!("no rollout in the reply"))?,
                    Err(status) => return client::refused_by(status, dist, "distributor"),
                };
                let out = RolloutOut::from(&rollout);
                if !wait {
                    if !print_structured(format, &out)? {
                        println!("created {}", progress_line(&out));
                    }
                    return Ok(Outcome::Ok);
                }
                follow(
                    &mut c,
                    &rollout.id,
                    dist,
                    format,
                    Until::DoneOrFailed(timeout),
                )
                .await
            }
            Command::List => {
                let list = match c.list_rollouts(pb::ListRolloutsRequest::default()).await {
                    Ok(r) => r.into_inner().rollouts,
                    Err(status) => return client::refused_by(status, dist, "distributor"),
                };
                let out: Vec<RolloutOut> = list.iter().map(RolloutOut::from).collect();
                if !print_structured(format, &out)? {
                    let mut t = table([
                        "ID", "PROFILE", "VERSION", "NCI", "STATE", "APPLIED", "FAILED",
                    ]);
                    for r in &out {
                        t.add_row([
                            r.id.clone(),
                            r.profile.clone(),
                            r.version.to_string(),
                            r.nci.clone(),
                            r.state.to_owned(),
                            format!("{}/{}", r.nodes.applied, r.nodes.total),
                            r.nodes.failed.to_string(),
                        ]);
                    }
                    print_table(&t);
                }
                Ok(Outcome::Ok)
            }
            Command::Status { id, watch: true } => {
                follow(&mut c, &id, dist, format, Until::Done).await
            }
            Command::Status { id, watch: false } => {
                let reply = match c
                    .get_rollout(pb::GetRolloutRequest {
                        id,
                        include_nodes: true,
                    })
                    .await
                {
                    Ok(r) => r.into_inner(),
                    Err(status) => return client::refused_by(status, dist, "distributor"),
                };
                let rollout = reply
                    .rollout
                    .ok_or_else(|| anyhow!("no rollout in the reply"))?;
                let out = RolloutOut::from(&rollout);
                let nodes: BTreeMap<String, &'static str> = reply
                    .nodes
                    .iter()
                    .map(|n| (n.node_name.clone(), node_state_name(n.state)))
                    .collect();
                #[derive(Serialize)]
                struct Status<'a> {
                    rollout: &'a RolloutOut,
                    nodes: &'a BTreeMap<String, &'static str>,
                }
                if !print_structured(
                    format,
                    &Status {
                        rollout: &out,
                        nodes: &nodes,
                    },
                )? {
                    println!("{}", progress_line(&out));
                    for c in &out.conflicts {
                        println!("  conflict: {c}");
                    }
                    for (name, state) in &nodes {
                        println!("  {name}: {state}");
                    }
                }
                Ok(Outcome::Ok)
            }
        }
    })
}

/// How a followed rollout ends.
#[derive(Clone, Copy)]
enum Until {
    /// `--wait`: completion (exit 0), a failed node or the timeout (exit 1).
    DoneOrFailed(Duration),
    /// `--watch`: completion or the end of the stream; failures are shown, not fatal.
    Done,
}

/// A one-line bar: `[#########-----------] 3/7 applied`.
fn bar(out: &RolloutOut) -> String {
    const WIDTH: u32 = 24;
    let n = &out.nodes;
    let filled = (n.applied * WIDTH).checked_div(n.total).unwrap_or(WIDTH) as usize;
    format!(
        "[{}{}] {}",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        progress_line(out)
    )
}

/// Follow the rollout's events (`WatchRollout`): a live bar on a terminal, a line per change
/// otherwise.
async fn follow(
    c: &mut Client,
    id: &str,
    dist: &str,
    format: Format,
    until: Until,
) -> Result<Outcome> {
    use std::io::{IsTerminal as _, Write as _};
    use tokio_stream::StreamExt as _;

    let mut events = match c
        .watch_rollout(pb::WatchRolloutRequest { id: id.to_owned() })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return client::refused_by(status, dist, "distributor"),
    };
    let live = format == Format::Table && std::io::stdout().is_terminal();
    let deadline = match until {
        Until::DoneOrFailed(t) => Some(tokio::time::Instant::now() + t),
        Until::Done => None,
    };
    let mut last: Option<RolloutOut> = None;
    let mut timed_out = false;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                Ok(n) => n,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            },
            None => events.next().await,
        };
        let Some(event) = next else { break };
        let event = match event {
            Ok(e) => e,
            Err(status) => return client::refused_by(status, dist, "distributor"),
        };
        let Some(rollout) = event.rollout else {
            continue;
        };
        let out = RolloutOut::from(&rollout);
        if live {
            print!("\r\x1b[2K{}", bar(&out));
            let _ = std::io::stdout().flush();
        } else if format == Format::Table {
            println!("{}", progress_line(&out));
        }
        let failed = out.nodes.failed > 0;
        let done = out.state != "Progressing";
        last = Some(out);
        if done || (failed && matches!(until, Until::DoneOrFailed(_))) {
            break;
        }
    }
    if live {
        println!();
    }
    let Some(out) = last else {
        bail!("the distributor ended the watch of rollout {id} without any event");
    };
    print_structured(format, &out)?;
    if out.state == "Completed" {
        return Ok(Outcome::Ok);
    }
    if out.nodes.failed > 0 {
        eprintln!(
            "seccompctl: rollout {id}: {} node(s) failed; see `seccompctl rollout status {id}` and `seccompctl nodes`",
            out.nodes.failed
        );
    } else if timed_out && let Until::DoneOrFailed(t) = until {
        eprintln!(
            "seccompctl: rollout {id} did not complete within {}",
            humantime::format_duration(t)
        );
    } else {
        eprintln!("seccompctl: rollout {id} ended {}", out.state);
    }
    Ok(Outcome::Negative)
}

#[derive(Serialize)]
struct NodeOut {
    name: String,
    labels: BTreeMap<String, String>,
    agent_version: String,
    connected: bool,
    /// RFC 3339, when the agent last sent anything.
    last_seen: String,
    state: &'static str,
    revision: String,
    desired_revision: String,
    files: Vec<FileOut>,
}

#[derive(Serialize)]
struct FileOut {
    path: String,
    nci: String,
    /// `profile@version` and the rollout that wrote it.
    source: String,
    state: &'static str,
    desired: Option<String>,
    observed: Option<String>,
    message: String,
}

/// `seccompctl nodes`: per node its labels, files, state.
pub fn nodes(args: &NodesArgs, dist: &str, format: Format) -> Result<Outcome> {
    let filter = match &args.selector {
        Some(s) => selector::parse(s)?,
        None => BTreeMap::new(),
    };
    runtime()?.block_on(async {
        let mut c = connect(dist).await?;
        let list = match c
            .list_nodes(pb::ListNodesRequest {
                selector: filter.into_iter().collect(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r.into_inner().nodes,
            Err(status) => return client::refused_by(status, dist, "distributor"),
        };
        let out: Vec<NodeOut> = list
            .into_iter()
            .map(|n| NodeOut {
                name: n.name,
                labels: n.labels.into_iter().collect(),
                agent_version: n.agent_version,
                connected: n.connected,
                last_seen: n.last_seen.map(|t| t.to_string()).unwrap_or_default(),
                state: node_state_name(n.state),
                revision: n.revision,
                desired_revision: n.desired_revision,
                files: n
                    .files
                    .into_iter()
                    .map(|f| FileOut {
                        state: node_state_name(f.state),
                        desired: f.desired.map(|d| {
                            format!(
                                "{} {}:{} sha256:{}",
                                d.mode,
                                d.owner,
                                d.group,
                                short(&d.sha256)
                            )
                        }),
                        observed: f.observed.filter(|o| o.exists).map(|o| {
                            format!(
                                "{} {}:{} sha256:{}",
                                o.mode,
                                name_or_id(&o.owner, o.uid),
                                name_or_id(&o.group, o.gid),
                                short(&o.sha256)
                            )
                        }),
                        source: if f.profile.is_empty() {
                            String::new()
                        } else {
                            format!("{}@{} ({})", f.profile, f.version, f.rollout_id)
                        },
                        path: f.path,
                        nci: f.nci_name,
                        message: f.message,
                    })
                    .collect(),
            })
            .collect();
        if !print_structured(format, &out)? {
            let mut t = table([
                "NODE",
                "STATE",
                "CONNECTED",
                "FILE",
                "MODE OWNER:GROUP SHA256 (OBSERVED)",
                "FILE STATE",
            ]);
            for n in &out {
                if n.files.is_empty() {
                    t.add_row([
                        n.name.clone(),
                        n.state.to_owned(),
                        n.connected.to_string(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ]);
                }
                for f in &n.files {
                    t.add_row([
                        n.name.clone(),
                        n.state.to_owned(),
                        n.connected.to_string(),
                        f.path.clone(),
                        f.observed.clone().unwrap_or_else(|| "missing".into()),
                        if f.message.is_empty() {
                            f.state.to_owned()
                        } else {
                            format!("{} ({})", f.state, f.message)
                        },
                    ]);
                }
            }
            print_table(&t);
        }
        Ok(Outcome::Ok)
    })
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn name_or_id(name: &str, id: u32) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        name.to_owned()
    }
}
