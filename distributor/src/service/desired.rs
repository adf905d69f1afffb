//! What is desired, from the stored rollouts: per NCI name its newest rollout and that
//! rollout's stable one ("in force"), the NCI variants the agents get (scoped to node sets),
//! and the records the sinks get (one content per NCI). See the module docs of `service`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use seccomp_rollout::fileset::{Fleet, Scope};
use seccomp_rollout::nci::NodeConfigItem;
use seccomp_rollout::record::{RolloutRecord, RolloutState};

use super::{Distributor, InForce};

/// The fleet's variants, as last built.
pub(super) type Variants = Vec<(NodeConfigItem, Scope)>;

/// The nodes that entered or left a scope from `old` to `new`, when the variants are the
/// same NCIs with scopes of the same kinds; `None` when anything else changed (then every
/// node's set is computed again).
fn moved_nodes(old: &Variants, new: &Variants) -> Option<BTreeSet<String>> {
    if old.len() != new.len() {
        return None;
    }
    let mut moved = BTreeSet::new();
    for ((old_nci, old_scope), (new_nci, new_scope)) in old.iter().zip(new) {
        if old_nci != new_nci {
            return None;
        }
        match (old_scope, new_scope) {
            (Scope::All, Scope::All) => {}
            (Scope::Only(a), Scope::Only(b)) | (Scope::Except(a), Scope::Except(b)) => {
                if !Arc::ptr_eq(a, b) {
                    moved.extend(a.symmetric_difference(b).cloned());
                }
            }
            _ => return None,
        }
    }
    Some(moved)
}
use crate::error::Result;

impl Distributor {
    /// Per NCI name, its newest rollout and that rollout's stable one.
    /// Records the policy refuses (stored before the policy, or before the allowed root
    /// moved) are not in force: neither they nor their stable content are served.
    pub(super) fn in_force(&self) -> Result<InForce> {
        let mut out = Vec::new();
        for r in self.store.current()?.into_values() {
            if self.refused.contains(&r.id) {
                continue;
            }
            let stable = r
                .stable_id
                .as_deref()
                .map(|id| self.store.get_shared(id))
                .transpose()?
                .filter(|s| !self.refused.contains(&s.id));
            out.push((r, stable));
        }
        Ok(out)
    }

    /// For each NCI name, the rollouts whose content some node may have now: the newest one
    /// and its stable one.
    pub(super) fn content_sources(&self) -> Result<BTreeMap<String, Vec<Arc<RolloutRecord>>>> {
        Ok(self
            .in_force()?
            .into_iter()
            .map(|(r, stable)| {
                (
                    r.nci_name.clone(),
                    std::iter::once(r).chain(stable).collect(),
                )
            })
            .collect())
    }

    /// The rollouts whose NCIs the sinks hold, one per NCI name: the newest when it
    /// completed, else its stable one (see the module docs).
    pub(super) fn sink_records(&self) -> Result<Vec<Arc<RolloutRecord>>> {
        Ok(self
            .in_force()?
            .into_iter()
            .filter_map(|(r, stable)| {
                let holds = if r.state == RolloutState::Completed {
                    Some(r)
                } else {
                    stable
                };
                // A retired NCI is deleted from the sinks.
                holds.filter(|r| !r.retires())
            })
            .collect())
    }

    /// The NCIs the sinks hold: one per NCI name (see the module docs).
    pub fn ncis(&self) -> Result<Vec<NodeConfigItem>> {
        Ok(self.sink_records()?.iter().map(|r| r.nci.clone()).collect())
    }

    /// The NCI variants the agents get (see the module docs).
    pub(super) fn variants(&self) -> Result<Vec<(NodeConfigItem, Scope)>> {
        let mut out = Vec::new();
        for (r, stable) in self.in_force()? {
            if r.state == RolloutState::Completed {
                out.push((r.nci.clone(), Scope::All));
            } else if r.reverted {
                out.extend(stable.map(|s| (s.nci.clone(), Scope::All)));
            } else {
                let targeted: Arc<BTreeSet<String>> = Arc::new(r.nodes.keys().cloned().collect());
                // The stable content everywhere but on the nodes given the new one; an
                // aborted rollout gives back what it took from the nodes it removed it from.
                let given: Arc<BTreeSet<String>> = match &stable {
                    Some(s) if super::plan::gives_removed_back(r.state) => {
                        Arc::new(super::plan::kept_by_abort(&r, s))
                    }
                    _ => Arc::clone(&targeted),
                };
                out.push((r.nci.clone(), Scope::Only(targeted)));
                out.extend(stable.map(|s| (s.nci.clone(), Scope::Except(given))));
            }
        }
        Ok(out)
    }

    /// Rebuild the fleet from the records and give every node whose set changed its new
    /// one. When the variants are those of the last rebuild but for nodes that entered or
    /// left a scope (a wave targeting nodes a few at a time, as max unavailable allows),
    /// only those nodes' sets are computed again: the whole fleet's cost time linear in the
    /// nodes, at every step of a wave, on the leader and on every replica that follows it.
    pub(super) fn refresh_fleet(&self) -> Result<()> {
        let variants = self.variants()?;
        let fleet = Fleet::scoped(variants.iter().map(|(n, s)| (n, s.clone())))?;
        let mut last = self
            .fleet_variants
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match last.as_ref().and_then(|old| moved_nodes(old, &variants)) {
            Some(names) => self.hub.set_fleet_for(fleet, &names),
            None => self.hub.set_fleet(fleet),
        }
        *last = Some(variants);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seccomp_rollout::nci::{ProfileRef, Target};

    fn nci(content: &str) -> NodeConfigItem {
        let target = Target::new(seccomp_rollout::selector::parse("os=linux").unwrap());
        let profile = ProfileRef {
            name: "web",
            version: 1,
            content: content.as_bytes(),
        };
        seccomp_rollout::nci::render(profile, &target, Some("web"), None).unwrap()
    }

    fn names(n: &[&str]) -> Arc<BTreeSet<String>> {
        Arc::new(n.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn only_scopes_that_moved_name_nodes() {
        let (a, b) = (nci("{}"), nci("{\"v\":2}"));
        let old: Variants = vec![
            (b.clone(), Scope::Only(names(&["n1"]))),
            (a.clone(), Scope::Except(names(&["n1"]))),
        ];
        let grown: Variants = vec![
            (b.clone(), Scope::Only(names(&["n1", "n2", "n3"]))),
            (a.clone(), Scope::Except(names(&["n1", "n2", "n3"]))),
        ];
        assert_eq!(
            moved_nodes(&old, &grown),
            Some(["n2".to_owned(), "n3".to_owned()].into())
        );
        assert_eq!(moved_nodes(&old, &old), Some(BTreeSet::new()));
        // Another content, another kind of scope, or another count: everything again.
        let other: Variants = vec![
            (a.clone(), Scope::Only(names(&["n1"]))),
            (a.clone(), Scope::Except(names(&["n1"]))),
        ];
        assert_eq!(moved_nodes(&old, &other), None);
        let completed: Variants = vec![(b.clone(), Scope::All)];
        assert_eq!(moved_nodes(&old, &completed), None);
        let kinds: Variants = vec![(b, Scope::All), (a, Scope::Except(names(&["n1"])))];
        assert_eq!(moved_nodes(&old, &kinds), None);
    }
}
