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
use crate::policy;
use crate::record::Origin;

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
    pub(super) claim: Claim,
}

/// Whose the thing at a desired path is, and so what the agent may do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// Nothing there: the agent places it.
    New,
    /// The agent's already: placed by it, adopted earlier, or what it meant to write before a
    /// crash.
    Ours,
    /// Someone else's, and already what is desired (a file with exactly the desired bytes, or
    /// any directory): adopted, so its mode and owner may be set but it is never removed.
    Adopt,
    /// Someone else's file with other bytes, taken over because the agent runs with
    /// `--adopt-existing`: overwritten, then the agent's like any file it placed.
    TakeOver {
        /// SHA-256 of the bytes replaced, for the log.
        previous: String,
    },
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

    /// Step 1: lexical, policy and account checks of every entry. With `stored`, the entries
    /// come from the record (content checked when first applied, bytes in the content store).
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
            let name = comps.last().map_or("", String::as_str);
            let mut problems = policy::check(d, name, (!stored).then_some(d.content.as_slice()));
            match d.kind {
                DesiredKind::File if stored => {}
                DesiredKind::File => {
                    let actual = fsops::sha256_hex(&d.content);
                    if !d.sha256.eq_ignore_ascii_case(&actual) {
                        let message = format!(
                            "sha256 of {path:?} is {actual}, not {:?} as declared",
                            d.sha256
                        );
                        problems.push(FileError::new(path, ErrorCode::Sha256Mismatch, message));
                    }
                }
                DesiredKind::Directory if !d.content.is_empty() => {
                    problems.push(FileError::new(
                        path,
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
                problems.push(FileError::new(path, ErrorCode::UnknownOwner, message));
            }
            let gid = accounts.gid(&d.group);
            if gid.is_none() {
                let message = format!(
                    "group {:?} of {path:?} is neither a group in the host's /etc/group nor a gid{}",
                    d.group,
                    accounts.problems()
                );
                problems.push(FileError::new(path, ErrorCode::UnknownGroup, message));
            }
            if !problems.is_empty() {
                errors.extend(problems);
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
                    claim: Claim::New,
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
            claim: self.claim(entry, &found)?,
        })
    }

    /// Whose `found` (what is at the entry's path, of the right kind) is; a file the agent did
    /// not place, with other bytes than desired, is an error unless it takes such files over.
    pub(super) fn claim(&self, entry: &Checked<'_>, found: &Found) -> Result<Claim, FileError> {
        let recorded = self.record.entries.get(&entry.key);
        let sha256 = match found {
            Found::Missing => return Ok(Claim::New),
            Found::File { sha256, .. } => sha256,
            _ if recorded.is_some() => return Ok(Claim::Ours),
            _ => return Ok(Claim::Adopt),
        };
        let ours = recorded.is_some_and(|e| match e.origin {
            Origin::Placed | Origin::Adopted => true,
            // Written before a crash if the bytes are those it meant to write; otherwise
            // whatever is there was never the agent's.
            Origin::Pending => e.sha256 == *sha256,
        });
        if ours {
            return Ok(Claim::Ours);
        }
        if *sha256 == entry.sha256 {
            return Ok(Claim::Adopt);
        }
        if self.adopt_existing {
            return Ok(Claim::TakeOver {
                previous: sha256.clone(),
            });
        }
        let path = &entry.desired.path;
        Err(entry.error(
            ErrorCode::ForeignFile,
            format!(
                "{path:?} holds a file the agent did not place, with other bytes (sha256 {sha256}); \
                 the agent never overwrites one (remove it, or run the agent with --adopt-existing \
                 to take such files over)"
            ),
        ))
    }
}
