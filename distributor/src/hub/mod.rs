//! The agents' side of the distributor: one session per connected node agent, each node's
//! desired set (from the [`Fleet`]) and what its agent reports, and the decision of when to
//! send a node its set. Transport-free: the `grpc` module feeds it events and forwards what
//! it queues on a session's channel ([`Outbound`]).
//!
//! Protocol rules kept here (agent.proto): a `Desired` is sent after `Hello` only when the
//! agent's revision or observed files differ from the desired set, and later whenever the
//! set changes; an `Ack`/`Nack` whose nonce is not the last one sent on that session is
//! stale and ignored; a second session for a node replaces the first, which is told so
//! ([`Outbound::Replaced`]: the stream ends with ABORTED).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use seccomp_rollout::fileset::{EffectiveSet, Fleet};
use seccomp_rollout::node::{FileError, ObservedFile, all_match};
use seccomp_rollout::selector::Labels;

use crate::store::KnownNode;

mod views;

/// What the distributor sends an agent: its complete desired set.
#[derive(Debug, Clone)]
pub struct DesiredMsg {
    /// Revision of the set.
    pub revision: String,
    /// Nonce the agent echoes in its answer.
    pub nonce: String,
    /// The set.
    pub set: Arc<EffectiveSet>,
}

/// What a session's channel carries to its stream.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Send the agent this set.
    Desired(DesiredMsg),
    /// A newer session for the same node took over: end this stream (ABORTED). Nothing
    /// follows on the channel.
    Replaced,
}

/// The outbound side of a session: it holds only the newest message, as only the latest
/// desired state matters (xDS's rule), so an agent that does not read holds one set in
/// memory, not every generation of it.
pub type Outbox = watch::Sender<Option<Outbound>>;

/// A session's outbox and the receiver its stream reads.
pub fn outbox() -> (Outbox, watch::Receiver<Option<Outbound>>) {
    watch::channel(None)
}

/// The first message of a session.
#[derive(Debug, Clone)]
pub struct Hello {
    /// Node name.
    pub node: String,
    /// Node labels.
    pub labels: Labels,
    /// Agent version.
    pub agent_version: String,
    /// Revision the agent last applied completely ("" if none).
    pub current_revision: String,
    /// What the agent observes now.
    pub observed: Vec<ObservedFile>,
}

/// Identifies one agent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId(u64);

#[derive(Debug)]
struct Session {
    id: u64,
    tx: Outbox,
    /// Nonce of the last Desired sent on this session.
    nonce: Option<String>,
}

#[derive(Debug)]
struct Node {
    /// Shared with the engine's view of the node ([`seccomp_rollout::engine::Live`]).
    labels: Arc<Labels>,
    agent_version: String,
    session: Option<Session>,
    /// Wall time of the last message, for people.
    last_seen: SystemTime,
    /// The same on the monotonic clock, for the grace period (a wall-clock step must not make
    /// every node Unknown, or none).
    heard: Instant,
    desired: Arc<EffectiveSet>,
    /// Revision the agent confirmed applying.
    acked: String,
    observed: Vec<ObservedFile>,
    errors: Vec<FileError>,
    /// A Desired is out and unanswered.
    in_flight: bool,
    /// The agent reported a change on disk it has not repaired.
    drifted: bool,
    /// Drift reports received (repaired or not).
    drift_reports: u64,
    /// Its agent connected since this process started (a node restored from the store has
    /// not, yet), here or to another replica.
    connected_once: bool,
    /// Its agent is connected to another replica (#18), which reports what it says through
    /// the shared store ([`Hub::remote`]).
    elsewhere: bool,
}

impl Node {
    /// A node known from its stored record (after a restart, or from another replica),
    /// with no session here.
    fn stored(
        k: KnownNode,
        labels: Labels,
        desired: Arc<EffectiveSet>,
        heard: Instant,
        elsewhere: bool,
    ) -> Self {
        Node {
            labels: Arc::new(labels),
            agent_version: k.agent_version,
            session: None,
            last_seen: UNIX_EPOCH + Duration::from_millis(k.last_seen_ms),
            heard,
            desired,
            acked: k.revision,
            observed: k.observed,
            errors: k.errors,
            in_flight: false,
            drifted: false,
            drift_reports: 0,
            connected_once: elsewhere,
            elsewhere,
        }
    }
}

/// Node facts from the cluster (`--watch-nodes`): which nodes exist and their labels.
#[derive(Debug, Default)]
struct Cluster {
    /// The first complete list has arrived; until then no node counts.
    ready: bool,
    /// The Node objects' labels, by node name.
    labels: BTreeMap<String, Labels>,
}

struct State {
    fleet: Arc<Fleet>,
    nodes: BTreeMap<String, Node>,
    /// With `--watch-nodes`: the cluster's nodes, which decide labels and membership.
    cluster: Option<Cluster>,
    /// Counted when served (`--metrics-listen`).
    metrics: Option<Arc<crate::metrics::DistributorMetrics>>,
    next_session: u64,
    next_nonce: u64,
    /// Nodes whose record changed since [`Hub::take_changed`] last ran.
    changed: std::collections::BTreeSet<String>,
    /// Nodes whose agent connected here (`true`) or went (`false`) since
    /// [`Hub::take_presence`] last ran.
    presence: BTreeMap<String, bool>,
}

/// All agent sessions and node states.
pub struct Hub {
    state: Mutex<State>,
    grace: Duration,
    /// Bumped whenever a node's state may have changed, for watchers.
    changes: tokio::sync::watch::Sender<u64>,
}

impl State {
    /// Whether node `name` counts for selectors and rollouts: always, unless the cluster's
    /// nodes decide; then only once they are listed, and only the nodes the cluster has.
    fn member(&self, name: &str) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.ready && c.labels.contains_key(name))
    }

    /// Give node `name` its cluster labels and the set they select, sending it when its
    /// agent does not have it.
    fn refresh(&mut self, name: &str) {
        let Some(labels) = self
            .cluster
            .as_ref()
            .and_then(|c| c.labels.get(name))
            .cloned()
        else {
            return;
        };
        let fleet = Arc::clone(&self.fleet);
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        if *node.labels != labels {
            node.labels = Arc::new(labels);
            self.changed.insert(name.to_owned());
        }
        let set = Arc::new(fleet.effective_for(name, &node.labels));
        let sent = node.desired.revision == set.revision
            && (node.in_flight || (node.acked == set.revision && all_match(&set, &node.observed)));
        node.desired = set;
        if !sent {
            self.send(name);
        }
    }

    fn send(&mut self, name: &str) {
        let nonce = self.next_nonce;
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        let Some(session) = node.session.as_mut() else {
            return;
        };
        self.next_nonce += 1;
        let nonce = format!("{nonce}");
        let msg = DesiredMsg {
            revision: node.desired.revision.clone(),
            nonce: nonce.clone(),
            set: Arc::clone(&node.desired),
        };
        if session.tx.send(Some(Outbound::Desired(msg))).is_ok() {
            if let Some(m) = &self.metrics {
                m.sets_sent.inc();
            }
            session.nonce = Some(nonce);
            node.in_flight = true;
            node.errors.clear();
        } else {
            node.session = None;
        }
    }

    /// The node of a live session, or `None` when the session was replaced or closed.
    fn session_node(&mut self, node: &str, session: SessionId) -> Option<&mut Node> {
        self.nodes
            .get_mut(node)
            .filter(|n| n.session.as_ref().is_some_and(|s| s.id == session.0))
    }

    /// The node of a live session that just sent something (so it is alive).
    fn heard_from(&mut self, node: &str, session: SessionId) -> Option<&mut Node> {
        let n = self.session_node(node, session)?;
        n.last_seen = SystemTime::now();
        n.heard = Instant::now();
        Some(n)
    }

    /// The node of a live session that answered the Desired with `nonce`; `None` also when
    /// that is not the last Desired sent on the session (a stale answer, ignored).
    fn answered(
        &mut self,
        node: &str,
        session: SessionId,
        nonce: &str,
        what: &str,
    ) -> Option<&mut Node> {
        let n = self.heard_from(node, session)?;
        if n.session.as_ref().and_then(|s| s.nonce.as_deref()) != Some(nonce) {
            tracing::debug!(node, nonce, "stale {what} ignored");
            return None;
        }
        Some(n)
    }
}

impl Hub {
    /// A hub over `fleet`; nodes silent for longer than `grace` are `Unknown`.
    pub fn new(fleet: Fleet, grace: Duration) -> Self {
        Hub {
            state: Mutex::new(State {
                fleet: Arc::new(fleet),
                nodes: BTreeMap::new(),
                next_session: 1,
                next_nonce: 1,
                changed: std::collections::BTreeSet::new(),
                presence: BTreeMap::new(),
                cluster: None,
                metrics: None,
            }),
            grace,
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that wakes whenever some node's state may have changed (node states also
    /// change with time: a silent node becomes Unknown after the grace period).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the service; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count what happens in the hub in `metrics`.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::DistributorMetrics>) {
        self.lock().metrics = Some(metrics);
    }

    /// Take node labels and membership from the cluster's Node objects from now on
    /// (`--watch-nodes`): agents' own labels are ignored, and until the first list arrives
    /// ([`Hub::cluster_nodes`]) no node counts and no agent is sent a set.
    pub fn watch_cluster_nodes(&self) {
        self.lock().cluster = Some(Cluster::default());
    }

    /// Whether node facts are complete: always, unless they come from the cluster and its
    /// nodes were not listed yet.
    pub fn cluster_ready(&self) -> bool {
        self.lock().cluster.as_ref().is_none_or(|c| c.ready)
    }

    /// Every node of the cluster (a list or relist): nodes not in it are gone.
    pub fn cluster_nodes(&self, all: BTreeMap<String, Labels>) {
        let mut st = self.lock();
        let Some(c) = st.cluster.as_mut() else {
            return;
        };
        c.ready = true;
        c.labels = all;
        let names: Vec<String> = st.nodes.keys().cloned().collect();
        for name in names {
            st.refresh(&name);
        }
        drop(st);
        self.bump();
    }

    /// A node of the cluster was added or changed.
    pub fn cluster_node(&self, name: String, labels: Labels) {
        let mut st = self.lock();
        let Some(c) = st.cluster.as_mut() else {
            return;
        };
        c.labels.insert(name.clone(), labels);
        if c.ready {
            st.refresh(&name);
        }
        drop(st);
        self.bump();
    }

    /// A node of the cluster was deleted: it leaves every selector and rollout (its agent,
    /// if still connected, keeps its files and is sent nothing more).
    pub fn cluster_node_gone(&self, name: &str) {
        let mut st = self.lock();
        if let Some(c) = st.cluster.as_mut() {
            c.labels.remove(name);
        }
        drop(st);
        self.bump();
    }

    /// Open a session. Returns its id; what the node's stream should send goes to `tx`. A
    /// session the node already has is told it was replaced. With the cluster's nodes, the
    /// labels are the Node object's, and a node the cluster does not have (yet) is sent
    /// nothing.
    pub fn hello(&self, hello: Hello, tx: Outbox) -> SessionId {
        let mut st = self.lock();
        let id = st.next_session;
        st.next_session += 1;
        let member = st.member(&hello.node);
        let labels = match &st.cluster {
            None => hello.labels,
            Some(c) => {
                let theirs = c
                    .labels
                    .get(&hello.node)
                    .or(st.nodes.get(&hello.node).map(|n| &*n.labels))
                    .cloned()
                    .unwrap_or_default();
                if c.ready && !hello.labels.is_empty() && hello.labels != theirs {
                    tracing::info!(node = %hello.node, "the agent's own labels differ from its Node object's; the Node's are used");
                }
                theirs
            }
        };
        let desired = Arc::new(st.fleet.effective_for(&hello.node, &labels));
        let up_to_date = !member
            || (hello.current_revision == desired.revision && all_match(&desired, &hello.observed));
        let node = Node {
            labels: Arc::new(labels),
            agent_version: hello.agent_version,
            session: Some(Session {
                id,
                tx,
                nonce: None,
            }),
            last_seen: SystemTime::now(),
            heard: Instant::now(),
            acked: hello.current_revision,
            observed: hello.observed,
            errors: Vec::new(),
            in_flight: false,
            drifted: false,
            drift_reports: 0,
            connected_once: true,
            elsewhere: false,
            desired,
        };
        st.changed.insert(hello.node.clone());
        st.presence.insert(hello.node.clone(), true);
        // Replacing the entry drops the old session's sender after telling it why, so the old
        // stream ends with a reason rather than silently.
        if let Some(session) = st
            .nodes
            .insert(hello.node.clone(), node)
            .and_then(|old| old.session)
        {
            let _ = session.tx.send(Some(Outbound::Replaced));
        }
        if !up_to_date {
            st.send(&hello.node);
        }
        drop(st);
        self.bump();
        SessionId(id)
    }

    /// The agent applied the Desired with `nonce`.
    pub fn ack(
        &self,
        node: &str,
        session: SessionId,
        revision: &str,
        nonce: &str,
        observed: Vec<ObservedFile>,
    ) {
        let mut st = self.lock();
        let Some(n) = st.answered(node, session, nonce, "ack") else {
            return;
        };
        n.acked = revision.to_owned();
        n.observed = observed;
        n.errors.clear();
        n.in_flight = false;
        n.drifted = false;
        st.changed.insert(node.to_owned());
        self.bump();
    }

    /// The agent refused or failed the Desired with `nonce`.
    pub fn nack(
        &self,
        node: &str,
        session: SessionId,
        nonce: &str,
        errors: Vec<FileError>,
        observed: Vec<ObservedFile>,
    ) {
        let mut st = self.lock();
        let metrics = st.metrics.clone();
        let Some(n) = st.answered(node, session, nonce, "nack") else {
            return;
        };
        if let Some(m) = metrics {
            for e in &errors {
                m.nacks
                    .get_or_create(&crate::metrics::CodeLabels {
                        code: e.code.clone(),
                    })
                    .inc();
            }
        }
        n.errors = errors;
        n.observed = observed;
        n.in_flight = false;
        st.changed.insert(node.to_owned());
        self.bump();
    }

    /// Files changed on disk. `current` is what the agent observes after its repair attempt
    /// (merged by path into the node's view); `repaired` says whether every drifted path is
    /// back to the desired state.
    pub fn drift(
        &self,
        node: &str,
        session: SessionId,
        current: Vec<ObservedFile>,
        repaired: bool,
        errors: Vec<FileError>,
    ) {
        let mut st = self.lock();
        if let Some(m) = &st.metrics {
            m.drift_reports.inc();
        }
        let Some(n) = st.heard_from(node, session) else {
            return;
        };
        n.drift_reports += 1;
        // By path, in one pass each way (a report may name every file of the node).
        let mut at: std::collections::HashMap<String, usize> = n
            .observed
            .iter()
            .enumerate()
            .map(|(i, o)| (o.path.clone(), i))
            .collect();
        for o in current {
            match at.get(&o.path) {
                Some(&i) => n.observed[i] = o,
                None => {
                    at.insert(o.path.clone(), n.observed.len());
                    n.observed.push(o);
                }
            }
        }
        n.drifted = !repaired;
        if !errors.is_empty() {
            n.errors = errors;
        }
        st.changed.insert(node.to_owned());
        self.bump();
    }

    /// The agent is alive.
    pub fn heartbeat(&self, node: &str, session: SessionId) {
        self.lock().heard_from(node, session);
    }

    /// The session's stream ended.
    pub fn disconnect(&self, node: &str, session: SessionId) {
        let mut st = self.lock();
        if let Some(n) = st.session_node(node, session) {
            n.session = None;
            n.in_flight = false;
            st.changed.insert(node.to_owned());
            st.presence.insert(node.to_owned(), false);
        }
        drop(st);
        self.bump();
    }

    /// Know `nodes` again (a restart): each is disconnected, last heard from when its record
    /// says, with what its agent last reported on disk. A node already connected is left as
    /// it is.
    pub fn restore(&self, nodes: Vec<KnownNode>) {
        let mut st = self.lock();
        let wall_now = SystemTime::now();
        for k in nodes {
            if st.nodes.contains_key(&k.name) {
                continue;
            }
            let last_seen = UNIX_EPOCH + Duration::from_millis(k.last_seen_ms);
            let ago = wall_now.duration_since(last_seen).unwrap_or_default();
            let heard = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
            let desired = Arc::new(st.fleet.effective_for(&k.name, &k.labels));
            let labels = k.labels.clone();
            st.nodes.insert(
                k.name.clone(),
                Node::stored(k, labels, desired, heard, false),
            );
        }
        drop(st);
        self.bump();
    }

    /// The records of the nodes that changed since the last call, to store.
    pub fn take_changed(&self) -> Vec<KnownNode> {
        let mut st = self.lock();
        let names = std::mem::take(&mut st.changed);
        names
            .into_iter()
            .filter_map(|name| {
                let n = st.nodes.get(&name)?;
                let last_seen_ms = n
                    .last_seen
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                Some(KnownNode {
                    labels: (*n.labels).clone(),
                    agent_version: n.agent_version.clone(),
                    last_seen_ms,
                    revision: n.acked.clone(),
                    observed: n.observed.clone(),
                    errors: n.errors.clone(),
                    name,
                })
            })
            .collect()
    }

    /// Forget the nodes whose agents have been gone for longer than `after`; their names.
    pub fn forget_gone(&self, after: Duration) -> Vec<String> {
        let mut st = self.lock();
        let gone: Vec<String> = st
            .nodes
            .iter()
            .filter(|(_, n)| n.session.is_none() && !n.elsewhere && n.heard.elapsed() > after)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            st.nodes.remove(name);
            st.changed.remove(name);
        }
        drop(st);
        if !gone.is_empty() {
            self.bump();
        }
        gone
    }

    /// End every session (on shutdown): their streams finish, so the server can stop.
    pub fn close_all(&self) {
        let mut st = self.lock();
        let mut gone = Vec::new();
        for (name, node) in &mut st.nodes {
            if node.session.take().is_some() {
                gone.push(name.clone());
            }
            node.in_flight = false;
        }
        for name in gone {
            st.presence.insert(name, false);
        }
        drop(st);
        self.bump();
    }

    /// The nodes whose agents connected here (`true`) or went (`false`) since the last call:
    /// what the other replicas are told (#18).
    pub fn take_presence(&self) -> BTreeMap<String, bool> {
        std::mem::take(&mut self.lock().presence)
    }

    /// What another replica reported of node `name` through the shared store (#18): its
    /// record (`None`: none is stored, it was forgotten), and whether its agent is connected
    /// to another replica. A node whose agent is connected here keeps what it says itself
    /// (only the flag is taken); nothing taken here is stored again by this replica.
    pub fn remote(&self, name: &str, record: Option<KnownNode>, elsewhere: bool) {
        let mut st = self.lock();
        let cluster_labels = st
            .cluster
            .as_ref()
            .map(|c| c.labels.get(name).cloned().unwrap_or_default());
        let fleet = Arc::clone(&st.fleet);
        let now = Instant::now();
        match (st.nodes.get_mut(name), record) {
            (Some(n), _) if n.session.is_some() => n.elsewhere = elsewhere,
            (Some(_), None) if !elsewhere => {
                st.nodes.remove(name);
            }
            (Some(n), record) => {
                n.elsewhere = elsewhere;
                if elsewhere {
                    n.heard = now;
                    n.connected_once = true;
                }
                if let Some(k) = record {
                    let labels = cluster_labels.unwrap_or(k.labels);
                    if *n.labels != labels {
                        n.labels = Arc::new(labels);
                        n.desired = Arc::new(fleet.effective_for(name, &n.labels));
                    }
                    n.agent_version = k.agent_version;
                    n.last_seen = UNIX_EPOCH + Duration::from_millis(k.last_seen_ms);
                    n.acked = k.revision;
                    n.observed = k.observed;
                    n.errors = k.errors;
                    n.in_flight = false;
                }
            }
            (None, Some(k)) => {
                let labels = cluster_labels.unwrap_or_else(|| k.labels.clone());
                let desired = Arc::new(fleet.effective_for(name, &labels));
                let last_seen = UNIX_EPOCH + Duration::from_millis(k.last_seen_ms);
                let ago = SystemTime::now()
                    .duration_since(last_seen)
                    .unwrap_or_default();
                let heard = if elsewhere {
                    now
                } else {
                    now.checked_sub(ago).unwrap_or(now)
                };
                st.nodes.insert(
                    name.to_owned(),
                    Node::stored(k, labels, desired, heard, elsewhere),
                );
            }
            (None, None) => return,
        }
        drop(st);
        self.bump();
    }

    /// Replace the NCIs: every node whose set changes gets it now (when connected).
    pub fn set_fleet(&self, fleet: Fleet) {
        let mut st = self.lock();
        st.fleet = Arc::new(fleet);
        let fleet = Arc::clone(&st.fleet);
        // Nodes that do not count (not in the cluster, or not listed yet) are left as they are.
        let names: Vec<String> = st.nodes.keys().filter(|n| st.member(n)).cloned().collect();
        let sets = fleet.effective_all(
            st.nodes
                .iter()
                .filter(|(n, _)| st.member(n))
                .map(|(n, node)| (n.as_str(), &*node.labels)),
        );
        let sets: BTreeMap<String, Arc<EffectiveSet>> =
            sets.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for name in names {
            let Some(set) = sets.get(&name) else { continue };
            let Some(node) = st.nodes.get_mut(&name) else {
                continue;
            };
            if node.desired.revision == set.revision {
                continue;
            }
            node.desired = Arc::clone(set);
            st.send(&name);
        }
        self.bump();
    }

    /// Replace the NCIs when only the nodes `names` may get another set from them (the
    /// fleet's variants are the same but for scopes that gained or lost these nodes): only
    /// their sets are computed again, not every node's (a wave that targets nodes a few at a
    /// time changes the fleet at every step).
    pub fn set_fleet_for(&self, fleet: Fleet, names: &std::collections::BTreeSet<String>) {
        let mut st = self.lock();
        st.fleet = Arc::new(fleet);
        let fleet = Arc::clone(&st.fleet);
        let sets = fleet.effective_all(
            names
                .iter()
                .filter(|n| st.member(n))
                .filter_map(|n| st.nodes.get(n).map(|node| (n.as_str(), &*node.labels))),
        );
        let sets: Vec<(String, Arc<EffectiveSet>)> =
            sets.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (name, set) in sets {
            let Some(node) = st.nodes.get_mut(&name) else {
                continue;
            };
            if node.desired.revision == set.revision {
                continue;
            }
            node.desired = set;
            st.send(&name);
        }
        drop(st);
        self.bump();
    }
}
