//! Rollouts persisted in sled, so a restarted distributor serves the same NCIs. Keys are the
//! rollout number (u64 big-endian), so iteration is in creation order; the NCIs in force are
//! the newest rollout of each NCI name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nci::NodeConfigItem;

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
}

/// The distributor's database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    rollouts: sled::Tree,
}

fn id_number(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}

impl Store {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::open(dir)?;
        let rollouts = db.open_tree("rollouts")?;
        Ok(Store { db, rollouts })
    }

    /// A fresh rollout id, never reused.
    pub fn next_id(&self) -> Result<String> {
        Ok(format!("r{}", self.db.generate_id()? + 1))
    }

    /// Store a rollout and wait until it is on disk.
    pub async fn put(&self, r: &RolloutRecord) -> Result<()> {
        let n =
            id_number(&r.id).ok_or_else(|| Error::invalid(format!("bad rollout id {:?}", r.id)))?;
        let bytes = serde_json::to_vec(r).map_err(|e| Error::Storage(e.to_string()))?;
        self.rollouts.insert(n.to_be_bytes(), bytes)?;
        // sled 0.34's `flush_async` can deadlock when several are polled at once
        // (spacejam/sled#1241); a blocking flush on the blocking pool cannot.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| Error::Storage(format!("flush task: {e}")))??;
        Ok(())
    }

    /// One rollout.
    pub fn get(&self, id: &str) -> Result<RolloutRecord> {
        let missing = || Error::NotFound(format!("rollout \"{id}\" not found"));
        let n = id_number(id).ok_or_else(missing)?;
        let bytes = self.rollouts.get(n.to_be_bytes())?.ok_or_else(missing)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Storage(format!("rollout {id}: {e}")))
    }

    /// Every rollout, oldest first.
    pub fn all(&self) -> Result<Vec<RolloutRecord>> {
        self.rollouts
            .iter()
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v).map_err(|e| Error::Storage(e.to_string()))
            })
            .collect()
    }

    /// The newest rollout of every NCI name.
    pub fn current(&self) -> Result<BTreeMap<String, RolloutRecord>> {
        let mut out = BTreeMap::new();
        for r in self.all()? {
            out.insert(r.nci_name.clone(), r);
        }
        Ok(out)
    }
}
