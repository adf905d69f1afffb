//! Reads: each is one lookup or one range scan of a single profile's keys, or of the audit
//! log from a time.

use std::ops::Bound;

use super::codec::{decode, unpack};
use super::keys::{be_u64, digest_prefix, version_key, version_prefix};
use super::{
    AuditEntry, Page, ProfileRecord, ProfileStore, ProfileSummary, UnixNanos, VersionMeta,
};
use crate::error::{Error, Result};

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

impl ProfileStore {
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
}
