//! Mutations: what each one writes, in what order. A publish, deprecate or delete is one
//! journalled commit (see `commit`); a lone audit entry is a plain insert made
//! durable by [`ProfileStore::flush`].

use super::codec::{encode, pack};
use super::keys::{self, digest_key, version_key};
use super::{AuditEntry, NewVersion, ProfileRecord, ProfileStore, VersionMeta};
use crate::error::Result;
use crate::journal::{TreeId, Write};

impl ProfileStore {
    fn audit_key(&self, entry: &AuditEntry) -> Result<Vec<u8>> {
        Ok(keys::audit_key(entry.time.0, self.db.generate_id()?))
    }

    /// Record an audit entry on its own (a call that changed nothing else).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let key = self.audit_key(entry)?;
        self.audit.insert(key, encode(entry)?)?;
        Ok(())
    }

    /// Remove the audit entries from before `before_ns` (`--audit-retention`), durable with
    /// the next flush; how many went (at most
    /// [`PRUNE_BATCH`](seccomp_server::retention::PRUNE_BATCH)).
    pub fn prune_audit(&self, before_ns: u64) -> Result<usize> {
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

    /// Rewrite a profile's record (its policy) with the audit entry.
    pub async fn update_record(
        &self,
        name: &str,
        record: &ProfileRecord,
        entry: &AuditEntry,
    ) -> Result<()> {
        let writes = vec![
            Write::insert(TreeId::Profiles, name.as_bytes(), encode(record)?),
            Write::insert(TreeId::Audit, self.audit_key(entry)?, encode(entry)?),
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
