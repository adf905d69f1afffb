//! The journalled commit (format in [`crate::journal`]): a mutation's writes, with those of
//! the commits not yet known to be on disk, become the journal's one value (one insert, which
//! sled makes atomic), then one flush, then the writes are applied to the trees. Opening the
//! store replays the journal, so after a crash the trees are as if every journalled commit had
//! been applied in order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::{error, info};

use super::ProfileStore;
use crate::error::{Error, Result};
use crate::journal::{self, TreeId, Write};

/// The key of the journal's only entry.
pub(super) const JOURNAL_KEY: &[u8] = b"commits";

/// A journal entry whose changes may not be on disk yet.
pub(super) struct Pending {
    /// Flushes started when its changes had been applied: a flush numbered above this, once
    /// completed, has made them durable.
    applied_at: u64,
    /// The encoded entry.
    pub(super) entry: Vec<u8>,
}

/// Commit bookkeeping shared by the clones of a store.
#[derive(Default)]
pub(super) struct Commits {
    /// Serializes commits (held across the flush) and lists the entries to keep journalled.
    pub(super) pending: tokio::sync::Mutex<Vec<Pending>>,
    /// Flushes started so far (each takes the next number).
    started: AtomicU64,
    /// The highest number of a completed flush.
    done: AtomicU64,
    /// Set when a commit may be journalled but could not be applied or taken back: later
    /// commits are refused until a restart replays the journal, so none can be overtaken by
    /// it.
    broken: AtomicBool,
}

impl ProfileStore {
    /// Apply every journalled commit, oldest first, make the result durable and empty the
    /// journal. Commits that were already applied are applied again, which changes nothing:
    /// every later mutation is later in the journal.
    pub(super) fn replay(&self) -> Result<()> {
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
    pub(super) async fn commit(&self, writes: Vec<Write>) -> Result<()> {
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
}
