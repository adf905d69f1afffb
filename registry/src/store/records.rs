//! The records the store keeps, as the service and the gRPC layer see them: each is kept as
//! JSON in its tree (see the table in [`super`]).

use std::time::{SystemTime, UNIX_EPOCH};

use seccomp_profile::{Diagnostic, Severity};
use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        UnixNanos(nanos)
    }
}

/// A validation diagnostic as stored with a version (the code as its stable string, so
/// records stay readable when the library adds codes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Stable kebab-case code.
    pub code: String,
    /// JSON pointer; `""` for the whole document.
    pub path: String,
    /// One sentence.
    pub message: String,
}

impl From<&Diagnostic> for Finding {
    fn from(d: &Diagnostic) -> Self {
        Finding {
            severity: d.severity,
            code: d.code.as_str().to_owned(),
            path: d.path.clone(),
            message: d.message.clone(),
        }
    }
}

/// Per-profile bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The number the next publish gets; only ever grows, so numbers are never reused.
    pub next_version: u64,
    /// Highest live (neither deprecated nor deleted) version; 0 when there is none.
    pub latest_live: u64,
    /// Stored (not deleted) versions, deprecated ones included.
    pub stored: u64,
    /// The compatibility rule checked on publish (`SetPolicy`); `None` is `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat: Option<String>,
}

/// Why and by whom a version was deprecated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprecation {
    /// Reason given.
    pub reason: String,
    /// When.
    pub at: UnixNanos,
    /// Actor of the Deprecate call.
    pub by: String,
}

/// Everything about one version except its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// Profile name.
    pub name: String,
    /// Version number, 1 or more.
    pub version: u64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Content size in bytes.
    pub size: u64,
    /// When it was stored.
    pub created_at: UnixNanos,
    /// Actor of the publish.
    pub author: String,
    /// Description given at publish time.
    pub description: String,
    /// Validation warnings at publish time.
    pub warnings: Vec<Finding>,
    /// Set once the version is deprecated.
    pub deprecation: Option<Deprecation>,
}

impl VersionMeta {
    /// Neither deprecated nor deleted (a deleted version has no record at all).
    pub fn is_live(&self) -> bool {
        self.deprecation.is_none()
    }
}

/// One recorded mutating call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the call completed.
    pub time: UnixNanos,
    /// Who made it.
    pub actor: String,
    /// The rpc name (`Publish`, `Deprecate`, `DeleteVersion`).
    pub method: String,
    /// `name@version`, or `name`.
    pub target: String,
    /// `OK` or the status code name.
    pub result: String,
    /// Summary or error message.
    pub message: String,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// A profile in a listing.
#[derive(Debug, Clone)]
pub struct ProfileSummary {
    /// Profile name.
    pub name: String,
    /// Bookkeeping.
    pub record: ProfileRecord,
    /// The latest live version, when there is one.
    pub latest: Option<VersionMeta>,
    /// When the newest stored version was created.
    pub updated_at: Option<UnixNanos>,
}

/// What one publish writes.
pub struct NewVersion<'a> {
    /// The profile's record after the publish.
    pub record: &'a ProfileRecord,
    /// The new version.
    pub meta: &'a VersionMeta,
    /// Its bytes.
    pub content: &'a [u8],
    /// The audit entry of the call.
    pub audit: &'a AuditEntry,
}
