//! Steps 1 and 2 of an apply: check every entry of a desired set without touching the disk,
//! then walk to each read-only and note what needs writing. Any error refuses the whole set
//! before anything is written.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;

use super::Applier;
use crate::accounts::Accounts;
use crate::fsops::{self, FileAttrs, Found, WalkError};
use crate::model::{DesiredFile, DesiredKind, ErrorCode, FileError, Rejected};
use crate::paths::{self, node_path};

/// A desired entry that passed the lexical checks.
pub(super) struct Checked<'a> {
    pub(super) desired: &'a DesiredFile,
    pub(super) comps: Vec<String>,
    pub(super) key: String,
    pub(super) attrs: FileAttrs,
    /// Lowercase hex SHA-256 of the content; empty for a directory.
    pub(super) sha256: String,
    /// The bytes, or `None` when they are to be read from the content store (a repair).
    pub(super) content: Option<&'a [u8]>,
}

impl Checked<'_> {
    pub(super) fn parent(&self) -> &[String] {
        &self.comps[..self.comps.len() - 1]
    }

    pub(super) fn name(&self) -> &str {
        self.comps.last().map_or("", String::as_str)
    }

    /// Whether `found` is already exactly what this entry wants (directories: any directory).
    pub(super) fn satisfied_by(&self, found: &Found) -> bool {
        match (self.desired.kind, found) {
            (
                DesiredKind::File,
                Found::File {
                    sha256,
                    mode,
                    uid,
                    gid,
                    ..
                },
            ) => {
                *sha256 == self.sha256
                    && FileAttrs {
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    } == self.attrs
            }
            (DesiredKind::Directory, Found::Directory { .. }) => true,
            _ => false,
        }
    }

    pub(super) fn error(&self, code: ErrorCode, message: impl Into<String>) -> FileError {
        FileError::new(&self.desired.path, code, message)
    }

    pub(super) fn walk_error(&self, err: &WalkError) -> FileError {
        let code = match err {
            WalkError::Missing { .. } => ErrorCode::MissingParent,
            WalkError::Symlink { .. } => ErrorCode::Symlink,
            WalkError::NotDirectory { .. } => ErrorCode::NotDirectory,
            WalkError::Io { .. } => ErrorCode::Io,
        };
        let path = &self.desired.path;
        self.error(code, format!("cannot reach {path:?}: {}", err.describe()))
    }

    pub(super) fn io_error(&self, err: &std::io::Error) -> FileError {
        self.error(
            ErrorCode::Io,
            format!("cannot write {:?}: {err}", self.desired.path),
        )
    }

    /// The error for a target that exists but is of the wrong kind, if it is.
    pub(super) fn wrong_target(&self, found: &Found) -> Option<FileError> {
        let path = &self.desired.path;
        match (self.desired.kind, found) {
            (_, Found::Symlink { .. }) => Some(self.error(
                ErrorCode::Symlink,
                format!("{path:?} is a symlink; the agent never follows one"),
            )),
            (DesiredKind::File, Found::Directory { .. } | Found::Other { .. }) => Some(self.error(
                ErrorCode::NotRegular,
                format!(
                    "{path:?} exists and is not a regular file ({})",
                    found_kind(found)
                ),
            )),
            (DesiredKind::Directory, Found::File { .. } | Found::Other { .. }) => Some(self.error(
                ErrorCode::NotDirectory,
                format!(
                    "{path:?} exists and is not a directory ({})",
                    found_kind(found)
                ),
            )),
            _ => None,
        }
    }
}

fn found_kind(found: &Found) -> &'static str {
    match found {
        Found::Missing => "missing",
        Found::File { .. } => "a regular file",
        Found::Directory { .. } => "a directory",
        Found::Symlink { .. } => "a symlink",
        Found::Other { .. } => "a device, socket or FIFO",
    }
}

/// What the preflight learnt about one entry.
pub(super) struct Plan {
    /// Index of the first missing component of the path, if any (it is created on the way).
    pub(super) missing_from: Option<usize>,
    pub(super) needs_write: bool,
}

impl Applier {
    /// Steps 1 and 2 for the whole set: the checked entries and their plans, or the set
    /// refused with every error found and what is on disk, nothing written.
    pub(super) fn check_set<'a>(
        &self,
        root: &OwnedFd,
        accounts: &Accounts,
        revision: &str,
        desired: &'a [DesiredFile],
        stored: bool,
    ) -> Result<(Vec<Checked<'a>>, Vec<Plan>), Rejected> {
        let (checked, mut errors) = self.check(desired, accounts, stored);
        let mut plans = Vec::with_capacity(checked.len());
        for entry in &checked {
            match self.preflight(root, entry) {
                Ok(plan) => plans.push(plan),
                Err(error) => errors.push(error),
            }
        }
        if !errors.is_empty() {
            tracing::warn!(
                revision,
                errors = errors.len(),
                "desired set refused, nothing written"
            );
            let observed = self.observe_inside(root, accounts, desired);
            return Err(Rejected {
                errors,
                observed,
                last_good_revision: self.record.revision.clone(),
            });
        }
        Ok((checked, plans))
    }

    /// Step 1: lexical and account checks of every entry. With `stored`, the entries come from
    /// the record (content checked when first applied, bytes in the content store).
    pub(super) fn check<'a>(
        &self,
        desired: &'a [DesiredFile],
        accounts: &Accounts,
        stored: bool,
    ) -> (Vec<Checked<'a>>, Vec<FileError>) {
        let mut checked: Vec<Checked<'a>> = Vec::with_capacity(desired.len());
        let mut errors = Vec::new();
        let mut seen: HashMap<String, &str> = HashMap::new();
        for d in desired {
            let path = &d.path;
            let comps = match paths::check(path, d.kind, &self.allowed) {
                Ok(comps) => comps,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            let key = node_path(&comps);
            if let Some(first) = seen.insert(key.clone(), path) {
                let message = format!("path {path:?} is desired twice (also as {first:?})");
                errors.push(FileError::new(path, ErrorCode::DuplicatePath, message));
                continue;
            }
            let mut problems = Vec::new();
            if d.mode > 0o7777 {
                problems.push((
                    ErrorCode::InvalidMode,
                    format!("mode {:o} of {path:?} is beyond 7777", d.mode),
                ));
            }
            match d.kind {
                DesiredKind::File if stored => {}
                DesiredKind::File => {
                    let actual = fsops::sha256_hex(&d.content);
                    if !d.sha256.eq_ignore_ascii_case(&actual) {
                        let message = format!(
                            "sha256 of {path:?} is {actual}, not {:?} as declared",
                            d.sha256
                        );
                        problems.push((ErrorCode::Sha256Mismatch, message));
                    }
                }
                DesiredKind::Directory if !d.content.is_empty() => {
                    problems.push((
                        ErrorCode::InvalidEntry,
                        format!("directory {path:?} has content"),
                    ));
                }
                DesiredKind::Directory => {}
            }
            let uid = accounts.uid(&d.owner);
            if uid.is_none() {
                let message = format!(
                    "owner {:?} of {path:?} is neither a user in the host's /etc/passwd nor a uid{}",
                    d.owner,
                    accounts.problems()
                );
                problems.push((ErrorCode::UnknownOwner, message));
            }
            let gid = accounts.gid(&d.group);
            if gid.is_none() {
                let message = format!(
                    "group {:?} of {path:?} is neither a group in the host's /etc/group nor a gid{}",
                    d.group,
                    accounts.problems()
                );
                problems.push((ErrorCode::UnknownGroup, message));
            }
            if !problems.is_empty() {
                errors.extend(
                    problems
                        .into_iter()
                        .map(|(code, message)| FileError::new(path, code, message)),
                );
                continue;
            }
            let attrs = FileAttrs {
                mode: d.mode,
                uid: uid.unwrap_or_default(),
                gid: gid.unwrap_or_default(),
            };
            let (sha256, content) = match d.kind {
                DesiredKind::File => (
                    d.sha256.to_ascii_lowercase(),
                    (!stored).then_some(d.content.as_slice()),
                ),
                DesiredKind::Directory => (String::new(), None),
            };
            checked.push(Checked {
                desired: d,
                comps,
                key,
                attrs,
                sha256,
                content,
            });
        }
        // A file cannot also be a directory on the way to another entry.
        let files: HashMap<&str, &str> = checked
            .iter()
            .filter(|c| c.desired.kind == DesiredKind::File)
            .map(|c| (c.key.as_str(), c.desired.path.as_str()))
            .collect();
        let mut below_file = HashSet::new();
        for (i, c) in checked.iter().enumerate() {
            for depth in self.allowed.len()..c.comps.len() {
                if let Some(file) = files.get(node_path(&c.comps[..depth]).as_str()) {
                    let message = format!(
                        "{:?} is below {file:?}, which is desired as a file",
                        c.desired.path
                    );
                    errors.push(c.error(ErrorCode::NotDirectory, message));
                    below_file.insert(i);
                    break;
                }
            }
        }
        let checked = checked
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !below_file.contains(i))
            .map(|(_, c)| c)
            .collect();
        (checked, errors)
    }

    /// Step 2: walk to the entry read-only and decide whether it needs writing.
    fn preflight(&self, root: &OwnedFd, entry: &Checked<'_>) -> Result<Plan, FileError> {
        let parent = match fsops::walk(root, entry.parent()) {
            Ok(parent) => parent,
            // Missing directories from the allowed root down are created on the way.
            Err(WalkError::Missing { index, .. }) if index + 1 >= self.allowed.len() => {
                return Ok(Plan {
                    missing_from: Some(index),
                    needs_write: true,
                });
            }
            Err(err) => return Err(entry.walk_error(&err)),
        };
        let found = fsops::observe_at(&parent, entry.name()).map_err(|e| entry.io_error(&e))?;
        if let Some(error) = entry.wrong_target(&found) {
            return Err(error);
        }
        let missing_from = (found == Found::Missing).then_some(entry.comps.len() - 1);
        Ok(Plan {
            missing_from,
            needs_write: !entry.satisfied_by(&found),
        })
    }
}
