//! Name rules shared by every crate: DNS-1123 subdomains (profile names, NCI names, node
//! names, label prefixes) and the profile-name rule on top of them.
//!
//! A profile name becomes the file name `<name>.json` on every node, so besides being a
//! DNS-1123 subdomain it must leave room for the suffix within a file name's 255 bytes; a
//! longer name would publish and then be refused by every agent.
//!
//! [`check_dns_subdomain`] and [`check_profile_name`] say which rule a name breaks
//! ([`NameError`]); [`is_dns_subdomain`] is the yes/no form. [`display`] quotes untrusted text
//! for messages and logs.

/// Longest DNS-1123 subdomain, in bytes.
pub const MAX_SUBDOMAIN_LEN: usize = 253;

/// Longest label (the parts between dots), in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// Longest file name Linux file systems accept (`NAME_MAX`), in bytes.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// What a node's file name adds to a profile name.
pub const PROFILE_FILE_SUFFIX: &str = ".json";

/// Longest profile name: `<name>.json` must fit in [`MAX_FILE_NAME_LEN`].
pub const MAX_PROFILE_NAME_LEN: usize = MAX_FILE_NAME_LEN - PROFILE_FILE_SUFFIX.len();

/// The rule a name breaks. Positions are byte offsets into the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing at all.
    #[error("the name is empty")]
    Empty,
    /// Longer than [`MAX_SUBDOMAIN_LEN`].
    #[error("the name is {len} bytes long, over the limit of {MAX_SUBDOMAIN_LEN}")]
    TooLong {
        /// The name's length.
        len: usize,
    },
    /// A profile name longer than [`MAX_PROFILE_NAME_LEN`].
    #[error(
        "the name is {len} bytes long, over the limit of {MAX_PROFILE_NAME_LEN} (the node file \"<name>{PROFILE_FILE_SUFFIX}\" must fit in {MAX_FILE_NAME_LEN} bytes)"
    )]
    TooLongForFile {
        /// The name's length.
        len: usize,
    },
    /// A path separator.
    #[error("'/' at byte {at} is not allowed (a path separator)")]
    Slash {
        /// Where.
        at: usize,
    },
    /// Two dots in a row: an empty label.
    #[error("'..' at byte {at} is not allowed (empty label)")]
    DoubleDot {
        /// Where the first dot is.
        at: usize,
    },
    /// A character other than `a-z`, `0-9`, `-` and `.`.
    #[error("character {ch:?} at byte {at} is not allowed (only lowercase a-z, 0-9, '-' and '.')")]
    BadChar {
        /// The character.
        ch: char,
        /// Where.
        at: usize,
    },
    /// The name starts with a dot.
    #[error("the name cannot start with '.'")]
    LeadingDot,
    /// The name ends with a dot.
    #[error("the name cannot end with '.'")]
    TrailingDot,
    /// A label longer than [`MAX_LABEL_LEN`].
    #[error("the label at byte {at} is {len} bytes long, over the limit of {MAX_LABEL_LEN}")]
    LabelTooLong {
        /// Where the label starts.
        at: usize,
        /// Its length.
        len: usize,
    },
    /// A label that starts or ends with `-`.
    #[error("label {label:?} must start and end with a letter or digit")]
    LabelEdge {
        /// The label (at most [`MAX_LABEL_LEN`] bytes: longer ones are refused first).
        label: String,
    },
}

/// Check `name` against the DNS-1123 subdomain rules: lowercase `a-z`, `0-9`, `-` and `.`,
/// at most 253 bytes; labels separated by `.` are 1 to 63 bytes and start and end with a
/// letter or digit. These rules also exclude `/`, `..` and every other path trick; the
/// error says which rule the name breaks, the first one found in the order above.
pub fn check_dns_subdomain(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_SUBDOMAIN_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(at) = name.find('/') {
        return Err(NameError::Slash { at });
    }
    if let Some(at) = name.find("..") {
        return Err(NameError::DoubleDot { at });
    }
    if let Some((at, ch)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(NameError::BadChar { ch, at });
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    if name.ends_with('.') {
        return Err(NameError::TrailingDot);
    }
    let mut at = 0;
    for label in name.split('.') {
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong {
                at,
                len: label.len(),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::LabelEdge {
                label: label.to_owned(),
            });
        }
        at += label.len() + 1;
    }
    Ok(())
}

/// True when `name` is a DNS-1123 subdomain (see [`check_dns_subdomain`]).
pub fn is_dns_subdomain(name: &str) -> bool {
    check_dns_subdomain(name).is_ok()
}

/// Check a profile name: a DNS-1123 subdomain of at most [`MAX_PROFILE_NAME_LEN`] bytes.
pub fn check_profile_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_PROFILE_NAME_LEN {
        return Err(NameError::TooLongForFile { len: name.len() });
    }
    check_dns_subdomain(name)
}

/// A name (or any untrusted text) for messages and logs: quoted, with control characters
/// escaped, and shortened, so a megabyte of garbage in a request does not become a megabyte
/// of log.
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
    use NameError::*;

    const OK: Result<(), NameError> = Ok(());

    /// What the subdomain check and the profile-name check say about one name.
    struct Verdict {
        subdomain: Result<(), NameError>,
        profile: Result<(), NameError>,
    }

    /// Both checks agree.
    fn both(verdict: Result<(), NameError>) -> Verdict {
        Verdict {
            subdomain: verdict.clone(),
            profile: verdict,
        }
    }

    /// A valid subdomain of `len` bytes: 63-byte labels of `a`, the last one shorter.
    fn name_of_len(len: usize) -> String {
        let mut name = String::new();
        while name.len() + MAX_LABEL_LEN < len {
            name.push_str(&"a".repeat(MAX_LABEL_LEN));
            name.push('.');
        }
        name.push_str(&"a".repeat(len - name.len()));
        name
    }

    fn check(input: &str, expected: Verdict) {
        let subdomain = check_dns_subdomain(input);
        assert_eq!(
            subdomain, expected.subdomain,
            "subdomain check of {input:?}"
        );
        assert_eq!(is_dns_subdomain(input), subdomain.is_ok(), "{input:?}");
        assert_eq!(
            check_profile_name(input),
            expected.profile,
            "profile-name check of {input:?}"
        );
        for e in [subdomain.err(), check_profile_name(input).err()]
            .into_iter()
            .flatten()
        {
            let message = e.to_string();
            assert!(
                !message.starts_with(char::is_uppercase) && !message.ends_with('.'),
                "{input:?}: {message:?}"
            );
        }
    }

    #[test]
    fn names() {
        check("web", both(OK));
        check("a", both(OK));
        check("0", both(OK));
        check("docker-default.v2", both(OK));
        check("a.b.c", both(OK));
        check("ip-10-0-0-1.ec2.internal", both(OK));
        check(&"a".repeat(63), both(OK));
        check(&name_of_len(250), both(OK));
        for len in 251..=253 {
            check(
                &name_of_len(len),
                Verdict {
                    subdomain: OK,
                    profile: Err(TooLongForFile { len }),
                },
            );
        }
        check(
            &name_of_len(254),
            Verdict {
                subdomain: Err(TooLong { len: 254 }),
                profile: Err(TooLongForFile { len: 254 }),
            },
        );
        check(&"a".repeat(64), both(Err(LabelTooLong { at: 0, len: 64 })));
        check(
            &format!("web.{}", "b".repeat(64)),
            both(Err(LabelTooLong { at: 4, len: 64 })),
        );
        check("", both(Err(Empty)));
        check("Web", both(Err(BadChar { ch: 'W', at: 0 })));
        check("web_1", both(Err(BadChar { ch: '_', at: 3 })));
        check("é", both(Err(BadChar { ch: 'é', at: 0 })));
        check("a\0b", both(Err(BadChar { ch: '\0', at: 1 })));
        check("a b", both(Err(BadChar { ch: ' ', at: 1 })));
        check("a/b", both(Err(Slash { at: 1 })));
        check("../etc/passwd", both(Err(Slash { at: 2 })));
        check("a..b", both(Err(DoubleDot { at: 1 })));
        check(".a", both(Err(LeadingDot)));
        check("a.", both(Err(TrailingDot)));
        check(".", both(Err(LeadingDot)));
        check("-a", both(Err(LabelEdge { label: "-a".into() })));
        check("a.b-", both(Err(LabelEdge { label: "b-".into() })));
        check("a.-.b", both(Err(LabelEdge { label: "-".into() })));
    }

    #[test]
    fn reasons_say_why() {
        let long = TooLongForFile { len: 251 }.to_string();
        assert!(long.contains("over the limit of 250"), "{long}");
        assert!(
            long.contains("\"<name>.json\"") && long.contains("255"),
            "{long}"
        );
        assert_eq!(
            BadChar { ch: 'W', at: 0 }.to_string(),
            "character 'W' at byte 0 is not allowed (only lowercase a-z, 0-9, '-' and '.')"
        );
    }

    #[test]
    fn display_is_bounded() {
        assert_eq!(display("web"), "\"web\"");
        let long = "x".repeat(10_000);
        assert!(display(&long).len() < 120);
        assert!(display(&long).ends_with("(10000 bytes)"));
    }
}
