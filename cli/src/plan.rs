//! How a plan reads (`rollout create --dry-run`, `rollback --dry-run`, and before `--wait`ing
//! on a change that removes files): a first line that says whether files go away, the
//! rollouts with their waves, one row per node that changes, the conflicts made and ended,
//! and what the sinks get; `-o json|yaml` one document with an entry per node.

use anyhow::Result;
use seccomp_proto::distributor::v1 as pb;
use serde::Serialize;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, outln, print_structured, print_table, table};

/// Before a change: with `dry_run`, print its plan and stop (`Some(Ok)`); with `before_wait`
/// (a `--wait` that may remove files), print the plan when it removes any, in the table
/// format, and go on (`None`). `Some(outcome)` also when the distributor refused the plan.
pub async fn preview(
    c: &mut client::Distributor,
    dist: &str,
    format: Format,
    change: pb::plan_rollout_request::Change,
    dry_run: bool,
    before_wait: bool,
) -> Result<Option<Outcome>> {
    if !dry_run && !before_wait {
        return Ok(None);
    }
    let asked = pb::PlanRolloutRequest {
        change: Some(change),
    };
    let plan = match client::answer(c.plan_rollout(asked).await, Service::Distributor, dist)? {
        Ok(p) => p,
        Err(outcome) => return Ok(Some(outcome)),
    };
    if dry_run {
        print(format, &plan)?;
        return Ok(Some(Outcome::Ok));
    }
    if plan.removal_nodes > 0 && format == Format::Table {
        print(format, &plan)?;
    }
    Ok(None)
}

/// The name of a plan action.
fn action(a: i32) -> &'static str {
    match pb::PlanAction::try_from(a) {
        Ok(pb::PlanAction::Add) => "add",
        Ok(pb::PlanAction::Update) => "update",
        Ok(pb::PlanAction::Remove) => "remove",
        Ok(pb::PlanAction::Unchanged) => "unchanged",
        _ => "unknown",
    }
}

/// A plan, as `-o json|yaml` prints it.
#[derive(Serialize)]
pub struct PlanOut {
    /// Nodes that lose a file.
    pub removals: u32,
    /// Known nodes the selectors match.
    pub matching_nodes: u32,
    pub rollouts: Vec<RolloutPlanOut>,
    pub nodes: Vec<NodePlanOut>,
    /// The configured sinks, and what each planned NCI becomes in them.
    pub sinks: Vec<String>,
    pub sink_changes: Vec<SinkChangeOut>,
}

#[derive(Serialize)]
pub struct RolloutPlanOut {
    pub nci: String,
    pub profile: String,
    pub version: u64,
    pub stable_version: Option<u64>,
    /// Nodes each wave takes.
    pub waves: Vec<u32>,
}

#[derive(Serialize)]
pub struct NodePlanOut {
    pub node: String,
    pub action: &'static str,
    /// The wave that takes it; none when no wave does.
    pub wave: Option<u32>,
    pub files: Vec<FilePlanOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts_gone: Vec<String>,
}

#[derive(Serialize)]
pub struct FilePlanOut {
    pub path: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[derive(Serialize)]
pub struct SinkChangeOut {
    pub nci: String,
    pub action: &'static str,
    pub from_version: Option<u64>,
    pub to_version: Option<u64>,
}

/// `nci@version`, or the NCI alone when the version is not known.
fn side(nci: &str, version: Option<u64>) -> Option<String> {
    if nci.is_empty() {
        return None;
    }
    Some(match version {
        Some(v) => format!("{nci} v{v}"),
        None => nci.to_owned(),
    })
}

fn conflict(c: &pb::PlannedConflict) -> String {
    format!("{}: {} loses to {}", c.path, c.losing_nci, c.winning_nci)
}

impl From<&pb::PlanRolloutResponse> for PlanOut {
    fn from(p: &pb::PlanRolloutResponse) -> Self {
        PlanOut {
            removals: p.removal_nodes,
            matching_nodes: p.matching_nodes,
            rollouts: p
                .rollouts
                .iter()
                .map(|r| RolloutPlanOut {
                    nci: r.nci_name.clone(),
                    profile: r.profile.clone(),
                    version: r.version,
                    stable_version: r.stable_version,
                    waves: r.wave_sizes.clone(),
                })
                .collect(),
            nodes: p
                .nodes
                .iter()
                .map(|n| NodePlanOut {
                    node: n.node_name.clone(),
                    action: action(n.action),
                    wave: (n.wave > 0).then_some(n.wave),
                    files: n
                        .files
                        .iter()
                        .map(|f| FilePlanOut {
                            path: f.path.clone(),
                            action: action(f.action),
                            from: side(&f.from_nci, f.from_version),
                            to: side(&f.to_nci, f.to_version),
                        })
                        .collect(),
                    conflicts_added: n.conflicts_added.iter().map(conflict).collect(),
                    conflicts_gone: n.conflicts_gone.iter().map(conflict).collect(),
                })
                .collect(),
            sinks: p.sinks.clone(),
            sink_changes: p
                .sink_changes
                .iter()
                .map(|c| SinkChangeOut {
                    nci: c.nci_name.clone(),
                    action: action(c.action),
                    from_version: c.from_version,
                    to_version: c.to_version,
                })
                .collect(),
        }
    }
}

/// The first line of a plan: whether it takes files away, else how many nodes change.
pub fn headline(p: &PlanOut) -> String {
    let changing = p.nodes.iter().filter(|n| n.action != "unchanged").count();
    if p.removals > 0 {
        let names: Vec<&str> = p
            .nodes
            .iter()
            .filter(|n| n.action == "remove")
            .take(5)
            .map(|n| n.node.as_str())
            .collect();
        format!(
            "REMOVES FILES from {} node(s) ({}{}): those nodes lose a profile; {changing} of {} known node(s) change",
            p.removals,
            names.join(", "),
            if p.removals as usize > names.len() {
                ", ..."
            } else {
                ""
            },
            p.nodes.len()
        )
    } else {
        format!(
            "no file is removed; {changing} of {} known node(s) change",
            p.nodes.len()
        )
    }
}

/// Print a plan in `format`.
pub fn print(format: Format, plan: &pb::PlanRolloutResponse) -> Result<()> {
    let out = PlanOut::from(plan);
    if print_structured(format, &out)? {
        return Ok(());
    }
    outln!("plan: {}", headline(&out));
    if out.matching_nodes == 0 {
        outln!("  the selector matches no known node");
    }
    for r in &out.rollouts {
        let stable = r
            .stable_version
            .map_or_else(|| "none".to_owned(), |v| v.to_string());
        let waves: Vec<String> = r.waves.iter().map(ToString::to_string).collect();
        outln!(
            "  {}@{} to NCI {} (stable version {stable}): nodes per wave {}",
            r.profile,
            r.version,
            r.nci,
            waves.join(", ")
        );
    }
    let mut t = table(["NODE", "ACTION", "WAVE", "CHANGES"]);
    for n in out.nodes.iter().filter(|n| n.action != "unchanged") {
        let changes: Vec<String> = n
            .files
            .iter()
            .filter(|f| f.action != "unchanged")
            .map(|f| match (&f.from, &f.to) {
                (Some(a), Some(b)) => format!("{} {}: {a} -> {b}", f.action, f.path),
                (None, Some(b)) => format!("{} {}: {b}", f.action, f.path),
                (Some(a), None) => format!("{} {} ({a})", f.action, f.path),
                (None, None) => format!("{} {}", f.action, f.path),
            })
            .collect();
        t.add_row([
            n.node.clone(),
            n.action.to_owned(),
            n.wave.map_or_else(|| "-".to_owned(), |w| w.to_string()),
            changes.join("; "),
        ]);
    }
    if out.nodes.iter().any(|n| n.action != "unchanged") {
        print_table(&t);
    }
    let unchanged = out.nodes.iter().filter(|n| n.action == "unchanged").count();
    if unchanged > 0 {
        outln!("  {unchanged} node(s) unchanged");
    }
    for n in &out.nodes {
        for c in &n.conflicts_added {
            outln!("  new conflict on {}: {c}", n.node);
        }
        for c in &n.conflicts_gone {
            outln!("  conflict ends on {}: {c}", n.node);
        }
    }
    let sinks = if out.sinks.is_empty() {
        "no sinks but the agents".to_owned()
    } else {
        out.sinks.join(", ")
    };
    for c in &out.sink_changes {
        let v = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        outln!(
            "  sinks ({sinks}), once completed: {} {} (version {} -> {})",
            c.action,
            c.nci,
            v(c.from_version),
            v(c.to_version)
        );
    }
    Ok(())
}
