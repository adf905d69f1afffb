//! What callers see: a rollout with its node counts, per-wave counts and conflicts
//! ([`RolloutView`]), pages of rollouts and nodes, the events of a watch ([`WatchCursor`]:
//! what changed between two views of a rollout), and which rollout a node's file came from
//! ([`FileSources`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use seccomp_rollout::fileset::{Conflict, EffectiveFile};
use seccomp_rollout::node::{NodeState, NodeView};
use seccomp_rollout::record::{RolloutRecord, RolloutState};
use seccomp_rollout::selector::Selector;
use seccomp_rollout::strategy;

use super::Distributor;
use crate::error::{Error, Result};

/// Node counts of a rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Matching nodes.
    pub total: u32,
    /// Not targeted yet.
    pub pending: u32,
    /// Sent, unanswered.
    pub applying: u32,
    /// Confirmed.
    pub applied: u32,
    /// Refused or wrong on disk.
    pub failed: u32,
    /// Changed on disk.
    pub drifted: u32,
    /// Agent gone.
    pub unknown: u32,
}

impl Counts {
    fn add(&mut self, s: NodeState) {
        self.total += 1;
        match s {
            NodeState::Pending => self.pending += 1,
            NodeState::Applying => self.applying += 1,
            NodeState::Applied => self.applied += 1,
            NodeState::Failed => self.failed += 1,
            NodeState::Drifted => self.drifted += 1,
            NodeState::Unknown => self.unknown += 1,
        }
    }
}

/// A path this rollout's NCI loses to another NCI, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictView {
    /// The path, the winner and the priorities.
    pub conflict: Conflict,
    /// How many nodes it loses the path on.
    pub node_count: u32,
    /// Some of those nodes, sorted, at most 10.
    pub sample_nodes: Vec<String>,
    /// The rollout that wrote the winning NCI, if one did.
    pub winning_rollout_id: Option<String>,
}

/// One node of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// State within the rollout.
    pub state: NodeState,
    /// Detail for Failed, Drifted, Unknown.
    pub message: String,
    /// When it entered the state (ms since the epoch); 0 when not known.
    pub since_ms: u64,
    /// It loses the NCI's file (it matches only the stable version's selector).
    pub removal: bool,
}

/// A rollout as clients see it.
#[derive(Debug, Clone)]
pub struct RolloutView {
    /// The stored record (state, wave, history, targeted nodes).
    pub record: Arc<RolloutRecord>,
    /// Node counts.
    pub counts: Counts,
    /// Paths this rollout's NCI loses on some nodes.
    pub conflicts: Vec<ConflictView>,
    /// Per node, by name.
    pub nodes: Vec<NodeRow>,
    /// Node counts per wave (1-based index - 1): the nodes each wave adds.
    pub waves: Vec<Counts>,
}

impl Distributor {
    /// Connected agents, and the known nodes by state (for metrics).
    pub fn node_counts(&self) -> (usize, BTreeMap<String, usize>) {
        let (connected, by_state) = self.hub.state_counts();
        let named = by_state
            .into_iter()
            .map(|(s, n)| (format!("{s:?}"), n))
            .collect();
        (connected, named)
    }

    /// Stored rollouts by state (for metrics).
    pub fn rollout_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.store.all().unwrap_or_default() {
            *out.entry(r.state.to_string()).or_insert(0) += 1;
        }
        out
    }

    /// One rollout with its node states.
    pub fn rollout(&self, id: &str) -> Result<RolloutView> {
        let record = self.store.get_shared(id)?;
        let current = self
            .store
            .current()?
            .get(&record.nci_name)
            .is_some_and(|r| r.id == record.id);
        Ok(self.view(record, current))
    }

    /// One page of rollouts, newest first: those `keep` accepts, after the rollout `after`
    /// (the previous page's last id), at most `limit`; with the id to continue after when
    /// there are more.
    pub fn rollouts_page(
        &self,
        keep: impl Fn(&RolloutRecord) -> bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RolloutView>, Option<String>)> {
        let current: BTreeSet<String> = self
            .store
            .current()?
            .into_values()
            .map(|r| r.id.clone())
            .collect();
        let all = self.store.all()?;
        let end = match after {
            Some(id) => all.iter().position(|r| r.id == id).ok_or_else(|| {
                Error::invalid(format!("page token {id:?} does not name a rollout"))
            })?,
            None => all.len(),
        };
        let mut page: Vec<Arc<RolloutRecord>> = all[..end]
            .iter()
            .rev()
            .filter(|r| keep(r))
            .take(limit + 1)
            .cloned()
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|r| r.id.clone())
        } else {
            None
        };
        let views = page
            .into_iter()
            .map(|r| {
                let is_current = current.contains(&r.id);
                self.view(r, is_current)
            })
            .collect();
        Ok((views, next))
    }

    /// Known nodes matching `selector`, by name, after the node `after`, at most `limit`.
    pub fn nodes(&self, selector: &Selector, after: Option<&str>, limit: usize) -> Vec<NodeView> {
        self.hub.nodes_page(selector, after, limit)
    }

    pub(super) fn view(&self, record: Arc<RolloutRecord>, current: bool) -> RolloutView {
        let mut rows: Vec<NodeRow> = Vec::new();
        let mut conflicts: Vec<ConflictView> = Vec::new();
        if current {
            let completed = record.state == RolloutState::Completed && !record.retires();
            // Per matching node: the conflicts its set has that this NCI loses, and (of a
            // completed rollout) its state now; read under the hub's lock, nothing copied.
            let per_node =
                self.hub
                    .each_matching(&record.nci.spec.nodeconfigselector, |name, _, n| {
                        let lost: Vec<_> = n
                            .desired
                            .conflicts
                            .iter()
                            .filter(|c| c.loser == record.nci_name)
                            .cloned()
                            .collect();
                        let now = completed.then(|| n.state_for_nci(&record.nci_name));
                        (name.to_owned(), lost, now)
                    });
            for (name, lost, now) in per_node {
                for c in &lost {
                    match conflicts.iter_mut().find(|v| v.conflict == *c) {
                        Some(v) => {
                            v.node_count += 1;
                            if v.sample_nodes.len() < 10 {
                                v.sample_nodes.push(name.clone());
                            }
                        }
                        None => conflicts.push(ConflictView {
                            conflict: c.clone(),
                            node_count: 1,
                            sample_nodes: vec![name.clone()],
                            winning_rollout_id: self
                                .store
                                .current()
                                .ok()
                                .and_then(|cur| cur.get(&c.winner).map(|r| r.id.clone())),
                        }),
                    }
                }
                if let Some((state, message)) = now {
                    let since_ms = record.nodes.get(&name).map_or(0, |x| x.since_ms);
                    rows.push(NodeRow {
                        name,
                        state,
                        message,
                        since_ms,
                        removal: false,
                    });
                }
            }
            if record.state != RolloutState::Completed {
                // Not targeted yet: the matching nodes, and those that are to lose the file.
                rows.extend(
                    self.live(&record)
                        .into_iter()
                        .filter(|l| !record.nodes.contains_key(&l.name))
                        .map(|l| NodeRow {
                            name: l.name,
                            state: NodeState::Pending,
                            message: String::new(),
                            since_ms: record.created_at_ms,
                            removal: l.removal,
                        }),
                );
            }
        }
        let completed = current && record.state == RolloutState::Completed;
        // Targeted nodes as recorded (of a completed rollout, those it took the file from:
        // the matching ones are shown as they are now, above).
        rows.extend(
            record
                .nodes
                .iter()
                .filter(|(_, n)| !completed || n.removal)
                .map(|(name, n)| NodeRow {
                    name: name.clone(),
                    state: n.state,
                    message: n.message.clone(),
                    since_ms: n.since_ms,
                    removal: n.removal,
                }),
        );
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut counts = Counts::default();
        for row in &rows {
            counts.add(row.state);
        }
        // Per wave: the nodes it added, by when they were targeted in wave order.
        let plan = record.strategy.plan(rows.len());
        let mut waves = vec![Counts::default(); plan.len()];
        let mut order: Vec<(&NodeRow, u64)> = rows
            .iter()
            .map(|row| {
                let at = record
                    .nodes
                    .get(&row.name)
                    .map_or(u64::MAX, |n| n.targeted_at_ms);
                (row, at)
            })
            .collect();
        order.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.name.cmp(&b.0.name)));
        for (i, (row, _)) in order.iter().enumerate() {
            if let Some(w) = strategy::wave_of(&plan, i) {
                waves[w].add(row.state);
            }
        }
        RolloutView {
            record,
            counts,
            conflicts,
            nodes: rows,
            waves,
        }
    }
}

/// What a watch event says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEvent {
    /// The rollout's state changed, or a transition was recorded in its history.
    StateChanged,
    /// A new wave started.
    WaveStarted,
    /// Only node states or counts changed.
    NodesChanged,
}

/// What a watcher last saw of a rollout, to tell what the next view changed.
#[derive(Debug, Clone)]
pub struct WatchCursor {
    key: (RolloutState, u32, usize, Counts),
    states: BTreeMap<String, NodeState>,
}

/// At most this many changed nodes are named in one event.
const CHANGED_NODES: usize = 100;

impl WatchCursor {
    /// A cursor at `first` (the snapshot a watch starts with).
    pub fn new(first: &RolloutView) -> Self {
        WatchCursor {
            key: Self::key(first),
            states: Self::states(first),
        }
    }

    fn key(v: &RolloutView) -> (RolloutState, u32, usize, Counts) {
        (
            v.record.state,
            v.record.current_wave,
            v.record.history.len(),
            v.counts,
        )
    }

    fn states(v: &RolloutView) -> BTreeMap<String, NodeState> {
        v.nodes.iter().map(|n| (n.name.clone(), n.state)).collect()
    }

    /// Move to `view`: `None` when nothing a watcher sees changed (state, wave, history,
    /// counts), else the kind of change and the nodes whose state changed (at most 100).
    pub fn advance<'v>(&mut self, view: &'v RolloutView) -> Option<(WatchEvent, Vec<&'v NodeRow>)> {
        let now = Self::key(view);
        if now == self.key {
            return None;
        }
        let kind = if now.0 != self.key.0 {
            WatchEvent::StateChanged
        } else if now.1 != self.key.1 {
            WatchEvent::WaveStarted
        } else if now.2 != self.key.2 {
            WatchEvent::StateChanged
        } else {
            WatchEvent::NodesChanged
        };
        let changed = view
            .nodes
            .iter()
            .filter(|n| self.states.get(&n.name) != Some(&n.state))
            .take(CHANGED_NODES)
            .collect();
        self.key = now;
        self.states = Self::states(view);
        Some((kind, changed))
    }
}

/// For each NCI name, the rollouts whose content some node may have now: the newest one
/// and its stable one (see [`Distributor::file_sources`]).
#[derive(Debug, Clone, Default)]
pub struct FileSources(BTreeMap<String, Vec<Arc<RolloutRecord>>>);

impl FileSources {
    /// The rollout whose content `file` carries: of its NCI's newest and stable rollouts,
    /// the one with the file's sha256 (a staged rollout's untouched nodes have the stable
    /// one's), else the newest.
    pub fn rollout_of(&self, file: &EffectiveFile) -> Option<&RolloutRecord> {
        let list = self.0.get(&file.source)?;
        list.iter()
            .find(|r| {
                file.sha256
                    .as_deref()
                    .is_some_and(|sha| r.digest.strip_prefix("sha256:") == Some(sha))
            })
            .or_else(|| list.first())
            .map(AsRef::as_ref)
    }
}

impl Distributor {
    /// Which rollout each file of a node came from (see [`FileSources::rollout_of`]).
    pub fn file_sources(&self) -> Result<FileSources> {
        Ok(FileSources(self.content_sources()?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

    use seccomp_rollout::nci::{self, FileType, ProfileRef, Target};
    use seccomp_rollout::record::Content;
    use seccomp_rollout::strategy::Strategy;

    use super::*;

    fn record(id: &str, version: u64, digest: &str) -> RolloutRecord {
        let nci = nci::render(
            ProfileRef {
                name: "web",
                version,
                content: b"{}",
            },
            &Target::new(BTreeMap::new()),
            None,
            Some(id),
        )
        .unwrap();
        let content = Content {
            profile: "web".into(),
            version,
            digest: digest.into(),
            nci,
        };
        RolloutRecord::new(id.into(), content, Strategy::default(), "test", 0)
    }

    fn view(r: &RolloutRecord, nodes: &[(&str, NodeState)]) -> RolloutView {
        let mut counts = Counts::default();
        let nodes: Vec<NodeRow> = nodes
            .iter()
            .map(|(name, state)| {
                counts.add(*state);
                NodeRow {
                    name: (*name).into(),
                    state: *state,
                    message: String::new(),
                    since_ms: 0,
                    removal: false,
                }
            })
            .collect();
        RolloutView {
            record: Arc::new(r.clone()),
            counts,
            conflicts: Vec::new(),
            nodes,
            waves: Vec::new(),
        }
    }

    fn names(changed: &[&NodeRow]) -> Vec<String> {
        changed.iter().map(|n| n.name.clone()).collect()
    }

    #[test]
    fn a_watch_names_what_changed_and_only_then() {
        let mut r = record("r1", 1, "sha256:a");
        let applying = [("n1", NodeState::Applying), ("n2", NodeState::Pending)];
        let mut cursor = WatchCursor::new(&view(&r, &applying));
        assert!(cursor.advance(&view(&r, &applying)).is_none());

        let applied = [("n1", NodeState::Applied), ("n2", NodeState::Pending)];
        let v = view(&r, &applied);
        let (kind, changed) = cursor.advance(&v).unwrap();
        assert_eq!(kind, WatchEvent::NodesChanged);
        assert_eq!(names(&changed), ["n1"]);
        assert!(cursor.advance(&view(&r, &applied)).is_none());

        r.current_wave = 2;
        let v = view(&r, &applied);
        let (kind, changed) = cursor.advance(&v).unwrap();
        assert_eq!(kind, WatchEvent::WaveStarted);
        assert!(changed.is_empty());

        // A recorded transition into the same state (a pause reason, say) is a state event.
        r.transition(RolloutState::Pending, "again", "test", 1);
        assert_eq!(
            cursor.advance(&view(&r, &applied)).unwrap().0,
            WatchEvent::StateChanged
        );

        r.state = RolloutState::Completed;
        r.current_wave = 3;
        let done = [("n1", NodeState::Applied), ("n2", NodeState::Applied)];
        let v = view(&r, &done);
        let (kind, changed) = cursor.advance(&v).unwrap();
        assert_eq!(kind, WatchEvent::StateChanged);
        assert_eq!(names(&changed), ["n2"]);
    }

    #[test]
    fn a_file_comes_from_the_rollout_with_its_sha256_else_the_newest() {
        let newest = Arc::new(record("r2", 2, "sha256:bbbb"));
        let stable = Arc::new(record("r1", 1, "sha256:aaaa"));
        let nci_name = newest.nci_name.clone();
        let sources = FileSources(BTreeMap::from([(
            nci_name.clone(),
            vec![Arc::clone(&newest), Arc::clone(&stable)],
        )]));
        let file = |source: &str, sha: Option<&str>| EffectiveFile {
            path: "/var/lib/kubelet/seccomp/web.json".into(),
            kind: if sha.is_some() {
                FileType::File
            } else {
                FileType::Directory
            },
            content: None,
            sha256: sha.map(str::to_owned),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            source: source.into(),
        };
        let id = |f: &EffectiveFile| sources.rollout_of(f).map(|r| r.id.clone());
        assert_eq!(id(&file(&nci_name, Some("aaaa"))).as_deref(), Some("r1"));
        assert_eq!(id(&file(&nci_name, Some("bbbb"))).as_deref(), Some("r2"));
        // Bytes neither rollout wrote, or a directory entry: the newest rollout of the NCI.
        assert_eq!(id(&file(&nci_name, Some("cccc"))).as_deref(), Some("r2"));
        assert_eq!(id(&file(&nci_name, None)).as_deref(), Some("r2"));
        assert_eq!(id(&file("seccomp-other", Some("aaaa"))), None);
    }
}
