//! `seccompctl profile suggest NAME`: the next version of a profile from what its workloads
//! were seen doing. The syscalls the distributor's seccomp events show under NAME (logged
//! by a complain-mode profile, or denied) are allowed, per architecture where they differ,
//! everything else of the base version is kept, and with `--enforce` a LOG default becomes
//! ERRNO (EPERM). Prints the semantic diff against the base and the validator's verdict;
//! `--publish` stores it as the next version (a staged rollout then makes it real).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use seccomp_profile::suggest::{Observation, suggest_observed};
use seccomp_proto::registry::v1 as reg;
use serde::Serialize;

use crate::Outcome;
use crate::client::{self, Service};
use crate::events;
use crate::output::{Format, errln, outln, print_structured, print_table, table};

/// Arguments of `seccompctl profile suggest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The profile (published at least once).
    pub name: String,

    /// The version to build on; default: the latest.
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,

    /// Only events last seen this recently (30m, 2h, 7d) or since this time (RFC 3339).
    #[arg(long, value_name = "D", value_parser = events::parse_since)]
    pub since: Option<prost_types::Timestamp>,

    /// Only events from nodes whose labels match `k=v[,k=v]`.
    #[arg(long, value_name = "K=V[,K=V]")]
    pub node_selector: Option<String>,

    /// Also the events no pod could be told for, on the nodes selected (see `seccompctl
    /// events --include-unattributed`): where NAME is the only profile logging there, or
    /// on `seccompctl dev`, whose nodes run no pods.
    #[arg(long)]
    pub include_unattributed: bool,

    /// Turn a SCMP_ACT_LOG default into SCMP_ACT_ERRNO with EPERM: from complain mode to
    /// an enforced profile.
    #[arg(long)]
    pub enforce: bool,

    /// Write the suggested profile's bytes to this file.
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,

    /// Publish the suggestion as the next version (refused when it does not validate, or
    /// when another version was published since the base, unless --version names the
    /// base).
    #[arg(long)]
    pub publish: bool,
}

#[derive(Debug, Serialize)]
struct Seen {
    syscall: String,
    arches: Vec<String>,
    count: u64,
    nodes: usize,
}

#[derive(Debug, Serialize)]
struct Suggested {
    name: String,
    base_version: u64,
    events: usize,
    observed: Vec<Seen>,
    /// Seen syscalls with no name in their architecture's table (`#<number>`), not allowed.
    unnamed: Vec<String>,
    allowed: Vec<String>,
    kept_denied: Vec<String>,
    enforced: bool,
    diff: seccomp_profile::diff::ProfileDiff,
    valid: bool,
    diagnostics: Vec<String>,
    profile: serde_json::Value,
    published_version: Option<u64>,
}

/// `seccompctl profile suggest`, with the registry at `registry` connected as `r`.
pub async fn run(
    r: &mut client::Registry,
    args: &Args,
    registry: &str,
    dist: &str,
    format: Format,
) -> Result<Outcome> {
    {
        let request = reg::GetProfileRequest {
            name: args.name.clone(),
            selector: args
                .version
                .map(reg::get_profile_request::Selector::Version),
            include_content: Some(true),
        };
        let base = match client::answer(r.get_profile(request).await, Service::Registry, registry)?
        {
            Ok(reply) => reply.profile.unwrap_or_default(),
            Err(outcome) => return Ok(outcome),
        };
        let query = events::Args {
            profile: Some(args.name.clone()),
            node: None,
            node_selector: args.node_selector.clone(),
            since: args.since,
            include_unattributed: args.include_unattributed,
            limit: 10_000,
        };
        let reply = match events::fetch(&query, dist).await? {
            Ok(r) => r,
            Err(outcome) => return Ok(outcome),
        };
        if reply.truncated {
            errln!(
                "seccompctl: more than 10000 kinds of event matched; narrow with --since or --node-selector"
            );
        }
        let mut seen: BTreeMap<String, (BTreeSet<String>, u64, BTreeSet<String>)> = BTreeMap::new();
        let mut unnamed = BTreeSet::new();
        let mut observations = BTreeSet::new();
        for e in &reply.events {
            if e.syscall.starts_with('#') || e.arch.starts_with("arch=") {
                unnamed.insert(format!("{} on {}", e.syscall, e.arch));
                continue;
            }
            let entry = seen.entry(e.syscall.clone()).or_default();
            entry.0.insert(e.arch.clone());
            entry.1 += e.count;
            entry.2.insert(e.node.clone());
            observations.insert(Observation {
                arch: e.arch.clone(),
                syscall: e.syscall.clone(),
            });
        }
        let observations: Vec<Observation> = observations.into_iter().collect();
        let s = suggest_observed(&base.content, &observations, args.enforce)
            .with_context(|| format!("{}@{}", base.name, base.version))?;
        let old = seccomp_profile::validate_default(&base.content).profile;
        let diff = match (&old, &s.report.profile) {
            (Some(old), Some(new)) => seccomp_profile::diff::diff(old, new),
            _ => seccomp_profile::diff::ProfileDiff::default(),
        };
        let valid = s.report.is_valid();
        if let Some(path) = &args.write {
            std::fs::write(path, &s.bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let mut out = Suggested {
            name: base.name.clone(),
            base_version: base.version,
            events: reply.events.len(),
            observed: seen
                .into_iter()
                .map(|(syscall, (arches, count, nodes))| Seen {
                    syscall,
                    arches: arches.into_iter().collect(),
                    count,
                    nodes: nodes.len(),
                })
                .collect(),
            unnamed: unnamed.into_iter().collect(),
            allowed: s.allowed.clone(),
            kept_denied: s.kept_denied.clone(),
            enforced: s.enforced,
            diff,
            valid,
            diagnostics: s
                .report
                .diagnostics
                .iter()
                .map(|d| {
                    let path = if d.path.is_empty() { "/" } else { &d.path };
                    format!("{path}: {}[{}]: {}", d.severity, d.code, d.message)
                })
                .collect(),
            profile: serde_json::from_slice(&s.bytes)?,
            published_version: None,
        };
        if args.publish {
            if !valid {
                bail!(
                    "the suggestion does not validate; nothing published (see the diagnostics with -o json)"
                );
            }
            let request = reg::PublishRequest {
                name: base.name.clone(),
                content: s.bytes.clone(),
                description: format!(
                    "suggested from version {} and {} syscalls seen (seccompctl profile suggest{})",
                    base.version,
                    out.observed.len(),
                    if s.enforced { " --enforce" } else { "" }
                ),
                expected_latest_version: args.version.is_none().then_some(base.version),
            };
            match client::answer(r.publish(request).await, Service::Registry, registry)? {
                Ok(p) => out.published_version = Some(p.version),
                Err(outcome) => return Ok(outcome),
            }
        }
        if !print_structured(format, &out)? {
            print_text(&out);
        }
        Ok(if valid {
            Outcome::Ok
        } else {
            Outcome::Negative
        })
    }
}

fn print_text(out: &Suggested) {
    outln!(
        "{}: suggested from version {}, {} syscall{} seen in {} kind{} of event",
        out.name,
        out.base_version,
        out.observed.len(),
        if out.observed.len() == 1 { "" } else { "s" },
        out.events,
        if out.events == 1 { "" } else { "s" },
    );
    if !out.observed.is_empty() {
        let mut t = table(["SEEN", "ARCHITECTURES", "COUNT", "NODES", "NOW"]);
        for o in &out.observed {
            let now = if out.allowed.contains(&o.syscall) {
                "allowed"
            } else if out.kept_denied.contains(&o.syscall) {
                "denied by an explicit rule, kept"
            } else {
                "already allowed"
            };
            t.add_row(vec![
                o.syscall.clone(),
                o.arches
                    .iter()
                    .map(|a| a.trim_start_matches("SCMP_ARCH_"))
                    .collect::<Vec<_>>()
                    .join(","),
                o.count.to_string(),
                o.nodes.to_string(),
                now.to_owned(),
            ]);
        }
        print_table(&t);
    }
    for u in &out.unnamed {
        outln!("not allowed, no name in its architecture's table: {u}");
    }
    outln!();
    if out.diff.is_empty() {
        outln!("no semantic difference from version {}", out.base_version);
    } else {
        outln!("changes from version {}:", out.base_version);
        if let Some(c) = &out.diff.default_action {
            outln!("  default action: {} -> {}", c.before, c.after);
        }
        for c in &out.diff.syscalls {
            outln!(
                "  {} {}: {} -> {}",
                if c.before.is_none() { "+" } else { "~" },
                c.name,
                c.before.as_deref().unwrap_or("(default action)"),
                c.after.as_deref().unwrap_or("(default action)")
            );
        }
    }
    let warnings = out.diagnostics.len();
    if out.valid {
        outln!(
            "verdict: valid, {warnings} warning{}",
            if warnings == 1 { "" } else { "s" }
        );
    } else {
        outln!("verdict: INVALID");
    }
    for d in &out.diagnostics {
        outln!("  {d}");
    }
    match out.published_version {
        Some(v) => outln!(
            "published: {}@{v} (roll it out, staged: `seccompctl rollout create {}@{v} ...`)",
            out.name,
            out.name
        ),
        None => outln!("not published (add --publish, or --write FILE to keep the bytes)"),
    }
}
