//! The key layout: `\0` ends the name part of a key (it cannot occur in a profile name) and
//! numbers are big-endian, so byte order is numeric order and one profile's keys are one
//! range.

pub(super) fn version_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

pub(super) fn version_key(name: &str, version: u64) -> Vec<u8> {
    let mut key = version_prefix(name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub(super) fn digest_prefix(name: &str, digest: &str) -> Vec<u8> {
    let mut key = version_prefix(name);
    key.extend_from_slice(digest.as_bytes());
    key.push(0);
    key
}

pub(super) fn digest_key(name: &str, digest: &str, version: u64) -> Vec<u8> {
    let mut key = digest_prefix(name, digest);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub(super) fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// An audit entry's key: its time, then an id that keeps entries of the same nanosecond
/// apart, so a range scan from a time is "since".
pub(super) fn audit_key(time: u64, id: u64) -> Vec<u8> {
    let mut key = time.to_be_bytes().to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}
