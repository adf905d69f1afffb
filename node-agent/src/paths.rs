//! Lexical checks of desired paths: absolute, normalised, no `..`, inside the allowed root.
//!
//! This is the first line of defence and works on strings only; the second is the
//! `O_NOFOLLOW` walk in [`crate::fsops`], which refuses symlinks that no string check can see.

use crate::fsops::TEMP_PREFIX;
use crate::model::{DesiredKind, ErrorCode, FileError};

/// Longest file name Linux accepts (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Splits the allowed root (a configuration value) into components.
pub(crate) fn allowed_root_components(root: &str) -> Result<Vec<String>, String> {
    let comps = split(root, true).map_err(|why| format!("allowed root {root:?} {why}"))?;
    if comps.is_empty() {
        return Err("allowed root must not be \"/\"".to_owned());
    }
    Ok(comps)
}

/// Checks a desired path and returns its components below `/`.
///
/// Directory paths may end in one `/`. A file must lie strictly below the allowed root; a
/// directory may be the allowed root itself (the seed's NodeConfigItem declares it).
pub(crate) fn check(
    path: &str,
    kind: DesiredKind,
    allowed: &[String],
) -> Result<Vec<String>, FileError> {
    let comps = split(path, kind == DesiredKind::Directory).map_err(|why| {
        let code = if why.contains("\"..\"") {
            ErrorCode::OutsideRoot
        } else {
            ErrorCode::InvalidPath
        };
        FileError::new(path, code, format!("path {path:?} {why}"))
    })?;
    let root = node_path(allowed);
    let inside = comps.len() >= allowed.len() && comps[..allowed.len()] == *allowed;
    if !inside || (kind == DesiredKind::File && comps.len() == allowed.len()) {
        return Err(FileError::new(
            path,
            ErrorCode::OutsideRoot,
            format!("path {path:?} is outside the allowed root {root:?}"),
        ));
    }
    if comps[allowed.len()..]
        .iter()
        .any(|c| c.starts_with(TEMP_PREFIX))
    {
        return Err(FileError::new(
            path,
            ErrorCode::InvalidPath,
            format!(
                "path {path:?} uses the prefix {TEMP_PREFIX:?}, reserved for the agent's temporary files"
            ),
        ));
    }
    Ok(comps)
}

/// `/a/b/c` from `["a", "b", "c"]`.
pub(crate) fn node_path(comps: &[String]) -> String {
    if comps.is_empty() {
        return "/".to_owned();
    }
    comps.iter().fold(String::new(), |mut out, c| {
        out.push('/');
        out.push_str(c);
        out
    })
}

/// Splits an absolute path into components; the error completes "path X ...".
fn split(path: &str, allow_trailing_slash: bool) -> Result<Vec<String>, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("is not absolute");
    };
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let rest = match rest.strip_suffix('/') {
        Some(stripped) if allow_trailing_slash => stripped,
        Some(_) => return Err("ends in \"/\""),
        None => rest,
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut comps = Vec::new();
    for comp in rest.split('/') {
        match comp {
            ".." => return Err("contains \"..\""),
            "" => return Err("is not normalised (empty component)"),
            "." => return Err("is not normalised (\".\" component)"),
            long if long.len() > NAME_MAX => return Err("has a component longer than 255 bytes"),
            name => comps.push(name.to_owned()),
        }
    }
    Ok(comps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        allowed_root_components("/var/lib/kubelet/seccomp").unwrap_or_default()
    }

    fn check_one(path: &str, kind: DesiredKind, expected: Result<&str, ErrorCode>) {
        let got = check(path, kind, &allowed());
        match (got, expected) {
            (Ok(comps), Ok(want)) => assert_eq!(node_path(&comps), want, "{path}"),
            (Err(err), Err(code)) => {
                assert_eq!(err.code, code, "{path}: {}", err.message);
                assert_eq!(err.path, path);
                assert!(
                    err.message.contains(&format!("{path:?}")),
                    "message names the path: {}",
                    err.message
                );
            }
            (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn desired_paths() {
        use DesiredKind::{Directory as D, File as F};
        use ErrorCode::*;
        let root = "/var/lib/kubelet/seccomp";
        check_one(
            "/var/lib/kubelet/seccomp/a.json",
            F,
            Ok("/var/lib/kubelet/seccomp/a.json"),
        );
        check_one(
            "/var/lib/kubelet/seccomp/sub/a.json",
            F,
            Ok("/var/lib/kubelet/seccomp/sub/a.json"),
        );
        check_one("/var/lib/kubelet/seccomp", D, Ok(root));
        check_one("/var/lib/kubelet/seccomp/", D, Ok(root));
        check_one(
            "/var/lib/kubelet/seccomp/sub/",
            D,
            Ok("/var/lib/kubelet/seccomp/sub"),
        );
        check_one("/var/lib/kubelet/seccomp", F, Err(OutsideRoot));
        check_one("/var/lib/kubelet/seccomp/a.json/", F, Err(InvalidPath));
        check_one(
            "/var/lib/kubelet/seccomp/../../../etc/passwd",
            F,
            Err(OutsideRoot),
        );
        check_one(
            "/var/lib/kubelet/seccomp/sub/../a.json",
            F,
            Err(OutsideRoot),
        );
        check_one("/var/lib/kubelet/seccomp/..", D, Err(OutsideRoot));
        check_one("/etc/passwd", F, Err(OutsideRoot));
        check_one("/var/lib/kubelet/seccompx/a.json", F, Err(OutsideRoot));
        check_one("/var/lib/kubelet", D, Err(OutsideRoot));
        check_one("/", D, Err(OutsideRoot));
        check_one("var/lib/kubelet/seccomp/a.json", F, Err(InvalidPath));
        check_one("", F, Err(InvalidPath));
        check_one("/var/lib/kubelet/seccomp//a.json", F, Err(InvalidPath));
        check_one("/var/lib/kubelet/seccomp/./a.json", F, Err(InvalidPath));
        check_one("/var/lib/kubelet/seccomp/a\0.json", F, Err(InvalidPath));
        check_one(&format!("{root}/{}", "a".repeat(256)), F, Err(InvalidPath));
        check_one(
            &format!("{root}/{}", "a".repeat(255)),
            F,
            Ok(&format!("{root}/{}", "a".repeat(255))),
        );
        check_one(
            "/var/lib/kubelet/seccomp/.seccomp-agent.a.json.tmp.1",
            F,
            Err(InvalidPath),
        );
        check_one(
            "/var/lib/kubelet/seccomp/.hidden.json",
            F,
            Ok("/var/lib/kubelet/seccomp/.hidden.json"),
        );
    }

    #[test]
    fn allowed_roots() {
        assert!(allowed_root_components("/").is_err());
        assert!(allowed_root_components("relative").is_err());
        assert!(allowed_root_components("/a/../b").is_err());
        assert_eq!(
            allowed_root_components("/a/b/"),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
    }
}
