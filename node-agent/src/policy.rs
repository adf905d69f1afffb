//! What a desired entry may be, beyond where it is (that is [`crate::paths`]): only seccomp
//! profiles, only where profiles go (DESIGN section 11). The distributor enforces the same
//! policy; the agent checks again because it is the one that writes, and a compromised or
//! buggy distributor must not be able to plant an executable, a set-id file or a
//! world-writable one on a node.
//!
//! - A file is named `<something>.json`, and its content validates as a seccomp profile with
//!   [`seccomp_profile::validate`] (errors refuse it, warnings do not).
//! - A file's mode has no set-id (`04000`, `02000`), sticky (`01000`) or execute (`0111`) bit
//!   and is not writable by others (`0002`).
//! - A directory's mode has no set-id, sticky or other-write bit; its execute bits are search
//!   bits and are allowed (the agent even adds them where read is set, see
//!   [`crate::fsops::directory_mode`], so the platform's `"0644"` directories stay usable).
//!   Existing directories are never changed, so this concerns those the agent creates.
//! - Neither has bits beyond `07777`.

use crate::model::{DesiredFile, DesiredKind, ErrorCode, FileError};

/// The suffix every file name must have: the kubelet reads localhost profiles as JSON.
pub(crate) const PROFILE_SUFFIX: &str = ".json";

/// Mode bits no file may have: set-uid, set-gid, sticky, any execute, write by others.
pub(crate) const FILE_FORBIDDEN: u32 = 0o7000 | 0o111 | 0o002;

/// Mode bits no directory may have: set-uid, set-gid, sticky, write by others.
pub(crate) const DIR_FORBIDDEN: u32 = 0o7000 | 0o002;

/// How many validation errors a refusal quotes; the rest are counted.
const QUOTED_DIAGNOSTICS: usize = 3;

/// Checks the name, the mode and (when `content` is given) the content of an entry whose path
/// already passed [`crate::paths::check`] (`name` is its last component). Every problem found
/// is returned, so one refusal tells the whole story.
pub(crate) fn check(d: &DesiredFile, name: &str, content: Option<&[u8]>) -> Vec<FileError> {
    let path = &d.path;
    let mut errors = Vec::new();
    if d.kind == DesiredKind::File
        && !(name.len() > PROFILE_SUFFIX.len() && name.ends_with(PROFILE_SUFFIX))
    {
        errors.push(FileError::new(
            path,
            ErrorCode::NotJson,
            format!(
                "file {path:?} is not named *{PROFILE_SUFFIX}: only seccomp profiles are written"
            ),
        ));
    }
    if let Some(error) = check_mode(path, d.kind, d.mode) {
        errors.push(error);
    }
    if let (DesiredKind::File, Some(content)) = (d.kind, content)
        && let Some(error) = check_content(path, content)
    {
        errors.push(error);
    }
    errors
}

fn check_mode(path: &str, kind: DesiredKind, mode: u32) -> Option<FileError> {
    if mode > 0o7777 {
        return Some(FileError::new(
            path,
            ErrorCode::InvalidMode,
            format!("mode {mode:o} of {path:?} is beyond 7777"),
        ));
    }
    let (forbidden, what) = match kind {
        DesiredKind::File => (FILE_FORBIDDEN, "file"),
        DesiredKind::Directory => (DIR_FORBIDDEN, "directory"),
    };
    let bad = mode & forbidden;
    if bad == 0 {
        return None;
    }
    let names: Vec<&str> = [
        (0o4000, "set-uid"),
        (0o2000, "set-gid"),
        (0o1000, "sticky"),
        (0o111, "execute"),
        (0o002, "other-write"),
    ]
    .into_iter()
    .filter(|(bits, _)| bad & bits != 0)
    .map(|(_, name)| name)
    .collect();
    Some(FileError::new(
        path,
        ErrorCode::ForbiddenMode,
        format!(
            "mode {mode:04o} of {what} {path:?} has {} bits ({bad:04o}), which a {what} the agent writes may not have",
            names.join(", ")
        ),
    ))
}

fn check_content(path: &str, content: &[u8]) -> Option<FileError> {
    // The size limit is the registry's (configurable there); the agent's bound on a set is the
    // message limit of its stream, so any size that arrived is validated.
    let options = seccomp_profile::Options {
        max_bytes: content.len(),
    };
    let report = seccomp_profile::validate(content, &options);
    if report.is_valid() {
        return None;
    }
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    let mut quoted = errors[..errors.len().min(QUOTED_DIAGNOSTICS)].join("; ");
    if errors.len() > QUOTED_DIAGNOSTICS {
        quoted.push_str(&format!("; and {} more", errors.len() - QUOTED_DIAGNOSTICS));
    }
    Some(FileError::new(
        path,
        ErrorCode::InvalidProfile,
        format!("content of {path:?} is not a valid seccomp profile: {quoted}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &[u8] = br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#;

    /// Checks one entry and expects exactly `codes`, each message naming the path.
    fn check_one(d: &DesiredFile, codes: &[ErrorCode]) {
        let name = d.path.rsplit('/').next().unwrap_or_default();
        let content = (d.kind == DesiredKind::File).then_some(d.content.as_slice());
        let errors = check(d, name, content);
        let got: Vec<ErrorCode> = errors.iter().map(|e| e.code).collect();
        assert_eq!(got, codes, "{}: {errors:#?}", d.path);
        for e in &errors {
            assert_eq!(e.path, d.path);
            assert!(
                e.message.contains(&format!("{:?}", d.path)),
                "{}",
                e.message
            );
        }
    }

    fn file(name: &str, content: &[u8], mode: u32) -> DesiredFile {
        DesiredFile::file(format!("/r/{name}"), content, mode, "root", "root")
    }

    fn dir(mode: u32) -> DesiredFile {
        DesiredFile::directory("/r/d", mode, "root", "root")
    }

    #[test]
    fn file_names() {
        use ErrorCode::NotJson;
        check_one(&file("a.json", PROFILE, 0o644), &[]);
        check_one(&file(".hidden.json", PROFILE, 0o644), &[]);
        check_one(&file("a.txt", PROFILE, 0o644), &[NotJson]);
        check_one(&file("a.json.bak", PROFILE, 0o644), &[NotJson]);
        check_one(&file("a.JSON", PROFILE, 0o644), &[NotJson]);
        check_one(&file(".json", PROFILE, 0o644), &[NotJson]);
        check_one(&file("json", PROFILE, 0o644), &[NotJson]);
        // A directory may be called anything.
        check_one(
            &DesiredFile::directory("/r/x.d", 0o755, "root", "root"),
            &[],
        );
    }

    #[test]
    fn file_modes() {
        use ErrorCode::{ForbiddenMode, InvalidMode};
        for ok in [0o644, 0o640, 0o600, 0o664, 0o444, 0o400, 0o000] {
            check_one(&file("a.json", PROFILE, ok), &[]);
        }
        for bad in [
            0o4644, 0o2644, 0o1644, 0o4755, 0o755, 0o744, 0o654, 0o645, 0o646, 0o666, 0o777, 0o7777,
        ] {
            check_one(&file("a.json", PROFILE, bad), &[ForbiddenMode]);
        }
        check_one(&file("a.json", PROFILE, 0o10644), &[InvalidMode]);
    }

    #[test]
    fn directory_modes() {
        use ErrorCode::{ForbiddenMode, InvalidMode};
        for ok in [0o755, 0o750, 0o700, 0o775, 0o644, 0o711, 0o000] {
            check_one(&dir(ok), &[]);
        }
        for bad in [0o1777, 0o777, 0o757, 0o2755, 0o4755, 0o1755] {
            check_one(&dir(bad), &[ForbiddenMode]);
        }
        check_one(&dir(0o40755), &[InvalidMode]);
    }

    #[test]
    fn forbidden_bits_are_named() {
        let errors = check(&file("a.json", PROFILE, 0o4757), "a.json", None);
        let message = &errors[0].message;
        assert!(
            message.contains("set-uid, execute, other-write") && message.contains("4757"),
            "{message}"
        );
    }

    #[test]
    fn contents() {
        use ErrorCode::InvalidProfile;
        check_one(&file("a.json", PROFILE, 0o644), &[]);
        // A warning (an unknown key) does not refuse it.
        check_one(
            &file(
                "a.json",
                br#"{"defaultAction":"SCMP_ACT_ERRNO","x":1}"#,
                0o644,
            ),
            &[],
        );
        for bad in [
            &b""[..],
            b"{}",
            b"not json",
            b"#!/bin/sh\nrm -rf /\n",
            br#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
            b"\xff\xfe",
        ] {
            check_one(&file("a.json", bad, 0o644), &[InvalidProfile]);
        }
        // Every problem at once.
        check_one(
            &file("a.sh", b"echo", 0o4755),
            &[ErrorCode::NotJson, ErrorCode::ForbiddenMode, InvalidProfile],
        );
    }

    #[test]
    fn a_refused_profile_quotes_its_first_diagnostics() {
        let bad = br#"{"defaultAction":"SCMP_ACT_NOPE","syscalls":[{"names":["nosuchcall"],"action":"SCMP_ACT_ALLOW"}]}"#;
        let errors = check(&file("a.json", bad, 0o644), "a.json", Some(bad));
        let message = &errors[0].message;
        assert!(
            message.contains("/defaultAction: error[unknown-action]"),
            "{message}"
        );
        assert!(message.contains("unknown-syscall"), "{message}");
        let many: String = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
            (0..5)
                .map(|i| format!(r#"{{"names":["nosuch{i}"],"action":"SCMP_ACT_ALLOW"}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let errors = check(
            &file("a.json", many.as_bytes(), 0o644),
            "a.json",
            Some(many.as_bytes()),
        );
        assert!(
            errors[0].message.ends_with("; and 2 more"),
            "{}",
            errors[0].message
        );
    }
}
