//! Storage: the registry's records in sled, laid out so that every read the API needs is
//! one lookup or one range scan of a single profile's keys.
//!
//! Trees (`\0` cannot occur in a profile name, so it ends the name part of a key; numbers are
//! big-endian so byte order is numeric order):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `profiles` | `name` | [`ProfileRecord`] JSON: next version number, latest live version, stored count |
//! | `versions` | `name \0 version` | [`VersionMeta`] JSON |
//! | `content` | `name \0 version` | the published bytes, LZ4-compressed (see below) |
//! | `digests` | `name \0 digest \0 version` | empty |
//! | `audit` | `time_ns id` | [`AuditEntry`] JSON |
//! | `journal` | `commits` | the commit journal ([`crate::journal`]) |
//!
//! - latest: `profiles[name].latest_live`, then `versions[name, v]`;
//! - history: a reverse range scan of `versions` under `name \0`;
//! - by digest: a reverse scan of `digests` under `name \0 digest \0` (usually one key);
//! - audit since T: a range scan of `audit` from `T`.
//!
//! Content is stored as a `0x01` tag byte followed by an LZ4 block with its size in front:
//! Docker's default profile shrinks from 13 KiB to 4 KiB, which keeps the flush on the
//! publish path short. Content written before compression was introduced is the raw JSON,
//! which can never start with `0x01`, and is returned as it is.
//!
//! Writers are serialized by the service. A mutation (publish, deprecate, delete) goes
//! through the commit journal ([`crate::journal`]): when [`Store::insert_version`] and its
//! siblings return, the mutation is on disk, whole, and visible to readers; a crash at any
//! point leaves either all of it or none of it. Lone audit entries are plain inserts made
//! durable by [`Store::flush`].

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seccomp_profile::{Diagnostic, Severity};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::error::{Error, Result};
use crate::journal::{self, TreeId, Write};

/// Nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        UnixNanos(nanos)
    }
}

/// A validation diagnostic as stored with a version (the code as its stable string, so
/// records stay readable when the library adds codes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Stable kebab-case code.
    pub code: String,
    /// JSON pointer; `""` for the whole document.
    pub path: String,
    /// One sentence.
    pub message: String,
}

impl From<&Diagnostic> for Finding {
    fn from(d: &Diagnostic) -> Self {
        Finding {
            severity: d.severity,
            code: d.code.as_str().to_owned(),
            path: d.path.clone(),
            message: d.message.clone(),
        }
    }
}

/// Per-profile bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The number the next publish gets; only ever grows, so numbers are never reused.
    pub next_version: u64,
    /// Highest live (neither deprecated nor deleted) version; 0 when there is none.
    pub latest_live: u64,
    /// Stored (not deleted) versions, deprecated ones included.
    pub stored: u64,
}

/// Why and by whom a version was deprecated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprecation {
    /// Reason given.
    pub reason: String,
    /// When.
    pub at: UnixNanos,
    /// Actor of the Deprecate call.
    pub by: String,
}

/// Everything about one version except its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// Profile name.
    pub name: String,
    /// Version number, 1 or more.
    pub version: u64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Content size in bytes.
    pub size: u64,
    /// When it was stored.
    pub created_at: UnixNanos,
    /// Actor of the publish.
    pub author: String,
    /// Description given at publish time.
    pub description: String,
    /// Validation warnings at publish time.
    pub warnings: Vec<Finding>,
    /// Set once the version is deprecated.
    pub deprecation: Option<Deprecation>,
}

impl VersionMeta {
    /// Neither deprecated nor deleted (a deleted version has no record at all).
    pub fn is_live(&self) -> bool {
        self.deprecation.is_none()
    }
}

/// One recorded mutating call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the call completed.
    pub time: UnixNanos,
    /// Who made it.
    pub actor: String,
    /// The rpc name (`Publish`, `Deprecate`, `DeleteVersion`).
    pub method: String,
    /// `name@version`, or `name`.
    pub target: String,
    /// `OK` or the status code name.
    pub result: String,
    /// Summary or error message.
    pub message: String,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// A profile in a listing.
#[derive(Debug, Clone)]
pub struct ProfileSummary {
    /// Profile name.
    pub name: String,
    /// Bookkeeping.
    pub record: ProfileRecord,
    /// The latest live version, when there is one.
    pub latest: Option<VersionMeta>,
    /// When the newest stored version was created.
    pub updated_at: Option<UnixNanos>,
}

fn version_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

fn version_key(name: &str, version: u64) -> Vec<u8> {
    let mut key = version_prefix(name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn digest_prefix(name: &str, digest: &str) -> Vec<u8> {
    let mut key = version_prefix(name);
    key.extend_from_slice(digest.as_bytes());
    key.push(0);
    key
}

fn digest_key(name: &str, digest: &str, version: u64) -> Vec<u8> {
    let mut key = digest_prefix(name, digest);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn decode<T: DeserializeOwned>(what: &dyn Fn() -> String, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: what(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt {
        key: "(encoding)".to_owned(),
        reason: e.to_string(),
    })
}

/// Tag of compressed content: an LZ4 block with its uncompressed size (`u32`, little-endian)
/// in front. Raw JSON cannot start with this byte.
const PACKED_LZ4: u8 = 1;

/// Compressed content claiming more than this is corrupt (the gRPC message limit keeps real
/// profiles far below it), not a reason to allocate.
const MAX_UNPACKED: usize = 256 << 20;

fn pack(content: &[u8]) -> Vec<u8> {
    let compressed = lz4_flex::block::compress_prepend_size(content);
    let mut out = Vec::with_capacity(1 + compressed.len());
    out.push(PACKED_LZ4);
    out.extend_from_slice(&compressed);
    out
}

fn unpack(what: &dyn Fn() -> String, stored: &[u8]) -> Result<Vec<u8>> {
    let Some((&PACKED_LZ4, packed)) = stored.split_first() else {
        // Stored before content was compressed: the bytes as published.
        return Ok(stored.to_vec());
    };
    let corrupt = |reason: String| Error::Corrupt {
        key: what(),
        reason,
    };
    let (size, block) = packed
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("compressed content without its size".into()))?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > MAX_UNPACKED {
        return Err(corrupt(format!("compressed content claims {size} bytes")));
    }
    let bytes = lz4_flex::block::decompress(block, size)
        .map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
    if bytes.len() != size {
        return Err(corrupt(format!(
            "decompressed to {} bytes, expected {size}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// How long [`Store::open`] waits for a database file locked by another handle.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The key of the journal's only entry.
const JOURNAL_KEY: &[u8] = b"commits";

/// A journal entry whose changes may not be on disk yet.
struct Pending {
    /// Flushes started when its changes had been applied: a flush numbered above this, once
    /// completed, has made them durable.
    applied_at: u64,
    /// The encoded entry.
    entry: Vec<u8>,
}

/// Commit bookkeeping shared by the clones of a store.
#[derive(Default)]
struct Commits {
    /// Serializes commits (held across the flush) and lists the entries to keep journalled.
    pending: tokio::sync::Mutex<Vec<Pending>>,
    /// Flushes started so far (each takes the next number).
    started: AtomicU64,
    /// The highest number of a completed flush.
    done: AtomicU64,
    /// Set when a commit may be journalled but could not be applied or taken back: later
    /// commits are refused until a restart replays the journal, so none can be overtaken by
    /// it.
    broken: AtomicBool,
}

/// Clamp a requested page size: 0 means 100, at most 1000.
pub fn page_size(requested: u32) -> usize {
    match requested {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

fn bad_token() -> Error {
    Error::InvalidArgument("invalid page_token (pass next_page_token of a previous reply)".into())
}

/// The registry's sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    profiles: sled::Tree,
    versions: sled::Tree,
    content: sled::Tree,
    digests: sled::Tree,
    audit: sled::Tree,
    journal: sled::Tree,
    commits: Arc<Commits>,
}

/// What one publish writes.
pub struct NewVersion<'a> {
    /// The profile's record after the publish.
    pub record: &'a ProfileRecord,
    /// The new version.
    pub meta: &'a VersionMeta,
    /// Its bytes.
    pub content: &'a [u8],
    /// The audit entry of the call.
    pub audit: &'a AuditEntry,
}

impl Store {
    /// Open (or create) the database in `dir`, first applying what the commit journal holds
    /// from before a crash.
    ///
    /// sled locks the database file. A handle being dropped lets go of the lock only once
    /// sled's I/O threads are done with it, a moment later, and a restarting registry may
    /// find its predecessor still exiting; so a taken lock is retried for up to
    /// [`LOCK_WAIT`] before the error is returned. Blocks meanwhile.
    pub fn open(dir: &Path) -> Result<Store> {
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        let store = Store {
            profiles: db.open_tree("profiles")?,
            versions: db.open_tree("versions")?,
            content: db.open_tree("content")?,
            digests: db.open_tree("digests")?,
            audit: db.open_tree("audit")?,
            journal: db.open_tree("journal")?,
            commits: Arc::default(),
            db,
        };
        store.replay()?;
        Ok(store)
    }

    /// Apply every journalled commit, oldest first, make the result durable and empty the
    /// journal. Commits that were already applied are applied again, which changes nothing:
    /// every later mutation is later in the journal.
    fn replay(&self) -> Result<()> {
        let Some(value) = self.journal.get(JOURNAL_KEY)? else {
            return Ok(());
        };
        let entries = journal::decode(&value).map_err(|reason| Error::Corrupt {
            key: "journal/commits".into(),
            reason,
        })?;
        for writes in &entries {
            self.apply(writes)?;
        }
        self.db.flush()?;
        self.journal.remove(JOURNAL_KEY)?;
        self.db.flush()?;
        info!(commits = entries.len(), "applied the commit journal");
        Ok(())
    }

    fn tree(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Profiles => &self.profiles,
            TreeId::Versions => &self.versions,
            TreeId::Content => &self.content,
            TreeId::Digests => &self.digests,
            TreeId::Audit => &self.audit,
        }
    }

    fn apply(&self, writes: &[Write]) -> Result<()> {
        for w in writes {
            let tree = self.tree(w.tree);
            match &w.value {
                Some(value) => tree.insert(w.key.as_slice(), value.as_slice())?,
                None => tree.remove(w.key.as_slice())?,
            };
        }
        Ok(())
    }

    /// Make `writes` one atomic, durable mutation (see [`crate::journal`]): journal them,
    /// flush, apply. Runs as a task of its own, so a caller that goes away cannot leave a
    /// commit journalled but not applied.
    async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        let this = self.clone();
        tokio::spawn(async move { this.commit_now(writes).await })
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    async fn commit_now(&self, writes: Vec<Write>) -> Result<()> {
        let commits = &self.commits;
        let mut pending = commits.pending.lock().await;
        if commits.broken.load(Ordering::SeqCst) {
            return Err(Error::Broken);
        }
        // Oldest first: an entry leaves only with every entry before it.
        let durable = commits.done.load(Ordering::SeqCst);
        let settled = pending
            .iter()
            .position(|p| p.applied_at >= durable)
            .unwrap_or(pending.len());
        pending.drain(..settled);
        let entry = journal::encode_entry(&writes)?;
        let kept = journal::encode(pending.iter().map(|p| p.entry.as_slice()))?;
        let mut with_entry = kept.clone();
        journal::append(&mut with_entry, &entry)?;
        self.journal.insert(JOURNAL_KEY, with_entry)?;
        if let Err(e) = self.flush().await {
            // Not acknowledged, so it must not be applied at the next start either: take it
            // back out, durably, or stop committing until a restart settles what happened.
            let undone = match self.journal.insert(JOURNAL_KEY, kept) {
                Ok(_) => self.flush().await,
                Err(e) => Err(e.into()),
            };
            if let Err(undo) = undone {
                error!(error = %undo, "cannot take a failed commit out of the journal; refusing further changes until a restart");
                commits.broken.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        if let Err(e) = self.apply(&writes) {
            // Journalled and durable, but only partly applied: a restart completes it.
            error!(error = %e, "cannot apply a journalled commit; refusing further changes until a restart");
            commits.broken.store(true, Ordering::SeqCst);
            return Err(e);
        }
        pending.push(Pending {
            applied_at: commits.started.load(Ordering::SeqCst),
            entry,
        });
        Ok(())
    }

    /// Wait until everything written so far is on disk.
    ///
    /// sled 0.34's `flush_async` can hang forever when several are polled at once
    /// (spacejam/sled#1241), so the blocking flush runs on the blocking pool instead.
    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        let commits = self.commits.clone();
        tokio::task::spawn_blocking(move || {
            let number = commits.started.fetch_add(1, Ordering::SeqCst) + 1;
            db.flush()?;
            commits.done.fetch_max(number, Ordering::SeqCst);
            Ok::<_, sled::Error>(())
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        Ok(())
    }

    /// The record of a profile.
    pub fn profile(&self, name: &str) -> Result<Option<ProfileRecord>> {
        self.profiles
            .get(name.as_bytes())?
            .map(|v| decode(&|| format!("profiles/{name}"), &v))
            .transpose()
    }

    /// Metadata of one version.
    pub fn version(&self, name: &str, version: u64) -> Result<Option<VersionMeta>> {
        self.versions
            .get(version_key(name, version))?
            .map(|v| decode(&|| format!("versions/{name}@{version}"), &v))
            .transpose()
    }

    /// The bytes of one version, exactly as published.
    pub fn content(&self, name: &str, version: u64) -> Result<Option<Vec<u8>>> {
        self.content
            .get(version_key(name, version))?
            .map(|stored| unpack(&|| format!("content/{name}@{version}"), &stored))
            .transpose()
    }

    /// Stored versions with this digest, highest first.
    pub fn versions_with_digest(&self, name: &str, digest: &str) -> Result<Vec<u64>> {
        let prefix = digest_prefix(name, digest);
        let mut out = Vec::new();
        for kv in self.digests.scan_prefix(&prefix).rev() {
            let (key, _) = kv?;
            match be_u64(&key[prefix.len()..]) {
                Some(v) => out.push(v),
                None => {
                    return Err(Error::Corrupt {
                        key: format!("digests/{name}/{digest}"),
                        reason: "bad version suffix".into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The highest live version strictly below `below`, by a reverse scan of the profile's
    /// versions (only deprecate and delete need it).
    pub fn highest_live_below(&self, name: &str, below: u64) -> Result<u64> {
        let start = version_key(name, 0);
        let end = version_key(name, below);
        for kv in self.versions.range(start..end).rev() {
            let (_, value) = kv?;
            let meta: VersionMeta = decode(&|| format!("versions/{name}"), &value)?;
            if meta.is_live() {
                return Ok(meta.version);
            }
        }
        Ok(0)
    }

    /// The newest stored version, deprecated or not.
    pub fn newest_stored(&self, name: &str) -> Result<Option<VersionMeta>> {
        match self.versions.scan_prefix(version_prefix(name)).next_back() {
            Some(kv) => {
                let (_, value) = kv?;
                Ok(Some(decode(&|| format!("versions/{name}"), &value)?))
            }
            None => Ok(None),
        }
    }

    /// Versions of a profile, newest first, `limit` at a time; `token` continues a listing.
    pub fn history(
        &self,
        name: &str,
        limit: usize,
        token: Option<&str>,
    ) -> Result<Page<VersionMeta>> {
        let below = match token {
            None => None,
            Some(t) => Some(t.parse::<u64>().map_err(|_| bad_token())?),
        };
        let start = version_key(name, 0);
        let end = match below {
            Some(v) => Bound::Excluded(version_key(name, v)),
            None => Bound::Included(version_key(name, u64::MAX)),
        };
        let mut items = Vec::new();
        let mut next = None;
        for kv in self
            .versions
            .range::<Vec<u8>, _>((Bound::Included(start), end))
            .rev()
        {
            let (_, value) = kv?;
            let meta: VersionMeta = decode(&|| format!("versions/{name}"), &value)?;
            if items.len() == limit {
                next = items.last().map(|m: &VersionMeta| m.version.to_string());
                break;
            }
            items.push(meta);
        }
        Ok(Page { items, next })
    }

    /// Profiles with at least one stored version, by name, `limit` at a time.
    pub fn list(&self, limit: usize, token: Option<&str>) -> Result<Page<ProfileSummary>> {
        let start = match token {
            None => Bound::Unbounded,
            Some(t) => Bound::Excluded(hex::decode(t).map_err(|_| bad_token())?),
        };
        let mut items: Vec<ProfileSummary> = Vec::new();
        let mut next = None;
        for kv in self.profiles.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = kv?;
            let name = String::from_utf8_lossy(&key).into_owned();
            let record: ProfileRecord = decode(&|| format!("profiles/{name}"), &value)?;
            if record.stored == 0 {
                continue;
            }
            if items.len() == limit {
                next = items.last().map(|s| hex::encode(s.name.as_bytes()));
                break;
            }
            let latest = match record.latest_live {
                0 => None,
                v => self.version(&name, v)?,
            };
            let updated_at = self.newest_stored(&name)?.map(|m| m.created_at);
            items.push(ProfileSummary {
                name,
                record,
                latest,
                updated_at,
            });
        }
        Ok(Page { items, next })
    }

    /// Audit entries at or after `since`, oldest first, `limit` at a time.
    pub fn audit(
        &self,
        since: Option<UnixNanos>,
        limit: usize,
        token: Option<&str>,
    ) -> Result<Page<AuditEntry>> {
        let start = match token {
            Some(t) => Bound::Excluded(hex::decode(t).map_err(|_| bad_token())?),
            None => Bound::Included(since.map_or(0, |t| t.0).to_be_bytes().to_vec()),
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut next = None;
        for kv in self.audit.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = kv?;
            if items.len() == limit {
                next = last_key.take().map(hex::encode);
                break;
            }
            let entry: AuditEntry = decode(&|| format!("audit/{}", hex::encode(&key)), &value)?;
            items.push(entry);
            last_key = Some(key.to_vec());
        }
        Ok(Page { items, next })
    }

    fn audit_key(&self, entry: &AuditEntry) -> Result<Vec<u8>> {
        let mut key = entry.time.0.to_be_bytes().to_vec();
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        Ok(key)
    }

    /// Record an audit entry on its own (a call that changed nothing else).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let key = self.audit_key(entry)?;
        self.audit.insert(key, encode(entry)?)?;
        Ok(())
    }

    /// Store a new version: its bytes, its metadata, its digest index entry, the audit entry
    /// and, last, the profile record. Durable and visible when this returns.
    pub async fn insert_version(&self, new: NewVersion<'_>) -> Result<()> {
        let name = &new.meta.name;
        let vkey = version_key(name, new.meta.version);
        let writes = vec![
            // Readers that find the metadata find the bytes.
            Write::insert(TreeId::Content, vkey.clone(), pack(new.content)),
            Write::insert(TreeId::Versions, vkey, encode(new.meta)?),
            Write::insert(
                TreeId::Digests,
                digest_key(name, &new.meta.digest, new.meta.version),
                Vec::new(),
            ),
            Write::insert(
                TreeId::Audit,
                self.audit_key(new.audit)?,
                encode(new.audit)?,
            ),
            Write::insert(TreeId::Profiles, name.as_bytes(), encode(new.record)?),
        ];
        self.commit(writes).await
    }

    /// Rewrite a version's metadata (deprecation) with the profile record and audit entry.
    pub async fn update_version(
        &self,
        record: &ProfileRecord,
        meta: &VersionMeta,
        entry: &AuditEntry,
    ) -> Result<()> {
        // The record first: its latest version already skips this one, and exists.
        let writes = vec![
            Write::insert(TreeId::Profiles, meta.name.as_bytes(), encode(record)?),
            Write::insert(
                TreeId::Versions,
                version_key(&meta.name, meta.version),
                encode(meta)?,
            ),
            Write::insert(TreeId::Audit, self.audit_key(entry)?, encode(entry)?),
        ];
        self.commit(writes).await
    }

    /// Remove a version, its bytes and its digest entry; keep the profile record (so the
    /// number is never reused) and record the audit entry.
    pub async fn delete_version(
        &self,
        record: &ProfileRecord,
        meta: &VersionMeta,
        entry: &AuditEntry,
    ) -> Result<()> {
        let vkey = version_key(&meta.name, meta.version);
        // The record first (its latest version no longer points here), then the index entry,
        // the metadata and the bytes, so a reader that finds the metadata finds the bytes.
        let writes = vec![
            Write::insert(TreeId::Profiles, meta.name.as_bytes(), encode(record)?),
            Write::remove(
                TreeId::Digests,
                digest_key(&meta.name, &meta.digest, meta.version),
            ),
            Write::remove(TreeId::Versions, vkey.clone()),
            Write::remove(TreeId::Content, vkey),
            Write::insert(TreeId::Audit, self.audit_key(entry)?, encode(entry)?),
        ];
        self.commit(writes).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(name: &str, version: u64, content: &[u8]) -> VersionMeta {
        VersionMeta {
            name: name.into(),
            version,
            digest: seccomp_profile::digest(content),
            size: content.len() as u64,
            created_at: UnixNanos(version),
            author: "test".into(),
            description: String::new(),
            warnings: Vec::new(),
            deprecation: None,
        }
    }

    fn audit(method: &str, version: u64) -> AuditEntry {
        AuditEntry {
            time: UnixNanos::now(),
            actor: "test".into(),
            method: method.into(),
            target: format!("p@{version}"),
            result: "OK".into(),
            message: String::new(),
        }
    }

    fn record(version: u64) -> ProfileRecord {
        ProfileRecord {
            next_version: version + 1,
            latest_live: version,
            stored: version,
        }
    }

    fn content(version: u64) -> Vec<u8> {
        format!("{{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"v\": {version}}}").into_bytes()
    }

    async fn publish(store: &Store, version: u64) {
        let bytes = content(version);
        store
            .insert_version(NewVersion {
                record: &record(version),
                meta: &meta("p", version, &bytes),
                content: &bytes,
                audit: &audit("Publish", version),
            })
            .await
            .unwrap();
    }

    fn journalled(store: &Store) -> usize {
        store
            .journal
            .get(JOURNAL_KEY)
            .unwrap()
            .map_or(0, |v| journal::decode(&v).unwrap().len())
    }

    #[tokio::test]
    async fn a_commit_is_visible_when_it_returns_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        publish(&store, 1).await;
        assert_eq!(store.content("p", 1).unwrap().unwrap(), content(1));
        assert_eq!(store.profile("p").unwrap().unwrap(), record(1));
        assert_eq!(
            store
                .versions_with_digest("p", &meta("p", 1, &content(1)).digest)
                .unwrap(),
            [1]
        );
        // Stored compressed, returned exactly.
        let stored = store.content.get(version_key("p", 1)).unwrap().unwrap();
        assert_eq!(stored[0], PACKED_LZ4);
        assert_eq!(journalled(&store), 1);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.content("p", 1).unwrap().unwrap(), content(1));
        assert_eq!(
            journalled(&store),
            0,
            "opening applies and empties the journal"
        );
    }

    #[tokio::test]
    async fn a_commit_journalled_but_not_applied_is_applied_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        publish(&store, 1).await;
        // A crash between the flush and the apply: the journal holds version 2, the trees
        // do not.
        let bytes = content(2);
        let writes = vec![
            Write::insert(TreeId::Content, version_key("p", 2), pack(&bytes)),
            Write::insert(
                TreeId::Versions,
                version_key("p", 2),
                encode(&meta("p", 2, &bytes)).unwrap(),
            ),
            Write::insert(TreeId::Profiles, b"p".to_vec(), encode(&record(2)).unwrap()),
        ];
        let mut pending = store.commits.pending.lock().await;
        let kept: Vec<&[u8]> = pending.iter().map(|p| p.entry.as_slice()).collect();
        let entry = journal::encode_entry(&writes).unwrap();
        store
            .journal
            .insert(
                JOURNAL_KEY,
                journal::encode(kept.into_iter().chain([entry.as_slice()])).unwrap(),
            )
            .unwrap();
        store.db.flush().unwrap();
        pending.clear();
        drop(pending);
        assert_eq!(store.content("p", 2).unwrap(), None);
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.content("p", 2).unwrap().unwrap(), bytes);
        assert_eq!(store.version("p", 2).unwrap().unwrap().version, 2);
        assert_eq!(store.profile("p").unwrap().unwrap(), record(2));
        assert_eq!(store.content("p", 1).unwrap().unwrap(), content(1));
        assert_eq!(journalled(&store), 0);
    }

    #[tokio::test]
    async fn replay_keeps_the_order_of_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        publish(&store, 1).await;
        let mut m = meta("p", 1, &content(1));
        m.deprecation = Some(Deprecation {
            reason: "old".into(),
            at: UnixNanos(9),
            by: "test".into(),
        });
        let rec = ProfileRecord {
            next_version: 2,
            latest_live: 0,
            stored: 1,
        };
        store
            .update_version(&rec, &m, &audit("Deprecate", 1))
            .await
            .unwrap();
        // Both commits are still journalled (no flush since the deprecation was applied):
        // replaying them in order must end deprecated, not live again.
        assert_eq!(journalled(&store), 2);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(
            store
                .version("p", 1)
                .unwrap()
                .unwrap()
                .deprecation
                .is_some()
        );
        assert_eq!(store.profile("p").unwrap().unwrap(), rec);
    }

    #[tokio::test]
    async fn the_journal_keeps_only_commits_not_known_to_be_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for v in 1..=5 {
            publish(&store, v).await;
            // This commit, and the previous one (applied after the last flush started).
            assert_eq!(journalled(&store), v.min(2) as usize, "after version {v}");
        }
        store.flush().await.unwrap();
        publish(&store, 6).await;
        assert_eq!(journalled(&store), 1);
        for v in 1..=6 {
            assert_eq!(store.content("p", v).unwrap().unwrap(), content(v));
        }
    }

    #[tokio::test]
    async fn delete_removes_everything_but_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        publish(&store, 1).await;
        let m = meta("p", 1, &content(1));
        let rec = ProfileRecord {
            next_version: 2,
            latest_live: 0,
            stored: 0,
        };
        store
            .delete_version(&rec, &m, &audit("DeleteVersion", 1))
            .await
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.content("p", 1).unwrap(), None);
        assert_eq!(store.version("p", 1).unwrap(), None);
        assert!(
            store
                .versions_with_digest("p", &m.digest)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.profile("p").unwrap().unwrap(), rec);
        assert_eq!(store.audit(None, 10, None).unwrap().items.len(), 2);
    }

    #[test]
    fn content_stored_before_compression_is_returned_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let raw = b"\n {\"defaultAction\": \"SCMP_ACT_ERRNO\"}".to_vec();
        store
            .content
            .insert(version_key("p", 1), raw.as_slice())
            .unwrap();
        assert_eq!(store.content("p", 1).unwrap().unwrap(), raw);
    }

    #[test]
    fn corrupt_content_and_journal_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut packed = pack(&content(1));
        packed.truncate(packed.len() - 3);
        for bad in [
            packed,
            vec![PACKED_LZ4, 1, 2],
            vec![PACKED_LZ4, 0xff, 0xff, 0xff, 0x7f, 0],
        ] {
            store.content.insert(version_key("p", 1), bad).unwrap();
            match store.content("p", 1) {
                Err(Error::Corrupt { key, .. }) => assert_eq!(key, "content/p@1"),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
        store
            .journal
            .insert(JOURNAL_KEY, b"SJ1\x05".as_slice())
            .unwrap();
        store.db.flush().unwrap();
        drop(store);
        match Store::open(dir.path()) {
            Err(Error::Corrupt { key, reason }) => {
                assert_eq!(key, "journal/commits");
                assert!(reason.contains("truncated"), "{reason}");
            }
            Err(other) => panic!("expected Corrupt, got {other:?}"),
            Ok(_) => panic!("a corrupt journal must stop the store from opening"),
        }
    }
}
