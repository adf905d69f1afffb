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
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use seccomp_rollout::record::RolloutRecord;

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
