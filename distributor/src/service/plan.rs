//! Plans and guards: what a change (new rollout records) does to every known node and to the
//! sinks, computed from the same variants and fleet the nodes are served from, and the two
//! guards built on it: a selector that matches no known node, and a change that takes a
//! file away from some node, are refused unless the caller allows them by name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use seccomp_rollout::fileset::{Fleet, MAX_SET_BYTES, Scope};
use seccomp_rollout::nci::FileType;
use seccomp_rollout::node::NodeState;
use seccomp_rollout::plan::{self, Action, NodeChange};
use seccomp_rollout::record::{RolloutRecord, RolloutState};
use seccomp_rollout::selector::{self, Labels, Selector};
use seccomp_rollout::strategy::{order_by_zone, wave_of};

use super::Distributor;
use crate::error::{Error, Result};

/// One rollout a change creates, with the nodes each wave takes.
#[derive(Debug, Clone)]
pub struct PlannedRollout {
    /// The record as it would be stored.
    pub record: RolloutRecord,
    /// Nodes per wave (not cumulative), removals included.
    pub wave_sizes: Vec<u32>,
}

/// What a change does to one node.
#[derive(Debug, Clone)]
pub struct PlannedNode {
    /// Node name.
    pub name: String,
    /// Its files before and after.
    pub change: NodeChange,
    /// The wave (1-based) and the NCI of the planned rollout that takes it.
    pub wave: Option<(u32, String)>,
}

/// What one NCI becomes in the sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkChange {
    /// NCI name.
    pub nci_name: String,
    /// Add, update, remove or unchanged.
    pub action: Action,
    /// Version the sinks hold now.
    pub from_version: Option<u64>,
    /// Version they will hold.
    pub to_version: Option<u64>,
}

/// A whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The rollouts it creates.
    pub rollouts: Vec<PlannedRollout>,
    /// Every known node, by name.
    pub nodes: Vec<PlannedNode>,
    /// Per NCI whose sink object changes or is planned.
    pub sink_changes: Vec<SinkChange>,
    /// The sinks, as they describe themselves.
    pub sinks: Vec<String>,
    /// Known nodes the new rollouts' selectors match.
    pub matching_nodes: usize,
}

impl Plan {
    /// The nodes that lose a file.
    pub fn removals(&self) -> impl Iterator<Item = &PlannedNode> {
        self.nodes
            .iter()
            .filter(|n| n.change.action == Action::Remove)
    }

    /// Per node that loses files, their paths.
    pub fn removed_files(&self) -> Removals {
        self.removals()
            .map(|n| {
                (
                    n.name.clone(),
                    n.change.removed().map(str::to_owned).collect(),
                )
            })
            .collect()
    }
}

/// Node name to the node paths a change takes from it.
pub type Removals = BTreeMap<String, Vec<String>>;

/// How long the users of files (the cluster's pods) may take to answer.
const USERS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// (NCI name, hex sha256) to profile version, for the plan's files.
pub type Versions = HashMap<(String, String), u64>;

/// The version of `nci` whose content has `sha256`, if a stored or planned rollout has it.
pub fn version_of(versions: &Versions, nci: &str, sha256: &str) -> Option<u64> {
    versions.get(&(nci.to_owned(), sha256.to_owned())).copied()
}

fn hex(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .to_ascii_lowercase()
}

impl Distributor {
    /// The versions that the records in force and `planned` put on nodes, by NCI and sha256.
    pub fn plan_versions(&self, planned: &[PlannedRollout]) -> Result<Versions> {
        let mut out = Versions::new();
        for records in self.content_sources()?.into_values() {
            for r in records {
                out.insert((r.nci_name.clone(), hex(&r.digest)), r.version);
            }
        }
        for p in planned {
            out.insert(
                (p.record.nci_name.clone(), hex(&p.record.digest)),
                p.record.version,
            );
        }
        Ok(out)
    }

    /// Plan `records` (new rollouts, one per NCI name): every known node's set now against
    /// its set once they completed, the waves that take the nodes, the sinks' objects.
    /// Refused when some node's set would be larger than [`MAX_SET_BYTES`].
    pub(super) fn plan_records(&self, records: Vec<RolloutRecord>) -> Result<Plan> {
        let names: BTreeSet<&str> = records.iter().map(|r| r.nci_name.as_str()).collect();
        let mut after_variants: Vec<_> = self
            .variants()?
            .into_iter()
            .filter(|(n, _)| !names.contains(n.metadata.name.as_str()))
            .collect();
        after_variants.extend(records.iter().map(|r| (r.nci.clone(), Scope::All)));
        let after = Fleet::scoped(after_variants.iter().map(|(n, s)| (n, s.clone())))?;
        // Before: what each node is given now, as the hub holds it.
        let now = self.hub.desired_sets();
        let sets_after = after.effective_all(now.iter().map(|(n, (l, _))| (n.as_str(), l)));
        // A change that would give some known node a set larger than an agent takes is
        // refused: the agent could never apply it, and would drop its stream.
        if let Some((node, set)) = sets_after
            .iter()
            .filter(|(_, s)| s.content_bytes() > MAX_SET_BYTES)
            .max_by_key(|(_, s)| s.content_bytes())
        {
            return Err(Error::FailedPrecondition(format!(
                "node {node} would get {} MiB of profiles, over the {} MiB a node's set may hold",
                set.content_bytes() >> 20,
                MAX_SET_BYTES >> 20
            )));
        }

        let mut waves: HashMap<String, (u32, String)> = HashMap::new();
        let mut rollouts = Vec::with_capacity(records.len());
        let mut matching = BTreeSet::new();
        for record in records {
            let live = self.live(&record);
            matching.extend(live.iter().filter(|l| !l.removal).map(|l| l.name.clone()));
            let eligible: Vec<(&str, &Labels)> = live
                .iter()
                .filter(|l| l.state != NodeState::Unknown)
                .map(|l| (l.name.as_str(), &*l.labels))
                .collect();
            let cumulative = record.strategy.plan(eligible.len());
            for (i, name) in order_by_zone(eligible).into_iter().enumerate() {
                if let Some(w) = wave_of(&cumulative, i) {
                    waves.insert(name, (w as u32 + 1, record.nci_name.clone()));
                }
            }
            let mut last = 0;
            let wave_sizes = cumulative
                .iter()
                .map(|&c| {
                    let size = c - last;
                    last = c;
                    size as u32
                })
                .collect();
            rollouts.push(PlannedRollout { record, wave_sizes });
        }

        let nodes = now
            .iter()
            .map(|(name, (_, before))| {
                let change = match sets_after.get(name.as_str()) {
                    Some(after) => plan::compare(before, after),
                    None => plan::compare(&empty(), &empty()),
                };
                PlannedNode {
                    name: name.clone(),
                    wave: waves.remove(name),
                    change,
                }
            })
            .collect();
        let sink_changes = self.sink_changes(&rollouts)?;
        Ok(Plan {
            rollouts,
            nodes,
            sink_changes,
            sinks: self.sinks.iter().map(|s| s.describe()).collect(),
            matching_nodes: matching.len(),
        })
    }

    /// What the sinks hold per planned NCI now, and once the rollouts complete.
    fn sink_changes(&self, rollouts: &[PlannedRollout]) -> Result<Vec<SinkChange>> {
        let now: BTreeMap<String, Arc<RolloutRecord>> = self
            .sink_records()?
            .into_iter()
            .map(|r| (r.nci_name.clone(), r))
            .collect();
        Ok(rollouts
            .iter()
            .map(|p| {
                let old = now.get(&p.record.nci_name);
                let action = match old {
                    None if p.record.retires() => Action::Unchanged,
                    Some(_) if p.record.retires() => Action::Remove,
                    None => Action::Add,
                    Some(o) if o.nci.spec == p.record.nci.spec => Action::Unchanged,
                    Some(_) => Action::Update,
                };
                SinkChange {
                    nci_name: p.record.nci_name.clone(),
                    action,
                    from_version: old.map(|o| o.version),
                    to_version: (!p.record.retires()).then_some(p.record.version),
                }
            })
            .collect())
    }

    /// With `--check-pods` and without `force`: plan the change `make` builds (under the
    /// write lock, released before asking), and refuse it when some node it takes a file
    /// from runs a pod that names the file. Returns the removals that were checked; the
    /// caller plans again under the lock and may not remove anything else
    /// ([`Distributor::still_checked`]). `None`: nothing to check.
    pub(super) async fn check_users(
        &self,
        force: bool,
        make: impl FnOnce() -> Result<Vec<RolloutRecord>>,
    ) -> Result<Option<Removals>> {
        let Some(users) = self.profile_users.clone().filter(|_| !force) else {
            return Ok(None);
        };
        let removals = {
            let _w = self.write.lock().await;
            self.plan_records(make()?)?.removed_files()
        };
        if removals.is_empty() {
            return Ok(Some(removals));
        }
        let found = tokio::time::timeout(USERS_TIMEOUT, users.users(&removals))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the cluster did not say within {}s which pods use the files this change removes; try again, or give --force to remove them unchecked",
                    USERS_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| match e {
                Error::Unavailable(m) | Error::Kube(m) => Error::Unavailable(format!(
                    "cannot check which pods use the files this change removes ({m}); give --force to remove them unchecked"
                )),
                other => other,
            })?;
        if let Some(first) = found.first() {
            let sample: Vec<String> = found
                .iter()
                .take(3)
                .map(|u| format!("pod {} on {} names {}", u.user, u.node, u.path))
                .collect();
            let more = found.len().saturating_sub(sample.len());
            tracing::info!(pod = %first.user, node = %first.node, "refused a removal of a file a pod names");
            return Err(Error::FailedPrecondition(format!(
                "this change removes a file that running pods name ({}{}): their next container start would fail; move the pods first, or give --force",
                sample.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                },
            )));
        }
        Ok(Some(removals))
    }

    /// Whether `plan` removes nothing beyond what `checked` covered (the fleet may have
    /// changed while the pods were asked).
    pub(super) fn still_checked(plan: &Plan, checked: Option<&Removals>) -> Result<()> {
        let Some(checked) = checked else {
            return Ok(());
        };
        for (node, paths) in plan.removed_files() {
            let known = checked.get(&node);
            if paths.iter().any(|p| known.is_none_or(|k| !k.contains(p))) {
                return Err(Error::FailedPrecondition(format!(
                    "the nodes changed while their pods were checked (node {node} now loses another file); try again"
                )));
            }
        }
        Ok(())
    }

    /// The guards every change passes: its selectors match some known node (unless
    /// `allow_empty`), and it takes no file away from any node (unless `allow_removal`).
    pub(super) fn guard(&self, plan: &Plan, allow_empty: bool, allow_removal: bool) -> Result<()> {
        if !allow_empty {
            let labels = self.hub.labels();
            for p in &plan.rollouts {
                let selector = &p.record.nci.spec.nodeconfigselector;
                if !labels.iter().any(|(_, l)| selector::matches(selector, l)) {
                    return Err(Error::FailedPrecondition(format!(
                        "selector \"{}\" of NCI \"{}\" matches none of the {} known node(s){}; give --allow-empty (allow_empty) to create it anyway",
                        selector::format(selector),
                        p.record.nci_name,
                        labels.len(),
                        why_no_match(selector, &labels)
                    )));
                }
            }
        }
        if !allow_removal {
            let removals: Vec<&PlannedNode> = plan.removals().collect();
            if !removals.is_empty() {
                let sample: Vec<String> = removals
                    .iter()
                    .take(3)
                    .map(|n| {
                        format!(
                            "{} loses {}",
                            n.name,
                            n.change.removed().collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                let more = removals.len().saturating_sub(sample.len());
                return Err(Error::FailedPrecondition(format!(
                    "this change removes a file from {} node(s) ({}{}); give --allow-removal (allow_removal) to take the file away through the rollout's waves, or see the whole plan with --dry-run",
                    removals.len(),
                    sample.join("; "),
                    if more > 0 {
                        format!("; and {more} more")
                    } else {
                        String::new()
                    },
                )));
            }
        }
        Ok(())
    }
}

fn empty() -> seccomp_rollout::fileset::EffectiveSet {
    seccomp_rollout::fileset::EffectiveSet {
        files: Vec::new(),
        revision: String::new(),
        conflicts: Vec::new(),
        matched: Vec::new(),
    }
}

/// Why a selector matches no node, for people: keys no node has (with the keys nearest to
/// them), or the values the nodes have for a key.
fn why_no_match(selector: &Selector, nodes: &[(String, Labels)]) -> String {
    if nodes.is_empty() {
        return ": no agent has connected yet".to_owned();
    }
    let known: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|(_, l)| l.keys().map(String::as_str))
        .collect();
    let mut parts = Vec::new();
    for (key, value) in selector {
        if !known.contains(key.as_str()) {
            let near = selector::nearest_keys(key, known.iter().copied());
            if near.is_empty() {
                parts.push(format!("no node has the label \"{key}\""));
            } else {
                parts.push(format!(
                    "no node has the label \"{key}\"; did you mean {}?",
                    near.join(" or ")
                ));
            }
        } else if !value.is_empty() {
            let values: BTreeSet<&str> = nodes
                .iter()
                .filter_map(|(_, l)| l.get(key).map(String::as_str))
                .collect();
            if !values.contains(value.as_str()) {
                let shown: Vec<&str> = values.iter().take(5).copied().collect();
                parts.push(format!(
                    "\"{key}\" is {} on the nodes, never \"{value}\"",
                    shown.join(", ")
                ));
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

/// The files of `r`'s NCI.
pub(super) fn file_paths(r: &RolloutRecord) -> Vec<&str> {
    r.nci
        .spec
        .files
        .iter()
        .filter(|f| f.kind == FileType::File)
        .map(|f| f.path.as_str())
        .collect()
}

/// Whether a rollout in `state` gives the nodes it took a file from that file back
/// (aborted: nodes keep what they were given, but none is left without the file).
pub(super) fn gives_removed_back(state: RolloutState) -> bool {
    state == RolloutState::Aborted
}

/// The targeted nodes of the aborted `r` that get no stable content back: those that lost
/// nothing (the new content at the stable one's paths). A node that lost a path (a removal,
/// or a new path) gets the stable file back, next to what it was given.
pub(super) fn kept_by_abort(r: &RolloutRecord, stable: &RolloutRecord) -> BTreeSet<String> {
    let ours = file_paths(r);
    if !file_paths(stable).iter().all(|p| ours.contains(p)) {
        return BTreeSet::new();
    }
    r.nodes
        .iter()
        .filter(|(_, n)| !n.removal)
        .map(|(name, _)| name.clone())
        .collect()
}
