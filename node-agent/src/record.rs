//! The agent's own record of what it placed, in its state directory: which paths it wrote or
//! created (so it removes those, and only those, once they are no longer desired), the last
//! revision applied completely, and the last desired set (so drift can be repaired after a
//! restart without the distributor).
//!
//! The record is one JSON file replaced atomically ([`seccomp_server::atomic`]: temp file,
//! fsync, rename, fsync of the directory), and the directory is locked with `flock` so that two agents never share it.
//! Before writing any node file the agent saves the paths it is about to write as `pending`
//! (write-ahead), so a crash midway never leaves a file it wrote unrecorded.
//!
//! File contents are not in the record: they live in `content/<sha256>` (written once per
//! distinct content, before any record refers to it, and removed once none does). The record
//! stays small, rewriting it after a repair is cheap, and the agent does not keep every
//! profile's bytes in memory: it reads back only what a repair rewrites.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, Dir, FlockOperation, Mode, OFlags, flock, mkdirat, openat, statat, unlinkat,
};
use rustix::io::Errno;
use seccomp_server::atomic;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsops::{DIR_FLAGS, sha256_hex};
use crate::model::{DesiredFile, DesiredKind};

const RECORD_FILE: &str = "record.json";
const CONTENT_DIR: &str = "content";
const LOCK_FILE: &str = "lock";
const FORMAT: u32 = 1;

/// How a recorded path came to be the agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Origin {
    /// The agent wrote the file or created the directory: removed when no longer desired.
    Placed,
    /// About to be written when the record was saved (write-ahead). Removed when no longer
    /// desired only if the file holds exactly the bytes the agent meant to write (`sha256`),
    /// so a crash before the write never costs someone else's file.
    Pending,
    /// Already on disk exactly as desired when first seen; never removed.
    Adopted,
}

/// One recorded path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) kind: DesiredKind,
    pub(crate) origin: Origin,
    /// For files: hex SHA-256 of the bytes the agent wrote (or meant to).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) sha256: String,
}

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) format: u32,
    /// Last revision applied completely; empty after a failed or interrupted apply.
    pub(crate) revision: String,
    /// Normalised node path → entry.
    pub(crate) entries: BTreeMap<String, Entry>,
    /// The last desired set the agent accepted (the baseline for drift), without content.
    pub(crate) desired: Vec<DesiredFile>,
}

/// The agent's state directory, open and locked for this process: the record, the content
/// store and the lock.
#[derive(Debug)]
pub(crate) struct StateDir {
    path: PathBuf,
    dir: OwnedFd,
    content: OwnedFd,
    /// Held for the life of the state directory; the kernel releases it when the process dies.
    _lock: OwnedFd,
}

impl StateDir {
    /// Creates (0700) and locks the state directory, removes temp files of an interrupted save,
    /// and reads the record (empty on first start).
    pub(crate) fn open(path: &Path) -> Result<(Self, Record)> {
        let state = |source: std::io::Error| Error::State {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(state)?;
        let dir = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| state(e.into()))?;
        let lock = openat(
            &dir,
            LOCK_FILE,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| state(e.into()))?;
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(Error::Locked(path.to_owned())),
            Err(e) => return Err(state(e.into())),
        }
        atomic::remove_temps(&dir, atomic::is_temp_name).map_err(state)?;
        match mkdirat(&dir, CONTENT_DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(state(e.into())),
        }
        let content =
            openat(&dir, CONTENT_DIR, DIR_FLAGS, Mode::empty()).map_err(|e| state(e.into()))?;
        atomic::remove_temps(&content, atomic::is_temp_name).map_err(state)?;
        let record_path = path.join(RECORD_FILE);
        let record = match openat(
            &dir,
            RECORD_FILE,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let mut text = String::new();
                std::fs::File::from(fd)
                    .read_to_string(&mut text)
                    .map_err(|source| Error::State {
                        path: record_path.clone(),
                        source,
                    })?;
                serde_json::from_str(&text).map_err(|source| Error::CorruptRecord {
                    path: record_path,
                    source,
                })?
            }
            Err(Errno::NOENT) => Record {
                format: FORMAT,
                ..Record::default()
            },
            Err(e) => {
                return Err(Error::State {
                    path: record_path,
                    source: e.into(),
                });
            }
        };
        Ok((
            Self {
                path: path.to_owned(),
                dir,
                content,
                _lock: lock,
            },
            record,
        ))
    }

    /// Replaces the record atomically and durably.
    pub(crate) fn save(&self, record: &Record) -> Result<()> {
        let text = serde_json::to_vec(record).map_err(std::io::Error::from);
        text.and_then(|text| {
            atomic::write_at(&self.dir, RECORD_FILE, &text, 0o600).map_err(std::io::Error::from)
        })
        .map_err(|source| Error::State {
            path: self.path.join(RECORD_FILE),
            source,
        })
    }

    /// Keeps `bytes` (whose hex SHA-256 is `sha256`) in the content store, durably; a no-op
    /// when they are there already.
    pub(crate) fn put_content(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        match statat(&self.content, sha256, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(()),
            Err(Errno::NOENT) => {
                atomic::write_at(&self.content, sha256, bytes, 0o600).map_err(|e| Error::State {
                    path: self.path.join(CONTENT_DIR).join(sha256),
                    source: e.into(),
                })
            }
            Err(e) => Err(Error::State {
                path: self.path.join(CONTENT_DIR).join(sha256),
                source: e.into(),
            }),
        }
    }

    /// Reads back stored content, checking it is what its name says.
    pub(crate) fn content(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        let fd = openat(
            &self.content,
            sha256,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut bytes)?;
        if sha256_hex(&bytes) != sha256 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("stored content {sha256} is corrupt"),
            ));
        }
        Ok(bytes)
    }

    /// Removes stored content that no name in `keep` refers to.
    pub(crate) fn retain_content(&self, keep: &HashSet<&str>) -> Result<()> {
        let state = |source: std::io::Error| Error::State {
            path: self.path.join(CONTENT_DIR),
            source,
        };
        let mut stale = Vec::new();
        for entry in Dir::read_from(&self.content).map_err(|e| state(e.into()))? {
            let entry = entry.map_err(|e| state(e.into()))?;
            if let Ok(name) = entry.file_name().to_str()
                && name != "."
                && name != ".."
                && !keep.contains(name)
            {
                stale.push(name.to_owned());
            }
        }
        for name in &stale {
            match unlinkat(&self.content, name.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(state(e.into())),
            }
        }
        Ok(())
    }
}
