//! `seccompctl rollout remove NCI`: retire a NodeConfigItem, taking its file off every node
//! that has it through the strategy's waves (`--dry-run` shows which nodes first).

use anyhow::Result;
use seccomp_proto::distributor::v1 as pb;

use super::create::{StrategyArgs, WaitArgs};
use crate::Outcome;
use crate::client::{self, Service};
use crate::output::Format;

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
    let change = pb::plan_rollout_request::Change::Retire(request.clone());
    if let Some(outcome) =
        crate::plan::preview(c, dist, format, change, args.dry_run, args.wait.wait).await?
    {
        return Ok(outcome);
    }
    let reply = match client::answer(c.retire_nci(request).await, Service::Distributor, dist)? {
        Ok(r) => r,
        Err(outcome) => return Ok(outcome),
    };
    super::started(c, dist, format, "retiring", reply.rollout, &args.wait).await
}
