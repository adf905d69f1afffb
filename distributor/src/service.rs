//! The distributor's operations, transport-free: create staged rollouts (fetching the version
//! from the registry through a [`ProfileSource`]), drive them ([`Distributor::tick`], run by
//! the engine task on every node change and on a timer), pause, resume, abort and roll back,
//! report rollouts and nodes, render NCIs.
//!
//! What each node gets, per NCI name, follows from the newest rollout of that name:
//! Completed: its content everywhere it matches; reverted (rolling or rolled back): the
//! stable content (the last completed rollout's) everywhere; otherwise (in progress, paused,
//! aborted): its content on the nodes its waves targeted, the stable content elsewhere. The
//! sinks (YAML directory, cluster) hold one content per NCI, so they get the stable content
//! until a rollout completes.
//!
//! Every change of a rollout record is written to sled before the nodes are sent anything
//! it implies, so a distributor killed at any point resumes with the same targeted nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::store::Store;
use seccomp_rollout::engine::{self, Live};
use seccomp_rollout::fileset::{Conflict, Fleet, Scope};
use seccomp_rollout::nci::{self, NodeConfigItem, ProfileRef, Target};
use seccomp_rollout::node::{NodeState, NodeView};
use seccomp_rollout::record::{PauseCause, RolloutRecord, RolloutState};
use seccomp_rollout::selector::Selector;
use seccomp_rollout::strategy::{Strategy, WaveSpec};

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
    /// How it proceeds.
    pub strategy: Strategy,
    /// NCI name; `None` for `seccomp-<profile>`.
    pub nci_name: Option<String>,
    /// Who asks.
    pub actor: String,
}

/// What a rollback asks for.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// Profile whose NCIs go back.
    pub profile: String,
    /// Version to return to; `None` for each NCI's stable version.
    pub to_version: Option<u64>,
    /// Only this NCI.
    pub nci_name: Option<String>,
    /// Who asks.
    pub actor: String,
}

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

/// What the nodes and the sinks should have, from the stored rollouts.
/// Per NCI name: its newest rollout, and that rollout's stable one when it has one.
type InForce = Vec<(Arc<RolloutRecord>, Option<Arc<RolloutRecord>>)>;

/// The distributor.
pub struct Distributor {
    store: Store,
    hub: Arc<Hub>,
    source: Arc<dyn ProfileSource>,
    sinks: Vec<Arc<dyn NciSink>>,
    /// Every change of rollout records goes through this lock, so NCI revisions are
    /// sequential and the engine never races a caller.
    write: tokio::sync::Mutex<()>,
    /// Bumped whenever a rollout record changed, for watchers.
    changes: tokio::sync::watch::Sender<u64>,
    /// After a restart the agents need a moment to reconnect. Until every node known before
    /// the restart is back, or this time has passed, rollouts only record what nodes report:
    /// no node is Unknown for being absent, no wave starts or ends.
    settle_until: Instant,
    /// Set once settled (see `settle_until`).
    settled: AtomicBool,
    /// The nodes connected shortly before this process started (persisted), waited for.
    expected: BTreeSet<String>,
    /// How many nodes the hub knew at the last record of connected nodes, and when that was.
    sightings: std::sync::Mutex<(usize, Option<Instant>)>,
    /// A record changed what nodes get but the fleet was not rebuilt (its write failed):
    /// flush and rebuild at the next tick.
    stale: AtomicBool,
    /// Ids of the rollouts whose NCIs the sinks last got.
    synced: std::sync::Mutex<Option<Vec<String>>>,
    /// After a failed sink sync, no new attempt before this.
    sink_retry_at: std::sync::Mutex<Option<Instant>>,
}

/// How often the connected nodes are recorded.
const SIGHTING_EVERY: Duration = Duration::from_secs(30);

/// After a restart, the distributor waits for the nodes seen connected within this much of
/// the last sighting before it stopped.
const RECENT: Duration = Duration::from_secs(5 * 60);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long to wait before syncing a sink again after it failed.
const SINK_RETRY: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Distributor {
    /// A distributor over `store`, serving agents through `hub` and writing NCIs to `sinks`.
    /// Loads the NCIs in force. Targeted nodes that have not reconnected within `settle` count
    /// as Unknown.
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        source: Arc<dyn ProfileSource>,
        sinks: Vec<Arc<dyn NciSink>>,
        settle: Duration,
    ) -> Result<Self> {
        let expected = store.recent_nodes(millis(RECENT))?;
        let d = Distributor {
            store,
            hub,
            source,
            sinks,
            write: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
            settle_until: Instant::now() + settle,
            settled: AtomicBool::new(false),
            sightings: std::sync::Mutex::new((0, None)),
            expected,
            stale: AtomicBool::new(false),
            synced: std::sync::Mutex::new(None),
            sink_retry_at: std::sync::Mutex::new(None),
        };
        d.refresh_fleet()?;
        Ok(d)
    }

    /// Bring every sink in line with the NCIs in force (skipped when they did not change
    /// since the last successful sync). A failing sink is logged and retried at the next
    /// change; agents do not wait for sinks.
    pub async fn sync_sinks(&self) -> Result<()> {
        let records = self.sink_records()?;
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        if self
            .synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&ids)
        {
            return Ok(());
        }
        let retry_at = *self.sink_retry_at.lock().unwrap_or_else(|e| e.into_inner());
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        let ncis: Vec<NodeConfigItem> = records.iter().map(|r| r.nci.clone()).collect();
        let mut all_ok = true;
        for sink in &self.sinks {
            match sink.sync(&ncis).await {
                Ok(()) => {
                    tracing::info!(sink = %sink.describe(), ncis = ncis.len(), "sink in sync")
                }
                Err(e) => {
                    all_ok = false;
                    tracing::error!(sink = %sink.describe(), error = %e, "sink sync failed")
                }
            }
        }
        if all_ok {
            *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = Some(ids);
            *self.sink_retry_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        } else {
            *self.sink_retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + SINK_RETRY);
        }
        Ok(())
    }

    /// Per NCI name, its newest rollout and that rollout's stable one.
    fn in_force(&self) -> Result<InForce> {
        self.store
            .current()?
            .into_values()
            .map(|r| {
                let stable = r
                    .stable_id
                    .as_deref()
                    .map(|id| self.store.get_shared(id))
                    .transpose()?;
                Ok((r, stable))
            })
            .collect()
    }

    /// For each NCI name, the rollouts whose content some node may have now: the newest one
    /// and its stable one.
    pub fn content_sources(&self) -> Result<BTreeMap<String, Vec<Arc<RolloutRecord>>>> {
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
    fn sink_records(&self) -> Result<Vec<Arc<RolloutRecord>>> {
        Ok(self
            .in_force()?
            .into_iter()
            .filter_map(|(r, stable)| {
                if r.state == RolloutState::Completed {
                    Some(r)
                } else {
                    stable
                }
            })
            .collect())
    }

    /// The NCIs the sinks hold: one per NCI name (see the module docs).
    pub fn ncis(&self) -> Result<Vec<NodeConfigItem>> {
        Ok(self.sink_records()?.iter().map(|r| r.nci.clone()).collect())
    }

    /// The NCI variants the agents get (see the module docs).
    fn variants(&self) -> Result<Vec<(NodeConfigItem, Scope)>> {
        let mut out = Vec::new();
        for (r, stable) in self.in_force()? {
            if r.state == RolloutState::Completed {
                out.push((r.nci.clone(), Scope::All));
            } else if r.reverted {
                out.extend(stable.map(|s| (s.nci.clone(), Scope::All)));
            } else {
                let targeted: Arc<BTreeSet<String>> = Arc::new(r.nodes.keys().cloned().collect());
                out.push((r.nci.clone(), Scope::Only(Arc::clone(&targeted))));
                out.extend(stable.map(|s| (s.nci.clone(), Scope::Except(targeted))));
            }
        }
        Ok(out)
    }

    fn refresh_fleet(&self) -> Result<()> {
        let variants = self.variants()?;
        self.hub
            .set_fleet(Fleet::scoped(variants.iter().map(|(n, s)| (n, s.clone())))?);
        Ok(())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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

    /// The newest completed rollout of `nci_name` (of `profile`, when given) created before
    /// the rollout `before`, if any (any time when `before` is `None`).
    fn last_completed(
        &self,
        nci_name: &str,
        profile: Option<&str>,
        before: Option<&str>,
    ) -> Result<Option<Arc<RolloutRecord>>> {
        let all = self.store.all()?;
        let limit = before
            .and_then(|id| all.iter().position(|r| r.id == id))
            .unwrap_or(all.len());
        Ok(all[..limit]
            .iter()
            .rev()
            .find(|r| {
                r.nci_name == nci_name
                    && r.state == RolloutState::Completed
                    && profile.is_none_or(|p| r.profile == p)
            })
            .cloned())
    }

    /// The active rollout of `nci_name`, if any, as an error.
    fn refuse_if_active(&self, nci_name: &str) -> Result<()> {
        if let Some(r) = self
            .store
            .current()?
            .get(nci_name)
            .filter(|r| r.state.is_active())
        {
            return Err(Error::FailedPrecondition(format!(
                "rollout {} of NCI \"{nci_name}\" is still {}: wait for it to finish, abort it, or roll back",
                r.id, r.state
            )));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn new_record(
        &self,
        id: String,
        nci: NodeConfigItem,
        profile: &str,
        version: u64,
        digest: &str,
        strategy: Strategy,
        actor: &str,
        reason: String,
    ) -> Result<RolloutRecord> {
        let revision = self
            .store
            .current()?
            .get(&nci.metadata.name)
            .map_or(1, |r| r.revision + 1);
        let stable = self.last_completed(&nci.metadata.name, None, None)?;
        let now = now_ms();
        let mut record = RolloutRecord {
            id,
            revision,
            profile: profile.to_owned(),
            version,
            digest: digest.to_owned(),
            nci_name: nci.metadata.name.clone(),
            nci,
            created_at_ms: now,
            created_by: actor.to_owned(),
            history: Vec::new(),
            strategy,
            state: RolloutState::Pending,
            current_wave: 0,
            paused: None,
            next_wave_at_ms: None,
            progress_at_ms: now,
            stable_id: stable.as_ref().map(|s| s.id.clone()),
            stable_version: stable.as_ref().map(|s| s.version),
            rollback: false,
            reverted: false,
            nodes: BTreeMap::new(),
            waived: BTreeSet::new(),
        };
        record.transition(RolloutState::Pending, reason, actor, now);
        Ok(record)
    }

    /// Check that the NCIs with `record` added still build.
    fn check_builds(&self, record: &RolloutRecord) -> Result<()> {
        let mut variants = self.variants()?;
        variants.retain(|(n, _)| n.metadata.name != record.nci_name);
        variants.push((record.nci.clone(), Scope::All));
        Fleet::scoped(variants.iter().map(|(n, s)| (n, s.clone())))?;
        Ok(())
    }

    /// Create a rollout: render its NCI, persist it, and start its first wave. Refused while
    /// another rollout of the same NCI is active.
    pub async fn create_rollout(&self, req: RolloutRequest) -> Result<RolloutView> {
        req.strategy.validate()?;
        let p = self.fetch(&req.profile, req.version).await?;
        let _w = self.write.lock().await;
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
        self.refuse_if_active(&nci.metadata.name)?;
        let reason = format!(
            "created: waves {}",
            seccomp_rollout::strategy::format_waves(&req.strategy.waves)
        );
        let record = self.new_record(
            id,
            nci,
            &p.name,
            p.version,
            &p.digest,
            req.strategy,
            &req.actor,
            reason,
        )?;
        self.check_builds(&record)?;
        self.store.put(&record).await?;
        tracing::info!(rollout = %record.id, profile = %record.profile, version = record.version, nci = %record.nci_name, "rollout created");
        self.tick_locked().await?;
        self.rollout(&record.id)
    }

    /// Pause a progressing rollout (no more nodes are targeted; targeted ones converge).
    pub async fn pause(&self, id: &str, reason: &str, actor: &str) -> Result<RolloutView> {
        let _w = self.write.lock().await;
        let mut r = self.store.get(id)?;
        let why = if reason.is_empty() {
            format!("paused by {actor}")
        } else {
            format!("paused by {actor}: {reason}")
        };
        match (r.state, r.paused) {
            // Already waiting for a person.
            (RolloutState::Paused, Some(PauseCause::Requested | PauseCause::BetweenWaves)) => {}
            // Paused by the engine for unknown nodes, or running: from now on only a resume
            // continues it. A pending timed pause is kept (and skipped by the resume).
            (RolloutState::Paused, _) | (RolloutState::Progressing | RolloutState::Pending, _) => {
                r.transition(RolloutState::Paused, why, actor, now_ms());
                r.paused = Some(PauseCause::Requested);
                self.store.put(&r).await?;
                self.bump();
            }
            s => {
                return Err(Error::FailedPrecondition(format!(
                    "rollout {id} is {}: only a progressing rollout can be paused",
                    s.0
                )));
            }
        }
        self.rollout(id)
    }

    /// Resume a paused rollout. After a manual pause between waves the next wave starts;
    /// after a pause for unknown nodes the rollout goes on without them; after a pause on
    /// request, what is left of a timed pause between waves is skipped.
    pub async fn resume(&self, id: &str, actor: &str) -> Result<RolloutView> {
        let _w = self.write.lock().await;
        let mut r = self.store.get(id)?;
        if r.state != RolloutState::Paused {
            return Err(Error::FailedPrecondition(format!(
                "rollout {id} is {}: only a paused rollout can be resumed",
                r.state
            )));
        }
        let now = now_ms();
        match r.paused {
            Some(PauseCause::BetweenWaves) => {
                let next = r.current_wave + 1;
                engine::start_wave(&mut r, next, now);
                if let Some(t) = r.history.last_mut() {
                    t.actor = actor.to_owned();
                    t.reason = format!("resumed by {actor}: {}", t.reason);
                }
            }
            Some(PauseCause::UnknownNodes) => {
                let unknown: Vec<String> = r
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.state == NodeState::Unknown)
                    .map(|(name, _)| name.clone())
                    .collect();
                let reason = format!(
                    "resumed by {actor}, going on without the unknown node(s) {}",
                    unknown.join(", ")
                );
                r.waived.extend(unknown);
                r.transition(RolloutState::Progressing, reason, actor, now);
            }
            Some(PauseCause::Requested) | None => {
                r.transition(
                    RolloutState::Progressing,
                    format!("resumed by {actor}"),
                    actor,
                    now,
                );
                // Resuming means "go on now": what is left of a timed pause that was running
                // when the rollout was paused is skipped.
                if r.next_wave_at_ms.is_some() {
                    r.next_wave_at_ms = Some(now);
                }
            }
        }
        r.progress_at_ms = now;
        self.store.put(&r).await?;
        self.tick_locked().await?;
        self.rollout(id)
    }

    /// Abort an active rollout: nothing more is targeted; nodes keep what they have.
    pub async fn abort(&self, id: &str, reason: &str, actor: &str) -> Result<RolloutView> {
        let _w = self.write.lock().await;
        let mut r = self.store.get(id)?;
        if r.state.is_terminal() {
            return Err(Error::FailedPrecondition(format!(
                "rollout {id} is already {}",
                r.state
            )));
        }
        let why = if reason.is_empty() {
            format!("aborted by {actor}")
        } else {
            format!("aborted by {actor}: {reason}")
        };
        r.transition(RolloutState::Aborted, why, actor, now_ms());
        self.store.put(&r).await?;
        self.refresh_fleet()?;
        self.bump();
        self.rollout(id)
    }

    /// Roll NCIs of a profile forward to older content as new rollouts: every matching node
    /// at once, within `max_unavailable`. An active rollout of such an NCI is aborted first.
    pub async fn rollback(&self, req: RollbackRequest) -> Result<Vec<RolloutView>> {
        // The registry is asked before the lock is taken: a slow registry must not stall the
        // engine.
        let fetched = match req.to_version {
            Some(v) => Some(self.fetch(&req.profile, Some(v)).await?),
            None => None,
        };
        let _w = self.write.lock().await;
        let targets: Vec<RolloutRecord> = self
            .store
            .current()?
            .into_values()
            .filter(|r| r.profile == req.profile)
            .filter(|r| req.nci_name.as_ref().is_none_or(|n| *n == r.nci_name))
            .map(|r| (*r).clone())
            .collect();
        if targets.is_empty() {
            return Err(Error::NotFound(match &req.nci_name {
                Some(n) => format!("NCI \"{n}\" has no rollout of profile \"{}\"", req.profile),
                None => format!("no rollout of profile \"{}\"", req.profile),
            }));
        }
        // Work out every NCI's content before changing anything.
        let mut plans = Vec::with_capacity(targets.len());
        for current in targets {
            let id = self.store.next_id()?;
            let (nci, version, digest) = match &fetched {
                Some(p) => {
                    let all = self.store.all()?;
                    // The target that version had on this NCI, if it was ever rolled out here.
                    let target = match all.iter().rev().find(|r| {
                        r.nci_name == current.nci_name
                            && r.profile == req.profile
                            && r.version == p.version
                    }) {
                        Some(old) => Target::of(&old.nci)?,
                        None => Target::of(&current.nci)?,
                    };
                    let nci = nci::render(
                        ProfileRef {
                            name: &p.name,
                            version: p.version,
                            content: &p.content,
                        },
                        &target,
                        Some(&current.nci_name),
                        Some(&id),
                    )?;
                    (nci, p.version, p.digest.clone())
                }
                None => {
                    let before = if current.state == RolloutState::Completed {
                        Some(current.id.as_str())
                    } else {
                        None
                    };
                    let stable = self
                        .last_completed(&current.nci_name, Some(&req.profile), before)?
                        .filter(|s| s.id != current.id)
                        .ok_or_else(|| {
                            Error::FailedPrecondition(format!(
                                "NCI \"{}\" has no earlier completed version to return to: give a version (--to-version)",
                                current.nci_name
                            ))
                        })?;
                    (
                        stable.nci.relabelled(&id),
                        stable.version,
                        stable.digest.clone(),
                    )
                }
            };
            plans.push((current, id, nci, version, digest));
        }
        let mut ids = Vec::with_capacity(plans.len());
        for (mut current, id, nci, version, digest) in plans {
            let now = now_ms();
            if current.state.is_active() {
                current.transition(
                    RolloutState::Aborted,
                    format!("superseded by rollback {id}"),
                    &req.actor,
                    now,
                );
                self.store.put(&current).await?;
            }
            // No waves; and a rollback that fails stops where it is rather than sending the
            // nodes back to the version being rolled away from.
            let strategy = Strategy {
                waves: vec![WaveSpec::Percent(100)],
                pause: seccomp_rollout::strategy::Pause::None,
                auto_rollback: false,
                ..current.strategy.clone()
            };
            let from = current.version;
            let mut record = self.new_record(
                id.clone(),
                nci,
                &req.profile,
                version,
                &digest,
                strategy,
                &req.actor,
                format!(
                    "rollback by {}: version {from} back to version {version}",
                    req.actor
                ),
            )?;
            record.rollback = true;
            self.check_builds(&record)?;
            self.store.put(&record).await?;
            tracing::info!(rollout = %id, nci = %record.nci_name, from, to = version, "rollback created");
            ids.push(id);
        }
        self.tick_locked().await?;
        ids.iter().map(|id| self.rollout(id)).collect()
    }

    /// Move every active rollout on (see [`engine::step`]), then bring the sinks in line
    /// (outside the lock: a slow cluster API must not stall rollouts): called by the engine
    /// task on every node change and on a timer.
    pub async fn tick(&self) -> Result<()> {
        {
            let _w = self.write.lock().await;
            self.tick_locked().await?;
        }
        self.sync_sinks().await
    }

    /// Whether the agents known before a restart had their chance to reconnect. The first
    /// time it is true, the rollouts' deadlines restart: time the distributor was down or
    /// settling does not count against nodes or waves.
    async fn settle(&self) -> Result<bool> {
        if self.settled.load(Ordering::Acquire) {
            return Ok(true);
        }
        let back = self.expected.iter().all(|n| self.hub.is_known(n));
        if !(back || Instant::now() >= self.settle_until) {
            return Ok(false);
        }
        let now = now_ms();
        for shared in self.store.current()?.into_values() {
            if !shared.state.is_active() {
                continue;
            }
            let mut r = (*shared).clone();
            r.progress_at_ms = r.progress_at_ms.max(now);
            for n in r.nodes.values_mut() {
                if matches!(n.state, NodeState::Applying | NodeState::Pending) {
                    n.since_ms = n.since_ms.max(now);
                }
            }
            self.store.put_lazy(&r)?;
        }
        self.settled.store(true, Ordering::Release);
        if !self.expected.is_empty() {
            tracing::info!(
                nodes = self.expected.len(),
                back,
                "settled after the restart; rollouts go on"
            );
        }
        Ok(true)
    }

    /// Record which nodes are connected, when a node is new and otherwise every
    /// [`SIGHTING_EVERY`], so a restarted distributor knows whom to wait for.
    fn remember_nodes(&self) -> Result<()> {
        let count = self.hub.node_count();
        let mut last = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.1.is_none_or(|at| at.elapsed() >= SIGHTING_EVERY);
        if count <= last.0 && !due {
            return Ok(());
        }
        let names = self.hub.connected_names();
        self.store
            .saw_nodes(names.iter().map(String::as_str), now_ms())?;
        *last = (count, Some(Instant::now()));
        Ok(())
    }

    async fn tick_locked(&self) -> Result<()> {
        self.remember_nodes()?;
        if self.stale.load(Ordering::Acquire) {
            self.store.flush().await?;
            self.refresh_fleet()?;
            self.stale.store(false, Ordering::Release);
        }
        let settled = self.settle().await?;
        let mut scope = false;
        let mut changed = false;
        for shared in self.store.current()?.into_values() {
            if !shared.state.is_active() {
                continue;
            }
            let mut r = (*shared).clone();
            let live = self.live(&r);
            let live_names: std::collections::HashSet<&str> =
                live.iter().map(|l| l.name.as_str()).collect();
            // A targeted node whose labels no longer match leaves the rollout: it gets what
            // its new labels select, like any other node. (Asked of the hub now, not of the
            // snapshot above: an agent may have connected since.)
            let selector = &r.nci.spec.nodeconfigselector;
            let moved: Vec<String> = r
                .nodes
                .keys()
                .filter(|n| {
                    !live_names.contains(n.as_str()) && self.hub.matches(n, selector) == Some(false)
                })
                .cloned()
                .collect();
            for name in &moved {
                tracing::info!(rollout = %r.id, node = %name, "node no longer matches the target; it leaves the rollout");
                r.nodes.remove(name);
            }
            let before = r.state;
            let step = engine::step(&mut r, &live, now_ms(), settled);
            // Nodes leaving the rollout change what nodes get, like a step's scope change.
            let rescoped = step.scope || !moved.is_empty();
            if rescoped {
                // Until the fleet is rebuilt below; if the write fails, the next tick retries.
                self.stale.store(true, Ordering::Release);
            }
            if rescoped || step.durable {
                self.store.put(&r).await?;
            } else if step.changed {
                self.store.put_lazy(&r)?;
            }
            if r.state != before {
                let reason = r.history.last().map_or("", |t| t.reason.as_str());
                tracing::info!(rollout = %r.id, from = %before, to = %r.state, reason, "rollout state");
            }
            scope |= rescoped;
            changed |= step.changed || rescoped;
        }
        if scope {
            self.refresh_fleet()?;
            self.stale.store(false, Ordering::Release);
        }
        if changed {
            self.bump();
        }
        Ok(())
    }

    /// Run [`Distributor::tick`] on every node change and at least every 500 ms until `stop`
    /// resolves.
    pub async fn run_engine(&self, stop: impl Future<Output = ()>) {
        let mut nodes = self.hub.subscribe();
        tokio::pin!(stop);
        loop {
            if let Err(e) = self.tick().await {
                tracing::error!(error = %e, "rollout engine");
            }
            tokio::select! {
                () = &mut stop => return,
                _ = nodes.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// The matching nodes of `r` as the engine sees them.
    fn live(&self, r: &RolloutRecord) -> Vec<Live> {
        self.hub
            .nodes(&r.nci.spec.nodeconfigselector)
            .iter()
            .map(|n| {
                let (state, message) = n.state_for_nci(&r.nci_name);
                Live {
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                    state,
                    message,
                }
            })
            .collect()
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

    /// Wakes whenever a rollout may have changed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Known nodes matching `selector`, by name, after the node `after`, at most `limit`.
    pub fn nodes(&self, selector: &Selector, after: Option<&str>, limit: usize) -> Vec<NodeView> {
        self.hub.nodes_page(selector, after, limit)
    }

    fn view(&self, record: Arc<RolloutRecord>, current: bool) -> RolloutView {
        let mut rows: Vec<NodeRow> = Vec::new();
        let mut conflicts: Vec<ConflictView> = Vec::new();
        if current {
            let views = self.hub.nodes(&record.nci.spec.nodeconfigselector);
            for n in &views {
                for c in n
                    .desired
                    .conflicts
                    .iter()
                    .filter(|c| c.loser == record.nci_name)
                {
                    match conflicts.iter_mut().find(|v| v.conflict == *c) {
                        Some(v) => {
                            v.node_count += 1;
                            if v.sample_nodes.len() < 10 {
                                v.sample_nodes.push(n.name.clone());
                            }
                        }
                        None => conflicts.push(ConflictView {
                            conflict: c.clone(),
                            node_count: 1,
                            sample_nodes: vec![n.name.clone()],
                            winning_rollout_id: self
                                .store
                                .current()
                                .ok()
                                .and_then(|cur| cur.get(&c.winner).map(|r| r.id.clone())),
                        }),
                    }
                }
                if record.state == RolloutState::Completed {
                    let (state, message) = n.state_for_nci(&record.nci_name);
                    let since_ms = record.nodes.get(&n.name).map_or(0, |x| x.since_ms);
                    rows.push(NodeRow {
                        name: n.name.clone(),
                        state,
                        message,
                        since_ms,
                    });
                } else if !record.nodes.contains_key(&n.name) {
                    rows.push(NodeRow {
                        name: n.name.clone(),
                        state: NodeState::Pending,
                        message: String::new(),
                        since_ms: record.created_at_ms,
                    });
                }
            }
        }
        if !(current && record.state == RolloutState::Completed) {
            rows.extend(record.nodes.iter().map(|(name, n)| NodeRow {
                name: name.clone(),
                state: n.state,
                message: n.message.clone(),
                since_ms: n.since_ms,
            }));
        }
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
            if let Some(w) = seccomp_rollout::strategy::wave_of(&plan, i) {
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
