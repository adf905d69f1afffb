//! Removing what the agent placed and no longer needs, and only that: a file it merely meant
//! to write (pending) only if it holds exactly those bytes, a directory only once it is empty,
//! nothing it adopted, and nothing reachable only through a symlink.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use super::Applier;
use super::check::Checked;
use crate::fsops::{self, DirRemoval, Found, WalkError};
use crate::model::DesiredKind;
use crate::paths::{self, node_path};
use crate::record::{Entry, Origin, Record};

impl Applier {
    /// Removes what the agent placed that neither the set nor a path in it needs, and
    /// drops those entries from the record. Returns the node paths removed.
    pub(super) fn remove_stale(
        &self,
        root: &OwnedFd,
        checked: &[Checked<'_>],
        next: &mut Record,
    ) -> Vec<String> {
        let mut needed = HashSet::new();
        for c in checked {
            for depth in 1..=c.comps.len() {
                needed.insert(node_path(&c.comps[..depth]));
            }
        }
        let mut stale: Vec<String> = next
            .entries
            .keys()
            .filter(|k| !needed.contains(*k))
            .cloned()
            .collect();
        // Children before their parents.
        stale.sort_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        for key in stale {
            let Some(entry) = next.entries.get(&key).cloned() else {
                continue;
            };
            let Ok(comps) = paths::check(&key, DesiredKind::Directory, &self.allowed) else {
                tracing::warn!(path = %key, "recorded path is outside the allowed root now; forgetting it untouched");
                next.entries.remove(&key);
                continue;
            };
            match self.remove_one(root, &comps, &entry) {
                Ok(Removal::Removed) => {
                    tracing::info!(path = %key, "removed, no longer desired");
                    next.entries.remove(&key);
                    removed.push(key);
                }
                Ok(Removal::Forget) => {
                    next.entries.remove(&key);
                }
                Ok(Removal::Keep) => {}
                Err(e) => {
                    tracing::warn!(path = %key, "cannot remove, will retry on the next apply: {e}")
                }
            }
        }
        removed
    }

    fn remove_one(
        &self,
        root: &OwnedFd,
        comps: &[String],
        entry: &Entry,
    ) -> std::io::Result<Removal> {
        if entry.origin == Origin::Adopted {
            return Ok(Removal::Forget);
        }
        let (parent_comps, name) = comps.split_at(comps.len() - 1);
        let name = name.first().map_or("", String::as_str);
        let parent = match fsops::walk(root, parent_comps) {
            Ok(parent) => parent,
            Err(WalkError::Io { source, .. }) => return Err(source),
            // Gone, or reachable only through a symlink now: nothing the agent may touch.
            Err(_) => return Ok(Removal::Forget),
        };
        match entry.kind {
            DesiredKind::File => {
                if entry.origin == Origin::Pending {
                    match fsops::observe_at(&parent, name)? {
                        Found::File { sha256, .. } if sha256 == entry.sha256 => {}
                        _ => return Ok(Removal::Forget),
                    }
                }
                Ok(if fsops::remove_file(&parent, name)? {
                    Removal::Removed
                } else {
                    Removal::Forget
                })
            }
            DesiredKind::Directory => Ok(match fsops::remove_dir(&parent, name)? {
                DirRemoval::Removed => Removal::Removed,
                DirRemoval::Gone => Removal::Forget,
                DirRemoval::NotEmpty => Removal::Keep,
            }),
        }
    }
}

enum Removal {
    Removed,
    /// Nothing there that the agent may remove: drop it from the record.
    Forget,
    /// Still there (a directory with someone else's files): keep it recorded, retry later.
    Keep,
}
