//! The registry's checks of what a call names: profile names (new and existing), texts,
//! digests and version numbers, and how a target reads in the audit log.

use seccomp_profile::name;

use crate::error::{Error, Result};

/// The rule for a name a publish creates: it must fit a file name on every node.
pub(super) fn check_new_name(name: &str) -> Result<()> {
    name::check_profile_name(name).map_err(|reason| invalid_name(name, reason))
}

/// The rule for naming a profile that may exist: a DNS-1123 subdomain, so that a profile
/// stored under a name too long for nodes, before that rule, can still be read and deleted.
pub(super) fn check_name(name: &str) -> Result<()> {
    name::check_dns_subdomain(name).map_err(|reason| invalid_name(name, reason))
}

/// The longest description or reason kept (they are stored with every version and shown in
/// every listing).
pub const MAX_TEXT_BYTES: usize = 4096;

/// A description or reason within [`MAX_TEXT_BYTES`].
pub(super) fn check_text(what: &str, text: &str) -> Result<()> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the {what} is {} bytes, over the limit of {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

fn invalid_name(name: &str, reason: name::NameError) -> Error {
    Error::InvalidName {
        name: name::display(name),
        reason: reason.to_string(),
    }
}

pub(super) fn target(name: &str, version: Option<u64>) -> String {
    let name = if name.len() > name::MAX_SUBDOMAIN_LEN {
        name::display(name)
    } else {
        name.to_owned()
    };
    match version {
        Some(v) => format!("{name}@{v}"),
        None => name,
    }
}

pub(super) fn check_digest(digest: &str) -> Result<()> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid digest {}: expected \"sha256:\" and 64 lowercase hex digits",
            name::display(digest)
        )))
    }
}

pub(super) fn check_version(version: u64) -> Result<()> {
    if version == 0 {
        return Err(Error::InvalidArgument(
            "version 0 does not exist: versions start at 1".to_owned(),
        ));
    }
    Ok(())
}
