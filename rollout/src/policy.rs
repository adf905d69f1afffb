//! What an NCI may put on a node: only seccomp profiles, only where profiles go. The
//! distributor refuses a rollout whose NCI breaks a rule (and never serves a stored one
//! that does); the node agent checks the same rules again before it writes.
//!
//! Rules, each named in its refusal:
//! - `outside-root`: a file lies under the allowed root (default `/var/lib/kubelet/seccomp`,
//!   where kubelet looks for `Localhost` profiles); a directory is the root or below it;
//! - `not-json`: a file's name ends in `.json`;
//! - `mode`: no set-id or sticky bit, no execute bit on a file, nothing writable by others;
//! - `not-a-profile`: a file's content validates as a seccomp profile (errors reject;
//!   warnings are accepted, as at publish).

use crate::error::{Error, Result};
use crate::nci::{DEFAULT_ROOT, FileType, NodeConfigItem, parse_mode};

/// Bits no entry may carry: set-uid, set-gid, sticky, and writable by others.
const FORBIDDEN_BITS: u32 = 0o7002;
/// Execute bits, forbidden on files (a directory needs them to be entered).
const EXECUTE_BITS: u32 = 0o111;

/// Whether `path` is absolute with no empty, `.` or `..` component (`""` is `/`).
fn normal_absolute(path: &str) -> bool {
    match path.strip_prefix('/') {
        Some("") => true,
        Some(rest) => rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        None => path.is_empty(),
    }
}

/// Where profiles may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Absolute, normalised, without a trailing `/`.
    allowed_root: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_root: DEFAULT_ROOT.to_owned(),
        }
    }
}

impl Policy {
    /// Profiles only under `allowed_root` (absolute, without `.` or `..` components).
    pub fn new(allowed_root: &str) -> Result<Self> {
        let root = allowed_root.trim_end_matches('/');
        if root.is_empty() || !normal_absolute(root) {
            return Err(Error::invalid(format!(
                "allowed root \"{allowed_root}\" is not an absolute path without '.', '..' or empty components"
            )));
        }
        Ok(Policy {
            allowed_root: root.to_owned(),
        })
    }

    /// The allowed root.
    pub fn allowed_root(&self) -> &str {
        &self.allowed_root
    }

    /// Whether `path` (absolute, normalised; a trailing `/` allowed) is the root or below it.
    fn within(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        path == self.allowed_root
            || path
                .strip_prefix(&self.allowed_root)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Check a file entry: path, name, mode and content.
    pub fn check_file(&self, path: &str, mode: u32, content: &[u8]) -> Result<()> {
        self.check_path(path, FileType::File)?;
        if !path.ends_with(".json") {
            return Err(Error::invalid(format!(
                "not-json: file \"{path}\" must be named *.json (a seccomp profile)"
            )));
        }
        check_mode(path, mode, FileType::File)?;
        // The size is the registry's limit to set (--max-profile-bytes), not this check's.
        let options = seccomp_profile::Options {
            max_bytes: usize::MAX,
        };
        let report = seccomp_profile::validate(content, &options);
        if let Some(first) = report
            .diagnostics
            .iter()
            .find(|d| d.severity == seccomp_profile::Severity::Error)
        {
            return Err(Error::invalid(format!(
                "not-a-profile: the content of \"{path}\" is not a valid seccomp profile: {}: {}",
                if first.path.is_empty() {
                    "/"
                } else {
                    &first.path
                },
                first.message
            )));
        }
        Ok(())
    }

    /// Check a path against the allowed root.
    pub fn check_path(&self, path: &str, kind: FileType) -> Result<()> {
        let what = match kind {
            FileType::File => "file",
            FileType::Directory => "directory",
        };
        let normal = normal_absolute(path.trim_end_matches('/'));
        if !normal || !self.within(path) || (kind == FileType::File && path.ends_with('/')) {
            return Err(Error::invalid(format!(
                "outside-root: {what} \"{path}\" is not under the allowed root {} (--allowed-root)",
                self.allowed_root
            )));
        }
        if kind == FileType::File && path.trim_end_matches('/') == self.allowed_root {
            return Err(Error::invalid(format!(
                "outside-root: file \"{path}\" would replace the allowed root itself"
            )));
        }
        Ok(())
    }

    /// Check every entry of `nci`.
    pub fn check(&self, nci: &NodeConfigItem) -> Result<()> {
        let name = &nci.metadata.name;
        for f in &nci.spec.files {
            let mode = parse_mode(&f.mode)?;
            let checked = match f.kind {
                FileType::File => self.check_file(
                    &f.path,
                    mode,
                    f.content.as_deref().unwrap_or_default().as_bytes(),
                ),
                FileType::Directory => self
                    .check_path(&f.path, FileType::Directory)
                    .and_then(|()| check_mode(&f.path, mode, FileType::Directory)),
            };
            checked.map_err(|e| Error::invalid(format!("NCI \"{name}\": {e}")))?;
        }
        Ok(())
    }
}

/// Check an entry's mode: no set-id, sticky or other-write bits; no execute bits on a file.
pub fn check_mode(path: &str, mode: u32, kind: FileType) -> Result<()> {
    let forbidden = match kind {
        FileType::File => FORBIDDEN_BITS | EXECUTE_BITS,
        FileType::Directory => FORBIDDEN_BITS,
    };
    if mode & forbidden != 0 {
        return Err(Error::invalid(format!(
            "mode: \"{path}\" may not have mode {mode:04o}: no set-id, sticky or other-write bits{}",
            if kind == FileType::File {
                ", and no execute bits on a file"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PROFILE: &[u8] = br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#;

    fn check_file(path: &str, mode: u32, content: &[u8], expected: std::result::Result<(), &str>) {
        let got = Policy::default().check_file(path, mode, content);
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(rule)) => assert!(e.to_string().starts_with(rule), "{path}: {e}"),
            (got, expected) => panic!("{path} {mode:o}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn files_only_profiles_only_under_the_root() {
        let root = "/var/lib/kubelet/seccomp";
        check_file(&format!("{root}/web.json"), 0o644, PROFILE, Ok(()));
        check_file(&format!("{root}/team/web.json"), 0o600, PROFILE, Ok(()));
        check_file("/etc/passwd", 0o644, PROFILE, Err("outside-root"));
        check_file(
            "/var/lib/kubelet/seccomp-evil/x.json",
            0o644,
            PROFILE,
            Err("outside-root"),
        );
        check_file(
            &format!("{root}/../x.json"),
            0o644,
            PROFILE,
            Err("outside-root"),
        );
        check_file(
            &format!("{root}/a//x.json"),
            0o644,
            PROFILE,
            Err("outside-root"),
        );
        check_file("relative/x.json", 0o644, PROFILE, Err("outside-root"));
        check_file(&format!("{root}/web.sh"), 0o644, PROFILE, Err("not-json"));
        for mode in [0o4755, 0o2644, 0o1644, 0o755, 0o744, 0o646] {
            check_file(&format!("{root}/web.json"), mode, PROFILE, Err("mode"));
        }
        check_file(
            &format!("{root}/web.json"),
            0o644,
            b"#!/bin/sh\n",
            Err("not-a-profile"),
        );
        check_file(
            &format!("{root}/web.json"),
            0o644,
            b"{}",
            Err("not-a-profile"),
        );
    }

    #[test]
    fn directories_only_the_root_or_below() {
        let p = Policy::default();
        for ok in [
            "/var/lib/kubelet/seccomp/",
            "/var/lib/kubelet/seccomp",
            "/var/lib/kubelet/seccomp/team/",
        ] {
            assert!(p.check_path(ok, FileType::Directory).is_ok(), "{ok}");
        }
        for bad in [
            "/etc/",
            "/",
            "/var/lib/kubelet/",
            "/var/lib/kubelet/seccompx/",
        ] {
            let e = p.check_path(bad, FileType::Directory).unwrap_err();
            assert!(e.to_string().starts_with("outside-root"), "{bad}: {e}");
        }
        assert!(check_mode("/d/", 0o755, FileType::Directory).is_ok());
        assert!(check_mode("/d/", 0o1777, FileType::Directory).is_err());
    }

    #[test]
    fn the_root_can_be_moved_but_not_to_something_odd() {
        let p = Policy::new("/opt/profiles/").unwrap();
        assert_eq!(p.allowed_root(), "/opt/profiles");
        assert!(p.check_file("/opt/profiles/a.json", 0o644, PROFILE).is_ok());
        assert!(
            p.check_file("/var/lib/kubelet/seccomp/a.json", 0o644, PROFILE)
                .is_err()
        );
        for bad in ["relative", "/a/../b", "/a/./b", "/a//b", "/", ""] {
            assert!(Policy::new(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever the path and mode, checking never panics, and whatever it accepts is
        /// under the root, named *.json, with no forbidden bits.
        #[test]
        fn any_input_is_judged_without_panicking(
            path in "(/|\\.|\\.\\.|[a-z]{0,3}|var|lib|kubelet|seccomp|x\\.json){0,8}",
            mode in 0u32..0o10000,
        ) {
            let p = Policy::default();
            if p.check_file(&path, mode, PROFILE).is_ok() {
                proptest::prop_assert!(path.starts_with("/var/lib/kubelet/seccomp/"));
                proptest::prop_assert!(path.ends_with(".json"));
                proptest::prop_assert!(!path.contains("/../") && !path.contains("/./"));
                proptest::prop_assert_eq!(mode & 0o7113, 0);
            }
            let _ = p.check_path(&path, FileType::Directory);
            let _ = Policy::new(&path);
        }
    }
}
