//! `seccompctl rollout list` and `seccompctl rollout status ID` (without `--watch`).

use anyhow::{Result, anyhow};
use seccomp_proto::distributor::v1 as pb;
use serde::Serialize;

use super::view::{
    RolloutOut, node_state_name, progress_line, time_text, transition_line, wave_lines,
};
use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, outln, print_structured, print_table, table};

/// `rollout list [--active]`: every rollout, newest first.
pub async fn list(
    c: &mut client::Distributor,
    dist: &str,
    format: Format,
    active: bool,
) -> Result<Outcome> {
    let mut list = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListRolloutsRequest {
            active_only: active,
            page_size: 1000,
            page_token,
            ..Default::default()
        };
        let page = match client::answer(c.list_rollouts(request).await, Service::Distributor, dist)?
        {
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
            "ID", "PROFILE", "VERSION", "NCI", "REV", "STATE", "WAVE", "APPLIED", "FAILED",
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

/// `rollout status ID` without `--watch`: the rollout and its nodes, once.
pub async fn status(
    c: &mut client::Distributor,
    dist: &str,
    format: Format,
    id: String,
) -> Result<Outcome> {
    let request = pb::GetRolloutRequest {
        id,
        include_nodes: true,
    };
    let reply = match client::answer(c.get_rollout(request).await, Service::Distributor, dist)? {
        Ok(r) => r,
        Err(outcome) => return Ok(outcome),
    };
    let rollout = reply
        .rollout
        .ok_or_else(|| anyhow!("no rollout in the reply"))?;
    let nodes = &reply.nodes;
    #[derive(Serialize)]
    struct NodeRowOut {
        name: String,
        state: &'static str,
        #[serde(skip_serializing_if = "String::is_empty")]
        message: String,
        since: String,
        /// The node loses the file (it matches only the stable version's selector).
        removal: bool,
    }
    #[derive(Serialize)]
    struct Status<'a> {
        rollout: &'a RolloutOut,
        nodes: Vec<NodeRowOut>,
    }
    let out = RolloutOut::from(&rollout);
    let rows: Vec<NodeRowOut> = nodes
        .iter()
        .map(|n| NodeRowOut {
            name: n.node_name.clone(),
            state: node_state_name(n.state),
            message: n.message.clone(),
            since: time_text(n.since.as_ref()),
            removal: n.removal,
        })
        .collect();
    let doc = Status {
        rollout: &out,
        nodes: rows,
    };
    if print_structured(format, &doc)? {
        return Ok(Outcome::Ok);
    }
    outln!("{}", progress_line(&out));
    outln!("  strategy: {}", out.strategy);
    outln!(
        "  stable version: {}",
        out.stable_version.map_or_else(
            || "none (a rollback removes the file)".into(),
            |v| v.to_string()
        )
    );
    if let Some(at) = &out.next_wave_at {
        outln!("  next wave at: {at}");
    }
    for line in wave_lines(&out) {
        outln!("  {line}");
    }
    for c in &out.conflicts {
        outln!("  conflict: {c}");
    }
    outln!("  history:");
    for t in &out.history {
        outln!("    {}", transition_line(t));
    }
    outln!("  nodes:");
    for n in &doc.nodes {
        let what = if n.removal { " (removal)" } else { "" };
        if n.message.is_empty() {
            outln!("    {}{what}: {}", n.name, n.state);
        } else {
            outln!("    {}{what}: {} ({})", n.name, n.state, n.message);
        }
    }
    Ok(Outcome::Ok)
}
