//! What the hub tells about its nodes: their states (counted, one by one, or as the engine
//! reads them), pages of them, and the sets they are given.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use seccomp_rollout::fileset::EffectiveSet;
use seccomp_rollout::node::{NodeFacts, NodeState, NodeView, all_match};
use seccomp_rollout::selector::{self, Labels, Selector};

use super::{Hub, Node};

impl Hub {
    /// How many agents are connected, and the nodes that count by state.
    pub fn state_counts(&self) -> (usize, BTreeMap<NodeState, usize>) {
        let st = self.lock();
        let now = Instant::now();
        let mut by_state = BTreeMap::new();
        let mut connected = 0;
        for (name, n) in &st.nodes {
            connected += usize::from(n.session.is_some());
            if st.member(name) {
                *by_state.entry(self.state_of(n, now)).or_insert(0) += 1;
            }
        }
        (connected, by_state)
    }

    fn state_of(&self, n: &Node, now: Instant) -> NodeState {
        let silent = now.saturating_duration_since(n.heard) > self.grace;
        let connected = n.session.is_some() || n.elsewhere;
        if !connected && silent {
            NodeState::Unknown
        } else if !n.errors.is_empty() {
            NodeState::Failed
        } else if n.in_flight {
            NodeState::Applying
        } else if n.acked != n.desired.revision {
            if connected {
                NodeState::Pending
            } else {
                NodeState::Unknown
            }
        } else if all_match(&n.desired, &n.observed) {
            NodeState::Applied
        } else if n.drifted {
            NodeState::Drifted
        } else {
            NodeState::Failed
        }
    }

    fn view(&self, name: &str, n: &Node, now: Instant) -> NodeView {
        let state = self.state_of(n, now);
        NodeView {
            name: name.to_owned(),
            labels: (*n.labels).clone(),
            agent_version: n.agent_version.clone(),
            connected: n.session.is_some() || n.elsewhere,
            last_seen: n.last_seen,
            revision: n.acked.clone(),
            desired: Arc::clone(&n.desired),
            observed: n.observed.clone(),
            errors: n.errors.clone(),
            state,
            drift_reports: n.drift_reports,
        }
    }

    /// How many nodes ever connected (since this process started).
    pub fn node_count(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Names of the nodes whose agents are connected now (here or to another replica).
    pub fn connected_names(&self) -> Vec<String> {
        self.lock()
            .nodes
            .iter()
            .filter(|(_, n)| n.session.is_some() || n.elsewhere)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every known node's labels and the set it is given now (of the nodes that count).
    pub fn desired_sets(&self) -> BTreeMap<String, (Labels, Arc<EffectiveSet>)> {
        let st = self.lock();
        st.nodes
            .iter()
            .filter(|(name, _)| st.member(name))
            .map(|(name, n)| (name.clone(), ((*n.labels).clone(), Arc::clone(&n.desired))))
            .collect()
    }

    /// Every known node's name and labels (of the nodes that count, see `member`).
    pub fn labels(&self) -> Vec<(String, Labels)> {
        let st = self.lock();
        st.nodes
            .iter()
            .filter(|(name, _)| st.member(name))
            .map(|(name, n)| (name.clone(), (*n.labels).clone()))
            .collect()
    }

    /// Whether a node of that name connected since this process started.
    pub fn is_known(&self, name: &str) -> bool {
        self.lock()
            .nodes
            .get(name)
            .is_some_and(|n| n.connected_once)
    }

    /// Whether the node's labels match `filter` now; `None` when it never connected, or
    /// while the cluster's nodes are not listed yet; `false` for a node the cluster does not
    /// have (deleted).
    pub fn matches(&self, name: &str, filter: &Selector) -> Option<bool> {
        let st = self.lock();
        if !st.cluster.as_ref().is_none_or(|c| c.ready) {
            return None;
        }
        let node = st.nodes.get(name)?;
        Some(st.member(name) && selector::matches(filter, &node.labels))
    }

    /// The set a known node (of those that count) is given now, and whether its labels
    /// match `filter`.
    pub fn set_of(&self, name: &str, filter: &Selector) -> Option<(bool, Arc<EffectiveSet>)> {
        let st = self.lock();
        let node = st.nodes.get(name).filter(|_| st.member(name))?;
        Some((
            selector::matches(filter, &node.labels),
            Arc::clone(&node.desired),
        ))
    }

    /// Known nodes matching `filter`, by name, after the node `after`, at most `limit`.
    pub fn nodes_page(
        &self,
        filter: &Selector,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<NodeView> {
        use std::ops::Bound;
        let st = self.lock();
        let now = Instant::now();
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        st.nodes
            .range((start, Bound::Unbounded))
            .filter(|(_, n)| selector::matches(filter, &n.labels))
            .take(limit)
            .map(|(name, n)| self.view(name, n, now))
            .collect()
    }

    /// `f` of every known node matching `filter` (of the nodes that count), by name, with
    /// the facts of its state: what the engine and the rollout views read on every tick and
    /// call, computed under the lock without copying the nodes ([`Hub::nodes`] copies).
    pub fn each_matching<T>(
        &self,
        filter: &Selector,
        mut f: impl FnMut(&str, &Arc<Labels>, NodeFacts<'_>) -> T,
    ) -> Vec<T> {
        let st = self.lock();
        let now = Instant::now();
        st.nodes
            .iter()
            .filter(|(name, n)| st.member(name) && selector::matches(filter, &n.labels))
            .map(|(name, n)| {
                let facts = NodeFacts {
                    state: self.state_of(n, now),
                    revision: &n.acked,
                    desired: &n.desired,
                    observed: &n.observed,
                    errors: &n.errors,
                };
                f(name, &n.labels, facts)
            })
            .collect()
    }

    /// Every known node matching `selector`, by name (of the nodes that count).
    pub fn nodes(&self, filter: &Selector) -> Vec<NodeView> {
        let st = self.lock();
        let now = Instant::now();
        st.nodes
            .iter()
            .filter(|(name, n)| st.member(name) && selector::matches(filter, &n.labels))
            .map(|(name, n)| self.view(name, n, now))
            .collect()
    }
}
