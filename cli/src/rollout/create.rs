//! `seccompctl rollout create`: its flags (the target, shared with `render`; the strategy;
//! `--wait`, shared with `rollback`), checked with the distributor's own rules before any
//! connection, and the call.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use seccomp_proto::distributor::v1 as pb;
use seccomp_rollout::nci::{self, Target};
use seccomp_rollout::selector;
use seccomp_rollout::strategy::{self, MaxUnavailable, Pause, Strategy};

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::Format;

/// Where and how a profile lands on nodes, and in which NodeConfigItem (shared by `rollout
/// create` and `render`).
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Name of the NodeConfigItem (default `seccomp-<profile>`).
    #[arg(long, value_name = "NCI")]
    pub name: Option<String>,

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

/// `--wait` and `--timeout`, for the commands that start a rollout.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Follow the rollout until it ends: exit 0 when it completed, 1 when it was rolled back
    /// or aborted, or `--timeout` passed. A change that removes files shows its plan first.
    #[arg(long)]
    pub wait: bool,
    /// With --wait, give up after this long (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Arguments of `seccompctl rollout create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile and version: `NAME` (latest) or `NAME@VERSION`.
    #[arg(value_name = "NAME[@VERSION]")]
    reference: String,
    #[command(flatten)]
    target: TargetArgs,
    /// Create it although its selector matches no node the distributor knows (nodes that
    /// connect later get it). Without it such a rollout is refused, with the label keys
    /// nearest to the ones given (a typo such as `os=linux` for `kubernetes.io/os=linux`).
    #[arg(long)]
    allow_empty: bool,
    #[command(flatten)]
    strategy: StrategyArgs,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    guards: GuardArgs,
}

/// The plan and the guards (`rollout create`, `rollback`).
#[derive(Debug, Clone, clap::Args)]
pub struct GuardArgs {
    /// Show what the change would do (per node: add, update, remove or unchanged, from which
    /// NodeConfigItem and version; the waves; the conflicts; what the sinks get) and change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Go ahead although the change takes a profile file away from some nodes (a narrower
    /// selector, another path). Those nodes lose it through the same waves, limits and
    /// confirmation as the others, and an abort or a rollback gives it back. Without it
    /// such a change is refused, naming the nodes; `--dry-run` lists them.
    #[arg(long)]
    pub allow_removal: bool,

    /// Take files away even from nodes where a pod names them (a distributor with
    /// --check-pods otherwise refuses, naming the pods).
    #[arg(long)]
    pub force: bool,
}

impl Args {
    /// Check every flag and build the request, so that bad flags are usage errors before any
    /// connection.
    pub fn to_request(&self) -> Result<pb::CreateRolloutRequest> {
        let target = self.target.to_target()?;
        let strategy = self.strategy.to_proto()?;
        let (profile, version) = match self.reference.split_once('@') {
            Some((p, v)) => (
                p.to_owned(),
                v.parse::<u64>().map_err(|_| {
                    anyhow!(
                        "invalid version {v:?} in {:?}: expected a number",
                        self.reference
                    )
                })?,
            ),
            None => (self.reference.clone(), 0),
        };
        Ok(pb::CreateRolloutRequest {
            profile,
            version,
            target: Some(wire_target(&target)),
            strategy: Some(strategy),
            nci_name: self.target.name.clone(),
            allow_empty: self.allow_empty,
            allow_removal: self.guards.allow_removal,
            force: self.guards.force,
        })
    }
}

/// A target as the distributor's API takes it.
pub fn wire_target(t: &Target) -> pb::Target {
    pb::Target {
        selector: t.selector.clone().into_iter().collect(),
        priority: Some(t.priority),
        path: t.path.clone().unwrap_or_default(),
        mode: nci::format_mode(t.mode),
        owner: t.owner.clone(),
        group: t.group.clone(),
    }
}

/// Create the rollout; with `--wait`, follow it to its end.
pub async fn run(
    c: &mut client::Distributor,
    dist: &str,
    format: Format,
    args: &Args,
) -> Result<Outcome> {
    let request = args.to_request()?;
    let change = pb::plan_rollout_request::Change::Create(request.clone());
    let before_wait = args.wait.wait && args.guards.allow_removal;
    if let Some(outcome) =
        crate::plan::preview(c, dist, format, change, args.guards.dry_run, before_wait).await?
    {
        return Ok(outcome);
    }
    let reply = match client::answer(c.create_rollout(request).await, Service::Distributor, dist)? {
        Ok(r) => r,
        Err(outcome) => return Ok(outcome),
    };
    super::started(c, dist, format, "created", reply.rollout, &args.wait).await
}
