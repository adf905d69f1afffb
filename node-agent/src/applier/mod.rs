//! [`Applier`]: brings the allowed root in line with a desired set, removes what the agent
//! placed and no longer needs, observes the result, and detects and repairs drift.
//!
//! An apply (`apply_set`) runs in four steps, each in a module of its own:
//! 1. **Check** every entry without touching the disk: path, kind, sha256, owner, group, and
//!    the policy (`crate::policy`: `*.json` names, modes, content a valid seccomp profile).
//! 2. **Preflight** every entry read-only: walk to it with `O_NOFOLLOW`, refuse symlinks,
//!    non-directories on the way and non-regular targets, decide whose the target is (a file
//!    the agent did not place is adopted if it has the desired bytes, and refused otherwise,
//!    or taken over with `--adopt-existing`), and note what needs writing.
//!    Any error in 1 or 2 refuses the whole set; nothing is written (`check`).
//! 3. **Write**: record the paths about to be written (write-ahead), then write each changed
//!    file atomically and create each missing directory, skipping what is already as desired
//!    (`write`).
//! 4. **Record** what the disk now holds, **remove** what the agent placed and is no longer
//!    desired (`remove`), and **observe** every desired path on disk for the result
//!    (`finish`).
//!
//! `observe` reports what is at a path; `drift` compares that with the last desired set
//! and repairs it by applying that set again.

mod check;
mod drift;
mod finish;
mod observe;
mod remove;
mod write;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::accounts::Accounts;
use crate::error::{Error, Result};
use crate::fsops;
use crate::hook::WriteHook;
use crate::model::{Applied, DesiredFile, ErrorCode, FileError, Rejected};
use crate::paths;
use crate::record::{Record, StateDir};

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
    /// Take over files the agent did not place that are at a desired path with other bytes,
    /// instead of refusing the set.
    adopt_existing: bool,
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
            adopt_existing: false,
        })
    }

    /// Installs a hook called at each pause point of every file write (crash tests).
    #[must_use]
    pub fn with_hook(mut self, hook: WriteHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// With `adopt`, a regular file that the agent did not place and that is at a desired path
    /// with other bytes is overwritten and from then on treated as placed (removed when no
    /// longer desired); without it (the default) such a file refuses the whole set
    /// (`foreign-file`). Either way a file with exactly the desired bytes is adopted and never
    /// removed.
    #[must_use]
    pub fn with_adopt_existing(mut self, adopt: bool) -> Self {
        self.adopt_existing = adopt;
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
        let root = self.open_host_root(desired)?;
        let accounts = Accounts::load(&root);
        let (checked, plans) = self.check_set(&root, &accounts, revision, desired, stored)?;
        let last_good = self.record.revision.clone();
        self.write_ahead(desired, &checked, &plans)?;
        let mut written = self.write_set(&root, &checked, &plans);
        let removed =
            self.record_result(&root, revision, desired, &checked, &last_good, &mut written);
        self.prune_contents();
        self.report(&root, &accounts, revision, &checked, written, removed)
    }

    /// The host root, or the whole set refused when it cannot be opened.
    fn open_host_root(&self, desired: &[DesiredFile]) -> Result<OwnedFd, Rejected> {
        fsops::open_root(&self.config.host_root).map_err(|e| {
            let message = format!("cannot open the host root {:?}: {e}", self.config.host_root);
            self.reject_all(desired, &message)
        })
    }

    /// Makes `next` the record, on disk first; a record that is unchanged is not rewritten.
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
