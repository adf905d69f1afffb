//! `seccompctl events [--profile P] [--node N] [--since D]`: the seccomp events node agents
//! reported (the kernel's records of what a profile logged or denied, read from the logs
//! each agent follows with `--audit-log`), merged per node, container, executable,
//! architecture, syscall and action, most recently seen first.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Result, anyhow};
use seccomp_proto::distributor::v1 as pb;
use seccomp_rollout::selector;
use serde::Serialize;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, errln, print_structured, print_table, table};

/// Arguments of `seccompctl events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only events attributed to this profile (a pod on the node names its file; needs the
    /// distributor's --check-pods to know the pods).
    #[arg(long)]
    pub profile: Option<String>,

    /// Only events from this node.
    #[arg(long)]
    pub node: Option<String>,

    /// Only events from nodes whose labels match `k=v[,k=v]`.
    #[arg(long, value_name = "K=V[,K=V]")]
    pub node_selector: Option<String>,

    /// Only events last seen this recently (a duration: 30m, 2h, 7d) or since this time
    /// (RFC 3339).
    #[arg(long, value_name = "D", value_parser = parse_since)]
    pub since: Option<prost_types::Timestamp>,

    /// With --profile: also the events no pod could be told for (a cluster whose pods the
    /// distributor does not watch, or `seccompctl dev`, where nodes run no pods; or a
    /// container gone before it was looked up) on the nodes selected. Use it where the
    /// profile is the only one logging on those nodes.
    #[arg(long, requires = "profile")]
    pub include_unattributed: bool,

    /// At most this many events (the distributor caps it at 10000).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
}

/// `--since`: a duration back from now, or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<prost_types::Timestamp> {
    if let Ok(d) = humantime::parse_duration(s) {
        let at = SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| anyhow!("{s} ago is before the clock's start"))?;
        return Ok(at.into());
    }
    s.parse().map_err(|_| {
        anyhow!("expected a duration such as 30m or 7d, or an RFC 3339 time such as 2025-01-31T12:00:00Z")
    })
}

/// One kind of event, as printed.
#[derive(Debug, Serialize)]
pub struct EventOut {
    pub node: String,
    pub container_id: String,
    pub pod: String,
    pub profile: String,
    pub version: u64,
    pub path: String,
    pub exe: String,
    pub arch: String,
    pub syscall: String,
    pub action: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
struct Listed {
    events: Vec<EventOut>,
    truncated: bool,
    dropped: u64,
}

fn time(t: Option<prost_types::Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

/// The events `args` ask for, or the outcome of a refusal.
pub async fn fetch(
    args: &Args,
    dist: &str,
) -> Result<Result<pb::ListSeccompEventsResponse, Outcome>> {
    let filter = match &args.node_selector {
        Some(s) => selector::parse(s)?,
        None => BTreeMap::new(),
    };
    let mut c = client::distributor(dist).await?;
    let request = pb::ListSeccompEventsRequest {
        profile: args.profile.clone().unwrap_or_default(),
        node: args.node.clone().unwrap_or_default(),
        since: args.since,
        selector: filter.into_iter().collect(),
        include_unattributed: args.include_unattributed,
        limit: args.limit,
    };
    client::answer(
        c.list_seccomp_events(request).await,
        Service::Distributor,
        dist,
    )
}

/// An event as printed.
pub fn event_out(e: pb::SeccompEvent) -> EventOut {
    EventOut {
        node: e.node,
        container_id: e.container_id,
        pod: e.pod,
        profile: e.profile,
        version: e.version,
        path: e.path,
        exe: e.exe,
        arch: e.arch,
        syscall: e.syscall,
        action: e.action,
        count: e.count,
        first_seen: time(e.first_seen),
        last_seen: time(e.last_seen),
    }
}

/// `seccompctl events`.
pub fn run(args: &Args, dist: &str, format: Format) -> Result<Outcome> {
    client::runtime()?.block_on(async {
        let reply = match fetch(args, dist).await? {
            Ok(r) => r,
            Err(outcome) => return Ok(outcome),
        };
        let out = Listed {
            events: reply.events.into_iter().map(event_out).collect(),
            truncated: reply.truncated,
            dropped: reply.dropped,
        };
        if print_structured(format, &out)? {
            return Ok(Outcome::Ok);
        }
        if out.events.is_empty() {
            errln!("no seccomp events (agents report them when run with --audit-log)");
        } else {
            let mut t = table([
                "NODE",
                "POD",
                "PROFILE",
                "EXE",
                "ARCH",
                "SYSCALL",
                "ACTION",
                "COUNT",
                "LAST SEEN",
            ]);
            for e in &out.events {
                let or_dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                t.add_row(vec![
                    e.node.clone(),
                    or_dash(&e.pod),
                    if e.profile.is_empty() {
                        "-".to_owned()
                    } else {
                        format!("{}@{}", e.profile, e.version)
                    },
                    or_dash(&e.exe),
                    e.arch.trim_start_matches("SCMP_ARCH_").to_owned(),
                    e.syscall.clone(),
                    e.action.trim_start_matches("SCMP_ACT_").to_owned(),
                    e.count.to_string(),
                    e.last_seen.clone(),
                ]);
            }
            print_table(&t);
        }
        if out.truncated {
            errln!(
                "more events matched; narrow with --since, --node or --profile, or raise --limit"
            );
        }
        if out.dropped > 0 {
            errln!(
                "{} records were dropped by the agents' or the distributor's bounds",
                out.dropped
            );
        }
        Ok(Outcome::Ok)
    })
}
