//! The next version of a profile from what its workloads were seen doing (#19): a
//! complain-mode (`SCMP_ACT_LOG`) profile plus the syscalls it logged becomes one that allows
//! them, and, enforced, denies the rest.
//!
//! Everything of the base version is kept as written (rules, architectures, flags, other
//! keys); the observed syscalls that no unconditional `SCMP_ACT_ALLOW` rule names yet are
//! added in one new rule at the end. A syscall an explicit rule denies (ERRNO, KILL, TRAP,
//! ...) is not allowed behind that rule's back: it is reported as kept. With `enforce`, a
//! `SCMP_ACT_LOG` default becomes `SCMP_ACT_ERRNO` with `EPERM`. The result is validated
//! like any publish.

use std::collections::BTreeSet;

use crate::{Report, validate_default};

/// `EPERM`, the errno an enforced default returns.
const EPERM: u64 = 1;

/// What [`suggest`] made.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// The new profile's bytes (pretty JSON, a newline at the end).
    pub bytes: Vec<u8>,
    /// The validator's verdict on them.
    pub report: Report,
    /// Observed syscalls the new version allows and the base did not, sorted.
    pub allowed: Vec<String>,
    /// Observed syscalls an explicit rule of the base denies, left denied, sorted.
    pub kept_denied: Vec<String>,
    /// Whether the default action changed from LOG to ERRNO.
    pub enforced: bool,
}

/// Why no suggestion could be made.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The base version does not validate.
    #[error("the base profile is not valid: {0}")]
    InvalidBase(String),
}

/// The next version of `base` allowing the `observed` syscall names; with `enforce`, a LOG
/// default becomes ERRNO (EPERM).
pub fn suggest<'a>(
    base: &[u8],
    observed: impl IntoIterator<Item = &'a str>,
    enforce: bool,
) -> Result<Suggestion, SuggestError> {
    let report = validate_default(base);
    let Some(profile) = report.profile else {
        let first = report
            .diagnostics
            .iter()
            .find(|d| d.severity == crate::Severity::Error)
            .map_or_else(|| "invalid".to_owned(), |d| d.message.clone());
        return Err(SuggestError::InvalidBase(first));
    };
    // Validation passed, so the bytes are a JSON object.
    let mut doc: serde_json::Value =
        serde_json::from_slice(base).map_err(|e| SuggestError::InvalidBase(e.to_string()))?;
    let allowed_already: BTreeSet<&str> = profile
        .rules
        .iter()
        .filter(|r| r.action.name == "SCMP_ACT_ALLOW" && r.is_unconditional())
        .flat_map(|r| r.names.iter().map(|n| n.as_ref()))
        .collect();
    let denied: BTreeSet<&str> = profile
        .rules
        .iter()
        .filter(|r| !matches!(r.action.name.as_str(), "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG"))
        .flat_map(|r| r.names.iter().map(|n| n.as_ref()))
        .collect();
    let observed: BTreeSet<&str> = observed.into_iter().collect();
    let kept_denied: Vec<String> = observed
        .iter()
        .filter(|n| denied.contains(*n))
        .map(|n| (*n).to_owned())
        .collect();
    let allowed: Vec<String> = observed
        .iter()
        .filter(|n| !allowed_already.contains(*n) && !denied.contains(*n))
        .map(|n| (*n).to_owned())
        .collect();
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| SuggestError::InvalidBase("not a JSON object".to_owned()))?;
    if !allowed.is_empty() {
        let rule = serde_json::json!({
            "names": allowed,
            "action": "SCMP_ACT_ALLOW",
            "comment": "observed under complain mode (seccompctl profile suggest)",
        });
        match obj.get_mut("syscalls").and_then(|s| s.as_array_mut()) {
            Some(rules) => rules.push(rule),
            None => {
                obj.insert("syscalls".to_owned(), serde_json::json!([rule]));
            }
        }
    }
    let enforced = enforce && profile.default_action.name == "SCMP_ACT_LOG";
    if enforced {
        obj.insert("defaultAction".to_owned(), "SCMP_ACT_ERRNO".into());
        obj.insert("defaultErrnoRet".to_owned(), EPERM.into());
    }
    let mut bytes =
        serde_json::to_vec_pretty(&doc).map_err(|e| SuggestError::InvalidBase(e.to_string()))?;
    bytes.push(b'\n');
    let report = validate_default(&bytes);
    Ok(Suggestion {
        bytes,
        report,
        allowed,
        kept_denied,
        enforced,
    })
}
