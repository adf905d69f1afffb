//! `seccomp-profile`: the pure library behind every other crate's notion of a seccomp
//! profile. It parses the OCI / Docker seccomp JSON strictly, validates it against what real
//! runtimes (runc, crun, containerd, CRI-O, Docker, podman) and the kernel accept, computes
//! the content digest, and diffs two profiles semantically.
//!
//! No I/O, no tonic, no kube: callers pass bytes in and get values out.
//!
//! Layout:
//! - [`json`]: a strict JSON tree that keeps duplicate keys (so they can be reported);
//! - [`name`]: DNS-1123 subdomains and the profile-name rule, shared by every crate that
//!   checks a name;
//! - [`tables`]: actions, architectures, operators, flags, and per-architecture syscall names
//!   (from the `syscalls` crate);
//! - [`diag`]: diagnostics with stable codes and JSON pointers;
//! - [`validate`](mod@validate): the rules of DESIGN section 2, producing a [`Report`] and, when
//!   there is no error, a typed [`Profile`];
//! - [`diff`](mod@diff): the semantic diff of two profiles;
//! - [`audit`]: kernel seccomp audit records from node logs, decoded by their architecture;
//! - [`suggest`](mod@suggest): the next version of a profile from the syscalls it logged;
//! - [`compat`]: compatibility modes between versions (`no-new-denies`, `tighten-only`).

pub mod audit;
pub mod compat;
pub mod diag;
pub mod diff;
pub mod json;
pub mod model;
pub mod name;
pub mod suggest;
pub mod tables;
pub mod validate;

pub use diag::{Code, Diagnostic, Severity};
pub use diff::{ProfileDiff, SyscallChange, diff};
pub use model::{Action, Arg, Filter, Profile, Rule, SyscallName};
pub use validate::{BPF_MAX_INSNS, DEFAULT_MAX_BYTES, Options, Report, validate};

use sha2::{Digest, Sha256};

/// The content digest of a profile: `sha256:` and the hex of the exact bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Validate with the default options (1 MiB limit).
pub fn validate_default(bytes: &[u8]) -> Report {
    validate(bytes, &Options::default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_of_known_bytes() {
        assert_eq!(
            super::digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
