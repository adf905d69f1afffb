//! `seccompctl rollout remove NCI`: retire a NodeConfigItem, taking its file off every node
//! that has it through the strategy's waves (`--dry-run` shows which nodes first).

use anyhow::{Result, anyhow};
use seccomp_proto::distributor::v1 as pb;

use super::create::{StrategyArgs, WaitArgs};
use super::print_rollout;
use super::view::{RolloutOut, progress_line};
use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, outln};
use crate::watch;

/// Arguments of `seccompctl rollout remove`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The NodeConfigItem whose file goes away from the nodes.
    #[arg(value_name = "NCI")]
    nci: String,
    #[command(flatten)]
    strategy: StrategyArgs,
    #[command(flatten)]
    wait: WaitArgs,
    /// Show which nodes lose the file, and in which wave, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Take the file away even from nodes where a pod names it (a distributor with
    /// --check-pods otherwise refuses, naming the pods).
    #[arg(long)]
    force: bool,
}

impl Args {
    /// Check every flag and build the request.
    pub fn to_request(&self) -> Result<pb::RetireNciRequest> {
        Ok(pb::RetireNciRequest {
            nci_name: self.nci.clone(),
            strategy: Some(self.strategy.to_proto()?),
            force: self.force,
        })
    }
}

/// Plan or start the retirement; with `--wait`, follow it to its end.
pub async fn run(
    c: &mut client::Distributor,
    dist: &str,
    format: Format,
    args: &Args,
) -> Result<Outcome> {
    let request = args.to_request()?;
    if args.dry_run || (args.wait.wait && format == Format::Table) {
        let asked = pb::PlanRolloutRequest {
            change: Some(pb::plan_rollout_request::Change::Retire(request.clone())),
        };
        let plan = match client::answer(c.plan_rollout(asked).await, Service::Distributor, dist)? {
            Ok(p) => p,
            Err(outcome) => return Ok(outcome),
        };
        crate::plan::print(format, &plan)?;
        if args.dry_run {
            return Ok(Outcome::Ok);
        }
    }
    let reply = match client::answer(c.retire_nci(request).await, Service::Distributor, dist)? {
        Ok(r) => r,
        Err(outcome) => return Ok(outcome),
    };
    let rollout = reply
        .rollout
        .ok_or_else(|| anyhow!("no rollout in the reply"))?;
    if !args.wait.wait {
        return print_rollout(format, "retiring", Some(rollout));
    }
    if format == Format::Table {
        outln!("retiring {}", progress_line(&RolloutOut::from(&rollout)));
    }
    watch::follow(c, &rollout.id, dist, format, Some(args.wait.timeout)).await
}
