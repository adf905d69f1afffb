//! Rollouts persisted in sled, so a restarted distributor serves the same NCIs and resumes
//! staged rollouts where they stopped. Keys are the rollout number (u64 big-endian), so
//! iteration is in creation order; the NCIs in force are derived from the newest rollout of
//! each NCI name (see `service`). A record holds everything the rollout engine needs to go
//! on after a restart: state, wave, the nodes targeted so far with their last known state,
//! the pending pause, the history.
//!
//! Records written before staged rollouts existed have no state or strategy; they read as
//! `Completed` single-wave rollouts, which is what they were.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hub::NodeState;
use crate::nci::NodeConfigItem;
use crate::strategy::Strategy;

/// The state of a rollout (DESIGN.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RolloutState {
    /// Created; no wave started yet.
    Pending,
    /// A wave is being applied.
    Progressing,
    /// Waiting for a resume, a timed pause, or unknown nodes to return.
    Paused,
    /// Every matching node applied the version.
    Completed,
    /// Touched nodes are returning to the stable version.
    RollingBack,
    /// Every touched node is back on the stable version.
    RolledBack,
    /// Stopped on request, superseded, or failed with automatic rollback off.
    Aborted,
}

impl RolloutState {
    /// Pending, Progressing, Paused and RollingBack: the engine still drives it.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    /// Completed, RolledBack and Aborted.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RolloutState::Completed | RolloutState::RolledBack | RolloutState::Aborted
        )
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a rollout is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseCause {
    /// Someone called PauseRollout.
    Requested,
    /// A wave finished and the strategy waits for a manual resume.
    BetweenWaves,
    /// Targeted nodes are Unknown; the rollout goes on by itself when they return.
    UnknownNodes,
}

/// A targeted node as the rollout last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// When a wave first targeted it (ms since the epoch).
    pub targeted_at_ms: u64,
    /// Its state within the rollout.
    pub state: NodeState,
    /// When it entered that state.
    pub since_ms: u64,
    /// Detail for Failed, Drifted and Unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn completed() -> RolloutState {
    RolloutState::Completed
}

fn one_wave() -> Strategy {
    Strategy::immediate()
}

/// A transition in a rollout's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// State entered (`Progressing`, `Completed`, ...).
    pub state: String,
    /// Why.
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who asked ("distributor" for automatic transitions).
    pub actor: String,
}

/// One rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// `r<number>`.
    pub id: String,
    /// Revision of its NCI (1 for the first rollout of that NCI name).
    pub revision: u64,
    /// Profile name.
    pub profile: String,
    /// Profile version.
    pub version: u64,
    /// Content digest.
    pub digest: String,
    /// The NCI it writes.
    pub nci_name: String,
    /// The rendered NCI.
    pub nci: NodeConfigItem,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Who created it.
    pub created_by: String,
    /// Transitions, oldest first.
    pub history: Vec<TransitionRecord>,
    /// How it proceeds.
    #[serde(default = "one_wave")]
    pub strategy: Strategy,
    /// Where it is.
    #[serde(default = "completed")]
    pub state: RolloutState,
    /// 1-based wave being applied or last applied; 0 before the first.
    #[serde(default)]
    pub current_wave: u32,
    /// Why it is paused (when `state` is Paused).
    #[serde(default)]
    pub paused: Option<PauseCause>,
    /// When a timed pause between waves ends (ms since the epoch).
    #[serde(default)]
    pub next_wave_at_ms: Option<u64>,
    /// When the current wave last made progress (a node reached Applied, or it started).
    #[serde(default)]
    pub progress_at_ms: u64,
    /// The rollout whose content is this NCI's stable version: the newest one that completed
    /// before this one was created. `None`: no stable version; going back removes the file.
    #[serde(default)]
    pub stable_id: Option<String>,
    /// That rollout's profile version.
    #[serde(default)]
    pub stable_version: Option<u64>,
    /// Created by a rollback.
    #[serde(default)]
    pub rollback: bool,
    /// The touched nodes went back to the stable content (RollingBack, RolledBack, or an
    /// abort during either).
    #[serde(default)]
    pub reverted: bool,
    /// Every node a wave targeted, by name.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Unknown nodes a caller chose to go on without (ResumeRollout while they were Unknown).
    #[serde(default)]
    pub waived: BTreeSet<String>,
}

impl RolloutRecord {
    /// Record entering `state` for `reason`.
    pub fn transition(
        &mut self,
        state: RolloutState,
        reason: impl Into<String>,
        actor: &str,
        at_ms: u64,
    ) {
        self.state = state;
        if state != RolloutState::Paused {
            self.paused = None;
        }
        self.history.push(TransitionRecord {
            state: state.to_string(),
            reason: reason.into(),
            at_ms,
            actor: actor.to_owned(),
        });
    }

    /// When it last changed.
    pub fn updated_at_ms(&self) -> u64 {
        self.history.last().map_or(self.created_at_ms, |t| t.at_ms)
    }
}

/// The distributor's database. Every record is also kept in memory (read on open, updated
/// on every write), so the engine's frequent reads never parse records again.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    rollouts: sled::Tree,
    /// Every node whose agent ever connected: name -> when it was last seen connected (ms
    /// since the epoch, big-endian; refreshed every half minute).
    nodes: sled::Tree,
    cache: Arc<RwLock<BTreeMap<u64, Arc<RolloutRecord>>>>,
}

fn id_number(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}

impl Store {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::open(dir)?;
        let rollouts = db.open_tree("rollouts")?;
        let nodes = db.open_tree("nodes")?;
        let mut cache = BTreeMap::new();
        for entry in rollouts.iter() {
            let (key, value) = entry?;
            let n = <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Storage(format!("bad rollout key {key:?}")))?;
            let record: RolloutRecord = serde_json::from_slice(&value)
                .map_err(|e| Error::Storage(format!("rollout r{n}: {e}")))?;
            cache.insert(n, Arc::new(record));
        }
        Ok(Store {
            db,
            rollouts,
            nodes,
            cache: Arc::new(RwLock::new(cache)),
        })
    }

    /// A fresh rollout id, never reused.
    pub fn next_id(&self) -> Result<String> {
        Ok(format!("r{}", self.db.generate_id()? + 1))
    }

    /// The nodes that were connected during the last `recent_ms` before this distributor
    /// last stopped (measured from the newest sighting): the ones to wait for after a
    /// restart. A node decommissioned long before is not among them.
    pub fn recent_nodes(&self, recent_ms: u64) -> Result<BTreeSet<String>> {
        let mut seen = Vec::new();
        for entry in self.nodes.iter() {
            let (key, value) = entry?;
            let at = <[u8; 8]>::try_from(value.as_ref()).map_or(0, u64::from_be_bytes);
            seen.push((String::from_utf8_lossy(&key).into_owned(), at));
        }
        let newest = seen.iter().map(|(_, at)| *at).max().unwrap_or(0);
        Ok(seen
            .into_iter()
            .filter(|(_, at)| *at >= newest.saturating_sub(recent_ms))
            .map(|(name, _)| name)
            .collect())
    }

    /// Record that these nodes are connected at `at_ms` (written with the next flush).
    pub fn saw_nodes<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        at_ms: u64,
    ) -> Result<()> {
        let at = at_ms.to_be_bytes();
        for name in names {
            self.nodes.insert(name.as_bytes(), &at)?;
        }
        Ok(())
    }

    /// Wait until everything written so far is on disk.
    pub async fn flush(&self) -> Result<()> {
        // sled 0.34's `flush_async` can deadlock when several are polled at once
        // (spacejam/sled#1241); a blocking flush on the blocking pool cannot.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| Error::Storage(format!("flush task: {e}")))??;
        Ok(())
    }

    /// Store a rollout and wait until it is on disk.
    pub async fn put(&self, r: &RolloutRecord) -> Result<()> {
        self.put_lazy(r)?;
        self.flush().await
    }

    /// Store a rollout without waiting for the disk (the engine's per-node bookkeeping; the
    /// next durable `put` or sled's periodic flush writes it).
    pub fn put_lazy(&self, r: &RolloutRecord) -> Result<()> {
        let n =
            id_number(&r.id).ok_or_else(|| Error::invalid(format!("bad rollout id {:?}", r.id)))?;
        let bytes = serde_json::to_vec(r).map_err(|e| Error::Storage(e.to_string()))?;
        self.rollouts.insert(n.to_be_bytes(), bytes)?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n, Arc::new(r.clone()));
        Ok(())
    }

    /// One rollout, to change.
    pub fn get(&self, id: &str) -> Result<RolloutRecord> {
        Ok((*self.get_shared(id)?).clone())
    }

    /// One rollout, to read.
    pub fn get_shared(&self, id: &str) -> Result<Arc<RolloutRecord>> {
        let missing = || Error::NotFound(format!("rollout \"{id}\" not found"));
        let n = id_number(id).ok_or_else(missing)?;
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&n)
            .cloned()
            .ok_or_else(missing)
    }

    /// Every rollout, oldest first.
    pub fn all(&self) -> Result<Vec<Arc<RolloutRecord>>> {
        Ok(self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect())
    }

    /// The newest rollout of every NCI name.
    pub fn current(&self) -> Result<BTreeMap<String, Arc<RolloutRecord>>> {
        let mut out = BTreeMap::new();
        for r in self.all()? {
            out.insert(r.nci_name.clone(), r);
        }
        Ok(out)
    }
}
