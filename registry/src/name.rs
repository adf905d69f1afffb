//! Profile names: DNS-1123 subdomains, because a name becomes a file name on every node.

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 253;

/// Check `name` against the DNS-1123 subdomain rules (lowercase `a-z`, `0-9`, `-` and `.`;
/// labels separated by `.` start and end with a letter or digit; at most 253 characters).
/// These rules also exclude `/`, `..` and every other path trick. The error says which rule
/// the name breaks.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} bytes long, over the limit of {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.contains('/') {
        return Err("'/' is not allowed (the name becomes a file name on nodes)".to_owned());
    }
    if name.contains("..") {
        return Err("'..' is not allowed (empty label)".to_owned());
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "character {c:?} at byte {i} is not allowed (only lowercase a-z, 0-9, '-' and '.')"
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("a name cannot start or end with '.'".to_owned());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label {label:?} must start and end with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// A name for messages and logs: quoted, with control characters escaped, and shortened, so
/// a megabyte of garbage in a request does not become a megabyte of log.
pub fn display(name: &str) -> String {
    const MAX: usize = 80;
    if name.chars().count() <= MAX {
        format!("{name:?}")
    } else {
        let short: String = name.chars().take(MAX).collect();
        format!("{short:?}... ({} bytes)", name.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(name: &str, expected: Result<(), &str>) {
        let got = check(name);
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(reason), Err(part)) => {
                assert!(reason.contains(part), "{name:?}: {reason:?} lacks {part:?}")
            }
            (got, expected) => panic!("{name:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn dns_1123_subdomains() {
        check_name("web", Ok(()));
        check_name("a", Ok(()));
        check_name("0", Ok(()));
        check_name("docker-default.v2", Ok(()));
        check_name("a.b.c", Ok(()));
        check_name(&"a".repeat(253), Ok(()));
        check_name(&"a".repeat(254), Err("over the limit of 253"));
        check_name("", Err("empty"));
        check_name("Web", Err("'W' at byte 0"));
        check_name("web_1", Err("'_' at byte 3"));
        check_name("a/b", Err("'/'"));
        check_name("../etc/passwd", Err("'/'"));
        check_name("a..b", Err("'..'"));
        check_name(".a", Err("start or end with '.'"));
        check_name("a.", Err("start or end with '.'"));
        check_name("-a", Err("letter or digit"));
        check_name("a.b-", Err("letter or digit"));
        check_name("é", Err("'é'"));
        check_name("a\0b", Err("'\\0'"));
        check_name("a b", Err("' '"));
    }

    #[test]
    fn display_is_bounded() {
        assert_eq!(display("web"), "\"web\"");
        let long = "x".repeat(10_000);
        assert!(display(&long).len() < 120);
        assert!(display(&long).ends_with("(10000 bytes)"));
    }
}
