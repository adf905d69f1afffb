//! What is desired, from the stored rollouts: per NCI name its newest rollout and that
//! rollout's stable one ("in force"), the NCI variants the agents get (scoped to node sets),
//! and the records the sinks get (one content per NCI). See the module docs of `service`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use seccomp_rollout::fileset::{Fleet, Scope};
use seccomp_rollout::nci::NodeConfigItem;
use seccomp_rollout::record::{RolloutRecord, RolloutState};

use super::{Distributor, InForce};
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

    pub(super) fn refresh_fleet(&self) -> Result<()> {
        let variants = self.variants()?;
        self.hub
            .set_fleet(Fleet::scoped(variants.iter().map(|(n, s)| (n, s.clone())))?);
        *self
            .fleet_variants
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(variants);
        Ok(())
    }

    /// [`Distributor::refresh_fleet`] unless the variants are the ones the fleet was last
    /// built from (a replica that follows the leader's records sees them change at every
    /// confirmation; what nodes get changes only with a wave or a command, and rebuilding
    /// the fleet costs time linear in the nodes).
    pub(super) fn refresh_fleet_if_changed(&self) -> Result<()> {
        let variants = self.variants()?;
        let same = self
            .fleet_variants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&variants);
        if same {
            return Ok(());
        }
        self.refresh_fleet()
    }
}
