//! `seccompctl rollout create|list|status` and `seccompctl nodes`: rollouts and node state
//! from the distributor.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::distributor::v1::distributor_client::DistributorClient;
use seccomp_rollout::nci::{self, Target};
use seccomp_rollout::selector;
use seccomp_rollout::strategy::{self, MaxUnavailable, Pause, Strategy};
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

/// How a rollout proceeds (`rollout create`).
#[derive(Debug, Clone, clap::Args)]
pub struct StrategyArgs {
    /// Waves: the cumulative share of the matching nodes each wave reaches, as counts and
    /// whole percentages, ending with `100%` (`1,25%,100%`: one node, then a quarter, then
    /// all). Nodes are taken by zone label, then name.
    #[arg(long, default_value = strategy::DEFAULT_WAVES, value_name = "LIST")]
    waves: String,

    /// Most nodes that may be applying or failed at once: a count (`2`) or a percentage of
    /// the matching nodes (`10%`). A bad version therefore stalls instead of spreading.
    #[arg(long, default_value = strategy::DEFAULT_MAX_UNAVAILABLE, value_name = "N|P%")]
    max_unavailable: String,

    /// Failed nodes tolerated; one more fails the rollout (and rolls it back). Tolerated
    /// failures still count against --max-unavailable, so with as many of them as that the
    /// rollout stalls and fails at --progress-deadline.
    #[arg(long, default_value_t = 0, value_name = "N")]
    failure_threshold: u32,

    /// How long a node may take to confirm, and a wave may go without a node confirming,
    /// before that counts as a failure (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    progress_deadline: Duration,

    /// Between waves: wait this long (`30s`), or `manual` to wait for `rollout resume`.
    /// Default: the next wave starts as soon as the previous one is applied.
    #[arg(long, value_name = "DURATION|manual")]
    pause: Option<String>,

    /// When the rollout fails, leave every node as it is (the rollout ends Aborted) instead
    /// of returning the touched nodes to the previous completed version.
    #[arg(long)]
    no_auto_rollback: bool,
}

impl StrategyArgs {
    /// Check every field (the same rules as the distributor) and build the wire strategy.
    pub fn to_proto(&self) -> Result<pb::Strategy> {
        let pause = match self.pause.as_deref() {
            None => Pause::None,
            Some("manual") => Pause::Manual,
            Some(text) => Pause::Duration(humantime::parse_duration(text).map_err(|e| {
                anyhow!("--pause {text:?}: {e}; give a duration such as 30s, or `manual`")
            })?),
        };
        let s = Strategy {
            waves: strategy::parse_waves(&self.waves).context("--waves")?,
            max_unavailable: MaxUnavailable::parse(&self.max_unavailable)
                .context("--max-unavailable")?,
            failure_threshold: self.failure_threshold,
            progress_deadline: self.progress_deadline,
            pause,
            auto_rollback: !self.no_auto_rollback,
        };
        s.validate()?;
        let duration = |d: Duration| prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        };
        Ok(pb::Strategy {
            waves: s.waves.iter().map(ToString::to_string).collect(),
            max_unavailable: s.max_unavailable.to_string(),
            failure_threshold: s.failure_threshold,
            progress_deadline: Some(duration(s.progress_deadline)),
            pause: match s.pause {
                Pause::None => None,
                Pause::Duration(d) => Some(pb::strategy::Pause::Duration(duration(d))),
                Pause::Manual => Some(pb::strategy::Pause::Manual(true)),
            },
            auto_rollback: Some(s.auto_rollback),
        })
    }
}

/// `seccompctl rollout ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Roll a profile version out to the nodes a selector picks, in waves.
    ///
    /// The version goes to the matching nodes wave by wave (`--waves`), never more than
    /// `--max-unavailable` unconfirmed or failed at once. A node is done when its agent
    /// confirms the exact bytes, mode, owner and group on disk. More failed nodes than
    /// `--failure-threshold`, or a node silent past `--progress-deadline`, fail the rollout:
    /// the nodes it touched go back to the previous completed version (the others were
    /// never touched), unless `--no-auto-rollback`. Refused while another rollout of the same
    /// NodeConfigItem is active.
    ///
    /// With --wait, follows it to the end: exit 0 when it completed, 1 when it was rolled
    /// back or aborted or `--timeout` passed.
    Create {
        /// Profile and version: `NAME` (latest) or `NAME@VERSION`.
        #[arg(value_name = "NAME[@VERSION]")]
        reference: String,
        /// Name of the NodeConfigItem (default `seccomp-<profile>`).
        #[arg(long, value_name = "NCI")]
        name: Option<String>,
        #[command(flatten)]
        target: Box<TargetArgs>,
        #[command(flatten)]
        strategy: Box<StrategyArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List rollouts, newest first.
    List {
        /// Only active rollouts (pending, progressing, paused, rolling back).
        #[arg(long)]
        active: bool,
    },
    /// Show one rollout: state, strategy, a bar per wave, history and nodes.
    Status {
        /// Rollout id (`r7`).
        id: String,
        /// Follow it live until it ends (bars per wave on a terminal, a line per change
        /// otherwise); exit 0 when it completed, 1 when it was rolled back or aborted.
        #[arg(long)]
        watch: bool,
    },
    /// Stop a progressing rollout from taking more nodes; targeted nodes keep converging.
    Pause {
        /// Rollout id.
        id: String,
        /// Why, recorded in the rollout's history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Continue a paused rollout now: after a manual pause the next wave starts, after a
    /// pause for unknown nodes it goes on without them, and what is left of a timed pause
    /// between waves that was running when it was paused is skipped.
    Resume {
        /// Rollout id.
        id: String,
    },
    /// End an active rollout: no more nodes are taken; nodes keep what they have until a
    /// rollback or a new rollout.
    Abort {
        /// Rollout id.
        id: String,
        /// Why, recorded in the rollout's history.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `--wait` and `--timeout`, for the commands that start a rollout.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Follow the rollout until it ends: exit 0 when it completed, 1 when it was rolled back
    /// or aborted, or `--timeout` passed.
    #[arg(long)]
    wait: bool,
    /// With --wait, give up after this long (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    timeout: Duration,
}

/// Arguments of `seccompctl rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Profile whose NodeConfigItems go back.
    #[arg(value_name = "NAME")]
    profile: String,
    /// Version to return to (default: each NodeConfigItem's previous completed version).
    #[arg(long, value_name = "N")]
    to_version: Option<u64>,
    /// Only this NodeConfigItem (default: every one whose latest rollout is of the profile).
    #[arg(long, value_name = "NCI")]
    nci: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

/// Arguments of `seccompctl nodes`.
#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    /// Only nodes whose labels match `k=v[,k=v]`.
    #[arg(long, value_name = "K=V[,K=V]")]
    selector: Option<String>,
}

/// A distributor client with the caller's identity attached.
pub(crate) type Client = DistributorClient<
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
    /// 1-based wave being applied or last applied.
    wave: u32,
    /// Every wave's spec and node counts.
    waves: Vec<WaveOut>,
    strategy: String,
    /// The version touched nodes return to on rollback; none when there is no earlier
    /// completed version.
    stable_version: Option<u64>,
    rollback: bool,
    /// RFC 3339, when a timed pause between waves ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_wave_at: Option<String>,
    nodes: CountsOut,
    conflicts: Vec<String>,
    history: Vec<TransitionOut>,
}

#[derive(Serialize)]
struct WaveOut {
    /// `25%`.
    share: String,
    nodes: CountsOut,
}

#[derive(Serialize)]
struct TransitionOut {
    state: &'static str,
    reason: String,
    /// RFC 3339.
    time: String,
    actor: String,
}

#[derive(Serialize, Default)]
struct CountsOut {
    total: u32,
    applied: u32,
    applying: u32,
    pending: u32,
    failed: u32,
    drifted: u32,
    unknown: u32,
}

impl From<pb::NodeCounts> for CountsOut {
    fn from(c: pb::NodeCounts) -> Self {
        CountsOut {
            total: c.total,
            applied: c.applied,
            applying: c.applying,
            pending: c.pending,
            failed: c.failed,
            drifted: c.drifted,
            unknown: c.unknown,
        }
    }
}

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.map(ToString::to_string).unwrap_or_default()
}

fn strategy_text(s: &pb::Strategy) -> String {
    let deadline = s
        .progress_deadline
        .map(|d| {
            humantime::format_duration(Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            ))
            .to_string()
        })
        .unwrap_or_else(|| "5m".into());
    let pause = match &s.pause {
        Some(pb::strategy::Pause::Manual(true)) => "manual".to_owned(),
        Some(pb::strategy::Pause::Duration(d)) => humantime::format_duration(Duration::new(
            u64::try_from(d.seconds).unwrap_or(0),
            u32::try_from(d.nanos).unwrap_or(0),
        ))
        .to_string(),
        _ => "none".to_owned(),
    };
    format!(
        "waves {}, max unavailable {}, failure threshold {}, progress deadline {deadline}, pause {pause}, auto rollback {}",
        s.waves.join(","),
        s.max_unavailable,
        s.failure_threshold,
        if s.auto_rollback.unwrap_or(true) {
            "on"
        } else {
            "off"
        }
    )
}

impl From<&pb::Rollout> for RolloutOut {
    fn from(r: &pb::Rollout) -> Self {
        let strategy = r.strategy.clone().unwrap_or_default();
        RolloutOut {
            id: r.id.clone(),
            profile: r.profile.clone(),
            version: r.version,
            digest: r.digest.clone(),
            nci: r.nci_name.clone(),
            revision: r.revision,
            state: state_name(r.state),
            wave: r.current_wave,
            waves: strategy
                .waves
                .iter()
                .enumerate()
                .map(|(i, share)| WaveOut {
                    share: share.clone(),
                    nodes: r.wave_nodes.get(i).copied().unwrap_or_default().into(),
                })
                .collect(),
            strategy: strategy_text(&strategy),
            stable_version: r.stable_version,
            rollback: r.rollback,
            next_wave_at: r.next_wave_at.as_ref().map(|t| t.to_string()),
            nodes: r.nodes.unwrap_or_default().into(),
            conflicts: r
                .conflicts
                .iter()
                .map(|c| {
                    let by = if c.winning_rollout_id.is_empty() {
                        String::new()
                    } else {
                        format!(", rollout {}", c.winning_rollout_id)
                    };
                    format!(
                        "{} lost to {} (priority {}{by}) on {} node(s): {}",
                        c.path,
                        c.winning_nci,
                        c.winning_priority,
                        c.node_count,
                        c.sample_nodes.join(", ")
                    )
                })
                .collect(),
            history: r
                .history
                .iter()
                .map(|t| TransitionOut {
                    state: state_name(t.state),
                    reason: t.reason.clone(),
                    time: time_text(t.time.as_ref()),
                    actor: t.actor.clone(),
                })
                .collect(),
        }
    }
}

impl RolloutOut {
    fn terminal(&self) -> bool {
        matches!(self.state, "Completed" | "RolledBack" | "Aborted")
    }
}

fn progress_line(r: &RolloutOut) -> String {
    let n = &r.nodes;
    let wave = if r.waves.is_empty() {
        String::new()
    } else {
        format!(" wave {}/{},", r.wave, r.waves.len())
    };
    format!(
        "{} {}@{} -> {}: {},{wave} {}/{} applied, {} applying, {} failed, {} unknown",
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

/// A bar of `width` cells: `#` applied, `x` failed, `-` the rest.
fn bar(n: &CountsOut, width: u32) -> String {
    let cells = |k: u32| (k * width).checked_div(n.total).unwrap_or(0) as usize;
    let applied = if n.total == 0 {
        width as usize
    } else {
        cells(n.applied)
    };
    let failed = cells(n.failed).min(width as usize - applied);
    format!(
        "[{}{}{}]",
        "#".repeat(applied),
        "x".repeat(failed),
        "-".repeat(width as usize - applied - failed)
    )
}

/// One line per wave: `> wave 2 (25%)  [######------] 1/2 applied, 0 failed, 1 pending`.
fn wave_lines(r: &RolloutOut) -> Vec<String> {
    r.waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let n = &w.nodes;
            let marker = if i + 1 == r.wave as usize && !r.terminal() {
                ">"
            } else {
                " "
            };
            let mut line = format!(
                "{marker} wave {} ({}) {:>w$}{} {}/{} applied, {} failed, {} pending",
                i + 1,
                w.share,
                "",
                bar(n, 24),
                n.applied,
                n.total,
                n.failed,
                n.pending,
                w = 6usize.saturating_sub(w.share.len())
            );
            if n.applying > 0 {
                line.push_str(&format!(", {} applying", n.applying));
            }
            if n.unknown > 0 {
                line.push_str(&format!(", {} unknown", n.unknown));
            }
            line
        })
        .collect()
}

fn transition_line(t: &TransitionOut) -> String {
    let by = if t.actor.is_empty()
        || t.actor == "distributor"
        || t.reason.contains(&format!("by {}", t.actor))
    {
        String::new()
    } else {
        format!(" (by {})", t.actor)
    };
    format!("{} {}: {}{by}", t.time, t.state, t.reason)
}

async fn call<T>(
    reply: std::result::Result<tonic::Response<T>, tonic::Status>,
    dist: &str,
) -> Result<std::result::Result<T, Outcome>> {
    match reply {
        Ok(r) => Ok(Ok(r.into_inner())),
        Err(status) => client::refused_by(status, dist, "distributor").map(Err),
    }
}

/// Print a rollout a call returned: the structured document, or its progress line.
fn print_rollout(format: Format, verb: &str, rollout: Option<pb::Rollout>) -> Result<Outcome> {
    let rollout = rollout.ok_or_else(|| anyhow!("no rollout in the reply"))?;
    let out = RolloutOut::from(&rollout);
    if !print_structured(format, &out)? {
        println!("{verb} {}", progress_line(&out));
        if let Some(t) = out.history.last() {
            println!("  {}", transition_line(t));
        }
    }
    Ok(Outcome::Ok)
}

/// Run a `rollout` subcommand against the distributor at `dist`.
pub fn run(command: Command, dist: &str, format: Format) -> Result<Outcome> {
    // Bad flags are usage errors before any connection.
    let strategy = match &command {
        Command::Create {
            target, strategy, ..
        } => {
            target.to_target()?;
            Some(strategy.to_proto()?)
        }
        _ => None,
    };
    runtime()?.block_on(async {
        let mut c = connect(dist).await?;
        match command {
            Command::Create {
                reference,
                name,
                target,
                wait,
                ..
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
                    strategy,
                    nci_name: name,
                };
                let reply = match call(c.create_rollout(request).await, dist).await? {
                    Ok(r) => r,
                    Err(outcome) => return Ok(outcome),
                };
                let rollout = reply
                    .rollout
                    .ok_or_else(|| anyhow!("no rollout in the reply"))?;
                if !wait.wait {
                    return print_rollout(format, "created", Some(rollout));
                }
                if format == Format::Table {
                    println!("created {}", progress_line(&RolloutOut::from(&rollout)));
                }
                follow(&mut c, &rollout.id, dist, format, Some(wait.timeout)).await
            }
            Command::List { active } => {
                let mut list = Vec::new();
                let mut page_token = String::new();
                loop {
                    let request = pb::ListRolloutsRequest {
                        active_only: active,
                        page_size: 1000,
                        page_token,
                        ..Default::default()
                    };
                    let page = match call(c.list_rollouts(request).await, dist).await? {
                        Ok(r) => r,
                        Err(outcome) => return Ok(outcome),
                    };
                    list.extend(page.rollouts);
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page_token = page.next_page_token;
                }
                let out: Vec<RolloutOut> = list.iter().map(RolloutOut::from).collect();
                if !print_structured(format, &out)? {
                    let mut t = table([
                        "ID", "PROFILE", "VERSION", "NCI", "REV", "STATE", "WAVE", "APPLIED",
                        "FAILED",
                    ]);
                    for r in &out {
                        t.add_row([
                            r.id.clone(),
                            r.profile.clone(),
                            r.version.to_string(),
                            r.nci.clone(),
                            if r.rollback {
                                format!("{} (rollback)", r.revision)
                            } else {
                                r.revision.to_string()
                            },
                            r.state.to_owned(),
                            format!("{}/{}", r.wave, r.waves.len()),
                            format!("{}/{}", r.nodes.applied, r.nodes.total),
                            r.nodes.failed.to_string(),
                        ]);
                    }
                    print_table(&t);
                }
                Ok(Outcome::Ok)
            }
            Command::Status { id, watch: true } => follow(&mut c, &id, dist, format, None).await,
            Command::Status { id, watch: false } => {
                let request = pb::GetRolloutRequest {
                    id,
                    include_nodes: true,
                };
                let reply = match call(c.get_rollout(request).await, dist).await? {
                    Ok(r) => r,
                    Err(outcome) => return Ok(outcome),
                };
                let rollout = reply
                    .rollout
                    .ok_or_else(|| anyhow!("no rollout in the reply"))?;
                status(format, &rollout, &reply.nodes)
            }
            Command::Pause { id, reason } => {
                let reply = c
                    .pause_rollout(pb::PauseRolloutRequest { id, reason })
                    .await;
                match call(reply, dist).await? {
                    Ok(r) => print_rollout(format, "paused", r.rollout),
                    Err(outcome) => Ok(outcome),
                }
            }
            Command::Resume { id } => {
                let reply = c.resume_rollout(pb::ResumeRolloutRequest { id }).await;
                match call(reply, dist).await? {
                    Ok(r) => print_rollout(format, "resumed", r.rollout),
                    Err(outcome) => Ok(outcome),
                }
            }
            Command::Abort { id, reason } => {
                let reply = c
                    .abort_rollout(pb::AbortRolloutRequest { id, reason })
                    .await;
                match call(reply, dist).await? {
                    Ok(r) => print_rollout(format, "aborted", r.rollout),
                    Err(outcome) => Ok(outcome),
                }
            }
        }
    })
}

/// `seccompctl rollback`: one new rollout per NodeConfigItem, back to older content.
pub fn rollback(args: RollbackArgs, dist: &str, format: Format) -> Result<Outcome> {
    if args.to_version == Some(0) {
        bail!("--to-version 0 is not a version: versions start at 1");
    }
    runtime()?.block_on(async {
        let mut c = connect(dist).await?;
        let request = pb::RollbackRequest {
            profile: args.profile,
            to_version: args.to_version,
            nci_name: args.nci,
        };
        let rollouts = match call(c.rollback(request).await, dist).await? {
            Ok(r) => r.rollouts,
            Err(outcome) => return Ok(outcome),
        };
        let out: Vec<RolloutOut> = rollouts.iter().map(RolloutOut::from).collect();
        if !args.wait.wait {
            if !print_structured(format, &out)? {
                for r in &out {
                    println!("rollback {}", progress_line(r));
                    if let Some(t) = r.history.first() {
                        println!("  {}", transition_line(t));
                    }
                }
            }
            return Ok(Outcome::Ok);
        }
        // One --timeout for all of them, and one document (a list) for -o json|yaml.
        let deadline = std::time::Instant::now() + args.wait.timeout;
        let mut outcome = Outcome::Ok;
        let mut ended = Vec::with_capacity(out.len());
        for r in &out {
            if format == Format::Table {
                println!("rollback {}", progress_line(r));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (o, last) = follow_to_end(&mut c, &r.id, dist, format, Some(left)).await?;
            if o != Outcome::Ok {
                outcome = Outcome::Negative;
            }
            ended.extend(last);
        }
        print_structured(format, &ended)?;
        Ok(outcome)
    })
}

/// `rollout status ID` without `--watch`.
fn status(format: Format, rollout: &pb::Rollout, nodes: &[pb::RolloutNode]) -> Result<Outcome> {
    #[derive(Serialize)]
    struct NodeRowOut {
        name: String,
        state: &'static str,
        #[serde(skip_serializing_if = "String::is_empty")]
        message: String,
        since: String,
    }
    #[derive(Serialize)]
    struct Status<'a> {
        rollout: &'a RolloutOut,
        nodes: Vec<NodeRowOut>,
    }
    let out = RolloutOut::from(rollout);
    let rows: Vec<NodeRowOut> = nodes
        .iter()
        .map(|n| NodeRowOut {
            name: n.node_name.clone(),
            state: node_state_name(n.state),
            message: n.message.clone(),
            since: time_text(n.since.as_ref()),
        })
        .collect();
    let doc = Status {
        rollout: &out,
        nodes: rows,
    };
    if print_structured(format, &doc)? {
        return Ok(Outcome::Ok);
    }
    println!("{}", progress_line(&out));
    println!("  strategy: {}", out.strategy);
    println!(
        "  stable version: {}",
        out.stable_version.map_or_else(
            || "none (a rollback removes the file)".into(),
            |v| v.to_string()
        )
    );
    if let Some(at) = &out.next_wave_at {
        println!("  next wave at: {at}");
    }
    for line in wave_lines(&out) {
        println!("  {line}");
    }
    for c in &out.conflicts {
        println!("  conflict: {c}");
    }
    println!("  history:");
    for t in &out.history {
        println!("    {}", transition_line(t));
    }
    println!("  nodes:");
    for n in &doc.nodes {
        if n.message.is_empty() {
            println!("    {}: {}", n.name, n.state);
        } else {
            println!("    {}: {} ({})", n.name, n.state, n.message);
        }
    }
    Ok(Outcome::Ok)
}

/// Follow the rollout's events (`WatchRollout`) until it ends or `timeout` passes: bars per
/// wave redrawn in place on a terminal, a line per change otherwise. Completed is
/// `Outcome::Ok`; rolled back, aborted or out of time is `Outcome::Negative` with the reason
/// on standard error.
pub(crate) async fn follow(
    c: &mut Client,
    id: &str,
    dist: &str,
    format: Format,
    timeout: Option<Duration>,
) -> Result<Outcome> {
    let (outcome, last) = follow_to_end(c, id, dist, format, timeout).await?;
    if let Some(out) = last {
        print_structured(format, &out)?;
    }
    Ok(outcome)
}

/// [`follow`] without printing the final rollout as a document: returns it.
async fn follow_to_end(
    c: &mut Client,
    id: &str,
    dist: &str,
    format: Format,
    timeout: Option<Duration>,
) -> Result<(Outcome, Option<RolloutOut>)> {
    use std::io::{IsTerminal as _, Write as _};
    use tokio_stream::StreamExt as _;

    let request = pb::WatchRolloutRequest { id: id.to_owned() };
    let mut events = match call(c.watch_rollout(request).await, dist).await? {
        Ok(s) => s,
        Err(outcome) => return Ok((outcome, None)),
    };
    let live = format == Format::Table && std::io::stdout().is_terminal();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut last: Option<RolloutOut> = None;
    let mut drawn = 0usize;
    let mut seen_history = 0usize;
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
            Err(status) => {
                return client::refused_by(status, dist, "distributor").map(|o| (o, None));
            }
        };
        let Some(rollout) = event.rollout else {
            continue;
        };
        let out = RolloutOut::from(&rollout);
        let fresh: Vec<String> = out
            .history
            .iter()
            .skip(seen_history)
            .map(transition_line)
            .collect();
        seen_history = out.history.len();
        if live {
            // Move up over the previous drawing, print new transitions, redraw the bars.
            if drawn > 0 {
                print!("\x1b[{drawn}A\r");
            }
            for line in &fresh {
                println!("\x1b[2K{line}");
            }
            let mut lines = vec![progress_line(&out)];
            lines.extend(wave_lines(&out));
            for line in &lines {
                println!("\x1b[2K{line}");
            }
            drawn = lines.len();
            let _ = std::io::stdout().flush();
        } else if format == Format::Table {
            for line in &fresh {
                println!("{line}");
            }
            println!("{}", progress_line(&out));
        }
        let done = out.terminal();
        last = Some(out);
        if done {
            break;
        }
    }
    let Some(out) = last else {
        bail!("the distributor ended the watch of rollout {id} without any event");
    };
    let reason = out
        .history
        .iter()
        .rev()
        .find(|t| t.state != "RolledBack")
        .map_or("", |t| t.reason.as_str());
    match out.state {
        "Completed" => return Ok((Outcome::Ok, Some(out))),
        "RolledBack" => eprintln!("seccompctl: rollout {id} was rolled back: {reason}"),
        "Aborted" => eprintln!("seccompctl: rollout {id} was aborted: {reason}"),
        state if timed_out => {
            let t = timeout.unwrap_or_default();
            eprintln!(
                "seccompctl: rollout {id} did not end within {} (it is {state}); see `seccompctl rollout status {id}`",
                humantime::format_duration(t)
            );
            if state == "Paused" {
                eprintln!(
                    "seccompctl: it is paused: `seccompctl rollout resume {id}` continues it"
                );
            }
        }
        state => eprintln!("seccompctl: the watch of rollout {id} ended while it was {state}"),
    }
    Ok((Outcome::Negative, Some(out)))
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
        let mut list = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListNodesRequest {
                selector: filter.clone().into_iter().collect(),
                page_size: 1000,
                page_token,
            };
            let page = match call(c.list_nodes(request).await, dist).await? {
                Ok(r) => r,
                Err(outcome) => return Ok(outcome),
            };
            list.extend(page.nodes);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
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
