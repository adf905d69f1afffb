//! `seccompctl rollout create|remove|list|status|pause|resume|abort`: rollouts on the
//! distributor.
//!
//! Layout: `create` (its flags, also used by `render` and `rollback`, and the call),
//! `remove` (retiring a NodeConfigItem),
//! `status` (`list` and `status`), `view` (how a rollout reads in every format). Following a
//! rollout live (`--wait`, `--watch`) is [`crate::watch`].

mod create;
mod remove;
mod status;
pub mod view;

use anyhow::{Result, anyhow};
use seccomp_proto::distributor::v1 as pb;

pub use self::create::{GuardArgs, TargetArgs, WaitArgs, wire_target};
use self::view::{RolloutOut, progress_line, transition_line};
use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, outln, print_structured};
use crate::watch;

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
    Create(Box<create::Args>),
    /// Retire a NodeConfigItem: take its file off every node that has it, in waves.
    ///
    /// A rollout like any other: the nodes lose the file wave by wave, within
    /// `--max-unavailable`, each done when its agent reports the file gone; a failure rolls
    /// it back (the file returns), and `rollout abort` gives it back too. Once it completes,
    /// the YAML directory and the cluster delete the NodeConfigItem. Prints the plan first
    /// (which nodes, which wave); `--dry-run` prints only the plan.
    Remove(Box<remove::Args>),
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

/// Print a rollout a call returned: the structured document, or its progress line.
fn print_rollout(format: Format, verb: &str, rollout: Option<pb::Rollout>) -> Result<Outcome> {
    let rollout = rollout.ok_or_else(|| anyhow!("no rollout in the reply"))?;
    let out = RolloutOut::from(&rollout);
    if !print_structured(format, &out)? {
        outln!("{verb} {}", progress_line(&out));
        if let Some(t) = out.history.last() {
            outln!("  {}", transition_line(t));
        }
    }
    Ok(Outcome::Ok)
}

/// Run a `rollout` subcommand against the distributor at `dist`.
/// After a command started a rollout: print it, or with `--wait` follow it to its end.
async fn started(
    c: &mut client::Distributor,
    dist: &str,
    format: Format,
    verb: &str,
    rollout: Option<pb::Rollout>,
    wait: &WaitArgs,
) -> Result<Outcome> {
    let rollout = rollout.ok_or_else(|| anyhow!("no rollout in the reply"))?;
    if !wait.wait {
        return print_rollout(format, verb, Some(rollout));
    }
    if format == Format::Table {
        outln!("{verb} {}", progress_line(&RolloutOut::from(&rollout)));
    }
    watch::follow(c, &rollout.id, dist, format, Some(wait.timeout)).await
}

pub fn run(command: Command, dist: &str, format: Format) -> Result<Outcome> {
    // Bad flags are usage errors before any connection.
    match &command {
        Command::Create(args) => {
            args.to_request()?;
        }
        Command::Remove(args) => {
            args.to_request()?;
        }
        _ => {}
    }
    client::runtime()?.block_on(async {
        let mut c = client::distributor(dist).await?;
        // What pause, resume and abort print: the rollout as it is now.
        let changed = |verb: &str, reply: Result<Option<pb::Rollout>, tonic::Status>| match reply {
            Ok(rollout) => print_rollout(format, verb, rollout),
            Err(status) => client::refused(status, Service::Distributor, dist),
        };
        match command {
            Command::Create(args) => create::run(&mut c, dist, format, &args).await,
            Command::Remove(args) => remove::run(&mut c, dist, format, &args).await,
            Command::List { active } => status::list(&mut c, dist, format, active).await,
            Command::Status { id, watch: true } => {
                watch::follow(&mut c, &id, dist, format, None).await
            }
            Command::Status { id, watch: false } => status::status(&mut c, dist, format, id).await,
            Command::Pause { id, reason } => {
                let reply = c
                    .pause_rollout(pb::PauseRolloutRequest { id, reason })
                    .await;
                changed("paused", reply.map(|r| r.into_inner().rollout))
            }
            Command::Resume { id } => {
                let reply = c.resume_rollout(pb::ResumeRolloutRequest { id }).await;
                changed("resumed", reply.map(|r| r.into_inner().rollout))
            }
            Command::Abort { id, reason } => {
                let reply = c
                    .abort_rollout(pb::AbortRolloutRequest { id, reason })
                    .await;
                changed("aborted", reply.map(|r| r.into_inner().rollout))
            }
        }
    })
}
