//! What is on disk at desired and recorded paths, as the agent reports it: kind, mode, owner
//! and group (by uid and gid, and by name from the host's accounts), size and sha256.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use super::Applier;
use super::check::Checked;
use crate::accounts::Accounts;
use crate::fsops::{self, Found, WalkError};
use crate::model::{DesiredFile, DesiredKind, ErrorCode, FileError, ObservedFile, ObservedKind};
use crate::paths::{self, node_path};

impl Applier {
    /// What is at one node path now (it must be inside the allowed root).
    pub fn observe(&self, path: &str) -> Result<ObservedFile, FileError> {
        let comps = paths::check(path, DesiredKind::Directory, &self.allowed)?;
        let root = fsops::open_root(&self.config.host_root).map_err(|e| {
            FileError::new(
                path,
                ErrorCode::Io,
                format!("cannot open the host root: {e}"),
            )
        })?;
        let accounts = Accounts::load(&root);
        observe_path(&root, &accounts, path, &comps)
    }

    /// Every path of the last desired set and every path the agent has placed, as on disk now
    /// (for the `Hello` that opens a sync stream), sorted by path.
    pub fn observe_current(&self) -> Vec<ObservedFile> {
        let mut paths: BTreeMap<String, String> = self
            .record
            .entries
            .keys()
            .map(|key| (key.clone(), key.clone()))
            .collect();
        for desired in &self.record.desired {
            if let Ok(comps) = paths::check(&desired.path, desired.kind, &self.allowed) {
                paths.insert(node_path(&comps), desired.path.clone());
            }
        }
        let Ok(root) = fsops::open_root(&self.config.host_root) else {
            return paths.into_values().map(ObservedFile::missing).collect();
        };
        let accounts = Accounts::load(&root);
        paths
            .into_iter()
            .filter_map(|(key, path)| {
                let comps = paths::check(&key, DesiredKind::Directory, &self.allowed).ok()?;
                Some(
                    observe_path(&root, &accounts, &path, &comps)
                        .unwrap_or_else(|_| ObservedFile::missing(path)),
                )
            })
            .collect()
    }

    /// Every desired path that is inside the allowed root, as on disk now.
    pub(super) fn observe_inside(
        &self,
        root: &OwnedFd,
        accounts: &Accounts,
        desired: &[DesiredFile],
    ) -> Vec<ObservedFile> {
        desired
            .iter()
            .filter_map(|d| {
                let comps = paths::check(&d.path, d.kind, &self.allowed).ok()?;
                Some(
                    observe_path(root, accounts, &d.path, &comps)
                        .unwrap_or_else(|_| ObservedFile::missing(d.path.clone())),
                )
            })
            .collect()
    }

    pub(super) fn observe_entry(
        &self,
        root: &OwnedFd,
        accounts: &Accounts,
        entry: &Checked<'_>,
    ) -> ObservedFile {
        self.observe_checked(root, accounts, entry)
            .unwrap_or_else(|_| ObservedFile::missing(entry.desired.path.clone()))
    }

    pub(super) fn observe_checked(
        &self,
        root: &OwnedFd,
        accounts: &Accounts,
        entry: &Checked<'_>,
    ) -> Result<ObservedFile, FileError> {
        observe_path(root, accounts, &entry.desired.path, &entry.comps)
    }
}

/// Observes `comps` (a checked node path) and reports it under `path`. A symlink on the way is
/// reported as a symlink at the path, since the path cannot be reached safely.
fn observe_path(
    root: &OwnedFd,
    accounts: &Accounts,
    path: &str,
    comps: &[String],
) -> Result<ObservedFile, FileError> {
    let (parent_comps, name) = comps.split_at(comps.len().saturating_sub(1));
    let Some(name) = name.first() else {
        return Ok(ObservedFile::missing(path));
    };
    let found = match fsops::walk(root, parent_comps) {
        Ok(parent) => fsops::observe_at(&parent, name).map_err(|e| {
            FileError::new(path, ErrorCode::Io, format!("cannot observe {path:?}: {e}"))
        })?,
        Err(WalkError::Missing { .. } | WalkError::NotDirectory { .. }) => Found::Missing,
        Err(WalkError::Symlink { .. }) => Found::Symlink {
            mode: 0,
            uid: 0,
            gid: 0,
        },
        Err(err @ WalkError::Io { .. }) => {
            return Err(FileError::new(
                path,
                ErrorCode::Io,
                format!("cannot observe {path:?}: {}", err.describe()),
            ));
        }
    };
    let mut observed = ObservedFile::missing(path);
    let (kind, mode, uid, gid) = match found {
        Found::Missing => return Ok(observed),
        Found::File {
            sha256,
            size,
            mode,
            uid,
            gid,
            ..
        } => {
            observed.sha256 = sha256;
            observed.size = size;
            (ObservedKind::File, mode, uid, gid)
        }
        Found::Directory { mode, uid, gid } => (ObservedKind::Directory, mode, uid, gid),
        Found::Symlink { mode, uid, gid } => (ObservedKind::Symlink, mode, uid, gid),
        Found::Other { mode, uid, gid } => (ObservedKind::Other, mode, uid, gid),
    };
    observed.exists = true;
    observed.kind = Some(kind);
    observed.mode = mode;
    observed.uid = uid;
    observed.gid = gid;
    observed.owner = accounts.user_name(uid);
    observed.group = accounts.group_name(gid);
    Ok(observed)
}
