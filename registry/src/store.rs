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
//! | `content` | `name \0 version` | the exact published bytes |
//! | `digests` | `name \0 digest \0 version` | empty |
//! | `audit` | `time_ns id` | [`AuditEntry`] JSON |
//!
//! - latest: `profiles[name].latest_live`, then `versions[name, v]`;
//! - history: a reverse range scan of `versions` under `name \0`;
//! - by digest: a reverse scan of `digests` under `name \0 digest \0` (usually one key);
//! - audit since T: a range scan of `audit` from `T`.
//!
//! Writers are serialized by the service; each mutation is one multi-tree transaction, so a
//! crash leaves either all of a publish or none of it. Nothing here waits for the disk: the
//! service calls [`Store::flush`] before it acknowledges.

use std::convert::Infallible;
use std::ops::Bound;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use seccomp_profile::{Diagnostic, Severity};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional as _;
use sled::transaction::TransactionError;

use crate::error::{Error, Result};

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

fn tx_error(e: TransactionError<Infallible>) -> Error {
    match e {
        TransactionError::Storage(e) => Error::Storage(e),
        TransactionError::Abort(never) => match never {},
    }
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
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Store {
            profiles: db.open_tree("profiles")?,
            versions: db.open_tree("versions")?,
            content: db.open_tree("content")?,
            digests: db.open_tree("digests")?,
            audit: db.open_tree("audit")?,
            db,
        })
    }

    /// Wait until everything written so far is on disk.
    ///
    /// sled 0.34's `flush_async` can hang forever when several are polled at once
    /// (spacejam/sled#1241), so the blocking flush runs on the blocking pool instead.
    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
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

    /// The bytes of one version.
    pub fn content(&self, name: &str, version: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .content
            .get(version_key(name, version))?
            .map(|v| v.to_vec()))
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

    /// Write a new version, its bytes, its digest index entry, the profile record and the
    /// audit entry in one transaction.
    pub fn insert_version(&self, new: NewVersion<'_>) -> Result<()> {
        let name = &new.meta.name;
        let version = new.meta.version;
        let vkey = version_key(name, version);
        let dkey = digest_key(name, &new.meta.digest, version);
        let record = encode(new.record)?;
        let meta = encode(new.meta)?;
        let audit = encode(new.audit)?;
        let akey = self.audit_key(new.audit)?;
        (
            &self.profiles,
            &self.versions,
            &self.content,
            &self.digests,
            &self.audit,
        )
            .transaction(|(profiles, versions, content, digests, audit_tree)| {
                profiles.insert(name.as_bytes(), record.as_slice())?;
                versions.insert(vkey.as_slice(), meta.as_slice())?;
                content.insert(vkey.as_slice(), new.content)?;
                digests.insert(dkey.as_slice(), &[] as &[u8])?;
                audit_tree.insert(akey.as_slice(), audit.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)
    }

    /// Rewrite a version's metadata (deprecation) with the profile record and audit entry.
    pub fn update_version(
        &self,
        record: &ProfileRecord,
        meta: &VersionMeta,
        entry: &AuditEntry,
    ) -> Result<()> {
        let vkey = version_key(&meta.name, meta.version);
        let record_bytes = encode(record)?;
        let meta_bytes = encode(meta)?;
        let audit = encode(entry)?;
        let akey = self.audit_key(entry)?;
        (&self.profiles, &self.versions, &self.audit)
            .transaction(|(profiles, versions, audit_tree)| {
                profiles.insert(meta.name.as_bytes(), record_bytes.as_slice())?;
                versions.insert(vkey.as_slice(), meta_bytes.as_slice())?;
                audit_tree.insert(akey.as_slice(), audit.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)
    }

    /// Remove a version, its bytes and its digest entry; keep the profile record (so the
    /// number is never reused) and record the audit entry, in one transaction.
    pub fn delete_version(
        &self,
        record: &ProfileRecord,
        meta: &VersionMeta,
        entry: &AuditEntry,
    ) -> Result<()> {
        let vkey = version_key(&meta.name, meta.version);
        let dkey = digest_key(&meta.name, &meta.digest, meta.version);
        let record_bytes = encode(record)?;
        let audit = encode(entry)?;
        let akey = self.audit_key(entry)?;
        (
            &self.profiles,
            &self.versions,
            &self.content,
            &self.digests,
            &self.audit,
        )
            .transaction(|(profiles, versions, content, digests, audit_tree)| {
                profiles.insert(meta.name.as_bytes(), record_bytes.as_slice())?;
                versions.remove(vkey.as_slice())?;
                content.remove(vkey.as_slice())?;
                digests.remove(dkey.as_slice())?;
                audit_tree.insert(akey.as_slice(), audit.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)
    }
}
