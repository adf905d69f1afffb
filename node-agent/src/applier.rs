//! [`Applier`]: brings the allowed root in line with a desired set, removes what the agent
//! placed and no longer needs, observes the result, and detects and repairs drift.
//!
//! An apply runs in four steps:
//! 1. **Check** every entry without touching the disk: path, kind, sha256, mode, owner, group.
//! 2. **Preflight** every entry read-only: walk to it with `O_NOFOLLOW`, refuse symlinks,
//!    non-directories on the way and non-regular targets, and note what needs writing.
//!    Any error in 1 or 2 refuses the whole set; nothing is written.
//! 3. **Write**: record the paths about to be written (write-ahead), then write each changed
//!    file atomically and create each missing directory, skipping what is already as desired.
//! 4. **Remove** what the agent placed and is no longer desired, save the record, and
//!    **observe** every desired path on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::accounts::Accounts;
use crate::error::{Error, Result};
use crate::fsops::{self, Creation, DirAttrs, DirRemoval, FileAttrs, Found, WalkError};
use crate::hook::WriteHook;
use crate::model::{
    Applied, DesiredFile, DesiredKind, Drift, DriftKind, DriftReport, ErrorCode, FileError,
    ObservedFile, ObservedKind, Rejected,
};
use crate::paths::{self, node_path};
use crate::record::{Entry, Origin, Record, StateDir};

/// Where the agent works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Prefix of every node path: `/` when the agent runs on the host, `/host` in a DaemonSet
    /// that mounts the host's `/` there.
    pub host_root: PathBuf,
    /// The only tree the agent writes to, as a node path (interpreted inside `host_root`).
    pub allowed_root: String,
    /// The agent's own directory (not inside `host_root`) for its record and lock.
    pub state_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            allowed_root: "/var/lib/kubelet/seccomp".to_owned(),
            state_dir: PathBuf::from("/var/lib/seccomp-node-agent"),
        }
    }
}

/// Mode of directories the agent creates on the way to a desired path that the set does not
/// declare itself; their owner is the agent's.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Applies desired file sets to one node's disk. One per node; it locks its state directory.
///
/// Methods take `&mut self` where they may write, so a caller sharing it between the sync
/// stream and the drift loop wraps it in a mutex and applies are never concurrent.
#[derive(Debug)]
pub struct Applier {
    config: Config,
    allowed: Vec<String>,
    state: StateDir,
    record: Record,
    hook: Option<WriteHook>,
}

/// A desired entry that passed the lexical checks.
struct Checked<'a> {
    desired: &'a DesiredFile,
    comps: Vec<String>,
    key: String,
    attrs: FileAttrs,
    /// Lowercase hex SHA-256 of the content; empty for a directory.
    sha256: String,
    /// The bytes, or `None` when they are to be read from the content store (a repair).
    content: Option<&'a [u8]>,
}

impl Checked<'_> {
    fn parent(&self) -> &[String] {
        &self.comps[..self.comps.len() - 1]
    }

    fn name(&self) -> &str {
        self.comps.last().map_or("", String::as_str)
    }

    /// Whether `found` is already exactly what this entry wants (directories: any directory).
    fn satisfied_by(&self, found: &Found) -> bool {
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

    fn error(&self, code: ErrorCode, message: impl Into<String>) -> FileError {
        FileError::new(&self.desired.path, code, message)
    }

    fn walk_error(&self, err: &WalkError) -> FileError {
        let code = match err {
            WalkError::Missing { .. } => ErrorCode::MissingParent,
            WalkError::Symlink { .. } => ErrorCode::Symlink,
            WalkError::NotDirectory { .. } => ErrorCode::NotDirectory,
            WalkError::Io { .. } => ErrorCode::Io,
        };
        let path = &self.desired.path;
        self.error(code, format!("cannot reach {path:?}: {}", err.describe()))
    }

    /// The error for a target that exists but is of the wrong kind, if it is.
    fn wrong_target(&self, found: &Found) -> Option<FileError> {
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
struct Plan {
    /// Index of the first missing component of the path, if any (it is created on the way).
    missing_from: Option<usize>,
    needs_write: bool,
}

impl Applier {
    /// Opens the agent's state directory (creating and locking it) and reads its record.
    pub fn open(config: Config) -> Result<Self> {
        let allowed =
            paths::allowed_root_components(&config.allowed_root).map_err(Error::Config)?;
        let (state, record) = StateDir::open(&config.state_dir)?;
        Ok(Self {
            config,
            allowed,
            state,
            record,
            hook: None,
        })
    }

    /// Installs a hook called at each pause point of every file write (crash tests).
    #[must_use]
    pub fn with_hook(mut self, hook: WriteHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The revision last applied completely (persisted across restarts); empty if none, or
    /// after an apply that failed midway.
    pub fn revision(&self) -> &str {
        &self.record.revision
    }

    /// The last desired set accepted (persisted): the baseline for drift. Without `content`:
    /// the bytes are kept in the state directory and read back only to repair.
    pub fn desired(&self) -> &[DesiredFile] {
        &self.record.desired
    }

    /// The allowed root on this machine's filesystem (host root + allowed root), for watching.
    pub fn allowed_root_on_disk(&self) -> PathBuf {
        let mut path = self.config.host_root.clone();
        path.extend(&self.allowed);
        path
    }

    /// Makes the disk match `desired` (a node's complete file set) and reports what is there
    /// afterwards. See the module documentation for the steps and [`Rejected`] for what a
    /// failure leaves behind.
    pub fn apply(&mut self, revision: &str, desired: &[DesiredFile]) -> Result<Applied, Rejected> {
        self.apply_set(revision, desired, false)
    }

    /// [`apply`](Self::apply); with `stored`, file contents come from the content store
    /// (the entries are the record's own baseline, checked when first applied).
    fn apply_set(
        &mut self,
        revision: &str,
        desired: &[DesiredFile],
        stored: bool,
    ) -> Result<Applied, Rejected> {
        let root = match fsops::open_root(&self.config.host_root) {
            Ok(root) => root,
            Err(e) => {
                let message = format!("cannot open the host root {:?}: {e}", self.config.host_root);
                return Err(self.reject_all(desired, &message));
            }
        };
        let accounts = Accounts::load(&root);

        // 1 and 2: check everything, write nothing.
        let (checked, mut errors) = self.check(desired, &accounts, stored);
        let mut plans = Vec::with_capacity(checked.len());
        for entry in &checked {
            match self.preflight(&root, entry) {
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
            let observed = self.observe_inside(&root, &accounts, desired);
            return Err(Rejected {
                errors,
                observed,
                last_good_revision: self.record.revision.clone(),
            });
        }

        // 3: keep the contents (so drift can be repaired later, also after a restart), record
        // what is about to be written, then write.
        for entry in &checked {
            if let (Some(content), DesiredKind::File) = (entry.content, entry.desired.kind)
                && let Err(e) = self.state.put_content(&entry.sha256, content)
            {
                return Err(self.reject_all(desired, &e.to_string()));
            }
        }
        let before = self.record.clone();
        let mut next = self.record.clone();
        let any_write = plans.iter().any(|p| p.needs_write);
        for (entry, plan) in checked.iter().zip(&plans) {
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
                let sha256 = entry.sha256.clone();
                match next.entries.get_mut(&entry.key) {
                    Some(e) if e.origin == Origin::Placed => e.sha256 = sha256,
                    _ => {
                        next.entries.insert(
                            entry.key.clone(),
                            Entry {
                                kind: entry.desired.kind,
                                origin: Origin::Pending,
                                sha256,
                            },
                        );
                    }
                }
            }
        }
        if any_write {
            next.revision.clear();
        }
        if let Err(e) = self.save(next) {
            return Err(self.reject_all(desired, &e.to_string()));
        }

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
        let mut order: Vec<&Checked<'_>> = checked.iter().collect();
        order.sort_by(|a, b| a.comps.cmp(&b.comps));
        let mut written = Vec::new();
        let mut created_dirs = Vec::new();
        let mut cleaned = HashSet::new();
        let mut failed = HashSet::new();
        for entry in order {
            match self.write_entry(&root, entry, &dir_attrs, &mut created_dirs, &mut cleaned) {
                Ok(true) => written.push(entry.key.clone()),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(path = %entry.desired.path, code = %error.code, "{}", error.message);
                    failed.insert(entry.key.clone());
                    errors.push(error);
                }
            }
        }

        // The record now says what the disk holds.
        let mut next = self.record.clone();
        for dir in &created_dirs {
            if let Some(e) = next.entries.get_mut(dir) {
                e.origin = Origin::Placed;
            }
        }
        for entry in &checked {
            if failed.contains(&entry.key) {
                continue;
            }
            let sha256 = entry.sha256.clone();
            let wrote = written.contains(&entry.key) || created_dirs.contains(&entry.key);
            let origin = match next.entries.get(&entry.key) {
                _ if wrote => Origin::Placed,
                Some(e) if e.origin == Origin::Placed => Origin::Placed,
                // Meant to write exactly this before a crash, and it is there: it is ours.
                Some(e) if e.origin == Origin::Pending && e.sha256 == sha256 => Origin::Placed,
                _ => Origin::Adopted,
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
        let wrote_anything = !written.is_empty() || !created_dirs.is_empty();
        let mut removed = Vec::new();
        if errors.is_empty() {
            removed = self.remove_stale(&root, &checked, &mut next);
            next.revision = revision.to_owned();
            next.desired = without_content(desired);
        } else if wrote_anything {
            next.revision.clear();
            next.desired = without_content(desired);
        } else {
            next.revision.clone_from(&before.revision);
        }
        if let Err(e) = self.save(next) {
            errors.extend(
                desired
                    .iter()
                    .map(|d| FileError::new(&d.path, ErrorCode::Io, e.to_string())),
            );
        }
        let keep: HashSet<&str> = self
            .record
            .desired
            .iter()
            .map(|d| d.sha256.as_str())
            .collect();
        if let Err(e) = self.state.retain_content(&keep) {
            tracing::warn!("cannot prune stored contents: {e}");
        }

        // 4: report what is on disk, not what was meant.
        let observed: Vec<ObservedFile> = checked
            .iter()
            .map(|c| self.observe_entry(&root, &accounts, c))
            .collect();
        if !errors.is_empty() {
            return Err(Rejected {
                errors,
                observed,
                last_good_revision: self.record.revision.clone(),
            });
        }
        if !written.is_empty() || !removed.is_empty() {
            tracing::info!(
                revision,
                written = written.len(),
                removed = removed.len(),
                "applied desired set"
            );
        }
        let written = checked
            .iter()
            .filter(|c| written.contains(&c.key) || created_dirs.contains(&c.key))
            .map(|c| c.desired.path.clone())
            .collect();
        Ok(Applied {
            revision: revision.to_owned(),
            observed,
            written,
            removed,
        })
    }

    /// Every desired entry that differs from what is on disk now (files: content, mode, uid,
    /// gid, kind; directories: existence and kind only, since an existing directory is
    /// deliberately left as it is). Empty when nothing drifted.
    pub fn check_drift(&self) -> Vec<Drift> {
        let root = match fsops::open_root(&self.config.host_root) {
            Ok(root) => root,
            Err(e) => {
                tracing::warn!(host_root = ?self.config.host_root, "cannot open the host root: {e}");
                return self
                    .record
                    .desired
                    .iter()
                    .map(|d| unreadable(&d.path))
                    .collect();
            }
        };
        let accounts = Accounts::load(&root);
        let (checked, errors) = self.check(&self.record.desired, &accounts, true);
        for error in errors {
            // For example an owner removed from the host's passwd since the apply.
            tracing::warn!(path = %error.path, code = %error.code, "cannot check for drift: {}", error.message);
        }
        let mut drifted = Vec::new();
        for entry in &checked {
            let observed = match self.observe_checked(&root, &accounts, entry) {
                Ok(observed) => observed,
                Err(_) => {
                    drifted.push(unreadable(&entry.desired.path));
                    continue;
                }
            };
            let mut kinds = Vec::new();
            match (entry.desired.kind, observed.kind) {
                (_, None) => kinds.push(DriftKind::Missing),
                (DesiredKind::File, Some(ObservedKind::File)) => {
                    if observed.sha256 != entry.sha256 {
                        kinds.push(DriftKind::Content);
                    }
                    if observed.mode != entry.attrs.mode {
                        kinds.push(DriftKind::Mode);
                    }
                    if observed.uid != entry.attrs.uid {
                        kinds.push(DriftKind::Owner);
                    }
                    if observed.gid != entry.attrs.gid {
                        kinds.push(DriftKind::Group);
                    }
                }
                (DesiredKind::Directory, Some(ObservedKind::Directory)) => {}
                _ => kinds.push(DriftKind::WrongKind),
            }
            if !kinds.is_empty() {
                drifted.push(Drift { observed, kinds });
            }
        }
        drifted
    }

    /// Checks for drift and, if any, re-applies the last desired set (which rewrites only what
    /// differs). `None` when nothing drifted.
    pub fn repair(&mut self) -> Option<DriftReport> {
        let drifted = self.check_drift();
        if drifted.is_empty() {
            return None;
        }
        let revision = self.record.revision.clone();
        let desired = self.record.desired.clone();
        tracing::info!(
            revision,
            drifted = drifted.len(),
            "drift detected, repairing"
        );
        Some(match self.apply_set(&revision, &desired, true) {
            Ok(applied) => DriftReport {
                revision,
                drifted,
                repaired: true,
                errors: Vec::new(),
                observed: applied.observed,
            },
            Err(rejected) => DriftReport {
                revision,
                drifted,
                repaired: false,
                errors: rejected.errors,
                observed: rejected.observed,
            },
        })
    }

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

    /// Step 1: lexical and account checks of every entry. With `stored`, the entries come from
    /// the record (content checked when first applied, bytes in the content store).
    fn check<'a>(
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
        let found =
            fsops::observe_at(&parent, entry.name()).map_err(|e| self.io_error(entry, &e))?;
        if let Some(error) = entry.wrong_target(&found) {
            return Err(error);
        }
        let missing_from = (found == Found::Missing).then_some(entry.comps.len() - 1);
        Ok(Plan {
            missing_from,
            needs_write: !entry.satisfied_by(&found),
        })
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

    /// Step 3 for one entry; `Ok(true)` when it wrote the file or created the directory.
    fn write_entry(
        &self,
        root: &OwnedFd,
        entry: &Checked<'_>,
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
        let found =
            fsops::observe_at(&parent, entry.name()).map_err(|e| self.io_error(entry, &e))?;
        if let Some(error) = entry.wrong_target(&found) {
            return Err(error);
        }
        if entry.satisfied_by(&found) {
            return Ok(false);
        }
        match entry.desired.kind {
            DesiredKind::File => {
                let stored;
                let content = match entry.content {
                    Some(content) => content,
                    None => {
                        stored = self
                            .state
                            .content(&entry.sha256)
                            .map_err(|e| self.io_error(entry, &e))?;
                        &stored
                    }
                };
                fsops::write_atomically(
                    &parent,
                    entry.name(),
                    content,
                    entry.attrs,
                    self.hook.as_ref(),
                    &entry.desired.path,
                )
                .map_err(|e| self.io_error(entry, &e))?;
                tracing::info!(path = %entry.desired.path, sha256 = %entry.sha256, "wrote file");
            }
            DesiredKind::Directory => {
                self.walk_creating(root, entry, &entry.comps, &attrs, created_dirs)?;
                tracing::info!(path = %entry.desired.path, "created directory");
            }
        }
        Ok(true)
    }

    /// Step 4: removes what the agent placed that neither the set nor a path in it needs, and
    /// drops those entries from the record. Returns the node paths removed.
    fn remove_stale(
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

    /// Every desired path that is inside the allowed root, as on disk now.
    fn observe_inside(
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

    fn observe_entry(
        &self,
        root: &OwnedFd,
        accounts: &Accounts,
        entry: &Checked<'_>,
    ) -> ObservedFile {
        self.observe_checked(root, accounts, entry)
            .unwrap_or_else(|_| ObservedFile::missing(entry.desired.path.clone()))
    }

    fn observe_checked(
        &self,
        root: &OwnedFd,
        accounts: &Accounts,
        entry: &Checked<'_>,
    ) -> Result<ObservedFile, FileError> {
        observe_path(root, accounts, &entry.desired.path, &entry.comps)
    }

    fn io_error(&self, entry: &Checked<'_>, err: &std::io::Error) -> FileError {
        entry.error(
            ErrorCode::Io,
            format!("cannot write {:?}: {err}", entry.desired.path),
        )
    }

    fn save(&mut self, next: Record) -> Result<()> {
        if next != self.record {
            self.state.save(&next)?;
            self.record = next;
        }
        Ok(())
    }

    /// A failure that concerns the whole set: one error per desired path.
    fn reject_all(&self, desired: &[DesiredFile], message: &str) -> Rejected {
        let mut errors: Vec<FileError> = desired
            .iter()
            .map(|d| FileError::new(&d.path, ErrorCode::Io, message.to_owned()))
            .collect();
        if errors.is_empty() {
            errors.push(FileError::new(
                &self.config.allowed_root,
                ErrorCode::Io,
                message.to_owned(),
            ));
        }
        tracing::error!("{message}");
        Rejected {
            errors,
            observed: Vec::new(),
            last_good_revision: self.record.revision.clone(),
        }
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

enum Removal {
    Removed,
    /// Nothing there that the agent may remove: drop it from the record.
    Forget,
    /// Still there (a directory with someone else's files): keep it recorded, retry later.
    Keep,
}

fn unreadable(path: &str) -> Drift {
    Drift {
        observed: ObservedFile::missing(path),
        kinds: vec![DriftKind::Unreadable],
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
