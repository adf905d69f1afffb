//! Diagnostics: what validation says about a profile, each with a stable code and a JSON
//! pointer to the place it is about.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The profile is rejected.
    Error,
    /// Accepted, but some runtime will not do what the file seems to say.
    Warning,
}

impl Severity {
    /// `"error"` or `"warning"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $sev:ident; )*) => {
        /// A stable, machine-readable diagnostic code. The string form (`Code::as_str`) is
        /// part of the public contract: scripts and the registry's clients match on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// The stable kebab-case code.
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }
            /// The severity this code always has.
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }
            /// Every code, for documentation and tests.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
        }
    };
}

codes! {
    /// The file is larger than the size limit.
    FileTooLarge = "file-too-large", Error;
    /// Zero bytes or only whitespace.
    EmptyFile = "empty-file", Error;
    /// A UTF-8 byte order mark.
    Bom = "bom", Error;
    /// Not UTF-8.
    NotUtf8 = "not-utf8", Error;
    /// Not JSON (syntax error, comment, trailing comma, ...).
    InvalidJson = "invalid-json", Error;
    /// The top level is not an object.
    NotObject = "not-object", Error;
    /// The same key twice in one object.
    DuplicateKey = "duplicate-key", Error;
    /// A value of the wrong JSON type.
    WrongType = "wrong-type", Error;
    /// An integer that does not fit its field.
    NumberOverflow = "number-overflow", Error;
    /// No `defaultAction`.
    MissingDefaultAction = "missing-default-action", Error;
    /// An action that is not one of the nine `SCMP_ACT_*`.
    UnknownAction = "unknown-action", Error;
    /// An architecture that is not an `SCMP_ARCH_*` name.
    UnknownArch = "unknown-arch", Error;
    /// An operator that is not one of the seven `SCMP_CMP_*`.
    UnknownOperator = "unknown-operator", Error;
    /// A filter flag that is not a `SECCOMP_FILTER_FLAG_*` the spec defines.
    UnknownFlag = "unknown-flag", Error;
    /// An argument index outside 0..=5.
    ArgIndexOutOfRange = "arg-index-out-of-range", Error;
    /// More than six argument conditions in one rule.
    TooManyArgs = "too-many-args", Error;
    /// An argument condition without `index`.
    MissingIndex = "missing-index", Error;
    /// An argument condition without `op`.
    MissingOp = "missing-op", Error;
    /// A rule with neither `names` nor `name`.
    MissingNames = "missing-names", Error;
    /// `names: []`.
    EmptyNames = "empty-names", Error;
    /// An empty string as a syscall name.
    EmptyName = "empty-name", Error;
    /// Both `name` and `names` in one rule.
    NameAndNames = "name-and-names", Error;
    /// Both `architectures` and `archMap`.
    ArchitecturesAndArchMap = "architectures-and-archmap", Error;
    /// A syscall name no architecture knows.
    UnknownSyscall = "unknown-syscall", Error;
    /// A rule without `action`.
    MissingAction = "missing-action", Error;
    /// `errnoRet` on an action other than ERRNO or TRACE.
    ErrnoRetNotAllowed = "errno-ret-not-allowed", Error;
    /// `defaultErrnoRet` with a default action other than ERRNO or TRACE.
    DefaultErrnoRetNotAllowed = "default-errno-ret-not-allowed", Error;
    /// An ERRNO value of 4095 or more, or a TRACE value over 65535.
    ErrnoRetTooLarge = "errno-ret-too-large", Error;
    /// `SCMP_ACT_NOTIFY` as the default action.
    NotifyDefaultAction = "notify-default-action", Error;
    /// `SCMP_ACT_NOTIFY` on `write` (the notifying process could deadlock itself).
    NotifyOnWrite = "notify-on-write", Error;
    /// `SCMP_ACT_NOTIFY` used without `listenerPath`.
    NotifyWithoutListener = "notify-without-listener", Error;
    /// `listenerMetadata` without `listenerPath`.
    ListenerMetadataWithoutPath = "listener-metadata-without-path", Error;
    /// `minKernel` not of the form `<major>.<minor>`.
    BadMinKernel = "bad-min-kernel", Error;
    /// The filter would exceed the kernel's 4096 BPF instructions.
    FilterTooLarge = "filter-too-large", Error;
    /// A field that at least one runtime ignores (archMap, includes/excludes, legacy name,
    /// comment, podman errno strings).
    RuntimeIgnoredField = "runtime-ignored-field", Warning;
    /// A key no runtime knows (often a typo).
    UnknownKey = "unknown-key", Warning;
    /// The same syscall with different unconditional actions.
    ConflictingActions = "conflicting-actions", Warning;
    /// A rule whose action equals `defaultAction`.
    RuleEqualsDefault = "rule-equals-default", Warning;
    /// The same argument index twice in one rule.
    DuplicateArgIndex = "duplicate-arg-index", Warning;
    /// `SCMP_CMP_MASKED_EQ` whose datum has bits outside the mask: it can never match.
    MaskedEqUnreachable = "masked-eq-unreachable", Warning;
    /// An architecture runc does not support.
    ArchUnsupportedByRunc = "arch-unsupported-by-runc", Warning;
    /// A syscall that exists, but on none of the listed architectures.
    SyscallNotOnListedArch = "syscall-not-on-listed-arch", Warning;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One finding about a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code.
    pub code: Code,
    /// JSON pointer to the offending value (`""` for the whole document).
    pub path: String,
    /// One sentence for a person.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic with the severity its code implies.
    pub fn new(code: Code, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: code.severity(),
            code,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(
            f,
            "{path}: {}[{}]: {}",
            self.severity, self.code, self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            );
        }
    }

    #[test]
    fn display_form() {
        let d = Diagnostic::new(Code::UnknownAction, "/defaultAction", "no such action");
        assert_eq!(
            d.to_string(),
            "/defaultAction: error[unknown-action]: no such action"
        );
    }
}
