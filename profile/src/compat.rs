//! Compatibility rules between two versions of a profile (#19), as a schema registry checks
//! a new schema against the last: `none`, `no-new-denies` (the new version may not deny or
//! kill anything the previous one allowed: the safe direction for running workloads) and
//! `tighten-only` (the new version may not allow anything the previous one did not).
//!
//! Each syscall is judged on each architecture the two versions list, by what a call of it
//! gets: an unconditional rule naming it (a deny among several wins), else the default
//! action; a rule with argument conditions or filters makes it "sometimes allowed". LOG and
//! ALLOW let the call run; every other action stops it. Syscalls no rule of either version
//! names are judged together, as the default.

use std::collections::BTreeSet;

use crate::model::Profile;
use crate::tables;

/// A compatibility mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompatMode {
    /// Any new version is accepted.
    #[default]
    None,
    /// A new version may not stop a call the previous one let run.
    NoNewDenies,
    /// A new version may not let run a call the previous one stopped.
    TightenOnly,
}

impl CompatMode {
    /// The mode by its name (`none`, `no-new-denies`, `tighten-only`).
    pub fn parse(name: &str) -> Option<CompatMode> {
        match name {
            "none" => Some(CompatMode::None),
            "no-new-denies" => Some(CompatMode::NoNewDenies),
            "tighten-only" => Some(CompatMode::TightenOnly),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            CompatMode::None => "none",
            CompatMode::NoNewDenies => "no-new-denies",
            CompatMode::TightenOnly => "tighten-only",
        }
    }
}

/// What calls of a syscall get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Treatment {
    /// Stopped (ERRNO, KILL, TRAP, TRACE, NOTIFY).
    Denied,
    /// Allowed for some arguments or contexts only.
    Sometimes,
    /// Let run (ALLOW, LOG).
    Allowed,
}

/// One syscall on one architecture that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The syscall, or `(default)` for every syscall neither version names.
    pub syscall: String,
    /// The `SCMP_ARCH_*` architecture.
    pub arch: String,
    /// What it got before.
    pub before: Treatment,
    /// What it gets in the new version.
    pub after: Treatment,
}

fn runs(action: &str) -> bool {
    matches!(action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG")
}

/// What `syscall` gets on `arch` under `p` (`None` for the default).
fn treatment(p: &Profile, syscall: Option<&str>) -> Treatment {
    let default = if runs(&p.default_action.name) {
        Treatment::Allowed
    } else {
        Treatment::Denied
    };
    let Some(name) = syscall else {
        return default;
    };
    let naming: Vec<_> = p
        .rules
        .iter()
        .filter(|r| r.names.iter().any(|n| n == name))
        .collect();
    let unconditional: Vec<_> = naming.iter().filter(|r| r.is_unconditional()).collect();
    if !unconditional.is_empty() {
        return if unconditional.iter().all(|r| runs(&r.action.name)) {
            Treatment::Allowed
        } else {
            Treatment::Denied
        };
    }
    // Only conditional rules: their action for some calls, the default for the others.
    if naming
        .iter()
        .any(|r| runs(&r.action.name) != (default == Treatment::Allowed))
    {
        Treatment::Sometimes
    } else {
        default
    }
}

/// Whether `name` exists on the architecture `arch` (`SCMP_ARCH_*`); unknown architectures
/// count every name.
fn exists_on(name: &str, arch: &str) -> bool {
    match (
        tables::lookup_syscall(name),
        tables::arch_info(arch).map(|a| a.tables),
    ) {
        (Some(s), Some(t)) if !t.is_empty() => s.arches.intersects(t),
        _ => true,
    }
}

/// The violations of `mode` by `new` against `old`, by syscall then architecture.
pub fn check(mode: CompatMode, old: &Profile, new: &Profile) -> Vec<Violation> {
    let breaks = |before: Treatment, after: Treatment| match mode {
        CompatMode::None => false,
        CompatMode::NoNewDenies => after < before,
        CompatMode::TightenOnly => after > before,
    };
    let arches: BTreeSet<&str> = old
        .architectures
        .iter()
        .chain(&new.architectures)
        .map(String::as_str)
        .collect();
    // A profile without architectures is the runtime's native one; judge it as x86_64.
    let arches: Vec<&str> = if arches.is_empty() {
        vec!["SCMP_ARCH_X86_64"]
    } else {
        arches.into_iter().collect()
    };
    let names: BTreeSet<&str> = old
        .rules
        .iter()
        .chain(&new.rules)
        .flat_map(|r| r.names.iter().map(|n| n.as_ref()))
        .collect();
    let mut out = Vec::new();
    for syscall in std::iter::once(None).chain(names.into_iter().map(Some)) {
        for arch in &arches {
            if syscall.is_some_and(|n| !exists_on(n, arch)) {
                continue;
            }
            let (before, after) = (treatment(old, syscall), treatment(new, syscall));
            if breaks(before, after) {
                out.push(Violation {
                    syscall: syscall.unwrap_or("(default)").to_owned(),
                    arch: (*arch).to_owned(),
                    before,
                    after,
                });
            }
        }
    }
    out
}
