//! Following a node's log files for kernel seccomp records (`--audit-log`, #19): new
//! complete lines since the last read, across rotation and truncation, with the position
//! kept in the agent's state directory so a restarted agent sends nothing twice.
//!
//! A follower keeps the file it reads open. On each [`LogFollower::poll`] it reads what was
//! appended; when the path now names another file (rotated: renamed away and a new one
//! created), it first reads the rest of the old one, then follows the new one from its
//! start; when the file got shorter than the position (truncated in place, `copytruncate`),
//! it starts again from the beginning. A line without its newline yet is left for the next
//! poll. The position (the file's device and inode, and the offset after the last complete
//! line) is written atomically after every poll that moved it; a follower opened on the same
//! state file goes on from there when it is the same file, and from the start when not.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use seccomp_profile::audit::{SeccompRecord, parse_line};

/// Most bytes read from a file in one poll (the rest waits for the next one), and the
/// longest line kept (a longer one is skipped: no seccomp record is that long).
const MAX_READ: usize = 4 << 20;
const MAX_LINE: usize = 64 << 10;

/// Where a follower is: which file, and how far into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
}

/// Why a log cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Reading the log failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The log.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The position could not be kept.
    #[error("keeping the position of {path} in {state}: {reason}")]
    State {
        /// The log.
        path: PathBuf,
        /// The state file.
        state: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One followed log file.
pub struct LogFollower {
    path: PathBuf,
    state: PathBuf,
    open: Option<(File, Position)>,
    /// The start of a line whose newline has not been read yet.
    partial: Vec<u8>,
}

impl LogFollower {
    /// Follow `path`, keeping the position in `state`. A missing log is not an error: it is
    /// followed once it appears.
    pub fn new(path: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        LogFollower {
            path: path.into(),
            state: state.into(),
            open: None,
            partial: Vec::new(),
        }
    }

    fn read_error(&self, source: std::io::Error) -> FollowError {
        FollowError::Read {
            path: self.path.clone(),
            source,
        }
    }

    fn saved(&self) -> Option<Position> {
        let bytes = std::fs::read(&self.state).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, p: Position) -> Result<(), FollowError> {
        let bytes = serde_json::to_vec(&p).map_err(|e| self.state_error(e.to_string()))?;
        seccomp_server::atomic::write(&self.state, &bytes, 0o600)
            .map_err(|e| self.state_error(e.to_string()))
    }

    fn state_error(&self, reason: String) -> FollowError {
        FollowError::State {
            path: self.path.clone(),
            state: self.state.clone(),
            reason,
        }
    }

    /// Open the file at the path now, at the saved position when it is the same file.
    fn open_current(&self, resume: bool) -> Result<Option<(File, Position)>, FollowError> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.read_error(e)),
        };
        let meta = file.metadata().map_err(|e| self.read_error(e))?;
        let mut at = Position {
            dev: meta.dev(),
            ino: meta.ino(),
            offset: 0,
        };
        if resume
            && let Some(saved) = self.saved()
            && (saved.dev, saved.ino) == (at.dev, at.ino)
            && saved.offset <= meta.len()
        {
            at.offset = saved.offset;
        }
        file.seek(SeekFrom::Start(at.offset))
            .map_err(|e| self.read_error(e))?;
        Ok(Some((file, at)))
    }

    /// The seccomp records in what was appended since the last poll (other lines are
    /// skipped), following rotation and truncation; the position is kept.
    pub fn poll(&mut self) -> Result<Vec<SeccompRecord>, FollowError> {
        let mut records = Vec::new();
        if self.open.is_none() {
            self.open = self.open_current(true)?;
        }
        let before = self.open.as_ref().map(|(_, p)| *p);
        while let Some((file, at)) = self.open.as_mut() {
            // Truncated in place: from the start.
            let len = file.metadata().map_err(|e| FollowError::Read {
                path: self.path.clone(),
                source: e,
            })?;
            if len.len() < at.offset {
                at.offset = 0;
                self.partial.clear();
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| FollowError::Read {
                        path: self.path.clone(),
                        source: e,
                    })?;
            }
            let mut chunk = Vec::new();
            file.take(MAX_READ as u64)
                .read_to_end(&mut chunk)
                .map_err(|e| FollowError::Read {
                    path: self.path.clone(),
                    source: e,
                })?;
            let mut start = 0;
            for (i, b) in chunk.iter().enumerate() {
                if *b != b'\n' {
                    continue;
                }
                let line = if self.partial.is_empty() {
                    &chunk[start..i]
                } else {
                    self.partial.extend_from_slice(&chunk[start..i]);
                    &self.partial[..]
                };
                if line.len() <= MAX_LINE
                    && let Some(r) = parse_line(&String::from_utf8_lossy(line))
                {
                    records.push(r);
                }
                self.partial.clear();
                start = i + 1;
            }
            at.offset += start as u64;
            let rest = &chunk[start..];
            if self.partial.len() + rest.len() <= MAX_LINE {
                self.partial.extend_from_slice(rest);
            } else {
                // Too long to be a record: dropped up to its newline.
                self.partial.clear();
            }
            // The partial line counts as unread: the position stays after the last
            // newline, so a restart reads it again whole.
            let file_id = (at.dev, at.ino);
            // Rotated: the path names another file now. The old one is read to its end
            // above; go on with the new one from its start.
            let now = match std::fs::metadata(&self.path) {
                Ok(m) => Some((m.dev(), m.ino())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(self.read_error(e)),
            };
            if chunk.len() == MAX_READ {
                continue;
            }
            match now {
                Some(id) if id != file_id => {
                    self.partial.clear();
                    self.open = self.open_current(false)?;
                }
                _ => break,
            }
        }
        let after = self.open.as_ref().map(|(_, p)| *p);
        if let Some(p) = after
            && after != before
        {
            self.save(p)?;
        }
        Ok(records)
    }
}

/// The state file of log `path` in the agent's state directory `dir`: one per log, named by
/// the log's path.
pub fn state_file(dir: &Path, path: &Path) -> PathBuf {
    let name: String = path
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    dir.join(format!("audit-log{name}.pos"))
}
