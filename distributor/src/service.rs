//! The distributor's operations, transport-free: create rollouts (fetching the version from
//! the registry through a [`ProfileSource`]), report rollouts and nodes, render NCIs. For now
//! a rollout is one wave to every matching node; staged strategies come with the rollout
//! engine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::fileset::{Conflict, Fleet};
use crate::hub::{Hub, NodeState, NodeView};
use crate::nci::{self, NodeConfigItem, ProfileRef, Target};
use crate::selector::Selector;
use crate::store::{RolloutRecord, Store, TransitionRecord};

/// A profile version fetched from the registry.
#[derive(Debug, Clone)]
pub struct FetchedProfile {
    /// Name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Exact bytes.
    pub content: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Deprecated versions may not be rolled out.
    pub deprecated: bool,
}

/// A boxed future, so [`ProfileSource`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where profile versions come from (the registry over gRPC, or a test double).
pub trait ProfileSource: Send + Sync + 'static {
    /// Fetch `name` at `version`, or its latest version when `None`.
    fn fetch<'a>(
        &'a self,
        name: &'a str,
        version: Option<u64>,
    ) -> BoxFuture<'a, Result<FetchedProfile>>;
}

/// Somewhere besides the agents that NCIs go: a GitOps directory, a cluster.
pub trait NciSink: Send + Sync + 'static {
    /// For logs: `yaml directory /x`, `kubernetes`.
    fn describe(&self) -> String;
    /// Make the sink hold exactly `ncis` among its objects.
    fn sync<'a>(&'a self, ncis: &'a [NodeConfigItem]) -> BoxFuture<'a, Result<()>>;
}

/// What a rollout asks for.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    /// Profile name.
    pub profile: String,
    /// Version; `None` for the latest.
    pub version: Option<u64>,
    /// Where and how.
    pub target: Target,
    /// NCI name; `None` for `seccomp-<profile>`.
    pub nci_name: Option<String>,
    /// Who asks.
    pub actor: String,
}

/// Node counts of a rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Matching nodes.
    pub total: u32,
    /// Not sent yet.
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

/// A rollout as clients see it.
#[derive(Debug, Clone)]
pub struct RolloutView {
    /// The stored record.
    pub record: RolloutRecord,
    /// `Progressing`, `Completed` or `Superseded` (a newer rollout of the same NCI exists).
    pub state: &'static str,
    /// Node counts.
    pub counts: Counts,
    /// Paths this rollout's NCI loses on some nodes.
    pub conflicts: Vec<Conflict>,
    /// Per node: name and state.
    pub nodes: Vec<(String, NodeState)>,
}

/// The distributor.
pub struct Distributor {
    store: Store,
    hub: Arc<Hub>,
    source: Arc<dyn ProfileSource>,
    sinks: Vec<Arc<dyn NciSink>>,
    /// Rollouts are created one at a time, so NCI revisions are sequential.
    create: tokio::sync::Mutex<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Distributor {
    /// A distributor over `store`, serving agents through `hub` and writing NCIs to `sinks`.
    /// Loads the NCIs in force.
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        source: Arc<dyn ProfileSource>,
        sinks: Vec<Arc<dyn NciSink>>,
    ) -> Result<Self> {
        let d = Distributor {
            store,
            hub,
            source,
            sinks,
            create: tokio::sync::Mutex::new(()),
        };
        d.refresh_fleet()?;
        Ok(d)
    }

    /// Bring every sink in line with the NCIs in force. A failing sink is logged and retried
    /// at the next change; agents do not wait for sinks.
    pub async fn sync_sinks(&self) -> Result<()> {
        let ncis = self.ncis()?;
        for sink in &self.sinks {
            match sink.sync(&ncis).await {
                Ok(()) => {
                    tracing::info!(sink = %sink.describe(), ncis = ncis.len(), "sink in sync")
                }
                Err(e) => tracing::error!(sink = %sink.describe(), error = %e, "sink sync failed"),
            }
        }
        Ok(())
    }

    /// The newest rollout of each NCI name, by NCI name.
    pub fn current_rollouts(&self) -> Result<std::collections::BTreeMap<String, RolloutRecord>> {
        self.store.current()
    }

    /// The NCIs in force: the newest rollout of each NCI name.
    pub fn ncis(&self) -> Result<Vec<NodeConfigItem>> {
        Ok(self.store.current()?.into_values().map(|r| r.nci).collect())
    }

    fn refresh_fleet(&self) -> Result<()> {
        self.hub.set_fleet(Fleet::new(&self.ncis()?)?);
        Ok(())
    }

    async fn fetch(&self, name: &str, version: Option<u64>) -> Result<FetchedProfile> {
        let p = self.source.fetch(name, version).await?;
        if p.deprecated {
            return Err(Error::FailedPrecondition(format!(
                "profile \"{name}\" version {} is deprecated and cannot be rolled out",
                p.version
            )));
        }
        Ok(p)
    }

    /// Render the NCI a rollout with these inputs would write, without writing it.
    pub async fn render(&self, req: &RolloutRequest) -> Result<(NodeConfigItem, FetchedProfile)> {
        let p = self.fetch(&req.profile, req.version).await?;
        let nci = nci::render(
            ProfileRef {
                name: &p.name,
                version: p.version,
                content: &p.content,
            },
            &req.target,
            req.nci_name.as_deref(),
            None,
        )?;
        Ok((nci, p))
    }

    /// Create a rollout: render its NCI, persist it, and send every matching node its new set.
    pub async fn create_rollout(&self, req: RolloutRequest) -> Result<RolloutView> {
        let p = self.fetch(&req.profile, req.version).await?;
        let _one_at_a_time = self.create.lock().await;
        let id = self.store.next_id()?;
        let nci = nci::render(
            ProfileRef {
                name: &p.name,
                version: p.version,
                content: &p.content,
            },
            &req.target,
            req.nci_name.as_deref(),
            Some(&id),
        )?;
        let revision = self
            .store
            .current()?
            .get(&nci.metadata.name)
            .map_or(1, |r| r.revision + 1);
        let record = RolloutRecord {
            id,
            revision,
            profile: p.name.clone(),
            version: p.version,
            digest: p.digest.clone(),
            nci_name: nci.metadata.name.clone(),
            nci,
            created_at_ms: now_ms(),
            created_by: req.actor.clone(),
            history: vec![TransitionRecord {
                state: "Progressing".into(),
                reason: "created: one wave to every matching node".into(),
                at_ms: now_ms(),
                actor: req.actor,
            }],
        };
        // Check the new NCI set builds before persisting anything.
        let mut ncis = self.ncis()?;
        ncis.retain(|n| n.metadata.name != record.nci_name);
        ncis.push(record.nci.clone());
        let fleet = Fleet::new(&ncis)?;
        self.store.put(&record).await?;
        self.hub.set_fleet(fleet);
        tracing::info!(rollout = %record.id, profile = %record.profile, version = record.version, nci = %record.nci_name, "rollout created");
        self.sync_sinks().await?;
        self.view(record)
    }

    /// One rollout with its node states.
    pub fn rollout(&self, id: &str) -> Result<RolloutView> {
        self.view(self.store.get(id)?)
    }

    /// Every rollout, newest first.
    pub fn rollouts(&self) -> Result<Vec<RolloutView>> {
        let mut all = self.store.all()?;
        all.reverse();
        all.into_iter().map(|r| self.view(r)).collect()
    }

    /// Wakes whenever some node's state may have changed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hub.subscribe()
    }

    /// Known nodes matching `selector`.
    pub fn nodes(&self, selector: &Selector) -> Vec<NodeView> {
        self.hub.nodes(selector)
    }

    fn view(&self, record: RolloutRecord) -> Result<RolloutView> {
        let current = self
            .store
            .current()?
            .get(&record.nci_name)
            .is_some_and(|r| r.id == record.id);
        let nodes = self.hub.nodes(&record.nci.spec.nodeconfigselector);
        let mut counts = Counts::default();
        let mut conflicts = Vec::new();
        let mut per_node = Vec::with_capacity(nodes.len());
        for n in &nodes {
            // The node's state for this rollout: that of the files its NCI wins.
            let mine: Vec<_> = n
                .desired
                .files
                .iter()
                .filter(|f| f.source == record.nci_name && f.kind == nci::FileType::File)
                .collect();
            let state = if !current {
                NodeState::Pending
            } else if mine.is_empty() {
                n.state
            } else {
                mine.iter()
                    .map(|f| n.file_state(f))
                    .max_by_key(|s| severity(*s))
                    .unwrap_or(n.state)
            };
            counts.total += 1;
            match state {
                NodeState::Pending => counts.pending += 1,
                NodeState::Applying => counts.applying += 1,
                NodeState::Applied => counts.applied += 1,
                NodeState::Failed => counts.failed += 1,
                NodeState::Drifted => counts.drifted += 1,
                NodeState::Unknown => counts.unknown += 1,
            }
            for c in &n.desired.conflicts {
                if c.loser == record.nci_name && !conflicts.contains(c) {
                    conflicts.push(c.clone());
                }
            }
            per_node.push((n.name.clone(), state));
        }
        let state = if !current {
            "Superseded"
        } else if counts.applied == counts.total {
            "Completed"
        } else {
            "Progressing"
        };
        Ok(RolloutView {
            record,
            state,
            counts,
            conflicts,
            nodes: per_node,
        })
    }
}

/// Which state dominates when a node's files differ: the worst.
fn severity(s: NodeState) -> u8 {
    match s {
        NodeState::Applied => 0,
        NodeState::Pending => 1,
        NodeState::Applying => 2,
        NodeState::Drifted => 3,
        NodeState::Unknown => 4,
        NodeState::Failed => 5,
    }
}
