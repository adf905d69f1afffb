//! The embedded backend: sled in `--data-dir`. Tree `rollouts`: the rollout number
//! (u64 big-endian, so iteration is in creation order) → the record as JSON. Tree `nodes`:
//! node name → when it was last seen connected (ms since the epoch, u64 big-endian). Tree
//! `audit`: [`AuditEntry::key`] (time, sequence) → the entry as JSON. Tree `known_nodes`:
//! node name → its [`KnownNode`] as JSON.
//! Numbers come from sled's monotonic id generator, which never repeats across restarts.

use std::path::Path;

use seccomp_rollout::record::RolloutRecord;

use super::{AuditEntry, Backend, KnownNode};
use crate::BoxFuture;
use crate::error::{Error, Result};

/// The distributor's sled database.
#[derive(Clone)]
pub struct SledBackend {
    db: sled::Db,
    rollouts: sled::Tree,
    nodes: sled::Tree,
    known: sled::Tree,
    audit: sled::Tree,
}

impl SledBackend {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        // A handle just dropped (or a predecessor still exiting) may hold the file lock a
        // moment longer.
        let db = seccomp_server::locked::open_retrying(|| sled::open(dir))?;
        let rollouts = db.open_tree("rollouts")?;
        let nodes = db.open_tree("nodes")?;
        let audit = db.open_tree("audit")?;
        let known = db.open_tree("known_nodes")?;
        Ok(SledBackend {
            db,
            rollouts,
            nodes,
            known,
            audit,
        })
    }
}

impl Backend for SledBackend {
    fn load_rollouts(&self) -> Result<Vec<(u64, RolloutRecord)>> {
        let mut out = Vec::new();
        for entry in self.rollouts.iter() {
            let (key, value) = entry?;
            let n = <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Storage(format!("bad rollout key {key:?}")))?;
            let record: RolloutRecord = serde_json::from_slice(&value)
                .map_err(|e| Error::Storage(format!("rollout r{n}: {e}")))?;
            out.push((n, record));
        }
        Ok(out)
    }

    fn write_rollout(&self, number: u64, record: &RolloutRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).map_err(|e| Error::Storage(e.to_string()))?;
        self.rollouts.insert(number.to_be_bytes(), bytes)?;
        Ok(())
    }

    fn remove_rollout(&self, number: u64) -> Result<()> {
        self.rollouts.remove(number.to_be_bytes())?;
        Ok(())
    }

    fn next_number(&self) -> Result<u64> {
        Ok(self.db.generate_id()? + 1)
    }

    fn load_sightings(&self) -> Result<Vec<(String, u64)>> {
        let mut seen = Vec::new();
        for entry in self.nodes.iter() {
            let (key, value) = entry?;
            let at = <[u8; 8]>::try_from(value.as_ref()).map_or(0, u64::from_be_bytes);
            seen.push((String::from_utf8_lossy(&key).into_owned(), at));
        }
        Ok(seen)
    }

    fn write_sightings(&self, names: &[String], at_ms: u64) -> Result<()> {
        let at = at_ms.to_be_bytes();
        for name in names {
            self.nodes.insert(name.as_bytes(), &at)?;
        }
        Ok(())
    }

    fn load_nodes(&self) -> Result<Vec<KnownNode>> {
        let mut out = Vec::new();
        for entry in self.known.iter() {
            let (key, value) = entry?;
            out.push(serde_json::from_slice(&value).map_err(|e| {
                Error::Storage(format!("node {}: {e}", String::from_utf8_lossy(&key)))
            })?);
        }
        Ok(out)
    }

    fn write_node(&self, node: &KnownNode) -> Result<()> {
        let bytes = serde_json::to_vec(node).map_err(|e| Error::Storage(e.to_string()))?;
        self.known.insert(node.name.as_bytes(), bytes)?;
        Ok(())
    }

    fn remove_node(&self, name: &str) -> Result<()> {
        self.known.remove(name.as_bytes())?;
        Ok(())
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(|e| Error::Storage(e.to_string()))?;
        self.audit.insert(entry.key(), bytes)?;
        Ok(())
    }

    fn audit(&self, since_ns: u64, after: Option<&[u8]>, limit: usize) -> Result<Vec<AuditEntry>> {
        let start = since_ns.to_be_bytes().to_vec();
        let range = match after {
            Some(key) if key >= start.as_slice() => self
                .audit
                .range::<&[u8], _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
            _ => self.audit.range(start..),
        };
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (key, value) = entry?;
            out.push(
                serde_json::from_slice(&value).map_err(|e| {
                    Error::Storage(format!("audit entry {}: {e}", hex::encode(&key)))
                })?,
            );
        }
        Ok(out)
    }

    fn prune_audit(&self, before_ns: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let old = self.audit.range(..before_ns.to_be_bytes()).keys();
        for key in old.take(seccomp_server::retention::PRUNE_BATCH) {
            batch.remove(key?);
            n += 1;
        }
        self.audit.apply_batch(batch)?;
        Ok(n)
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        // sled 0.34's `flush_async` can deadlock when several are polled at once
        // (spacejam/sled#1241); a blocking flush on the blocking pool cannot.
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || db.flush())
                .await
                .map_err(|e| Error::Storage(format!("flush task: {e}")))??;
            Ok(())
        })
    }
}
