//! Step 4 of an apply: the record is brought in line with what the disk now holds, what the
//! agent placed and no longer needs is removed (after a complete apply only), stored contents
//! nothing refers to are dropped, and the result reports what is on disk.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use super::Applier;
use super::check::Checked;
use super::write::Written;
use crate::accounts::Accounts;
use crate::model::{
    Applied, DesiredFile, DesiredKind, ErrorCode, FileError, ObservedFile, Rejected,
};
use crate::record::{Entry, Origin};

impl Applier {
    /// Saves what the writes did: what this apply wrote or created is the agent's (placed),
    /// so is what it meant to write before a crash if it is there; what was already as desired
    /// is adopted, and stays adopted when later rewritten. A complete apply removes the stale
    /// and records `revision`; a partial one clears the revision; one that wrote nothing keeps
    /// `last_good`. A record that cannot be saved is an error for every desired path. Returns
    /// the node paths removed.
    pub(super) fn record_result(
        &mut self,
        root: &OwnedFd,
        revision: &str,
        desired: &[DesiredFile],
        checked: &[Checked<'_>],
        last_good: &str,
        written: &mut Written,
    ) -> Vec<String> {
        let mut next = self.record.clone();
        for dir in &written.dirs {
            if let Some(e) = next.entries.get_mut(dir) {
                e.origin = Origin::Placed;
            }
        }
        for entry in checked {
            if written.failed.contains(&entry.key) {
                continue;
            }
            let sha256 = entry.sha256.clone();
            let origin = match next.entries.get(&entry.key) {
                // Adopted once, adopted for good: rewriting it does not make it removable.
                Some(e) if e.origin == Origin::Adopted => Origin::Adopted,
                _ if written.wrote(&entry.key) => Origin::Placed,
                Some(e) if e.origin == Origin::Placed => Origin::Placed,
                // Meant to write exactly this before a crash, and it is there: it is ours.
                Some(e) if e.origin == Origin::Pending && e.sha256 == sha256 => Origin::Placed,
                // The preflight refused every other file the agent did not place: this one
                // already had the desired bytes (or is a directory that existed).
                recorded => {
                    if recorded.is_none() && entry.desired.kind == DesiredKind::File {
                        tracing::info!(
                            path = %entry.desired.path,
                            "adopted a file the agent did not place, which already is as desired; it will never be removed"
                        );
                    }
                    Origin::Adopted
                }
            };
            next.entries.insert(
                entry.key.clone(),
                Entry {
                    kind: entry.desired.kind,
                    origin,
                    sha256,
                },
            );
        }
        let mut removed = Vec::new();
        if written.errors.is_empty() {
            removed = self.remove_stale(root, checked, &mut next);
            next.revision = revision.to_owned();
            next.desired = without_content(desired);
        } else if written.anything() {
            next.revision.clear();
            next.desired = without_content(desired);
        } else {
            last_good.clone_into(&mut next.revision);
        }
        if let Err(e) = self.save(next) {
            written.errors.extend(
                desired
                    .iter()
                    .map(|d| FileError::new(&d.path, ErrorCode::Io, e.to_string())),
            );
        }
        removed
    }

    /// Drops stored contents that the recorded desired set no longer refers to.
    pub(super) fn prune_contents(&self) {
        let keep: HashSet<&str> = self
            .record
            .desired
            .iter()
            .map(|d| d.sha256.as_str())
            .collect();
        if let Err(e) = self.state.retain_content(&keep) {
            tracing::warn!("cannot prune stored contents: {e}");
        }
    }

    /// The result: what is on disk, not what was meant.
    pub(super) fn report(
        &self,
        root: &OwnedFd,
        accounts: &Accounts,
        revision: &str,
        checked: &[Checked<'_>],
        written: Written,
        removed: Vec<String>,
    ) -> Result<Applied, Rejected> {
        let observed: Vec<ObservedFile> = checked
            .iter()
            .map(|c| self.observe_entry(root, accounts, c))
            .collect();
        if !written.errors.is_empty() {
            return Err(Rejected {
                errors: written.errors,
                observed,
                last_good_revision: self.record.revision.clone(),
            });
        }
        if !written.entries.is_empty() || !removed.is_empty() {
            tracing::info!(
                revision,
                written = written.entries.len(),
                removed = removed.len(),
                "applied desired set"
            );
        }
        let paths = checked
            .iter()
            .filter(|c| written.wrote(&c.key))
            .map(|c| c.desired.path.clone())
            .collect();
        Ok(Applied {
            revision: revision.to_owned(),
            observed,
            written: paths,
            removed,
        })
    }
}

/// The entries as the record keeps them: everything but the bytes, and the sha256 lowercase.
fn without_content(desired: &[DesiredFile]) -> Vec<DesiredFile> {
    desired
        .iter()
        .map(|d| DesiredFile {
            path: d.path.clone(),
            kind: d.kind,
            content: Vec::new(),
            sha256: match d.kind {
                DesiredKind::File => d.sha256.to_ascii_lowercase(),
                DesiredKind::Directory => String::new(),
            },
            mode: d.mode,
            owner: d.owner.clone(),
            group: d.group.clone(),
        })
        .collect()
}
