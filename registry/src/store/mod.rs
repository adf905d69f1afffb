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
//! through the commit journal ([`crate::journal`]): when [`ProfileStore::insert_version`] and
//! its siblings return, the mutation is on disk, whole, and visible to readers; a crash at any
//! point leaves either all of it or none of it. Lone audit entries are plain inserts made
//! durable by [`ProfileStore::flush`].
//!
//! Layout: `records` (what is stored), `keys` (the key layout), `codec` (JSON and compressed
//! content), `commit` (the journalled commit, replay and flush), `read` (the lookups and
//! scans) and `write` (what each mutation writes).

mod codec;
mod commit;
mod keys;
mod read;
mod records;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use read::page_size;
pub use records::{
    AuditEntry, Deprecation, Finding, NewVersion, Page, ProfileRecord, ProfileSummary, UnixNanos,
    VersionMeta,
};

use crate::error::Result;
use commit::Commits;

/// How long [`ProfileStore::open`] waits for a database file locked by another handle.
pub use seccomp_server::locked::LOCK_WAIT;

/// The registry's sled database.
#[derive(Clone)]
pub struct ProfileStore {
    db: sled::Db,
    profiles: sled::Tree,
    versions: sled::Tree,
    content: sled::Tree,
    digests: sled::Tree,
    audit: sled::Tree,
    journal: sled::Tree,
    commits: Arc<Commits>,
}

impl ProfileStore {
    /// Open (or create) the database in `dir`, first applying what the commit journal holds
    /// from before a crash.
    ///
    /// sled locks the database file. A handle being dropped lets go of the lock only once
    /// sled's I/O threads are done with it, a moment later, and a restarting registry may
    /// find its predecessor still exiting; so a taken lock is retried for up to
    /// [`LOCK_WAIT`] before the error is returned. Blocks meanwhile.
    pub fn open(dir: &Path) -> Result<ProfileStore> {
        let db = seccomp_server::locked::open_retrying(|| sled::Config::new().path(dir).open())?;
        let store = ProfileStore {
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
}
