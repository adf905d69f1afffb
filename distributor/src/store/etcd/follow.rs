//! What replicas that serve at once share through the etcd backend (#18): the watch that
//! keeps the mirror current ([`EtcdBackend::follow`], each event applied by [`apply`]), this
//! replica's presence (`conn/` keys on its lease), and the commands passed to the leader
//! (`commands/`, `results/`).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tokio_util::sync::CancellationToken;

use super::{Change, EtcdBackend, Mirror, Write, etcd_error, range_end};
use crate::error::Result;
use crate::leader::Fence;
use crate::store::{AuditEntry, KnownNode};

/// Why a key under the prefix could not be applied.
#[derive(Debug)]
pub(super) enum KeyError {
    /// Not a key this backend writes.
    Unknown,
    /// Its value does not decode.
    Bad(String),
}

impl From<String> for KeyError {
    fn from(why: String) -> Self {
        KeyError::Bad(why)
    }
}

impl From<&str> for KeyError {
    fn from(why: &str) -> Self {
        KeyError::Bad(why.to_owned())
    }
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Unknown => f.write_str("unknown key"),
            KeyError::Bad(why) => f.write_str(why),
        }
    }
}

/// Apply one key's value (`None`: deleted), the key taken after the prefix's `/`, to `m`;
/// what changed, for a follower.
pub(super) fn apply(
    m: &mut Mirror,
    rest: &str,
    value: Option<&[u8]>,
) -> std::result::Result<Option<Change>, KeyError> {
    let text = |v: &[u8]| {
        std::str::from_utf8(v)
            .map(str::to_owned)
            .map_err(|e| e.to_string())
    };
    if let Some(n) = rest.strip_prefix("rollouts/") {
        let n: u64 = n
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        match value {
            Some(v) => {
                let json = lz4_flex::decompress_size_prepended(v).map_err(|e| e.to_string())?;
                let record = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
                m.rollouts.insert(n, record);
            }
            None => {
                m.rollouts.remove(&n);
            }
        }
        return Ok(Some(Change::Rollout(n)));
    }
    if rest == "next-rollout" {
        if let Some(v) = value {
            m.next = text(v)?
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())?;
        }
        return Ok(None);
    }
    if let Some(name) = rest.strip_prefix("sightings/") {
        match value {
            Some(v) => {
                let at = text(v)?
                    .parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())?;
                m.sightings.insert(name.to_owned(), at);
            }
            None => {
                m.sightings.remove(name);
            }
        }
        return Ok(None);
    }
    if let Some(name) = rest.strip_prefix("nodes/") {
        match value {
            Some(v) => {
                let node: KnownNode = serde_json::from_slice(v).map_err(|e| e.to_string())?;
                m.nodes.insert(name.to_owned(), node);
            }
            None => {
                m.nodes.remove(name);
            }
        }
        return Ok(Some(Change::Node(name.to_owned())));
    }
    if let Some(key) = rest.strip_prefix("audit/") {
        match value {
            Some(v) => {
                let entry: AuditEntry = serde_json::from_slice(v).map_err(|e| e.to_string())?;
                m.audit.insert(entry.key(), entry);
            }
            None => {
                if let Ok(k) = hex::decode(key)
                    && let Ok(k) = <[u8; 16]>::try_from(k)
                {
                    m.audit.remove(&k);
                }
            }
        }
        return Ok(None);
    }
    if let Some(who) = rest.strip_prefix("conn/") {
        let (replica, node) = who.split_once('/').ok_or("no node in the key")?;
        match value {
            Some(_) => {
                m.conn
                    .entry(node.to_owned())
                    .or_default()
                    .insert(replica.to_owned());
            }
            None => {
                if let Some(set) = m.conn.get_mut(node) {
                    set.remove(replica);
                    if set.is_empty() {
                        m.conn.remove(node);
                    }
                }
            }
        }
        return Ok(Some(Change::Presence(node.to_owned())));
    }
    if let Some(id) = rest.strip_prefix("commands/") {
        return Ok(match value {
            Some(v) => {
                m.commands.insert(id.to_owned(), v.to_vec());
                Some(Change::Command(id.to_owned()))
            }
            None => {
                m.commands.remove(id);
                None
            }
        });
    }
    if let Some(id) = rest.strip_prefix("results/") {
        return Ok(value.map(|v| Change::Answer(id.to_owned(), v.to_vec())));
    }
    if rest.starts_with("leader/") {
        // The election's keys live under the prefix too.
        return Ok(None);
    }
    Err(KeyError::Unknown)
}

impl EtcdBackend {
    /// Node `name`'s stored record, and whether its agent is connected to a replica other
    /// than this one.
    pub fn node(&self, name: &str) -> (Option<KnownNode>, bool) {
        let m = self.mirror();
        let elsewhere = m.conn.get(name).is_some_and(|replicas| {
            replicas
                .iter()
                .any(|r| Some(r.as_str()) != self.replica.as_deref())
        });
        (m.nodes.get(name).cloned(), elsewhere)
    }

    /// Every node with a record or a connection.
    pub fn node_names(&self) -> Vec<String> {
        let m = self.mirror();
        let mut names: BTreeSet<String> = m.nodes.keys().cloned().collect();
        names.extend(m.conn.keys().cloned());
        names.into_iter().collect()
    }

    /// Say that node `name`'s agent is connected to this replica, or no longer is (sent with
    /// the next flush; on the presence lease, so it goes when this replica does).
    pub fn set_present(&self, name: &str, connected: bool) {
        let Some(me) = &self.replica else {
            return;
        };
        let key = format!("{}/conn/{me}/{name}", self.prefix);
        let mut present = self.present.lock().unwrap_or_else(|e| e.into_inner());
        if connected {
            present.insert(name.to_owned());
            self.queue(key, Write::Leased(Vec::new()));
        } else {
            present.remove(name);
            self.queue(key, Write::Delete);
        }
    }

    pub(super) async fn grant_presence(&self) -> Result<i64> {
        let ttl = i64::try_from(self.presence_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = self
            .client
            .lease_client()
            .grant(ttl, None)
            .await
            .map_err(|e| etcd_error(&self.endpoints, e))?
            .id();
        self.lease.store(lease, Ordering::Release);
        Ok(lease)
    }

    /// Give the presence lease back (on the way out): this replica's `conn/` keys, and the
    /// commands it passed, go at once rather than when the lease runs out.
    pub async fn revoke_presence(&self) {
        let lease = self.lease.swap(0, Ordering::AcqRel);
        if lease != 0 {
            let bound = Duration::from_secs(2);
            let _ = tokio::time::timeout(bound, self.client.lease_client().revoke(lease)).await;
        }
    }

    /// Keep this replica's presence lease alive until `stop`; when it is lost (etcd away
    /// for longer than its time to live), take a new one and put this replica's `conn/`
    /// keys again on it.
    pub async fn keep_presence(&self, stop: CancellationToken) {
        loop {
            let lease = self.lease.load(Ordering::Acquire);
            let lost = CancellationToken::new();
            let keeper = crate::leader::keep_alive(
                self.client.clone(),
                lease,
                self.presence_ttl,
                lost.clone(),
            );
            tokio::select! {
                () = stop.cancelled() => return,
                () = keeper => {}
            }
            tracing::warn!(
                lease,
                "this replica's presence lease was lost; taking a new one"
            );
            loop {
                match self.grant_presence().await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "no presence lease yet; retrying in a second");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
            if let Some(me) = &self.replica {
                let names: Vec<String> = self
                    .present
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                for name in names {
                    self.queue(
                        format!("{}/conn/{me}/{name}", self.prefix),
                        Write::Leased(Vec::new()),
                    );
                }
            }
        }
    }

    /// Keep the mirror current until `stop`: watch everything under the prefix from the
    /// revision it was read at, apply each event another writer made, and send what
    /// changed on `changes`. A watch that breaks is opened again from where it was; one
    /// that fell behind etcd's compaction reads everything again ([`Change::Reloaded`]).
    pub async fn follow(
        &self,
        watcher: Client,
        changes: tokio::sync::mpsc::UnboundedSender<Change>,
        stop: CancellationToken,
    ) {
        let root = format!("{}/", self.prefix);
        let pause = || async {
            tokio::select! {
                () = stop.cancelled() => false,
                () = tokio::time::sleep(Duration::from_secs(1)) => true,
            }
        };
        loop {
            let from = self.revision.load(Ordering::Acquire) + 1;
            let options = WatchOptions::new()
                .with_range(range_end(&root))
                .with_start_revision(from);
            let mut client = watcher.watch_client();
            let opened = tokio::select! {
                () = stop.cancelled() => return,
                opened = client.watch(root.clone(), Some(options)) => opened,
            };
            let mut stream = match opened {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch etcd; trying again in a second");
                    if pause().await {
                        continue;
                    }
                    return;
                }
            };
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    m = stream.message() => m,
                };
                let reply = match message {
                    Ok(Some(reply)) => reply,
                    Ok(None) | Err(_) => {
                        tracing::warn!("the etcd watch broke; opening it again");
                        break;
                    }
                };
                if reply.compact_revision() > 0 || reply.canceled() {
                    tracing::warn!(
                        compacted = reply.compact_revision(),
                        "the etcd watch fell behind; reading everything again"
                    );
                    match self.load().await {
                        Ok(()) => {
                            let _ = changes.send(Change::Reloaded);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the state again"),
                    }
                    break;
                }
                let applying = self.applying.lock().await;
                let loaded = self.loaded.load(Ordering::Acquire);
                let mut seen = Vec::new();
                {
                    // The order every path takes: mirror, then queue, then what was ours.
                    let mut m = self.mirror();
                    let queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
                    let ours = self.ours.lock().unwrap_or_else(|e| e.into_inner());
                    for event in reply.events() {
                        let Some(kv) = event.kv() else { continue };
                        let revision = kv.mod_revision();
                        self.revision.fetch_max(revision, Ordering::AcqRel);
                        let Ok(key) = kv.key_str() else { continue };
                        if revision <= loaded
                            || queued.contains_key(key)
                            || ours.get(key).is_some_and(|r| *r >= revision)
                        {
                            continue;
                        }
                        let Some(rest) = key.strip_prefix(root.as_str()) else {
                            continue;
                        };
                        let value = match event.event_type() {
                            EventType::Put => Some(kv.value()),
                            EventType::Delete => None,
                        };
                        match apply(&mut m, rest, value) {
                            Ok(Some(change)) => seen.push(change),
                            Ok(None) => {}
                            Err(e) => tracing::debug!(key, error = %e, "watch event ignored"),
                        }
                    }
                }
                drop(applying);
                for change in seen {
                    if changes.send(change).is_err() {
                        return;
                    }
                }
            }
            if !pause().await {
                return;
            }
        }
    }

    /// The commands waiting for the leader, by key after `commands/`, oldest first.
    pub fn command_ids(&self) -> Vec<String> {
        self.mirror().commands.keys().cloned().collect()
    }

    /// Command `id` (its key after `commands/`), while it waits.
    pub fn command(&self, id: &str) -> Option<Vec<u8>> {
        self.mirror().commands.get(id).cloned()
    }

    /// This replica's presence lease (0 when it keeps none).
    pub fn presence_lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    /// Put command `id` (this replica's, `<replica>/<n>`) for the leader, on the presence
    /// lease, now.
    pub async fn put_command(&self, id: &str, value: Vec<u8>) -> Result<()> {
        let key = format!("{}/commands/{id}", self.prefix);
        let options = PutOptions::new().with_lease(self.presence_lease());
        self.client
            .kv_client()
            .put(key, value, Some(options))
            .await
            .map_err(|e| etcd_error(&self.endpoints, e))?;
        Ok(())
    }

    /// Take command `id` away: by the leader (fenced) to run it, or by the replica that put
    /// it when no leader took it in time. `true` when it was still there, so this caller
    /// has it (and nobody else will).
    pub async fn take_command(&self, id: &str, fenced_by: Option<&Fence>) -> Result<bool> {
        let key = format!("{}/commands/{id}", self.prefix);
        let mut when = vec![Compare::version(key.clone(), CompareOp::Greater, 0)];
        if let Some(f) = fenced_by {
            when.push(Compare::create_revision(
                f.key.clone(),
                CompareOp::Equal,
                f.revision,
            ));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(key.clone(), None)]);
        let reply = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| etcd_error(&self.endpoints, e))?;
        if reply.succeeded() {
            self.mirror().commands.remove(id);
        }
        Ok(reply.succeeded())
    }

    /// Put the answer to command `id` on `lease` (the asking replica's: it goes with it).
    pub async fn put_answer(&self, id: &str, value: Vec<u8>, lease: i64) -> Result<()> {
        let key = format!("{}/results/{id}", self.prefix);
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        self.client
            .kv_client()
            .put(key, value, options)
            .await
            .map_err(|e| etcd_error(&self.endpoints, e))?;
        Ok(())
    }

    /// Delete the answer to command `id` (read by the replica that asked).
    pub async fn delete_answer(&self, id: &str) -> Result<()> {
        let key = format!("{}/results/{id}", self.prefix);
        self.client
            .kv_client()
            .delete(key, None)
            .await
            .map_err(|e| etcd_error(&self.endpoints, e))?;
        Ok(())
    }
}
