//! The next version of a profile from what its workloads were seen doing (#19): a
//! complain-mode (`SCMP_ACT_LOG`) profile plus the syscalls it logged becomes one that allows
//! them, and, enforced, denies the rest.
//!
//! Everything of the base version is kept as written (rules, architectures, flags, other
//! keys); the observed syscalls that no unconditional `SCMP_ACT_ALLOW` rule names yet are
//! added in new rules at the end: one, or, where the architectures they were seen on differ
//! ([`suggest_observed`]: `socketcall` seen from 32-bit x86 code only, `socket` from
//! x86_64), one per set of architectures, its comment naming them. (A rule by name applies
//! on every architecture of the filter where the name exists; the profile format kubelet
//! reads has no per-rule architecture condition that every runtime honours, so the rules
//! say where each call was seen rather than restrict it.) A syscall an explicit rule denies (ERRNO, KILL, TRAP,
//! ...) is not allowed behind that rule's back: it is reported as kept. With `enforce`, a
//! `SCMP_ACT_LOG` default becomes `SCMP_ACT_ERRNO` with `EPERM`. The result is validated
//! like any publish.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Of `allowed`, the architectures each was seen on (empty when not told).
    pub seen_on: BTreeMap<String, BTreeSet<String>>,
}

/// One syscall seen under a profile: its name in the table of the architecture it was made
/// in, and that architecture (`SCMP_ARCH_*`; empty when not known).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Observation {
    /// `SCMP_ARCH_*`, or empty.
    pub arch: String,
    /// The syscall's name.
    pub syscall: String,
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
    let observed: Vec<Observation> = observed
        .into_iter()
        .map(|s| Observation {
            arch: String::new(),
            syscall: s.to_owned(),
        })
        .collect();
    suggest_observed(base, &observed, enforce)
}

/// [`suggest`] from syscalls seen on known architectures: where the architectures differ
/// between syscalls, one rule per set of architectures, each rule's comment naming them.
pub fn suggest_observed(
    base: &[u8],
    observed: &[Observation],
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
    let mut seen_on: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for o in observed {
        let arches = seen_on.entry(o.syscall.as_str()).or_default();
        if !o.arch.is_empty() {
            arches.insert(o.arch.as_str());
        }
    }
    let observed: BTreeSet<&str> = seen_on.keys().copied().collect();
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
    // The allowed syscalls by the architectures they were seen on.
    let mut groups: BTreeMap<Vec<&str>, Vec<&str>> = BTreeMap::new();
    for name in &allowed {
        let arches: Vec<&str> = seen_on
            .get(name.as_str())
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        groups.entry(arches).or_default().push(name.as_str());
    }
    // One rule needs no words (runtimes ignore `comment`, and the validator says so); rules
    // split by architecture say where each was seen.
    let one_group = groups.len() == 1;
    for (arches, names) in &groups {
        let mut rule = serde_json::json!({
            "names": names,
            "action": "SCMP_ACT_ALLOW",
        });
        if !one_group {
            let on = if arches.is_empty() {
                "an architecture not told".to_owned()
            } else {
                arches.join(", ")
            };
            rule["comment"] =
                format!("observed under complain mode on {on} (seccompctl profile suggest)").into();
        }
        match obj.get_mut("syscalls").and_then(|s| s.as_array_mut()) {
            Some(rules) => rules.push(rule),
            None => {
                obj.insert("syscalls".to_owned(), serde_json::json!([rule]));
            }
        }
    }
    let seen_on: BTreeMap<String, BTreeSet<String>> = allowed
        .iter()
        .map(|n| {
            let arches = seen_on
                .get(n.as_str())
                .map(|a| a.iter().map(|s| (*s).to_owned()).collect())
                .unwrap_or_default();
            (n.clone(), arches)
        })
        .collect();
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
        seen_on,
    })
}
