//! The distributor's audit log: every command, whether it succeeded or failed, and every call
//! the auth layer refused, with the verified caller. Entries go to the store without a
//! flush of their own for refusals (they must not cost a flush each, or anyone who reaches
//! the port could make the disk work); a command's entry is flushed before it answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Distributor;
use crate::error::{Error, Result};
use crate::store::AuditEntry;

/// At most this many entries per page.
const MAX_PAGE: usize = 1000;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One page of the audit log.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// Entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

impl Distributor {
    /// Record that `actor` called `method` on `target` with `outcome`: a summary, or the
    /// error. A failure to record is logged, never returned: the caller gets the command's
    /// own result.
    pub fn audit(&self, actor: &str, method: &str, target: &str, outcome: Result<String, &Error>) {
        let (result, message) = match outcome {
            Ok(summary) => ("OK".to_owned(), summary),
            Err(e) => (e.code_name().to_owned(), e.to_string()),
        };
        self.append(AuditEntry {
            time_ns: now_ns(),
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            actor: actor.to_owned(),
            method: method.to_owned(),
            target: target.to_owned(),
            result,
            message,
        });
    }

    /// Record a command with its outcome, on disk before the caller hears back (the
    /// command's own record already is).
    pub(super) async fn audit_command(
        &self,
        actor: &str,
        method: &str,
        target: &str,
        outcome: Result<String, &Error>,
    ) {
        self.audit(actor, method, target, outcome);
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "cannot flush an audit entry");
        }
    }

    /// Record a call the auth layer refused.
    pub fn audit_refusal(&self, actor: &str, method: &str, code: &str, reason: &str) {
        self.append(AuditEntry {
            time_ns: now_ns(),
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            actor: actor.to_owned(),
            method: method.to_owned(),
            target: String::new(),
            result: code.to_owned(),
            message: reason.to_owned(),
        });
    }

    fn append(&self, entry: AuditEntry) {
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::error!(error = %e, "cannot record audit entry");
        }
    }

    /// Remove the audit entries from before `before_ns` (see `seccomp_server::retention`).
    pub fn prune_audit(&self, before_ns: u64) -> Result<usize> {
        self.store.prune_audit(before_ns)
    }

    /// Audit entries at or after `since_ns`, oldest first: after the entry `token` names
    /// (the previous page's `next`), at most `limit` (0: 100; at most 1000).
    pub fn audit_page(
        &self,
        since_ns: u64,
        token: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage> {
        let limit = match limit {
            0 => 100,
            n => n.min(MAX_PAGE),
        };
        let after = token
            .map(|t| {
                hex::decode(t)
                    .ok()
                    .filter(|k| k.len() == 16)
                    .ok_or_else(|| {
                        Error::invalid(format!("page token {t:?} is not one this server gave"))
                    })
            })
            .transpose()?;
        let mut entries = self.store.audit(since_ns, after.as_deref(), limit + 1)?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| hex::encode(e.key()))
        } else {
            None
        };
        Ok(AuditPage { entries, next })
    }
}
