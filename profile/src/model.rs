//! The typed profile that validation produces when a file has no errors; the semantic diff
//! works on it. Field names follow the JSON ones.

use std::borrow::Cow;

use serde::Serialize;

/// A syscall name. Names from a validated file are borrowed from the static syscall tables
/// (no allocation per name); constructed profiles may own theirs.
pub type SyscallName = Cow<'static, str>;

/// An action with its optional return value (`errnoRet` for ERRNO, the tracer's value for
/// TRACE).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Action {
    /// `SCMP_ACT_*`.
    pub name: String,
    /// `errnoRet` / `defaultErrnoRet`, when given.
    pub ret: Option<u64>,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ret {
            Some(r) => write!(f, "{}({r})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One argument condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Arg {
    /// Argument position, 0..=5.
    pub index: u64,
    /// First operand (the mask for MASKED_EQ).
    pub value: u64,
    /// Second operand (the datum for MASKED_EQ).
    pub value_two: u64,
    /// `SCMP_CMP_*`.
    pub op: String,
}

/// Docker's `includes`/`excludes` conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Filter {
    /// Architectures (Docker/Go names, as written).
    pub arches: Vec<String>,
    /// Capabilities.
    pub caps: Vec<String>,
    /// `<major>.<minor>`.
    pub min_kernel: Option<String>,
}

impl Filter {
    /// True when the filter says nothing.
    pub fn is_empty(&self) -> bool {
        self.arches.is_empty() && self.caps.is_empty() && self.min_kernel.is_none()
    }
}

/// One entry of `syscalls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Syscall names (`names`, or the legacy `name`).
    pub names: Vec<SyscallName>,
    /// What happens when the rule matches.
    pub action: Action,
    /// Argument conditions (all must hold).
    pub args: Vec<Arg>,
    /// Apply only when these hold.
    pub includes: Filter,
    /// Apply unless these hold.
    pub excludes: Filter,
}

impl Rule {
    /// True when the rule applies to its syscalls without any condition.
    pub fn is_unconditional(&self) -> bool {
        self.args.is_empty() && self.includes.is_empty() && self.excludes.is_empty()
    }
}

/// A validated seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// Action for syscalls no rule names.
    pub default_action: Action,
    /// Listed architectures (`architectures`, or every `archMap` entry and sub-architecture).
    pub architectures: Vec<String>,
    /// Filter flags.
    pub flags: Vec<String>,
    /// `listenerPath`, when set.
    pub listener_path: Option<String>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}
