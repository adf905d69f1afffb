//! Semantic diff between two validated profiles: what a syscall's treatment was before and
//! after, not how the JSON text moved.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{Profile, Rule};

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The old value.
    pub before: String,
    /// The new value.
    pub after: String,
}

/// How one syscall's treatment changed. `before: None` means the syscall was not named (it
/// fell to the default action); `after: None` means it no longer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallChange {
    /// Syscall name.
    pub name: String,
    /// Treatment before, one clause per rule (`SCMP_ACT_ALLOW if arg0 == 0x1`), or `None`.
    pub before: Option<String>,
    /// Treatment after, or `None`.
    pub after: Option<String>,
}

/// The semantic difference between two profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProfileDiff {
    /// `defaultAction` (with its errno) when it changed.
    pub default_action: Option<Change>,
    /// Architectures listed only in the new profile.
    pub architectures_added: Vec<String>,
    /// Architectures listed only in the old profile.
    pub architectures_removed: Vec<String>,
    /// Flags only in the new profile.
    pub flags_added: Vec<String>,
    /// Flags only in the old profile.
    pub flags_removed: Vec<String>,
    /// Syscalls whose treatment differs, sorted by name.
    pub syscalls: Vec<SyscallChange>,
}

impl ProfileDiff {
    /// True when the two profiles behave the same.
    pub fn is_empty(&self) -> bool {
        *self == ProfileDiff::default()
    }
    /// Syscalls named only in the new profile.
    pub fn added(&self) -> impl Iterator<Item = &SyscallChange> {
        self.syscalls.iter().filter(|c| c.before.is_none())
    }
    /// Syscalls named only in the old profile.
    pub fn removed(&self) -> impl Iterator<Item = &SyscallChange> {
        self.syscalls.iter().filter(|c| c.after.is_none())
    }
    /// Syscalls named in both, treated differently.
    pub fn changed(&self) -> impl Iterator<Item = &SyscallChange> {
        self.syscalls
            .iter()
            .filter(|c| c.before.is_some() && c.after.is_some())
    }
}

/// Describe one rule as it applies to one syscall.
fn clause(rule: &Rule) -> String {
    let mut s = rule.action.to_string();
    let mut conds: Vec<String> = rule
        .args
        .iter()
        .map(|a| {
            let op = match a.op.as_str() {
                "SCMP_CMP_NE" => "!=",
                "SCMP_CMP_LT" => "<",
                "SCMP_CMP_LE" => "<=",
                "SCMP_CMP_EQ" => "==",
                "SCMP_CMP_GE" => ">=",
                "SCMP_CMP_GT" => ">",
                _ => return format!("arg{} & {:#x} == {:#x}", a.index, a.value, a.value_two),
            };
            format!("arg{} {op} {:#x}", a.index, a.value)
        })
        .collect();
    conds.sort();
    for (word, f) in [("when", &rule.includes), ("unless", &rule.excludes)] {
        if !f.arches.is_empty() {
            conds.push(format!("{word} arch in [{}]", f.arches.join(",")));
        }
        if !f.caps.is_empty() {
            conds.push(format!("{word} caps [{}]", f.caps.join(",")));
        }
        if let Some(k) = &f.min_kernel {
            conds.push(format!("{word} kernel >= {k}"));
        }
    }
    if !conds.is_empty() {
        s.push_str(" if ");
        s.push_str(&conds.join(" and "));
    }
    s
}

/// Per syscall, the clauses of every rule that names it, in rule order (order matters to
/// libseccomp when unconditional actions conflict).
fn treatments(p: &Profile) -> BTreeMap<&str, Vec<String>> {
    let mut map: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for rule in &p.rules {
        let c = clause(rule);
        for name in &rule.names {
            let entry = map.entry(name.as_ref()).or_default();
            if !entry.contains(&c) {
                entry.push(c.clone());
            }
        }
    }
    map
}

fn set_diff(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let a: BTreeSet<&String> = a.iter().collect();
    let b: BTreeSet<&String> = b.iter().collect();
    (
        b.difference(&a).map(|s| (*s).clone()).collect(),
        a.difference(&b).map(|s| (*s).clone()).collect(),
    )
}

/// The semantic diff from `old` to `new`.
pub fn diff(old: &Profile, new: &Profile) -> ProfileDiff {
    let default_action = (old.default_action != new.default_action).then(|| Change {
        before: old.default_action.to_string(),
        after: new.default_action.to_string(),
    });
    let (architectures_added, architectures_removed) =
        set_diff(&old.architectures, &new.architectures);
    let (flags_added, flags_removed) = set_diff(&old.flags, &new.flags);
    let before = treatments(old);
    let after = treatments(new);
    let names: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    let syscalls = names
        .into_iter()
        .filter_map(|name| {
            let b = before.get(name).map(|v| v.join("; "));
            let a = after.get(name).map(|v| v.join("; "));
            (b != a).then(|| SyscallChange {
                name: name.to_owned(),
                before: b,
                after: a,
            })
        })
        .collect();
    ProfileDiff {
        default_action,
        architectures_added,
        architectures_removed,
        flags_added,
        flags_removed,
        syscalls,
    }
}
