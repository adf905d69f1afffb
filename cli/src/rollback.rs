//! `seccompctl rollback NAME`: a profile's NodeConfigItems back to older content, each as a
//! new rollout on the distributor, optionally followed to the end (`--wait`).

use anyhow::{Result, bail};
use seccomp_proto::distributor::v1 as pb;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, outln, print_structured};
use crate::rollout::view::{RolloutOut, progress_line, transition_line};
use crate::rollout::{GuardArgs, WaitArgs};
use crate::watch;

/// Arguments of `seccompctl rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    guards: GuardArgs,
}

/// `seccompctl rollback`: one new rollout per NodeConfigItem, back to older content.
pub fn run(args: Args, dist: &str, format: Format) -> Result<Outcome> {
    if args.to_version == Some(0) {
        bail!("--to-version 0 is not a version: versions start at 1");
    }
    client::runtime()?.block_on(async {
        let mut c = client::distributor(dist).await?;
        let request = pb::RollbackRequest {
            profile: args.profile,
            to_version: args.to_version,
            nci_name: args.nci,
            allow_removal: args.guards.allow_removal,
            force: args.guards.force,
        };
        let change = pb::plan_rollout_request::Change::Rollback(request.clone());
        let before_wait = args.wait.wait && args.guards.allow_removal;
        if let Some(outcome) = crate::plan::preview(
            &mut c,
            dist,
            format,
            change,
            args.guards.dry_run,
            before_wait,
        )
        .await?
        {
            return Ok(outcome);
        }
        let rollouts = match client::answer(c.rollback(request).await, Service::Distributor, dist)?
        {
            Ok(r) => r.rollouts,
            Err(outcome) => return Ok(outcome),
        };
        let out: Vec<RolloutOut> = rollouts.iter().map(RolloutOut::from).collect();
        if !args.wait.wait {
            if !print_structured(format, &out)? {
                for r in &out {
                    outln!("rollback {}", progress_line(r));
                    if let Some(t) = r.history.first() {
                        outln!("  {}", transition_line(t));
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
                outln!("rollback {}", progress_line(r));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (o, last) = watch::follow_to_end(&mut c, &r.id, dist, format, Some(left)).await?;
            if o != Outcome::Ok {
                outcome = Outcome::Negative;
            }
            ended.extend(last);
        }
        print_structured(format, &ended)?;
        Ok(outcome)
    })
}
