//! Writing a service's own files atomically and durably (the node agent's state directory,
//! the distributor's YAML directory): a reader, and a restart after a crash at any point,
//! sees the old content or the new, never a part.
//!
//! A write creates a temporary file beside the target (`O_EXCL`, `O_NOFOLLOW`), writes and
//! fsyncs it, renames it over the target and fsyncs the directory; on an error the temporary
//! file is removed again. Its name carries a nonce that differs between calls and processes,
//! and a name that exists already is retried with a fresh one, so a temporary file left by a
//! killed process never blocks a later write, not even when the next process gets the same
//! PID (PID 1 in a container). [`remove_temps`] clears such leftovers.
//!
//! [`write_at`] works in an open directory (for a caller that holds its directory, as the
//! agent holds its locked state directory); [`write`] takes a path and is built on it.
//!
//! Files on a node are not written here: the node agent walks to them with `O_NOFOLLOW` one
//! component at a time and sets their owner and mode, which these files do not need.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{
    AtFlags, CWD, Dir, FileType, Mode, OFlags, fsync, openat, renameat, statat, unlinkat,
};
use rustix::io::Errno;

/// Between the final name and the nonce of every temporary name.
const TEMP_INFIX: &str = ".tmp.";
/// Lowercase hex digits of the nonce.
const NONCE_LEN: usize = 16;
/// Longest file name Linux filesystems take.
const NAME_MAX: usize = 255;
/// Fresh temporary names tried before a write gives up. One that exists already is a
/// leftover or another writer's; several in a row mean something else is wrong.
const ATTEMPTS: usize = 8;

/// The part of a write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening the directory of a path given to [`write`].
    OpenDirectory,
    /// Creating the temporary file.
    CreateTemp,
    /// Writing or fsyncing the temporary file.
    Write,
    /// Renaming the temporary file over the target.
    Rename,
    /// Fsyncing the directory after the rename; the new content is in place, but may not
    /// survive a power loss.
    SyncDirectory,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OpenDirectory => "opening the directory of",
            Self::CreateTemp => "creating a temporary file for",
            Self::Write => "writing",
            Self::Rename => "renaming a temporary file onto",
            Self::SyncDirectory => "syncing the directory of",
        })
    }
}

/// A write that failed, with the step and the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", self.context())]
pub struct WriteError {
    /// What failed.
    pub step: Step,
    /// The file written: the path given to [`write`], or the name given to [`write_at`].
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    /// What was being done, naming the file, for a caller that wraps the [`io::Error`] in an
    /// error of its own: `writing /srv/ncis/web.yaml`.
    pub fn context(&self) -> String {
        format!("{} {}", self.step, self.path.display())
    }
}

/// For callers that speak [`io::Error`]: the same kind, and this error as its message.
impl From<WriteError> for io::Error {
    fn from(err: WriteError) -> Self {
        io::Error::new(err.source.kind(), err)
    }
}

/// Replaces `name` in the open directory `dir` with `bytes`, atomically and durably. A new
/// file gets `mode` less the umask (as `open(2)` gives it); an existing file's mode, owner
/// and links are not kept, since the file is a new one.
pub fn write_at(
    dir: impl AsFd,
    name: impl AsRef<OsStr>,
    bytes: &[u8],
    mode: u32,
) -> Result<(), WriteError> {
    let name = name.as_ref();
    let base = name.to_string_lossy();
    write_named(dir.as_fd(), name, bytes, mode, || temp_name(".", &base))
}

/// [`write_at`] for a path: the directory is the path's parent (the current directory for a
/// bare name). Errors name `path`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let fail = |step, source| WriteError {
        step,
        path: path.to_owned(),
        source,
    };
    let Some(name) = path.file_name() else {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "the path names no file");
        return Err(fail(Step::OpenDirectory, source));
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = openat(
        CWD,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(Step::OpenDirectory, e.into()))?;
    write_at(&dir, name, bytes, mode).map_err(|e| fail(e.step, e.source))
}

/// [`write_at`] with the temporary names drawn from `fresh`.
fn write_named(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    bytes: &[u8],
    mode: u32,
    fresh: impl FnMut() -> String,
) -> Result<(), WriteError> {
    let fail = |step| {
        move |source: io::Error| WriteError {
            step,
            path: PathBuf::from(name),
            source,
        }
    };
    let (tmp, fd) = create_temp(dir, mode, fresh).map_err(fail(Step::CreateTemp))?;
    let placed = write_durably(fd, bytes)
        .map_err(fail(Step::Write))
        .and_then(|()| {
            renameat(dir, tmp.as_str(), dir, name).map_err(|e| fail(Step::Rename)(e.into()))
        });
    if placed.is_err() {
        // Best effort: a leftover does not block later writes, and `remove_temps` clears it.
        let _ = unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    placed?;
    fsync(dir).map_err(|e| fail(Step::SyncDirectory)(e.into()))
}

/// Creates a temporary file that did not exist, trying fresh names while one does.
fn create_temp(
    dir: BorrowedFd<'_>,
    mode: u32,
    mut fresh: impl FnMut() -> String,
) -> io::Result<(String, OwnedFd)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut attempt = 1;
    loop {
        let tmp = fresh();
        match openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => return Ok((tmp, fd)),
            Err(Errno::EXIST) if attempt < ATTEMPTS => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_durably(fd: OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    file.sync_all()
}

/// A fresh temporary name for `name`: `{prefix}{name}.tmp.{nonce}`, the nonce 16 lowercase hex
/// digits that differ between calls and between processes, `name` shortened (at a character
/// boundary) so that the whole stays within 255 bytes.
pub fn temp_name(prefix: &str, name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // `RandomState` is keyed randomly per process, so a PID used again still gets new nonces.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    let nonce = format!("{:0width$x}", hasher.finish(), width = NONCE_LEN);
    let budget = NAME_MAX.saturating_sub(prefix.len() + TEMP_INFIX.len() + NONCE_LEN);
    format!("{prefix}{}{TEMP_INFIX}{nonce}", truncated(name, budget))
}

fn truncated(name: &str, max: usize) -> &str {
    if name.len() <= max {
        return name;
    }
    let mut cut = max;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    &name[..cut]
}

/// Whether `name` is a [`temp_name`] with a prefix that starts with a dot, as [`write_at`]'s
/// and the node agent's are.
pub fn is_temp_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(head_len) = bytes.len().checked_sub(NONCE_LEN) else {
        return false;
    };
    let (head, nonce) = bytes.split_at(head_len);
    head.starts_with(b".")
        && head.len() > TEMP_INFIX.len()
        && head.ends_with(TEMP_INFIX.as_bytes())
        && nonce.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Removes what interrupted writes left in `dir`: each regular file and empty directory whose
/// name `is_temp` accepts ([`is_temp_name`] for those of [`write_at`]; the node agent also
/// creates directories this way). Only for a directory that no other process is writing to at
/// the time. Returns how many were removed.
pub fn remove_temps(dir: impl AsFd, is_temp: impl Fn(&str) -> bool) -> io::Result<usize> {
    let dir = dir.as_fd();
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().to_str()
            && is_temp(name)
        {
            names.push(name.to_owned());
        }
    }
    let mut removed = 0;
    for name in names {
        let flags = match statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => AtFlags::empty(),
                FileType::Directory => AtFlags::REMOVEDIR,
                _ => continue,
            },
            Err(_) => continue,
        };
        match unlinkat(dir, name.as_str(), flags) {
            Ok(()) => {
                removed += 1;
                tracing::info!(temp = %name, "removed leftover temporary entry");
            }
            Err(Errno::NOENT | Errno::NOTEMPTY) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if removed > 0 {
        fsync(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn open_dir(path: &Path) -> OwnedFd {
        openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open the test directory")
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("list the test directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn writes_a_new_file_with_the_mode_and_no_temp_left() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = open_dir(tmp.path());
        write_at(&dir, "record.json", b"{}", 0o600).expect("write");
        let path = tmp.path().join("record.json");
        assert_eq!(std::fs::read(&path).expect("read"), b"{}");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert_eq!(names(tmp.path()), set(&["record.json"]));
    }

    #[test]
    fn replaces_existing_content_by_renaming_a_new_file_over_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("web.yaml");
        write(&path, b"old", 0o644).expect("first write");
        let before = std::fs::metadata(&path).expect("stat").ino();
        // A reader that opened the old file keeps reading all of it.
        let mut reader = File::open(&path).expect("open the old file");
        write(&path, b"new content", 0o644).expect("second write");
        let mut old = String::new();
        io::Read::read_to_string(&mut reader, &mut old).expect("read the old file");
        assert_eq!(old, "old");
        assert_eq!(std::fs::read(&path).expect("read"), b"new content");
        assert_ne!(std::fs::metadata(&path).expect("stat").ino(), before);
        assert_eq!(names(tmp.path()), set(&["web.yaml"]));
    }

    #[test]
    fn stale_temps_of_either_naming_do_not_block_a_write() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The naming before this module: the same name again for every process with this PID.
        let old_style = format!(".web.yaml.tmp-{}", std::process::id());
        let new_style = temp_name(".", "web.yaml");
        for stale in [&old_style, &new_style] {
            std::fs::write(tmp.path().join(stale), b"left by a killed writer").expect("stale");
        }
        let dir = open_dir(tmp.path());
        write_at(&dir, "web.yaml", b"v1", 0o644).expect("write beside the leftovers");
        // The next name drawn is a leftover's: the write moves on to a fresh one.
        let mut drawn = [new_style.clone(), temp_name(".", "web.yaml")].into_iter();
        let next = || drawn.next().expect("a name");
        write_named(dir.as_fd(), OsStr::new("web.yaml"), b"v2", 0o644, next)
            .expect("write past a taken name");
        assert_eq!(
            std::fs::read(tmp.path().join("web.yaml")).expect("read"),
            b"v2"
        );
        let expected = set(&["web.yaml", &old_style, &new_style]);
        assert_eq!(names(tmp.path()), expected);
    }

    #[test]
    fn gives_up_when_every_temporary_name_is_taken() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let taken = temp_name(".", "web.yaml");
        std::fs::write(tmp.path().join(&taken), b"").expect("taken");
        let dir = open_dir(tmp.path());
        let err = write_named(dir.as_fd(), OsStr::new("web.yaml"), b"v", 0o644, || {
            taken.clone()
        })
        .expect_err("every name is taken");
        assert_eq!(err.step, Step::CreateTemp);
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(names(tmp.path()), set(&[&taken]));
    }

    #[test]
    fn a_failed_write_leaves_no_temp_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // A file cannot be renamed over a directory that holds something.
        let target = tmp.path().join("web.yaml");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("inside"), b"").expect("fill");
        let err = write(&target, b"v", 0o644).expect_err("rename onto a directory");
        assert_eq!(err.step, Step::Rename);
        assert_eq!(err.path, target);
        assert_eq!(names(tmp.path()), set(&["web.yaml"]));
        let message = io::Error::from(err).to_string();
        assert!(
            message.starts_with(&format!(
                "renaming a temporary file onto {}: ",
                target.display()
            )),
            "{message}"
        );
    }

    #[test]
    fn a_missing_directory_is_reported_with_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("absent").join("web.yaml");
        let err = write(&path, b"v", 0o644).expect_err("no directory");
        assert_eq!(
            (err.step, err.source.kind()),
            (Step::OpenDirectory, io::ErrorKind::NotFound)
        );
        assert_eq!(
            err.context(),
            format!("opening the directory of {}", path.display())
        );
    }

    #[test]
    fn temp_names_are_fresh_recognisable_and_bounded() {
        let name = temp_name(".", "web.yaml");
        assert!(name.starts_with(".web.yaml.tmp."), "{name}");
        assert!(is_temp_name(&name));
        assert_ne!(name, temp_name(".", "web.yaml"));
        let agent = temp_name(".seccomp-agent.", "record.json");
        assert!(is_temp_name(&agent), "{agent}");
        let long = "é".repeat(200);
        let name = temp_name(".", &long);
        assert!(name.len() <= NAME_MAX);
        assert!(is_temp_name(&name));
        for other in [
            "web.yaml",
            ".web.yaml.tmp-1",
            ".web.yaml.tmp.0123456789ABCDEF",
            "web.yaml.tmp.0123456789abcdef",
            ".tmp.0123456789abcdef",
            "0123456789abcdef",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn remove_temps_removes_only_temporary_files_and_empty_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = |name: &str| std::fs::write(tmp.path().join(name), b"").expect("file");
        let dir = |name: &str| std::fs::create_dir(tmp.path().join(name)).expect("mkdir");
        let (temp, agent_temp) = (
            temp_name(".", "record.json"),
            temp_name(".seccomp-agent.", "a"),
        );
        let (empty, full) = (temp_name(".", "empty"), temp_name(".", "full"));
        for name in [&temp, &agent_temp] {
            file(name);
        }
        dir(&empty);
        dir(&full);
        file(&format!("{full}/inside"));
        for name in ["record.json", ".notes.tmp.txt"] {
            file(name);
        }
        let fd = open_dir(tmp.path());
        assert_eq!(remove_temps(&fd, is_temp_name).expect("remove"), 3);
        assert_eq!(
            names(tmp.path()),
            set(&["record.json", ".notes.tmp.txt", &full])
        );
        // A caller that recognises fewer names removes fewer.
        file(&temp);
        let agents = |name: &str| name.starts_with(".seccomp-agent.") && is_temp_name(name);
        assert_eq!(remove_temps(&fd, agents).expect("remove"), 0);
        assert!(tmp.path().join(&temp).exists());
    }
}
