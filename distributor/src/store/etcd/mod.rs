//! The replicated backend: the distributor's state in etcd (`--etcd-endpoints`), for
//! platforms that keep controller state on a distributed store rather than one disk.
//!
//! Keys, under `--etcd-prefix` (default `/seccomp-distributor`):
//! - `<prefix>/rollouts/<number, 20 digits>`: a rollout record, LZ4-compressed JSON (a
//!   10,000-node record is a megabyte of JSON, and etcd refuses requests over 1.5 MiB by
//!   default; compressed it is a tenth of that);
//! - `<prefix>/next-rollout`: the last rollout number handed out (decimal);
//! - `<prefix>/sightings/<node>`: when the node was last seen connected (ms, decimal);
//! - `<prefix>/nodes/<node>`: its [`KnownNode`] as JSON;
//! - `<prefix>/audit/<time and sequence, 32 hex digits>`: an [`AuditEntry`] as JSON;
//! - `<prefix>/conn/<replica>/<node>`: the node's agent is connected to that replica (empty,
//!   on the replica's presence lease, so a replica that dies takes its keys with it);
//! - `<prefix>/commands/<replica>/<id>` and `<prefix>/results/<replica>/<id>`: a command
//!   a replica that does not lead took, for the leader, and the leader's answer (both on
//!   the asking replica's lease; see [`crate::replica`]).
//!
//! Everything under the prefix is read once at [`EtcdBackend::connect`] (in pages, all at
//! the revision of the first, answers of up to 256 MiB taken) into a mirror the
//! [`Backend`] reads are served from (the trait is synchronous; [`RolloutStore`] caches
//! the records anyway). Writes change the mirror at once and queue the key; [`flush`]
//! sends what is queued in transactions of at most [`TXN_OPS`] operations and
//! [`TXN_BYTES`] bytes (etcd's defaults are 128 operations and 1.5 MiB a request), each
//! key's latest value only, and returns once etcd acknowledged them all (a quorum has them
//! on disk). A flush that fails keeps the keys queued for the next one.
//!
//! With a [`Fence`] (a replica that won the election, see [`crate::leader`]) every
//! transaction first compares the leader key's creation revision: once another replica
//! leads, etcd applies none of this one's writes, the flush fails, and the fence's `lost`
//! token fires.
//!
//! Replicas that serve at once (#18) keep their mirrors current with
//! [`EtcdBackend::follow`]: a watch of the prefix from the revision the mirror was read at,
//! each event applied to the mirror and passed on as a [`Change`]. A replica's own writes
//! come back too and are skipped (the mirror has them, or newer).
//!
//! [`RolloutStore`]: super::RolloutStore
//! [`flush`]: Backend::flush

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use seccomp_rollout::record::RolloutRecord;

mod follow;

use follow::KeyError;

use super::{AuditEntry, Backend, KnownNode};
use crate::BoxFuture;
use crate::error::{Error, Result};
use crate::leader::Fence;

/// Keys read in one request at start, and the largest answer taken (a page of large
/// rollout records is far over tonic's default of 4 MiB).
const LOAD_PAGE: i64 = 128;
const LOAD_MESSAGE: usize = 256 << 20;

/// Most operations in one transaction (etcd's `--max-txn-ops` default).
pub const TXN_OPS: usize = 128;
/// Most bytes of keys and values in one transaction, below etcd's default
/// `--max-request-bytes` (1.5 MiB) with room for the request's own framing.
pub const TXN_BYTES: usize = 1 << 20;

/// How the distributor reaches etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Client URLs of the cluster's members, `http://` or `https://`.
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix (several distributors may share a cluster, each
    /// with its own).
    pub prefix: String,
    /// CA, client certificate and key for `https://` endpoints.
    pub tls: seccomp_server::tls::ClientTls,
    /// User name and password, for a cluster with authentication on.
    pub user: Option<(String, String)>,
    /// How long one request may take.
    pub timeout: Duration,
    /// Write only while this replica leads (see [`crate::leader`]); `None`: a single
    /// distributor, unfenced (a replica sets it with [`EtcdBackend::set_fence`]).
    pub fence: Option<Fence>,
    /// This replica's id and the time to live of its presence lease, when it serves beside
    /// others (`conn/` and `commands/` keys live on that lease); `None`: no presence kept.
    pub presence: Option<(String, Duration)>,
}

impl EtcdSettings {
    /// `endpoints` with the default prefix, no TLS or user, and a 5 s request timeout.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdSettings {
            endpoints,
            prefix: "/seccomp-distributor".to_owned(),
            tls: seccomp_server::tls::ClientTls::default(),
            user: None,
            timeout: Duration::from_secs(5),
            fence: None,
            presence: None,
        }
    }
}

/// A queued change of one key.
#[derive(Debug, Clone)]
enum Write {
    Put(Vec<u8>),
    /// Put on this replica's presence lease.
    Leased(Vec<u8>),
    Delete,
}

/// Keys changed and not yet acknowledged.
type Queued = BTreeMap<String, Write>;
/// One operation of a transaction.
type Op<'a> = (&'a String, &'a Write);

/// What changed in etcd that this replica did not write itself (see
/// [`EtcdBackend::follow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A rollout record was written or removed.
    Rollout(u64),
    /// A node's record was written or removed.
    Node(String),
    /// A node's agent connected to a replica, or left it.
    Presence(String),
    /// A command was put for the leader (its key under `commands/`).
    Command(String),
    /// The leader answered a command (the key under `results/`, and the answer).
    Answer(String, Vec<u8>),
    /// Everything was read again (the watch fell behind etcd's compaction): anything may
    /// have changed.
    Reloaded,
}

#[derive(Default)]
struct Mirror {
    rollouts: BTreeMap<u64, RolloutRecord>,
    next: u64,
    sightings: BTreeMap<String, u64>,
    nodes: BTreeMap<String, KnownNode>,
    audit: BTreeMap<[u8; 16], AuditEntry>,
    /// Node name to the replicas its agent is connected to.
    conn: BTreeMap<String, BTreeSet<String>>,
    /// Commands waiting for the leader, by key after `commands/`.
    commands: BTreeMap<String, Vec<u8>>,
}

/// The distributor's state in etcd.
pub struct EtcdBackend {
    client: Client,
    endpoints: Vec<String>,
    prefix: String,
    fence: Mutex<Option<Fence>>,
    /// What etcd holds, as this replica knows it. Whoever takes several of these locks
    /// takes them in this order: `mirror`, `queued`, `ours`.
    mirror: Mutex<Mirror>,
    /// Keys changed since the last flush.
    queued: Mutex<Queued>,
    /// One flush at a time, so a slow one cannot be overtaken by a later one's older view.
    flushing: tokio::sync::Mutex<()>,
    /// The revision the mirror is current to.
    revision: AtomicI64,
    /// The revision of the last complete read: events up to it are in the mirror.
    loaded: AtomicI64,
    /// Held while the mirror is read or watch events are applied, so a read does not lose
    /// events applied while it ran.
    applying: tokio::sync::Mutex<()>,
    /// The revision each key this replica wrote was last written at: its events are skipped.
    ours: Mutex<HashMap<String, i64>>,
    /// This replica's id and presence lease (0 until granted), when it keeps one.
    replica: Option<String>,
    presence_ttl: Duration,
    lease: AtomicI64,
    /// The nodes whose `conn/` key this replica holds (put again on a new lease).
    present: Mutex<BTreeSet<String>>,
}

fn fenced() -> Error {
    Error::Unavailable(
        "this replica is no longer the leader: etcd refuses its writes (another replica leads)"
            .to_owned(),
    )
}

fn storage(what: impl std::fmt::Display) -> Error {
    Error::Storage(what.to_string())
}

fn etcd_error(endpoints: &[String], e: etcd_client::Error) -> Error {
    Error::Storage(format!("etcd at {}: {e}", endpoints.join(",")))
}

/// A client of the cluster `settings` name, each request bounded by `settings.timeout`.
pub async fn client(settings: &EtcdSettings) -> Result<Client> {
    connect(settings, true).await
}

/// A client for the election and watches: a campaign waits as long as another replica
/// leads and a watch lasts, so its requests have no time limit (the connection's
/// keep-alive still finds a dead member).
pub async fn election_client(settings: &EtcdSettings) -> Result<Client> {
    connect(settings, false).await
}

async fn connect(settings: &EtcdSettings, bounded: bool) -> Result<Client> {
    if settings.endpoints.is_empty() {
        return Err(Error::invalid("no etcd endpoints"));
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.timeout)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if bounded {
        options = options.with_timeout(settings.timeout);
    }
    if settings.tls.is_set() {
        options = options.with_tls(settings.tls.config().map_err(storage)?);
    }
    if let Some((user, password)) = &settings.user {
        options = options.with_user(user.clone(), password.clone());
    }
    Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|e| etcd_error(&settings.endpoints, e))
}

/// The end of the key range of everything under `root` (which ends with `/`).
fn range_end(root: &str) -> Vec<u8> {
    let mut end = root.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl EtcdBackend {
    /// Connect to the cluster and read everything under the prefix (and, with
    /// `settings.presence`, take this replica's presence lease).
    pub async fn connect(settings: EtcdSettings) -> Result<Self> {
        let prefix = settings.prefix.trim_end_matches('/').to_owned();
        if !prefix.starts_with('/') {
            return Err(Error::invalid(format!(
                "etcd prefix {:?} must start with /",
                settings.prefix
            )));
        }
        let client = client(&settings).await?;
        let endpoints = settings.endpoints.clone();
        let (replica, presence_ttl) = match &settings.presence {
            Some((id, ttl)) => (Some(id.clone()), *ttl),
            None => (None, Duration::from_secs(10)),
        };
        let backend = EtcdBackend {
            client,
            endpoints: endpoints.clone(),
            prefix,
            fence: Mutex::new(settings.fence.clone()),
            mirror: Mutex::new(Mirror::default()),
            queued: Mutex::new(BTreeMap::new()),
            flushing: tokio::sync::Mutex::new(()),
            revision: AtomicI64::new(0),
            loaded: AtomicI64::new(0),
            applying: tokio::sync::Mutex::new(()),
            ours: Mutex::new(HashMap::new()),
            replica,
            presence_ttl,
            lease: AtomicI64::new(0),
            present: Mutex::new(BTreeSet::new()),
        };
        if backend.replica.is_some() {
            backend.grant_presence().await?;
        }
        backend.load().await?;
        tracing::info!(endpoints = %endpoints.join(","), prefix = %backend.prefix, "state in etcd");
        Ok(backend)
    }

    /// Read every key under the prefix again, a page at a time, all at the first page's
    /// revision, into a fresh mirror (with what is queued here on top).
    pub async fn load(&self) -> Result<()> {
        let _applying = self.applying.lock().await;
        let root = format!("{}/", self.prefix);
        let end = range_end(&root);
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(LOAD_MESSAGE);
        let mut from = root.clone().into_bytes();
        let mut revision = 0;
        let mut m = Mirror::default();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LOAD_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let reply = kv
                .get(from.clone(), Some(options))
                .await
                .map_err(|e| etcd_error(&self.endpoints, e))?;
            if revision == 0 {
                revision = reply.header().map_or(0, |h| h.revision());
            }
            for kv in reply.kvs() {
                let key = kv.key_str().map_err(storage)?;
                let rest = &key[root.len()..];
                match follow::apply(&mut m, rest, Some(kv.value())) {
                    Ok(_) => {}
                    Err(KeyError::Unknown) => {
                        tracing::warn!(key = %key, "ignoring an unknown key under the etcd prefix")
                    }
                    Err(e) => return Err(storage(format!("etcd key {key}: {e}"))),
                }
            }
            match reply.kvs().last() {
                Some(last) if reply.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        // A number is never handed out twice, even when its record was removed.
        m.next = m.next.max(m.rollouts.keys().max().copied().unwrap_or(0));
        let mut mirror = self.mirror();
        // What this replica changed and etcd has not acknowledged yet is newer.
        for (key, write) in self.queued.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let value = match write {
                Write::Put(v) | Write::Leased(v) => Some(v.as_slice()),
                Write::Delete => None,
            };
            let _ = follow::apply(&mut m, &key[root.len()..], value);
        }
        m.next = m.next.max(mirror.next);
        *mirror = m;
        self.revision.store(revision, Ordering::Release);
        self.loaded.store(revision, Ordering::Release);
        Ok(())
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, key: String, value: Write) {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
    }

    fn rollout_key(&self, n: u64) -> String {
        format!("{}/rollouts/{n:020}", self.prefix)
    }

    /// Keys queued and not yet acknowledged by etcd (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.queued.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Write only while `fence` holds from now on (this replica was elected), or unfenced
    /// (`None`: it no longer leads; only node facts and presence are written then).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(|e| e.into_inner()) = fence;
    }

    /// What this replica's writes are fenced by now (`None`: it does not lead).
    pub fn fence(&self) -> Option<Fence> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `key` holds facts any replica may write (node records, presence), rather
    /// than the leader's state: such writes refused by a lost fence go again unfenced.
    fn any_replica_writes(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with("/nodes/") || rest.starts_with("/conn/"))
    }

    /// This replica's id, when it keeps a presence.
    pub fn replica(&self) -> Option<&str> {
        self.replica.as_deref()
    }

    /// The client (for the election, which shares the connection).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The key prefix, without its trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// `ops` cut into transactions etcd accepts: at most [`TXN_OPS`] operations and (unless one
/// value alone is larger) [`TXN_BYTES`] bytes each.
fn batches(ops: &Queued) -> Vec<Vec<Op<'_>>> {
    let mut out: Vec<Vec<Op<'_>>> = Vec::new();
    let mut bytes = 0;
    for (k, v) in ops {
        let size = k.len()
            + match v {
                Write::Put(v) | Write::Leased(v) => v.len(),
                Write::Delete => 0,
            };
        let full = out
            .last()
            .is_none_or(|b| b.len() >= TXN_OPS || (bytes + size > TXN_BYTES && !b.is_empty()));
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(b) = out.last_mut() {
            b.push((k, v));
        }
    }
    out
}

impl Backend for EtcdBackend {
    fn load_rollouts(&self) -> Result<Vec<(u64, RolloutRecord)>> {
        Ok(self
            .mirror()
            .rollouts
            .iter()
            .map(|(n, r)| (*n, r.clone()))
            .collect())
    }

    fn load_rollout(&self, number: u64) -> Result<Option<RolloutRecord>> {
        Ok(self.mirror().rollouts.get(&number).cloned())
    }

    fn write_rollout(&self, number: u64, record: &RolloutRecord) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(storage)?;
        let value = lz4_flex::compress_prepend_size(&json);
        self.mirror().rollouts.insert(number, record.clone());
        self.queue(self.rollout_key(number), Write::Put(value));
        Ok(())
    }

    fn remove_rollout(&self, number: u64) -> Result<()> {
        self.mirror().rollouts.remove(&number);
        self.queue(self.rollout_key(number), Write::Delete);
        Ok(())
    }

    fn next_number(&self) -> Result<u64> {
        let n = {
            let mut m = self.mirror();
            m.next += 1;
            m.next
        };
        self.queue(
            format!("{}/next-rollout", self.prefix),
            Write::Put(n.to_string().into_bytes()),
        );
        Ok(n)
    }

    fn load_sightings(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .mirror()
            .sightings
            .iter()
            .map(|(n, at)| (n.clone(), *at))
            .collect())
    }

    fn write_sightings(&self, names: &[String], at_ms: u64) -> Result<()> {
        let mut m = self.mirror();
        for name in names {
            m.sightings.insert(name.clone(), at_ms);
            self.queue(
                format!("{}/sightings/{name}", self.prefix),
                Write::Put(at_ms.to_string().into_bytes()),
            );
        }
        Ok(())
    }

    fn load_nodes(&self) -> Result<Vec<KnownNode>> {
        Ok(self.mirror().nodes.values().cloned().collect())
    }

    fn write_node(&self, node: &KnownNode) -> Result<()> {
        let json = serde_json::to_vec(node).map_err(storage)?;
        self.mirror().nodes.insert(node.name.clone(), node.clone());
        self.queue(
            format!("{}/nodes/{}", self.prefix, node.name),
            Write::Put(json),
        );
        Ok(())
    }

    fn remove_node(&self, name: &str) -> Result<()> {
        self.mirror().nodes.remove(name);
        self.queue(format!("{}/nodes/{name}", self.prefix), Write::Delete);
        Ok(())
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let json = serde_json::to_vec(entry).map_err(storage)?;
        let key = entry.key();
        self.mirror().audit.insert(key, entry.clone());
        self.queue(
            format!("{}/audit/{}", self.prefix, hex::encode(key)),
            Write::Put(json),
        );
        Ok(())
    }

    fn audit(&self, since_ns: u64, after: Option<&[u8]>, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut start = [0u8; 16];
        start[..8].copy_from_slice(&since_ns.to_be_bytes());
        let m = self.mirror();
        let from = match after.and_then(|k| <[u8; 16]>::try_from(k).ok()) {
            Some(key) if key >= start => std::ops::Bound::Excluded(key),
            _ => std::ops::Bound::Included(start),
        };
        Ok(m.audit
            .range((from, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn prune_audit(&self, before_ns: u64) -> Result<usize> {
        let mut end = [0u8; 16];
        end[..8].copy_from_slice(&before_ns.to_be_bytes());
        let mut m = self.mirror();
        let old: Vec<[u8; 16]> = m
            .audit
            .range(..end)
            .take(seccomp_server::retention::PRUNE_BATCH)
            .map(|(k, _)| *k)
            .collect();
        for key in &old {
            m.audit.remove(key);
            self.queue(
                format!("{}/audit/{}", self.prefix, hex::encode(key)),
                Write::Delete,
            );
        }
        Ok(old.len())
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let _one = self.flushing.lock().await;
            let fence = self.fence();
            if let Some(fence) = &fence
                && fence.lost.is_cancelled()
            {
                return Err(fenced());
            }
            let ops = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|e| e.into_inner()));
            if ops.is_empty() {
                return Ok(());
            }
            let lease = self.presence_lease();
            let mut kv = self.client.kv_client();
            let mut sent = 0;
            let mut failure = None;
            for batch in batches(&ops) {
                let txn = match &fence {
                    Some(f) => Txn::new().when([Compare::create_revision(
                        f.key.clone(),
                        CompareOp::Equal,
                        f.revision,
                    )]),
                    None => Txn::new(),
                };
                let txn = txn.and_then(
                    batch
                        .iter()
                        .map(|(k, v)| match v {
                            Write::Put(v) => TxnOp::put(k.as_bytes(), v.as_slice(), None),
                            Write::Leased(v) => TxnOp::put(
                                k.as_bytes(),
                                v.as_slice(),
                                Some(PutOptions::new().with_lease(lease)),
                            ),
                            Write::Delete => TxnOp::delete(k.as_bytes(), None),
                        })
                        .collect::<Vec<_>>(),
                );
                match kv.txn(txn).await {
                    Ok(reply) if reply.succeeded() => {
                        sent += batch.len();
                        if let Some(revision) = reply.header().map(|h| h.revision()) {
                            let mut ours = self.ours.lock().unwrap_or_else(|e| e.into_inner());
                            for (k, _) in &batch {
                                ours.insert((*k).clone(), revision);
                            }
                        }
                    }
                    Ok(_) => {
                        // The comparison failed: another replica leads. Nothing of the
                        // leader's state from this one is written again; node facts and
                        // presence go again, unfenced, once it stepped down.
                        if let Some(f) = &fence {
                            tracing::error!(
                                "a write was refused: another replica leads now; stepping down"
                            );
                            f.lost.cancel();
                        }
                        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
                        for (k, v) in ops.into_iter().skip(sent) {
                            if self.any_replica_writes(&k) {
                                queued.entry(k).or_insert(v);
                            }
                        }
                        return Err(fenced());
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let Some(e) = failure else {
                return Ok(());
            };
            // What was not acknowledged goes again with the next flush, unless the key
            // changed since (its newer value is queued already).
            let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            for (k, v) in ops.into_iter().skip(sent) {
                queued.entry(k).or_insert(v);
            }
            // A request that got no answer may still be applied (a proposal committed once
            // the quorum is back): say so, rather than that it failed.
            Err(Error::Unavailable(format!(
                "etcd did not confirm the write ({e}); it may or may not have been applied: \
                 look before retrying"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_within_etcds_limits() {
        let mut ops = Queued::new();
        for i in 0..300 {
            ops.insert(format!("k{i:03}"), Write::Put(vec![0; 10]));
        }
        let b = batches(&ops);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [128, 128, 44]);
        let mut big = Queued::new();
        big.insert("a".into(), Write::Put(vec![0; 600 << 10]));
        big.insert("b".into(), Write::Leased(vec![0; 600 << 10]));
        big.insert("c".into(), Write::Delete);
        big.insert("d".into(), Write::Put(vec![0; 2 << 20]));
        let b = batches(&big);
        // a; b and the delete; d alone (too large for etcd's default: its error says so).
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 1]);
    }
}
