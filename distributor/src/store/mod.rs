//! The distributor's persistent state: rollout records and node sightings, behind a small
//! [`Backend`] trait, so a restarted distributor serves the same NCIs and resumes staged
//! rollouts where they stopped. [`RolloutStore`] keeps every record in memory too (read at
//! open, updated on every write), so the engine's frequent reads never parse records again;
//! a backend only has to keep bytes safe.
//!
//! Rollouts are numbered (`r<number>`), and iteration is in creation order; the NCIs in force
//! derive from the newest rollout of each NCI name (see `service`). A record holds all the
//! engine needs to go on after a restart (see [`seccomp_rollout::record`]).
//!
//! Backends: [`sled`] (embedded, the default) and [`etcd`] (`--etcd-endpoints`: the state
//! in an etcd cluster).

pub mod etcd;
pub mod sled;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use seccomp_rollout::record::RolloutRecord;

use crate::BoxFuture;
use crate::error::{Error, Result};

pub use self::etcd::{EtcdBackend, EtcdSettings};
pub use self::sled::SledBackend;

/// Where the distributor's state is kept. Writes may be buffered until [`Backend::flush`]
/// completes; a write that returned is visible to later reads of the same process.
pub trait Backend: Send + Sync + 'static {
    /// Every stored rollout record with its number, in any order.
    fn load_rollouts(&self) -> Result<Vec<(u64, RolloutRecord)>>;
    /// The stored record of rollout `number`, if there is one.
    fn load_rollout(&self, number: u64) -> Result<Option<RolloutRecord>> {
        Ok(self
            .load_rollouts()?
            .into_iter()
            .find(|(n, _)| *n == number)
            .map(|(_, r)| r))
    }
    /// Store the record of rollout `number` (replacing an older one), without waiting for
    /// durability.
    fn write_rollout(&self, number: u64, record: &RolloutRecord) -> Result<()>;
    /// Remove the record of rollout `number`, without waiting for durability.
    fn remove_rollout(&self, number: u64) -> Result<()>;
    /// A rollout number never handed out before (also across restarts).
    fn next_number(&self) -> Result<u64>;
    /// Every node ever seen connected, with when it last was (ms since the epoch).
    fn load_sightings(&self) -> Result<Vec<(String, u64)>>;
    /// Record that `names` were connected at `at_ms`, without waiting for durability.
    fn write_sightings(&self, names: &[String], at_ms: u64) -> Result<()>;
    /// Every node record stored.
    fn load_nodes(&self) -> Result<Vec<KnownNode>>;
    /// Store a node's record (replacing an older one), without waiting for durability.
    fn write_node(&self, node: &KnownNode) -> Result<()>;
    /// Remove a node's record, without waiting for durability.
    fn remove_node(&self, name: &str) -> Result<()>;
    /// Append an audit entry, without waiting for durability.
    fn append_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// Audit entries at or after `since_ns` (after the entry `after` when given, see
    /// [`AuditEntry::key`]), oldest first, at most `limit`.
    fn audit(&self, since_ns: u64, after: Option<&[u8]>, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Remove the audit entries from before `before_ns`, without waiting for durability;
    /// how many went (at most [`PRUNE_BATCH`](seccomp_server::retention::PRUNE_BATCH)).
    fn prune_audit(&self, before_ns: u64) -> Result<usize>;
    /// Wait until everything written so far is durable.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;
}

/// A node as last reported, kept so that a restarted distributor still knows the nodes that
/// are offline (what they hold on disk counts for the registry's in-use check) until they
/// are forgotten (`--forget-nodes-after`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownNode {
    /// Node name.
    pub name: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its agent's version.
    pub agent_version: String,
    /// When its agent was last heard from (ms since the epoch).
    pub last_seen_ms: u64,
    /// The revision its agent last confirmed.
    pub revision: String,
    /// What its agent last reported on disk.
    pub observed: Vec<seccomp_rollout::node::ObservedFile>,
    /// The paths its agent last could not apply (records from before #18 have none).
    #[serde(default)]
    pub errors: Vec<seccomp_rollout::node::FileError>,
}

/// One recorded command or refusal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When it happened (ns since the epoch).
    pub time_ns: u64,
    /// Tells apart entries of the same nanosecond.
    pub seq: u64,
    /// The verified caller, or `unauthenticated`.
    pub actor: String,
    /// The rpc name.
    pub method: String,
    /// A rollout id, a profile, or empty.
    pub target: String,
    /// `OK` or the status code name.
    pub result: String,
    /// A summary or the error message.
    pub message: String,
}

impl AuditEntry {
    /// The entry's key: time, then sequence, big-endian, so keys sort by time.
    pub fn key(&self) -> [u8; 16] {
        let mut key = [0; 16];
        key[..8].copy_from_slice(&self.time_ns.to_be_bytes());
        key[8..].copy_from_slice(&self.seq.to_be_bytes());
        key
    }
}

/// The rollout records and node sightings, cached in memory over a [`Backend`].
#[derive(Clone)]
pub struct RolloutStore {
    backend: Arc<dyn Backend>,
    cache: Arc<RwLock<BTreeMap<u64, Arc<RolloutRecord>>>>,
    /// Records changed by [`RolloutStore::put_lazy`] and not yet given to the backend, and
    /// when the last such batch was.
    lazy: Arc<Mutex<Lazy>>,
}

#[derive(Default)]
struct Lazy {
    pending: BTreeSet<u64>,
    written: Option<Instant>,
}

/// How often lazily stored records go to the backend. Encoding a record costs time linear
/// in its nodes (a 10,000-node rollout is a megabyte of JSON); the engine changes one at
/// every confirmation it sees, so it is written at most this often, not at every change
/// (`perf` had the encoding at a third of the engine's time during a 10,000-node wave).
const LAZY_EVERY: Duration = Duration::from_millis(250);

fn id_number(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}

fn number_of(r: &RolloutRecord) -> Result<u64> {
    id_number(&r.id).ok_or_else(|| Error::invalid(format!("bad rollout id {:?}", r.id)))
}

impl RolloutStore {
    /// The store over `backend`, with every record read into memory.
    pub fn new(backend: impl Backend) -> Result<Self> {
        Self::shared(Arc::new(backend))
    }

    /// The store over a backend the caller keeps a handle to (an etcd backend a replica
    /// also follows), with every record read into memory.
    pub fn shared(backend: Arc<dyn Backend>) -> Result<Self> {
        let cache = backend
            .load_rollouts()?
            .into_iter()
            .map(|(n, r)| (n, Arc::new(r)))
            .collect();
        Ok(RolloutStore {
            backend,
            cache: Arc::new(RwLock::new(cache)),
            lazy: Arc::default(),
        })
    }

    /// Read every record from the backend again, dropping what memory held.
    pub fn reload(&self) -> Result<()> {
        let fresh: BTreeMap<u64, Arc<RolloutRecord>> = self
            .backend
            .load_rollouts()?
            .into_iter()
            .map(|(n, r)| (n, Arc::new(r)))
            .collect();
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.lazy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .clear();
        Ok(())
    }

    /// Read the records `numbers` from the backend again (another replica changed them:
    /// see [`etcd::EtcdBackend::follow`]); a record gone there goes from memory too.
    pub fn refresh(&self, numbers: &[u64]) -> Result<()> {
        let mut fresh = Vec::with_capacity(numbers.len());
        for &n in numbers {
            fresh.push((n, self.backend.load_rollout(n)?));
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for (n, r) in fresh {
            match r {
                Some(r) => cache.insert(n, Arc::new(r)),
                None => cache.remove(&n),
            };
        }
        Ok(())
    }

    /// Open (or create) the embedded sled database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::new(SledBackend::open(dir)?)
    }

    /// A fresh rollout id, never reused.
    pub fn next_id(&self) -> Result<String> {
        Ok(format!("r{}", self.backend.next_number()?))
    }

    /// The nodes that were connected during the last `recent_ms` before this distributor
    /// last stopped (measured from the newest sighting): the ones to wait for after a
    /// restart. A node decommissioned long before is not among them.
    pub fn recent_nodes(&self, recent_ms: u64) -> Result<BTreeSet<String>> {
        let seen = self.backend.load_sightings()?;
        let newest = seen.iter().map(|(_, at)| *at).max().unwrap_or(0);
        Ok(seen
            .into_iter()
            .filter(|(_, at)| *at >= newest.saturating_sub(recent_ms))
            .map(|(name, _)| name)
            .collect())
    }

    /// Record that these nodes are connected at `at_ms` (written with the next flush).
    pub fn saw_nodes(&self, names: &[String], at_ms: u64) -> Result<()> {
        self.backend.write_sightings(names, at_ms)
    }

    /// Every node record.
    pub fn nodes(&self) -> Result<Vec<KnownNode>> {
        self.backend.load_nodes()
    }

    /// Store node records (durable with the next flush).
    pub fn put_nodes(&self, nodes: &[KnownNode]) -> Result<()> {
        for n in nodes {
            self.backend.write_node(n)?;
        }
        Ok(())
    }

    /// Forget nodes (durable with the next flush).
    pub fn remove_nodes(&self, names: &[String]) -> Result<()> {
        for n in names {
            self.backend.remove_node(n)?;
        }
        Ok(())
    }

    /// Append an audit entry (durable with the next flush).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.backend.append_audit(entry)
    }

    /// A page of audit entries (see [`Backend::audit`]).
    pub fn audit(
        &self,
        since_ns: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.backend.audit(since_ns, after, limit)
    }

    /// Remove the audit entries from before `before_ns` (`--audit-retention`).
    pub fn prune_audit(&self, before_ns: u64) -> Result<usize> {
        self.backend.prune_audit(before_ns)
    }

    /// Wait until everything written so far is durable.
    pub async fn flush(&self) -> Result<()> {
        self.write_lazy(true)?;
        self.backend.flush().await
    }

    /// Wait until what the backend was given is durable, without handing it the lazily
    /// stored records first (they go at most every [`LAZY_EVERY`]: encoding a large record
    /// at every flush of node facts would cost more than the facts).
    pub async fn flush_given(&self) -> Result<()> {
        self.backend.flush().await
    }

    /// Give the backend the lazily stored records, when [`LAZY_EVERY`] has passed since the
    /// last time (or at once with `now`). Called on every engine tick and before a flush.
    pub fn write_lazy(&self, now: bool) -> Result<()> {
        let mut lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
        if lazy.pending.is_empty()
            || !(now || lazy.written.is_none_or(|at| at.elapsed() >= LAZY_EVERY))
        {
            return Ok(());
        }
        let pending = std::mem::take(&mut lazy.pending);
        lazy.written = Some(Instant::now());
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        for (i, &n) in pending.iter().enumerate() {
            if let Some(r) = cache.get(&n)
                && let Err(e) = self.backend.write_rollout(n, r)
            {
                // Try these again next time.
                lazy.pending.extend(pending.iter().skip(i).copied());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Store a rollout and wait until it is durable. When that fails, the write is taken
    /// back: memory keeps the previous record (or none), so nothing acts on a record the
    /// disk may not hold, and a later flush does not make it durable behind the caller's
    /// back.
    pub async fn put(&self, r: &RolloutRecord) -> Result<()> {
        let n = number_of(r)?;
        let previous = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&n)
            .cloned();
        // What was stored lazily is made durable with it.
        self.write_lazy(true)?;
        self.backend.write_rollout(n, r)?;
        if let Err(e) = self.backend.flush().await {
            let undone = match &previous {
                Some(p) => self.backend.write_rollout(n, p),
                None => self.backend.remove_rollout(n),
            };
            if let Err(undo) = undone {
                tracing::error!(rollout = %r.id, error = %undo, "cannot take back a record whose flush failed");
            }
            return Err(e);
        }
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n, Arc::new(r.clone()));
        Ok(())
    }

    /// Forget the rollouts `ids` (`--history-retention`), durably; memory lets go of them
    /// once the disk has.
    pub async fn forget(&self, ids: &[String]) -> Result<()> {
        let numbers: Vec<u64> = ids.iter().filter_map(|id| id_number(id)).collect();
        for &n in &numbers {
            self.backend.remove_rollout(n)?;
        }
        self.backend.flush().await?;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for n in numbers {
            cache.remove(&n);
        }
        Ok(())
    }

    /// Store a rollout without waiting for durability (the engine's per-node bookkeeping):
    /// memory has it at once, the backend within [`LAZY_EVERY`] or at the next flush, and
    /// the disk at the backend's next flush (its own periodic one, or a durable `put`).
    pub fn put_lazy(&self, r: &RolloutRecord) -> Result<()> {
        self.put_lazy_owned(r.clone())
    }

    /// [`RolloutStore::put_lazy`] of a record the caller is done with.
    pub fn put_lazy_owned(&self, r: RolloutRecord) -> Result<()> {
        let n = number_of(&r)?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n, Arc::new(r));
        self.lazy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .insert(n);
        self.write_lazy(false)
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
