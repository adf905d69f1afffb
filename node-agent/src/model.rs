//! Domain types of the agent: what the distributor wants on disk, what the agent finds there,
//! and why an entry could not be applied.
//!
//! These mirror the messages of `seccomp.agent.v1` without depending on them, so the sync
//! client converts between the two in one place and everything else stays free of tonic.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The two kinds of entry a desired file set can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredKind {
    /// A regular file, written atomically with exactly the given content and attributes.
    File,
    /// A directory, created with the given mode and owner when missing; an existing directory
    /// is left as it is.
    Directory,
}

/// One entry of a node's desired file set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredFile {
    /// Absolute path on the node, for example `/var/lib/kubelet/seccomp/web.json`; a directory
    /// path may end in `/`. The host root is prefixed by the agent.
    pub path: String,
    /// File or directory.
    pub kind: DesiredKind,
    /// The exact file bytes; empty for a directory.
    #[serde(with = "hex_bytes", default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<u8>,
    /// Lowercase hex SHA-256 of `content` (no `sha256:` prefix); ignored for a directory.
    pub sha256: String,
    /// Permission bits, at most `0o7777`; the agent's policy allows no set-id, sticky or
    /// other-write bit, and no execute bit on a file (see [`ErrorCode::ForbiddenMode`]).
    pub mode: u32,
    /// A user name from the host's `/etc/passwd`, or a decimal uid.
    pub owner: String,
    /// A group name from the host's `/etc/group`, or a decimal gid.
    pub group: String,
}

impl DesiredFile {
    /// A regular file entry; computes `sha256` from `content`.
    pub fn file(
        path: impl Into<String>,
        content: impl Into<Vec<u8>>,
        mode: u32,
        owner: &str,
        group: &str,
    ) -> Self {
        let content = content.into();
        Self {
            path: path.into(),
            kind: DesiredKind::File,
            sha256: crate::fsops::sha256_hex(&content),
            content,
            mode,
            owner: owner.to_owned(),
            group: group.to_owned(),
        }
    }

    /// A directory entry.
    pub fn directory(path: impl Into<String>, mode: u32, owner: &str, group: &str) -> Self {
        Self {
            path: path.into(),
            kind: DesiredKind::Directory,
            content: Vec::new(),
            sha256: String::new(),
            mode,
            owner: owner.to_owned(),
            group: group.to_owned(),
        }
    }
}

/// Kind of an existing filesystem entry, found without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservedKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed). Also reported when a directory on the way to the
    /// path is a symlink.
    Symlink,
    /// A device, socket or FIFO.
    Other,
}

/// What exists at a path on the node, as the agent found it on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedFile {
    /// The path as in the desired entry (without the host root).
    pub path: String,
    /// Whether anything exists at the path; when false, every field below is empty or zero.
    pub exists: bool,
    /// Kind of the entry; `None` exactly when `exists` is false.
    pub kind: Option<ObservedKind>,
    /// Lowercase hex SHA-256 of the bytes read back; empty unless a regular file.
    pub sha256: String,
    /// Number of bytes read back; 0 unless a regular file.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// User name of `uid` in the host's `/etc/passwd`; empty when it has none.
    pub owner: String,
    /// Group name of `gid` in the host's `/etc/group`; empty when it has none.
    pub group: String,
}

impl ObservedFile {
    /// Nothing exists at `path`.
    pub fn missing(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            exists: false,
            kind: None,
            sha256: String::new(),
            size: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            owner: String::new(),
            group: String::new(),
        }
    }
}

/// Stable machine-readable reason why a desired entry was refused or failed. The kebab-case
/// strings ([`ErrorCode::as_str`]) are what a `Nack` carries and are part of the protocol:
/// the distributor and scripts match on them, so they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not an absolute, normalised path (relative, `//`, `.`, a NUL byte, a component longer
    /// than 255 bytes, a file path ending in `/`, or a name reserved for the agent's temp files).
    InvalidPath,
    /// Outside the allowed root, or contains `..`.
    OutsideRoot,
    /// The same path twice in one set.
    DuplicatePath,
    /// A symlink at the path or on the way to it.
    Symlink,
    /// The path of a file entry holds something other than a regular file.
    NotRegular,
    /// Something on the way to the path, or at the path of a directory entry, is not a
    /// directory.
    NotDirectory,
    /// A directory above the allowed root is missing (the agent never creates those).
    MissingParent,
    /// The owner is neither a user of the host's `/etc/passwd` nor a decimal uid.
    UnknownOwner,
    /// The group is neither a group of the host's `/etc/group` nor a decimal gid.
    UnknownGroup,
    /// `sha256` does not match the content.
    Sha256Mismatch,
    /// Mode has bits beyond `0o7777`.
    InvalidMode,
    /// The mode has a bit the policy forbids: set-uid, set-gid, sticky or other-write, and for
    /// a file also any execute bit.
    ForbiddenMode,
    /// A file entry is not named `*.json`.
    NotJson,
    /// A file entry's content is not a valid seccomp profile; the message quotes the first
    /// errors of the validator.
    InvalidProfile,
    /// A regular file the agent did not place is at the path with other bytes; the agent
    /// never overwrites one (unless told to take such files over with `--adopt-existing`).
    ForeignFile,
    /// A directory entry carries content.
    InvalidEntry,
    /// A system call failed.
    Io,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::InvalidPath,
        Self::OutsideRoot,
        Self::DuplicatePath,
        Self::Symlink,
        Self::NotRegular,
        Self::NotDirectory,
        Self::MissingParent,
        Self::UnknownOwner,
        Self::UnknownGroup,
        Self::Sha256Mismatch,
        Self::InvalidMode,
        Self::ForbiddenMode,
        Self::NotJson,
        Self::InvalidProfile,
        Self::ForeignFile,
        Self::InvalidEntry,
        Self::Io,
    ];

    /// The kebab-case code sent to the distributor, for example `outside-root`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPath => "invalid-path",
            Self::OutsideRoot => "outside-root",
            Self::DuplicatePath => "duplicate-path",
            Self::Symlink => "symlink",
            Self::NotRegular => "not-regular",
            Self::NotDirectory => "not-directory",
            Self::MissingParent => "missing-parent",
            Self::UnknownOwner => "unknown-owner",
            Self::UnknownGroup => "unknown-group",
            Self::Sha256Mismatch => "sha256-mismatch",
            Self::InvalidMode => "invalid-mode",
            Self::ForbiddenMode => "forbidden-mode",
            Self::NotJson => "not-json",
            Self::InvalidProfile => "invalid-profile",
            Self::ForeignFile => "foreign-file",
            Self::InvalidEntry => "invalid-entry",
            Self::Io => "io",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one desired entry could not be applied. `message` is one sentence naming the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct FileError {
    /// The desired path, as given.
    pub path: String,
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable sentence.
    pub message: String,
}

impl FileError {
    pub(crate) fn new(path: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            code,
            message: message.into(),
        }
    }
}

/// A desired set that is now on disk (the agent's `Ack`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The revision that was applied.
    pub revision: String,
    /// One entry per desired path, in the order given, as observed on disk after applying.
    pub observed: Vec<ObservedFile>,
    /// Desired paths that were written or created by this apply (empty when nothing changed).
    pub written: Vec<String>,
    /// Paths the agent had placed earlier and removed because they are no longer desired.
    pub removed: Vec<String>,
}

/// A desired set that was refused or failed (the agent's `Nack`).
///
/// When any entry fails the checks that run before writing (path, name, type, mode, content,
/// sha256, owner, group, symlinks, non-regular targets, files the agent did not place),
/// nothing at all is written. When a write fails midway, each
/// file is either old or new, never partial, and nothing is removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("desired set refused: {}", errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "))]
pub struct Rejected {
    /// One entry per failing path; never empty.
    pub errors: Vec<FileError>,
    /// The desired paths that are inside the allowed root, as observed now.
    pub observed: Vec<ObservedFile>,
    /// The revision the agent last applied completely and still has (empty if none).
    pub last_good_revision: String,
}

/// How an observed entry differs from the desired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    /// Nothing exists at the path.
    Missing,
    /// Something of another kind (a symlink, a directory where a file belongs, ...).
    WrongKind,
    /// The file's bytes differ.
    Content,
    /// The file's permission bits differ.
    Mode,
    /// The file's uid differs.
    Owner,
    /// The file's gid differs.
    Group,
    /// The path could not be observed (an I/O error).
    Unreadable,
}

/// One desired entry that no longer matches what is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// What is on disk now (`exists = false` when it is gone).
    pub observed: ObservedFile,
    /// Every way in which it differs; never empty.
    pub kinds: Vec<DriftKind>,
}

/// The result of a drift repair (the agent's `Drift` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReport {
    /// The revision that drifted.
    pub revision: String,
    /// The drifted entries as found, before repair.
    pub drifted: Vec<Drift>,
    /// True when every drifted entry was restored.
    pub repaired: bool,
    /// Why a repair failed; empty when `repaired`.
    pub errors: Vec<FileError>,
    /// Every desired entry as observed after the repair.
    pub observed: Vec<ObservedFile>,
}

/// Hex (de)serialisation of byte strings, so the record stays compact and readable.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        hex::decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::ErrorCode;

    #[test]
    fn error_codes_are_unique_and_serialise_as_sent() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert_eq!(
                serde_json::to_string(code).unwrap(),
                format!("{:?}", code.as_str()),
                "the record and the Nack spell {code:?} alike"
            );
        }
    }
}
