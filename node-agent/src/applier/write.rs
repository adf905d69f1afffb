//! Step 3 of an apply: keep the contents and record what is about to be written
//! (write-ahead), then write each changed file atomically and create each missing directory,
//! parents first, skipping what is already as desired.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;

use super::Applier;
use super::check::{Checked, Claim, Plan};
use crate::fsops::{self, Creation, DirAttrs, Found};
use crate::model::{DesiredFile, DesiredKind, ErrorCode, FileError, Rejected};
use crate::paths::node_path;
use crate::record::{Entry, Origin};

/// Mode of directories the agent creates on the way to a desired path that the set does not
/// declare itself; their owner is the agent's.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// What the writes did, by node path (the record's keys).
#[derive(Default)]
pub(super) struct Written {
    /// Entries of the set whose file was written or whose directory was created.
    pub(super) entries: Vec<String>,
    /// Every directory created, declared in the set or on the way to an entry.
    pub(super) dirs: Vec<String>,
    /// Entries that could not be written.
    pub(super) failed: HashSet<String>,
    /// Why they could not, and later errors of the same apply (a record that cannot be saved).
    pub(super) errors: Vec<FileError>,
}

impl Written {
    /// Whether the entry at `key` was written or created by this apply.
    pub(super) fn wrote(&self, key: &str) -> bool {
        self.entries.iter().chain(&self.dirs).any(|k| k == key)
    }

    pub(super) fn anything(&self) -> bool {
        !self.entries.is_empty() || !self.dirs.is_empty()
    }
}

impl Applier {
    /// Keeps the contents (so drift can be repaired later, also after a restart), then saves
    /// the record with every path about to be written or created as pending, and the revision
    /// cleared if anything will be written: a crash from here on never leaves a file the agent
    /// wrote unrecorded, nor claims a revision that is not on disk.
    pub(super) fn write_ahead(
        &mut self,
        desired: &[DesiredFile],
        checked: &[Checked<'_>],
        plans: &[Plan],
    ) -> Result<(), Rejected> {
        for entry in checked {
            if let (Some(content), DesiredKind::File) = (entry.content, entry.desired.kind)
                && let Err(e) = self.state.put_content(&entry.sha256, content)
            {
                return Err(self.reject_all(desired, &e.to_string()));
            }
        }
        let mut next = self.record.clone();
        for (entry, plan) in checked.iter().zip(plans) {
            if let Some(first) = plan.missing_from {
                for index in first.max(self.allowed.len() - 1)..entry.comps.len() - 1 {
                    next.entries
                        .entry(node_path(&entry.comps[..=index]))
                        .or_insert(Entry {
                            kind: DesiredKind::Directory,
                            origin: Origin::Pending,
                            sha256: String::new(),
                        });
                }
            }
            if plan.needs_write {
                let recorded = next.entries.get(&entry.key).map(|e| e.origin);
                // Adopted stays adopted (never removed), whatever is written; what is the
                // agent's stays placed; a new or taken-over file is the agent's only once
                // written, so pending until then.
                let origin = match (&plan.claim, recorded) {
                    (Claim::Adopt, _) | (_, Some(Origin::Adopted)) => Origin::Adopted,
                    (Claim::Ours, _) | (_, Some(Origin::Placed)) => Origin::Placed,
                    _ => Origin::Pending,
                };
                next.entries.insert(
                    entry.key.clone(),
                    Entry {
                        kind: entry.desired.kind,
                        origin,
                        sha256: entry.sha256.clone(),
                    },
                );
            }
        }
        if plans.iter().any(|p| p.needs_write) {
            next.revision.clear();
        }
        self.save(next)
            .map_err(|e| self.reject_all(desired, &e.to_string()))
    }

    /// Writes every entry, parents before children; an entry that fails does not stop the
    /// others.
    pub(super) fn write_set(
        &self,
        root: &OwnedFd,
        checked: &[Checked<'_>],
        plans: &[Plan],
    ) -> Written {
        let dir_attrs: HashMap<&str, DirAttrs> = checked
            .iter()
            .filter(|c| c.desired.kind == DesiredKind::Directory)
            .map(|c| {
                (
                    c.key.as_str(),
                    DirAttrs {
                        mode: c.attrs.mode,
                        owner: Some((c.attrs.uid, c.attrs.gid)),
                    },
                )
            })
            .collect();
        let mut order: Vec<(&Checked<'_>, &Plan)> = checked.iter().zip(plans).collect();
        order.sort_by(|(a, _), (b, _)| a.comps.cmp(&b.comps));
        let mut written = Written::default();
        let mut cleaned = HashSet::new();
        for (entry, plan) in order {
            let dirs = &mut written.dirs;
            match self.write_entry(root, entry, &plan.claim, &dir_attrs, dirs, &mut cleaned) {
                Ok(true) => written.entries.push(entry.key.clone()),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(path = %entry.desired.path, code = %error.code, "{}", error.message);
                    written.failed.insert(entry.key.clone());
                    written.errors.push(error);
                }
            }
        }
        written
    }

    /// Walk `comps` from the host root, creating missing directories below the allowed root
    /// with `attrs`, and record every directory created (also when the walk then fails).
    fn walk_creating(
        &self,
        root: &OwnedFd,
        entry: &Checked<'_>,
        comps: &[String],
        attrs: &dyn Fn(usize) -> DirAttrs,
        created_dirs: &mut Vec<String>,
    ) -> Result<OwnedFd, FileError> {
        let mut created = Vec::new();
        let result = fsops::walk_create(
            root,
            comps,
            Creation {
                from: self.allowed.len() - 1,
                attrs,
                created: &mut created,
            },
        );
        created_dirs.extend(created.into_iter().map(|index| node_path(&comps[..=index])));
        result.map_err(|err| entry.walk_error(&err))
    }

    /// One entry; `Ok(true)` when it wrote the file or created the directory. `claim` is the
    /// preflight's verdict on whose the target is.
    fn write_entry(
        &self,
        root: &OwnedFd,
        entry: &Checked<'_>,
        claim: &Claim,
        dir_attrs: &HashMap<&str, DirAttrs>,
        created_dirs: &mut Vec<String>,
        cleaned: &mut HashSet<String>,
    ) -> Result<bool, FileError> {
        let attrs = |index: usize| {
            dir_attrs
                .get(node_path(&entry.comps[..=index]).as_str())
                .copied()
                .unwrap_or(DirAttrs {
                    mode: IMPLICIT_DIR_MODE,
                    owner: None,
                })
        };
        let parent = self.walk_creating(root, entry, entry.parent(), &attrs, created_dirs)?;
        if cleaned.insert(node_path(entry.parent()))
            && let Err(e) = fsops::clean_temps(&parent)
        {
            tracing::warn!(dir = %node_path(entry.parent()), "cannot remove leftover temporary files: {e}");
        }
        let found = fsops::observe_at(&parent, entry.name()).map_err(|e| entry.io_error(&e))?;
        if let Some(error) = entry.wrong_target(&found) {
            return Err(error);
        }
        if entry.satisfied_by(&found) {
            return Ok(false);
        }
        // Again, now that the write is near: a file may have appeared since the preflight.
        self.claim(entry, &found)?;
        match entry.desired.kind {
            DesiredKind::File => {
                let stored;
                let content = match entry.content {
                    Some(content) => content,
                    None => {
                        stored = self
                            .state
                            .content(&entry.sha256)
                            .map_err(|e| entry.io_error(&e))?;
                        &stored
                    }
                };
                let path = &entry.desired.path;
                // Where nothing was, nothing may be replaced: a file that appears meanwhile is
                // someone else's.
                let landed = fsops::write_atomically(
                    &parent,
                    entry.name(),
                    content,
                    entry.attrs,
                    self.hook.as_ref(),
                    path,
                    found != Found::Missing,
                )
                .map_err(|e| entry.io_error(&e))?;
                if !landed {
                    return Err(entry.error(
                        ErrorCode::ForeignFile,
                        format!(
                            "{path:?} appeared while the agent was writing it; the agent never overwrites a file it did not place"
                        ),
                    ));
                }
                match claim {
                    Claim::TakeOver { previous } => tracing::warn!(
                        path = %path,
                        previous_sha256 = %previous,
                        sha256 = %entry.sha256,
                        "took over a file the agent did not place and overwrote it (--adopt-existing); it is the agent's now"
                    ),
                    Claim::Adopt => tracing::info!(
                        path = %path,
                        "adopted a file the agent did not place, which has the desired bytes, and set its mode and owner; it will never be removed"
                    ),
                    Claim::New | Claim::Ours => {}
                }
                tracing::info!(path = %path, sha256 = %entry.sha256, "wrote file");
            }
            DesiredKind::Directory => {
                self.walk_creating(root, entry, &entry.comps, &attrs, created_dirs)?;
                tracing::info!(path = %entry.desired.path, "created directory");
            }
        }
        Ok(true)
    }
}
