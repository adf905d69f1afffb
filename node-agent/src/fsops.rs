//! The only code that touches the node's disk: a directory walk that never follows a
//! symlink, the atomic file write, atomic directory creation, observation, and removal.
//!
//! Every path is reached from an open host-root descriptor with `openat`, one component at a
//! time, with `O_NOFOLLOW | O_DIRECTORY`; the final name is handled relative to its open parent.
//! So a symlink planted anywhere on the path, even between the check and the write, makes the
//! call fail instead of redirecting it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{
    AtFlags, CWD, FileType, Gid, Mode, OFlags, RenameFlags, Stat, Uid, fchmod, fchown, fstat,
    fsync, linkat, mkdirat, openat, renameat, renameat_with, statat, unlinkat,
};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::hook::{PausePoint, WriteHook};
use crate::paths::node_path;

/// Every temporary name the agent creates starts with this, so leftovers from a crash can be
/// recognised and removed, and nothing else ever is.
pub(crate) const TEMP_PREFIX: &str = ".seccomp-agent.";
/// What follows the final name in a temporary name ([`seccomp_server::atomic::temp_name`]).
const TEMP_INFIX: &str = ".tmp.";

pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// `NONBLOCK` so that a FIFO swapped in after the type check cannot block the agent.
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Opens the host root itself. It is configuration, not input, so it may be reached through
/// a symlink (a DaemonSet mounts the host at `/host`).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Why a walk stopped. `at` is the node path of the offending component.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// `comps[index]` does not exist.
    Missing {
        at: String,
        index: usize,
    },
    Symlink {
        at: String,
    },
    NotDirectory {
        at: String,
    },
    Io {
        at: String,
        source: io::Error,
    },
}

impl WalkError {
    /// Completes "X: ..." in messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Missing { at, .. } => format!("{at:?} does not exist"),
            Self::Symlink { at } => format!("{at:?} is a symlink"),
            Self::NotDirectory { at } => format!("{at:?} is not a directory"),
            Self::Io { at, source } => format!("{at:?}: {source}"),
        }
    }
}

/// Opens the directory `comps` below `root`, never following a symlink.
pub(crate) fn walk(root: &OwnedFd, comps: &[String]) -> Result<OwnedFd, WalkError> {
    walk_inner(root, comps, None)
}

/// Attributes for a directory the walk creates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirAttrs {
    pub(crate) mode: u32,
    /// `None` leaves the owner as created (the agent's own uid and gid).
    pub(crate) owner: Option<(u32, u32)>,
}

/// What [`walk_create`] may create.
pub(crate) struct Creation<'a> {
    /// Components at this index and beyond may be created; those before must exist.
    pub(crate) from: usize,
    /// Attributes for the directory at `comps[..=index]`.
    pub(crate) attrs: &'a dyn Fn(usize) -> DirAttrs,
    /// Receives the index of each directory created.
    pub(crate) created: &'a mut Vec<usize>,
}

/// Like [`walk`], but creates missing directories (atomically, with their attributes) from
/// `creation.from` on.
pub(crate) fn walk_create(
    root: &OwnedFd,
    comps: &[String],
    creation: Creation<'_>,
) -> Result<OwnedFd, WalkError> {
    walk_inner(root, comps, Some(creation))
}

fn walk_inner(
    root: &OwnedFd,
    comps: &[String],
    mut creation: Option<Creation<'_>>,
) -> Result<OwnedFd, WalkError> {
    let mut current = root.try_clone().map_err(|source| WalkError::Io {
        at: "/".to_owned(),
        source,
    })?;
    for (index, comp) in comps.iter().enumerate() {
        let at = || node_path(&comps[..=index]);
        let next = match openat(&current, comp.as_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => match creation.as_mut().filter(|c| index >= c.from) {
                Some(c) => {
                    let attrs = (c.attrs)(index);
                    if create_dir_atomically(&current, comp, attrs)
                        .map_err(|e| classify(&current, comp, at(), e))?
                    {
                        c.created.push(index);
                    }
                    openat(&current, comp.as_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|e| classify(&current, comp, at(), e.into()))?
                }
                None => return Err(WalkError::Missing { at: at(), index }),
            },
            Err(e) => return Err(classify(&current, comp, at(), e.into())),
        };
        current = next;
    }
    Ok(current)
}

/// Names the reason an `openat(O_NOFOLLOW | O_DIRECTORY)` failed, looking at the entry itself.
fn classify(dir: &OwnedFd, name: &str, at: String, err: io::Error) -> WalkError {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => WalkError::Symlink { at },
            FileType::Directory => WalkError::Io { at, source: err },
            _ => WalkError::NotDirectory { at },
        },
        Err(_) => WalkError::Io { at, source: err },
    }
}

/// A fresh temporary name for `final_name` in the same directory:
/// `.seccomp-agent.<name>.tmp.<random>`, at most 255 bytes.
pub(crate) fn temp_name(final_name: &str) -> String {
    seccomp_server::atomic::temp_name(TEMP_PREFIX, final_name)
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name[TEMP_PREFIX.len()..].contains(TEMP_INFIX)
}

/// Removes the agent's own leftovers (temp files and empty temp directories from an
/// interrupted write) from `dir`; never anything else. Returns how many were removed.
pub(crate) fn clean_temps(dir: &OwnedFd) -> io::Result<usize> {
    seccomp_server::atomic::remove_temps(dir, is_temp_name)
}

/// The mode a directory is created with: the requested bits plus the search bit wherever the
/// read bit is set. The platform's NCI examples give directories `"0644"`, and a directory
/// that can be read but not searched is useless (nobody but root could open the profiles).
pub(crate) fn directory_mode(mode: u32) -> u32 {
    mode | ((mode & 0o444) >> 2)
}

/// Creates `dir/name` as a directory that appears complete or not at all: a temp directory is
/// created, given its owner and mode (see [`directory_mode`]), synced, and renamed into place
/// without replacing anything. Returns whether the agent made it: when `name` appeared
/// meanwhile, the existing directory is kept and is not the agent's.
fn create_dir_atomically(dir: &OwnedFd, name: &str, attrs: DirAttrs) -> io::Result<bool> {
    let attrs = DirAttrs {
        mode: directory_mode(attrs.mode),
        ..attrs
    };
    let tmp = temp_name(name);
    mkdirat(dir, tmp.as_str(), Mode::from_raw_mode(0o700))?;
    let set_attrs = |fd: &OwnedFd| -> rustix::io::Result<()> {
        if let Some((uid, gid)) = attrs.owner {
            fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        fchmod(fd, Mode::from_raw_mode(attrs.mode))
    };
    let prepared = openat(dir, tmp.as_str(), DIR_FLAGS, Mode::empty())
        .and_then(|fd| set_attrs(&fd).and_then(|()| fsync(&fd)))
        .map_err(io::Error::from);
    // (renamed into place, made by the agent)
    let outcome = prepared.and_then(|()| {
        match renameat_with(dir, tmp.as_str(), dir, name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok((true, true)),
            Err(Errno::EXIST) => Ok((false, false)),
            // A filesystem without renameat2 flags: a plain mkdir, still never replacing anything.
            Err(Errno::INVAL | Errno::NOSYS) => {
                match mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => return Ok((false, false)),
                    Err(e) => return Err(e.into()),
                }
                openat(dir, name, DIR_FLAGS, Mode::empty()).and_then(|fd| set_attrs(&fd))?;
                Ok((false, true))
            }
            Err(e) => Err(e.into()),
        }
    });
    match outcome {
        Ok((renamed, ours)) => {
            if !renamed {
                unlinkat(dir, tmp.as_str(), AtFlags::REMOVEDIR)?;
            }
            fsync(dir)?;
            Ok(ours)
        }
        Err(e) => {
            // Best effort: a leftover is removed by the next apply's cleanup anyway.
            let _ = unlinkat(dir, tmp.as_str(), AtFlags::REMOVEDIR);
            Err(e)
        }
    }
}

/// Mode, owner and group of a file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileAttrs {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Replaces `dir/name` atomically: temp file (`O_EXCL`, 0600, `O_NOFOLLOW`) → write → fchown
/// → fchmod → fsync → rename over the target → fsync the directory. A reader (or a crash) sees
/// the old file or the new one, never a partial one. `display` names the file for the hook.
///
/// Without `replace` the rename never replaces anything (`RENAME_NOREPLACE`), and `Ok(false)`
/// says that something appeared at `name` meanwhile and nothing was written.
pub(crate) fn write_atomically(
    dir: &OwnedFd,
    name: &str,
    content: &[u8],
    attrs: FileAttrs,
    hook: Option<&WriteHook>,
    display: &str,
    replace: bool,
) -> io::Result<bool> {
    let pause = |point| {
        if let Some(hook) = hook {
            hook.call(point, display);
        }
    };
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut attempt = 0;
    let (tmp, fd) = loop {
        let tmp = temp_name(name);
        match openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => break (tmp, fd),
            Err(Errno::EXIST) if attempt < 8 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let staged = (|| -> io::Result<bool> {
        let mut file = File::from(fd);
        pause(PausePoint::TempCreated);
        if hook.is_some() {
            let (first, second) = content.split_at(content.len() / 2);
            file.write_all(first)?;
            file.flush()?;
            pause(PausePoint::PartlyWritten);
            file.write_all(second)?;
        } else {
            file.write_all(content)?;
        }
        // Owner before mode, since chown clears set-id bits (the policy forbids them anyway).
        fchown(
            &file,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
        )?;
        fchmod(&file, Mode::from_raw_mode(attrs.mode))?;
        file.sync_all()?;
        drop(file);
        pause(PausePoint::BeforeRename);
        rename_into_place(dir, &tmp, name, replace)
    })();
    match staged {
        Ok(true) => {}
        Ok(false) => {
            unlinkat(dir, tmp.as_str(), AtFlags::empty())?;
            return Ok(false);
        }
        Err(e) => {
            let _ = unlinkat(dir, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
    }
    pause(PausePoint::AfterRename);
    fsync(dir)?;
    Ok(true)
}

/// Renames `dir/tmp` to `dir/name`; without `replace`, `Ok(false)` if `name` exists.
fn rename_into_place(dir: &OwnedFd, tmp: &str, name: &str, replace: bool) -> io::Result<bool> {
    if replace {
        renameat(dir, tmp, dir, name)?;
        return Ok(true);
    }
    match renameat_with(dir, tmp, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        // A filesystem without renameat2 flags: a hard link never replaces anything either.
        Err(Errno::INVAL | Errno::NOSYS) => match linkat(dir, tmp, dir, name, AtFlags::empty()) {
            Ok(()) => {
                unlinkat(dir, tmp, AtFlags::empty())?;
                Ok(true)
            }
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// What exists at `dir/name`, found without following symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    Missing,
    File {
        sha256: String,
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Directory {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Other {
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

fn perm(st: &Stat) -> u32 {
    st.st_mode & 0o7777
}

/// Looks at `dir/name`: lstat, and for a regular file an `O_NOFOLLOW` open, fstat and the
/// SHA-256 of the bytes read back.
pub(crate) fn observe_at(dir: &OwnedFd, name: &str) -> io::Result<Found> {
    let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Found::Missing),
        Err(e) => return Err(e.into()),
    };
    let (mode, uid, gid) = (perm(&st), st.st_uid, st.st_gid);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => return Ok(Found::Directory { mode, uid, gid }),
        FileType::Symlink => return Ok(Found::Symlink { mode, uid, gid }),
        _ => return Ok(Found::Other { mode, uid, gid }),
    }
    let fd = match openat(dir, name, READ_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Found::Missing),
        Err(Errno::LOOP) => return Ok(Found::Symlink { mode, uid, gid }),
        Err(e) => return Err(e.into()),
    };
    // The entry may have been replaced since the lstat; what counts is what was opened.
    let st = fstat(&fd)?;
    let (mode, uid, gid) = (perm(&st), st.st_uid, st.st_gid);
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(Found::Other { mode, uid, gid });
    }
    let mut file = File::from(fd);
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Found::File {
        sha256: hex::encode(hasher.finalize()),
        size,
        mode,
        uid,
        gid,
    })
}

/// Opens `dir/name` for reading if it is a regular file (`None` when missing).
pub(crate) fn open_regular(dir: &OwnedFd, name: &str) -> io::Result<Option<File>> {
    let fd = match openat(dir, name, READ_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(Some(File::from(fd)))
}

/// Removes the regular file `dir/name`; anything else there is left alone. Returns whether a
/// file was removed.
pub(crate) fn remove_file(dir: &OwnedFd, name: &str) -> io::Result<bool> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => {
            fsync(dir)?;
            Ok(true)
        }
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How removing a directory went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirRemoval {
    Removed,
    /// Not there, or not a directory: nothing to do, ever.
    Gone,
    /// Still holds entries (someone else's files); kept.
    NotEmpty,
}

/// Removes the directory `dir/name` if it is empty apart from the agent's own leftovers.
pub(crate) fn remove_dir(dir: &OwnedFd, name: &str) -> io::Result<DirRemoval> {
    match openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(inner) => {
            clean_temps(&inner)?;
        }
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(DirRemoval::Gone),
        Err(e) => return Err(e.into()),
    }
    match unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) => {
            fsync(dir)?;
            Ok(DirRemoval::Removed)
        }
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(DirRemoval::Gone),
        Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(DirRemoval::NotEmpty),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognisable_and_bounded() {
        let name = temp_name("web.json");
        assert!(name.starts_with(".seccomp-agent.web.json.tmp."), "{name}");
        assert!(is_temp_name(&name));
        assert_ne!(name, temp_name("web.json"));
        let long = "é".repeat(127);
        let name = temp_name(&long);
        assert!(name.len() <= 255, "{}", name.len());
        assert!(is_temp_name(&name));
        assert!(!is_temp_name("web.json"));
        assert!(!is_temp_name(".seccomp-agent.record"));
        assert!(!is_temp_name("x.seccomp-agent.a.tmp.b"));
    }
}
