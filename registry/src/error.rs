//! The registry's errors, and the one table that sorts them into the contract's categories.
//!
//! Messages are lowercase and name the thing (`profile "web" version 3 not found`). The
//! category decides the gRPC status (in `grpc`) and the `result` of the audit entry, so the
//! two cannot disagree.

use crate::store::Finding;

/// Result with the registry's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a registry call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile name is not a DNS-1123 subdomain.
    #[error("invalid profile name {name}: {reason}")]
    InvalidName {
        /// The name as given, quoted and shortened for display.
        name: String,
        /// What rule it breaks.
        reason: String,
    },
    /// The content failed validation; every diagnostic, errors and warnings, in order.
    #[error("profile {name:?} is invalid: {summary}")]
    InvalidProfile {
        /// Profile name.
        name: String,
        /// `N errors; first: <path>: <message>`.
        summary: String,
        /// Every diagnostic.
        diagnostics: Vec<Finding>,
    },
    /// The content is over the size limit.
    #[error("profile {name:?} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Profile name.
        name: String,
        /// Size of the content.
        size: usize,
        /// The limit (`--max-profile-bytes`).
        limit: usize,
    },
    /// No profile of that name.
    #[error("profile {name:?} not found")]
    ProfileNotFound {
        /// Profile name.
        name: String,
    },
    /// The profile exists but not that version (never published, or deleted).
    #[error("profile {name:?} version {version} not found")]
    VersionNotFound {
        /// Profile name.
        name: String,
        /// Requested version.
        version: u64,
    },
    /// No stored version has that digest.
    #[error("profile {name:?} has no version with digest {digest}")]
    DigestNotFound {
        /// Profile name.
        name: String,
        /// Requested digest.
        digest: String,
    },
    /// Every stored version is deprecated, so there is no `latest`.
    #[error("profile {name:?} has no live version (every stored version is deprecated)")]
    NoLiveVersion {
        /// Profile name.
        name: String,
    },
    /// Compare-and-set failed: the latest version is not the one the caller expected.
    #[error(
        "profile {name:?}: expected latest version {expected}, but the latest version is {actual}"
    )]
    StaleVersion {
        /// Profile name.
        name: String,
        /// `expected_latest_version` of the request.
        expected: u64,
        /// The actual latest live version (0: none).
        actual: u64,
    },
    /// The version cannot be deleted while something uses it.
    #[error("profile {name:?} version {version} is in use ({user}) and cannot be deleted")]
    InUse {
        /// Profile name.
        name: String,
        /// Version.
        version: u64,
        /// Who uses it.
        user: String,
    },
    /// A stored version no longer passes validation (the validator became stricter).
    #[error("profile {name:?} version {version} no longer passes validation: {reason}")]
    StoredInvalid {
        /// Profile name.
        name: String,
        /// Version.
        version: u64,
        /// The first error.
        reason: String,
    },
    /// The new version breaks the profile's compatibility rule.
    #[error(
        "profile {name:?}: version {version} breaks the compatibility rule {mode} against version {against}: {violations}"
    )]
    Incompatible {
        /// Profile name.
        name: String,
        /// The version it would have been.
        version: u64,
        /// The rule.
        mode: String,
        /// The version checked against (the latest live one).
        against: u64,
        /// `read on SCMP_ARCH_X86_64: allowed → denied; ...`.
        violations: String,
    },
    /// A malformed request field (version 0, a bad digest, a bad page token, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record does not decode.
    #[error("corrupt stored record {key}: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A background task of the call died.
    #[error("internal task failed: {0}")]
    Task(String),
    /// Whether the version is in use cannot be told (the distributor did not answer).
    #[error("cannot delete {name}@{version}: cannot check whether it is in use: {reason}")]
    UsageUnknown {
        /// Profile name.
        name: String,
        /// Version.
        version: u64,
        /// Why not.
        reason: String,
    },
    /// An earlier commit failed halfway; changes are refused until a restart replays it.
    #[error(
        "the registry refuses changes after a storage failure left a change half-done; restart it to complete that change from its journal"
    )]
    Broken,
}

/// The contract's error categories (the gRPC status codes the registry uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Bad input.
    InvalidArgument,
    /// Missing profile or version.
    NotFound,
    /// Conflicts with the stored state.
    FailedPrecondition,
    /// Over a size limit.
    ResourceExhausted,
    /// Something the registry depends on did not answer; retrying later may work.
    Unavailable,
    /// The registry's own fault.
    Internal,
}

impl Category {
    /// The gRPC status code name, as the audit log records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::InvalidArgument => "INVALID_ARGUMENT",
            Category::NotFound => "NOT_FOUND",
            Category::FailedPrecondition => "FAILED_PRECONDITION",
            Category::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Category::Unavailable => "UNAVAILABLE",
            Category::Internal => "INTERNAL",
        }
    }
}

impl Error {
    /// Which category the error belongs to.
    pub fn category(&self) -> Category {
        match self {
            Error::InvalidName { .. }
            | Error::InvalidProfile { .. }
            | Error::InvalidArgument(_) => Category::InvalidArgument,
            Error::TooLarge { .. } => Category::ResourceExhausted,
            Error::ProfileNotFound { .. }
            | Error::VersionNotFound { .. }
            | Error::DigestNotFound { .. }
            | Error::NoLiveVersion { .. } => Category::NotFound,
            Error::StaleVersion { .. }
            | Error::InUse { .. }
            | Error::StoredInvalid { .. }
            | Error::Incompatible { .. } => Category::FailedPrecondition,
            Error::UsageUnknown { .. } => Category::Unavailable,
            Error::Storage(_) | Error::Corrupt { .. } | Error::Task(_) | Error::Broken => {
                Category::Internal
            }
        }
    }
}
