//! Validation: every rule of DESIGN section 2, producing diagnostics with JSON pointers and,
//! when there is no error, the typed [`Profile`].

use std::collections::BTreeMap;

use crate::diag::{Code, Diagnostic, Severity};
use crate::json::{self, Json, Number, ParseError, pointer_push};
use crate::model::{Action, Arg, Filter, Profile, Rule, SyscallName};
use crate::tables::{self, ACTIONS, ArchSet, FLAGS, OPERATORS};

/// The default size limit for a profile file: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// The kernel's limit on a seccomp BPF program (`BPF_MAXINSNS`).
pub const BPF_MAX_INSNS: usize = 4096;

/// Largest errno libseccomp accepts for ERRNO (`MAX_ERRNO` is 4095, exclusive).
const MAX_ERRNO: u64 = 4094;

/// Validation settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files larger than this are refused without being parsed.
    pub max_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The outcome of validating one file.
#[derive(Debug, Clone)]
pub struct Report {
    /// `sha256:<hex>` of the exact bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
    /// Every finding, in document order; errors and warnings mixed.
    pub diagnostics: Vec<Diagnostic>,
    /// The typed profile, present exactly when there is no error.
    pub profile: Option<Profile>,
}

impl Report {
    /// True when no diagnostic is an error.
    pub fn is_valid(&self) -> bool {
        self.profile.is_some()
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
}

/// Validate a profile's bytes.
pub fn validate(bytes: &[u8], options: &Options) -> Report {
    let digest = crate::digest(bytes);
    let size = bytes.len();
    let mut checker = Checker::default();
    let profile = if size > options.max_bytes {
        checker.push(
            Code::FileTooLarge,
            &Ptr::ROOT,
            format!(
                "the file is {size} bytes, over the limit of {} bytes",
                options.max_bytes
            ),
        );
        None
    } else {
        match json::parse(bytes) {
            Ok(doc) => checker.profile(&doc),
            Err(e) => {
                let code = match e {
                    ParseError::Empty => Code::EmptyFile,
                    ParseError::Bom => Code::Bom,
                    ParseError::NotUtf8 { .. } => Code::NotUtf8,
                    ParseError::Syntax { .. } => Code::InvalidJson,
                };
                checker.push(code, &Ptr::ROOT, e.to_string());
                None
            }
        }
    };
    checker.finish_ignored();
    let has_error = checker.diags.iter().any(|d| d.severity == Severity::Error);
    Report {
        digest,
        size,
        diagnostics: checker.diags,
        profile: if has_error { None } else { profile },
    }
}

const TOP_KEYS: &[&str] = &[
    "defaultAction",
    "defaultErrnoRet",
    "defaultErrno",
    "architectures",
    "archMap",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
];
const RULE_KEYS: &[&str] = &[
    "names", "name", "action", "errnoRet", "errno", "args", "includes", "excludes", "comment",
];
const ARG_KEYS: &[&str] = &["index", "value", "valueTwo", "op"];
const FILTER_KEYS: &[&str] = &["arches", "caps", "minKernel"];
const ARCHMAP_KEYS: &[&str] = &["architecture", "subArchitectures"];

/// A JSON pointer built lazily: a chain of tokens on the stack, rendered to a string only
/// when a diagnostic needs it (most values never do).
#[derive(Clone, Copy)]
struct Ptr<'p> {
    parent: Option<&'p Ptr<'p>>,
    token: Token<'p>,
}

#[derive(Clone, Copy)]
enum Token<'p> {
    Root,
    Key(&'p str),
    Index(usize),
}

impl<'p> Ptr<'p> {
    const ROOT: Ptr<'static> = Ptr {
        parent: None,
        token: Token::Root,
    };

    fn key<'q>(&'q self, key: &'q str) -> Ptr<'q> {
        Ptr {
            parent: Some(self),
            token: Token::Key(key),
        }
    }

    fn index(&self, i: usize) -> Ptr<'_> {
        Ptr {
            parent: Some(self),
            token: Token::Index(i),
        }
    }

    fn render(&self) -> String {
        let mut tokens = Vec::new();
        let mut at = Some(self);
        while let Some(p) = at {
            tokens.push(p.token);
            at = p.parent;
        }
        let mut out = String::new();
        for t in tokens.iter().rev() {
            match t {
                Token::Root => {}
                Token::Key(k) => out = pointer_push(&out, k),
                Token::Index(i) => out = pointer_push(&out, &i.to_string()),
            }
        }
        out
    }
}

/// Fields runtimes disagree on, reported once per profile with a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ignored {
    ArchMap,
    IncludesExcludes,
    LegacyName,
    Comment,
    PodmanErrno,
}

impl Ignored {
    fn message(self, count: usize) -> String {
        let times = if count == 1 {
            String::new()
        } else {
            format!(" ({count} places)")
        };
        match self {
            Ignored::ArchMap => format!(
                "`archMap` is honoured by Docker, podman and CRI-O but ignored by containerd, which then filters only the native architecture{times}"
            ),
            Ignored::IncludesExcludes => format!(
                "`includes`/`excludes` are ignored by containerd, which applies such rules unconditionally{times}"
            ),
            Ignored::LegacyName => format!(
                "legacy `name` is understood by Docker and CRI-O only; containerd drops the whole rule, use `names`{times}"
            ),
            Ignored::Comment => format!("`comment` is ignored by every runtime{times}"),
            Ignored::PodmanErrno => format!(
                "podman's `errno`/`defaultErrno` strings are ignored by runc and containerd; use `errnoRet`/`defaultErrnoRet`{times}"
            ),
        }
    }
}

#[derive(Default)]
struct Checker {
    diags: Vec<Diagnostic>,
    ignored: BTreeMap<Ignored, (String, usize)>,
    /// `Syscall::id` of every name kept in a rule, rule after rule, so cross-rule checks
    /// index arrays instead of hashing names.
    name_ids: Vec<u16>,
}

/// The members of one object, first occurrence of each key, with their pointer. Objects in
/// a profile have a handful of keys, so a linear scan beats hashing.
struct Fields<'a> {
    path: Ptr<'a>,
    members: Vec<(&'a str, &'a Json<'a>)>,
}

impl<'a> Fields<'a> {
    /// The value under `key`, unless absent or an explicit `null` (Go decodes `null` to the
    /// zero value, so it counts as absent).
    fn get(&self, key: &'static str) -> Option<(&'a Json<'a>, Ptr<'_>)> {
        self.members
            .iter()
            .find(|(k, _)| *k == key)
            .filter(|(_, v)| !matches!(v, Json::Null))
            .map(|(_, v)| (*v, self.path.key(key)))
    }

    fn has(&self, key: &'static str) -> bool {
        self.get(key).is_some()
    }
}

fn is_errno_or_trace(action: &str) -> bool {
    action == "SCMP_ACT_ERRNO" || action == "SCMP_ACT_TRACE"
}

impl Checker {
    fn push(&mut self, code: Code, path: &Ptr<'_>, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::new(code, path.render(), message));
    }

    fn note_ignored(&mut self, kind: Ignored, path: &Ptr<'_>) {
        self.ignored
            .entry(kind)
            .or_insert_with(|| (path.render(), 0))
            .1 += 1;
    }

    fn finish_ignored(&mut self) {
        for (kind, (path, count)) in std::mem::take(&mut self.ignored) {
            self.diags.push(Diagnostic::new(
                Code::RuntimeIgnoredField,
                path,
                kind.message(count),
            ));
        }
    }

    fn object<'a>(
        &mut self,
        v: &'a Json<'a>,
        path: Ptr<'a>,
        known: &[&str],
        what: &str,
    ) -> Option<Fields<'a>> {
        let Json::Object(members) = v else {
            self.push(
                Code::WrongType,
                &path,
                format!("{what} must be an object, not {}", v.type_name()),
            );
            return None;
        };
        let mut out: Vec<(&'a str, &'a Json<'a>)> = Vec::with_capacity(members.len());
        for (key, value) in members {
            let key: &'a str = key;
            if out.iter().any(|(k, _)| *k == key) {
                self.push(
                    Code::DuplicateKey,
                    &path.key(key),
                    format!(
                        "duplicate key \"{key}\" in {what}: runtimes disagree on which value wins (Go keeps the last)"
                    ),
                );
                continue;
            }
            if !known.contains(&key) {
                let hint = known
                    .iter()
                    .map(|k| (tables::edit_distance(key, k), *k))
                    .filter(|(d, _)| *d <= 3)
                    .min()
                    .map(|(_, k)| format!(" (did you mean \"{k}\"?)"))
                    .unwrap_or_default();
                self.push(
                    Code::UnknownKey,
                    &path.key(key),
                    format!("unknown key \"{key}\" in {what} is ignored by every runtime{hint}"),
                );
            }
            out.push((key, value));
        }
        Some(Fields { path, members: out })
    }

    fn string<'a>(&mut self, v: &'a Json<'_>, path: &Ptr<'_>, what: &str) -> Option<&'a str> {
        match v {
            Json::String(s) => Some(s),
            other => {
                self.push(
                    Code::WrongType,
                    path,
                    format!("{what} must be a string, not {}", other.type_name()),
                );
                None
            }
        }
    }

    /// An array; `null` reads as empty, as Go decodes it.
    fn array<'a>(&mut self, v: &'a Json<'a>, path: &Ptr<'_>, what: &str) -> Option<&'a [Json<'a>]> {
        match v {
            Json::Array(a) => Some(a),
            Json::Null => Some(&[]),
            other => {
                self.push(
                    Code::WrongType,
                    path,
                    format!("{what} must be an array, not {}", other.type_name()),
                );
                None
            }
        }
    }

    /// The strings of an array with their indexes; non-strings are reported and skipped.
    fn strings<'a>(
        &mut self,
        v: &'a Json<'a>,
        path: &Ptr<'_>,
        what: &str,
    ) -> Vec<(&'a str, usize)> {
        let Some(items) = self.array(v, path, what) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Json::String(s) => out.push((&**s, i)),
                other => self.push(
                    Code::WrongType,
                    &path.index(i),
                    format!(
                        "each entry of {what} must be a string, not {}",
                        other.type_name()
                    ),
                ),
            }
        }
        out
    }

    fn uint(&mut self, v: &Json<'_>, path: &Ptr<'_>, max: u64, what: &str) -> Option<u64> {
        match v {
            Json::Number(Number::Unsigned(n)) if *n <= max => Some(*n),
            Json::Number(Number::Unsigned(n)) => {
                self.push(
                    Code::NumberOverflow,
                    path,
                    format!("{what} {n} does not fit (largest allowed {max})"),
                );
                None
            }
            Json::Number(Number::Float(f)) if f.fract() == 0.0 && *f >= 0.0 => {
                self.push(
                    Code::NumberOverflow,
                    path,
                    format!("{what} {f} does not fit (largest allowed {max})"),
                );
                None
            }
            Json::Number(_) => {
                self.push(
                    Code::WrongType,
                    path,
                    format!("{what} must be a non-negative integer"),
                );
                None
            }
            other => {
                self.push(
                    Code::WrongType,
                    path,
                    format!(
                        "{what} must be a non-negative integer, not {}",
                        other.type_name()
                    ),
                );
                None
            }
        }
    }

    fn action(&mut self, v: &Json<'_>, path: &Ptr<'_>, what: &str) -> Option<String> {
        let s = self.string(v, path, what)?;
        if ACTIONS.contains(&s) {
            return Some(s.to_owned());
        }
        let hint = ACTIONS
            .iter()
            .find(|a| a.eq_ignore_ascii_case(s))
            .map(|a| format!(" (actions are case-sensitive: did you mean \"{a}\"?)"))
            .unwrap_or_default();
        self.push(
            Code::UnknownAction,
            path,
            format!(
                "\"{s}\" is not a seccomp action; expected one of SCMP_ACT_{{KILL,KILL_PROCESS,KILL_THREAD,TRAP,ERRNO,TRACE,ALLOW,LOG,NOTIFY}}{hint}"
            ),
        );
        None
    }

    /// Check an action's return value (`errnoRet` or `defaultErrnoRet`).
    fn action_ret(
        &mut self,
        action: Option<&str>,
        ret: Option<(&Json<'_>, Ptr<'_>)>,
        field: &str,
        not_allowed: Code,
    ) -> Option<u64> {
        let (v, p) = ret?;
        let n = self.uint(v, &p, u64::from(u32::MAX), &format!("`{field}`"))?;
        let action = action?;
        if !is_errno_or_trace(action) {
            self.push(
                not_allowed,
                &p,
                format!(
                    "`{field}` is only meaningful with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}; the OCI spec requires runtimes to fail"
                ),
            );
            return None;
        }
        if action == "SCMP_ACT_ERRNO" && n > MAX_ERRNO {
            self.push(
                Code::ErrnoRetTooLarge,
                &p,
                format!("errno {n} is too large: libseccomp accepts 0..={MAX_ERRNO}"),
            );
            return None;
        }
        if action == "SCMP_ACT_TRACE" && n > u64::from(u16::MAX) {
            self.push(
                Code::ErrnoRetTooLarge,
                &p,
                format!("trace value {n} is too large: the kernel keeps 16 bits"),
            );
            return None;
        }
        Some(n)
    }

    fn arch_name(&mut self, name: &str, path: &Ptr<'_>, out: &mut Vec<String>) {
        match tables::arch_info(name) {
            Some(info) => {
                if info.runc_unsupported {
                    self.push(
                        Code::ArchUnsupportedByRunc,
                        path,
                        format!("{name} is known to libseccomp but runc refuses it"),
                    );
                }
                if !out.iter().any(|a| a == name) {
                    out.push(name.to_owned());
                }
            }
            None => {
                let hint = if name == "SCMP_ARCH_NATIVE" {
                    " (runc and crun have no native architecture: list the real ones)".to_owned()
                } else {
                    tables::ARCHES
                        .iter()
                        .find(|a| {
                            a.name.eq_ignore_ascii_case(name)
                                || a.name["SCMP_ARCH_".len()..].eq_ignore_ascii_case(name)
                        })
                        .map(|a| format!(" (did you mean \"{}\"?)", a.name))
                        .unwrap_or_default()
                };
                self.push(
                    Code::UnknownArch,
                    path,
                    format!("\"{name}\" is not a seccomp architecture (SCMP_ARCH_*){hint}"),
                );
            }
        }
    }

    fn profile(&mut self, doc: &Json<'_>) -> Option<Profile> {
        let Json::Object(_) = doc else {
            self.push(
                Code::NotObject,
                &Ptr::ROOT,
                format!(
                    "a seccomp profile is a JSON object, not {}",
                    doc.type_name()
                ),
            );
            return None;
        };
        let f = self.object(doc, Ptr::ROOT, TOP_KEYS, "the profile")?;

        let default_action = match f.get("defaultAction") {
            Some((v, p)) => {
                let a = self.action(v, &p, "`defaultAction`");
                if a.as_deref() == Some("SCMP_ACT_NOTIFY") {
                    self.push(
                        Code::NotifyDefaultAction,
                        &p,
                        "SCMP_ACT_NOTIFY cannot be the default action (runc refuses it)",
                    );
                }
                a
            }
            None => {
                let why = if f.has("syscalls") {
                    "runc fails with \"string  is not a valid action\""
                } else {
                    "with no rules either, runc and Docker run the container unconfined"
                };
                self.push(
                    Code::MissingDefaultAction,
                    &Ptr::ROOT,
                    format!("the profile has no `defaultAction`: {why}"),
                );
                None
            }
        };
        let default_ret = self.action_ret(
            default_action.as_deref(),
            f.get("defaultErrnoRet"),
            "defaultErrnoRet",
            Code::DefaultErrnoRetNotAllowed,
        );
        if let Some((v, p)) = f.get("defaultErrno") {
            self.string(v, &p, "`defaultErrno`");
            self.note_ignored(Ignored::PodmanErrno, &p);
        }

        let mut architectures = Vec::new();
        if let Some((v, p)) = f.get("architectures") {
            for (name, i) in self.strings(v, &p, "`architectures`") {
                self.arch_name(name, &p.index(i), &mut architectures);
            }
        }
        if let Some((v, p)) = f.get("archMap") {
            if f.has("architectures") {
                self.push(
                    Code::ArchitecturesAndArchMap,
                    &p,
                    "use either `architectures` or `archMap`, not both: runtimes pick different ones",
                );
            }
            self.note_ignored(Ignored::ArchMap, &p);
            self.arch_map(v, &p, &mut architectures);
        }
        let listed_tables = listed_tables(&architectures);

        let mut flags = Vec::new();
        if let Some((v, p)) = f.get("flags") {
            for (flag, i) in self.strings(v, &p, "`flags`") {
                if FLAGS.contains(&flag) {
                    flags.push(flag.to_owned());
                } else {
                    self.push(
                        Code::UnknownFlag,
                        &p.index(i),
                        format!(
                            "\"{flag}\" is not a seccomp filter flag; expected one of {}",
                            FLAGS.join(", ")
                        ),
                    );
                }
            }
        }

        let listener_path = f
            .get("listenerPath")
            .and_then(|(v, p)| self.string(v, &p, "`listenerPath`").map(str::to_owned));
        if let Some((v, p)) = f.get("listenerMetadata") {
            self.string(v, &p, "`listenerMetadata`");
            if listener_path.is_none() {
                self.push(
                    Code::ListenerMetadataWithoutPath,
                    &p,
                    "`listenerMetadata` is set but `listenerPath` is not (the OCI spec forbids it)",
                );
            }
        }

        let mut rules = Vec::new();
        if let Some((v, p)) = f.get("syscalls")
            && let Some(items) = self.array(v, &p, "`syscalls`")
        {
            rules.reserve(items.len());
            for (i, item) in items.iter().enumerate() {
                let first_id = self.name_ids.len();
                let rule = self.rule(item, p.index(i), listed_tables, listener_path.is_some());
                rules.push((rule, first_id));
            }
        }

        let default_action = default_action.map(|name| Action {
            name,
            ret: default_ret,
        });
        self.cross_rule_checks(default_action.as_ref(), &rules);

        let rules: Vec<Rule> = rules.into_iter().filter_map(|(r, _)| r).collect();
        Some(Profile {
            default_action: default_action?,
            architectures,
            flags,
            listener_path,
            rules,
        })
    }

    fn arch_map(&mut self, v: &Json<'_>, path: &Ptr<'_>, out: &mut Vec<String>) {
        let Some(items) = self.array(v, path, "`archMap`") else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let Some(f) = self.object(item, path.index(i), ARCHMAP_KEYS, "an `archMap` entry")
            else {
                continue;
            };
            match f.get("architecture") {
                Some((v, p)) => {
                    if let Some(name) = self.string(v, &p, "`architecture`") {
                        self.arch_name(name, &p, out);
                    }
                }
                None => self.push(
                    Code::WrongType,
                    &f.path,
                    "an `archMap` entry needs an `architecture`",
                ),
            }
            if let Some((v, p)) = f.get("subArchitectures") {
                for (name, j) in self.strings(v, &p, "`subArchitectures`") {
                    self.arch_name(name, &p.index(j), out);
                }
            }
        }
    }

    fn string_list(&mut self, v: &Json<'_>, path: &Ptr<'_>, what: &str) -> Vec<String> {
        self.strings(v, path, what)
            .into_iter()
            .map(|(s, _)| s.to_owned())
            .collect()
    }

    fn filter(&mut self, v: &Json<'_>, path: Ptr<'_>, what: &str) -> Filter {
        let mut filter = Filter::default();
        let Some(f) = self.object(v, path, FILTER_KEYS, what) else {
            return filter;
        };
        if let Some((v, p)) = f.get("arches") {
            // Docker writes Go architecture names here (amd64, s390x, ...), not SCMP_ARCH_*.
            filter.arches = self.string_list(v, &p, "`arches`");
        }
        if let Some((v, p)) = f.get("caps") {
            filter.caps = self.string_list(v, &p, "`caps`");
        }
        if let Some((v, p)) = f.get("minKernel")
            && let Some(s) = self.string(v, &p, "`minKernel`")
        {
            if is_kernel_version(s) {
                filter.min_kernel = Some(s.to_owned());
            } else {
                self.push(
                    Code::BadMinKernel,
                    &p,
                    format!("`minKernel` \"{s}\" must be <major>.<minor>, like \"4.8\""),
                );
            }
        }
        filter
    }

    fn rule(
        &mut self,
        v: &Json<'_>,
        path: Ptr<'_>,
        listed: Option<ArchSet>,
        has_listener: bool,
    ) -> Option<Rule> {
        let f = self.object(v, path, RULE_KEYS, "a syscall rule")?;

        let names = self.rule_names(&f, listed);

        let action = match f.get("action") {
            Some((v, p)) => self.action(v, &p, "`action`"),
            None => {
                self.push(Code::MissingAction, &f.path, "the rule has no `action`");
                None
            }
        };
        let ret = self.action_ret(
            action.as_deref(),
            f.get("errnoRet"),
            "errnoRet",
            Code::ErrnoRetNotAllowed,
        );
        if let Some((v, p)) = f.get("errno") {
            self.string(v, &p, "`errno`");
            self.note_ignored(Ignored::PodmanErrno, &p);
        }
        if action.as_deref() == Some("SCMP_ACT_NOTIFY") {
            if let Some(i) = names.iter().position(|n| n == "write")
                && let Some((_, p)) = f.get("names")
            {
                self.push(
                    Code::NotifyOnWrite,
                    &p.index(i),
                    "SCMP_ACT_NOTIFY on `write` can deadlock the process that handles notifications (runc refuses it)",
                );
            }
            if !has_listener {
                self.push(
                    Code::NotifyWithoutListener,
                    &f.path.key("action"),
                    "SCMP_ACT_NOTIFY needs `listenerPath` to reach a notification handler",
                );
            }
        }

        let args = match f.get("args") {
            Some((v, p)) => self.args(v, &p),
            None => Some(Vec::new()),
        };

        let mut conditions = [Filter::default(), Filter::default()];
        for (slot, key) in conditions.iter_mut().zip(["includes", "excludes"]) {
            if let Some((v, p)) = f.get(key) {
                *slot = self.filter(v, p, &format!("`{key}`"));
                if !slot.is_empty() {
                    self.note_ignored(Ignored::IncludesExcludes, &p);
                }
            }
        }
        let [includes, excludes] = conditions;
        if let Some((v, p)) = f.get("comment") {
            self.string(v, &p, "`comment`");
            self.note_ignored(Ignored::Comment, &p);
        }

        Some(Rule {
            names,
            action: Action { name: action?, ret },
            args: args?,
            includes,
            excludes,
        })
    }

    /// The rule's syscall names; empty on error.
    fn rule_names(&mut self, f: &Fields<'_>, listed: Option<ArchSet>) -> Vec<SyscallName> {
        let (names, list) = match (f.get("names"), f.get("name")) {
            (Some(_), Some((_, p))) => {
                self.push(
                    Code::NameAndNames,
                    &p,
                    "use either `names` or the legacy `name`, not both (Docker refuses it, containerd ignores `name`)",
                );
                return Vec::new();
            }
            (Some((v, p)), None) => {
                if matches!(v, Json::Array(a) if a.is_empty()) {
                    self.push(
                        Code::EmptyNames,
                        &p,
                        "`names` is empty: the rule applies to nothing (the OCI spec requires at least one name)",
                    );
                }
                (self.strings(v, &p, "`names`"), Some(p))
            }
            (None, Some((v, p))) => {
                self.note_ignored(Ignored::LegacyName, &p);
                let name = self.string(v, &p, "`name`");
                let Some(name) = name else {
                    return Vec::new();
                };
                (vec![(name, 0)], None)
            }
            (None, None) => {
                self.push(
                    Code::MissingNames,
                    &f.path,
                    "the rule names no syscall (`names` is missing)",
                );
                return Vec::new();
            }
        };
        let legacy = f.path.key("name");
        let mut out = Vec::with_capacity(names.len());
        for (name, i) in names {
            // Pointers are only rendered for diagnostics.
            let at = |list: &Option<Ptr<'_>>| match list {
                Some(p) => p.index(i).render(),
                None => legacy.render(),
            };
            if name.is_empty() {
                self.diags.push(Diagnostic::new(
                    Code::EmptyName,
                    at(&list),
                    "a syscall name is an empty string",
                ));
                continue;
            }
            match tables::lookup_syscall(name) {
                None => {
                    let hint = tables::closest_syscall(name)
                        .map(|s| format!(" (did you mean \"{s}\"?)"))
                        .unwrap_or_default();
                    self.diags.push(Diagnostic::new(
                        Code::UnknownSyscall,
                        at(&list),
                        format!(
                            "no architecture has a syscall named \"{name}\"; runtimes skip it silently{hint}"
                        ),
                    ));
                }
                Some(syscall) => {
                    out.push(SyscallName::Borrowed(syscall.name));
                    self.name_ids.push(syscall.id);
                    if let Some(listed) = listed
                        && !syscall.arches.intersects(listed)
                    {
                        self.diags.push(Diagnostic::new(
                            Code::SyscallNotOnListedArch,
                            at(&list),
                            format!(
                                "\"{name}\" does not exist on any of the listed architectures, so this name has no effect"
                            ),
                        ));
                    }
                }
            }
        }
        out
    }

    fn args(&mut self, v: &Json<'_>, path: &Ptr<'_>) -> Option<Vec<Arg>> {
        let items = self.array(v, path, "`args`")?;
        if items.len() > 6 {
            self.push(
                Code::TooManyArgs,
                path,
                format!(
                    "{} argument conditions: a syscall has at most 6 arguments",
                    items.len()
                ),
            );
        }
        let mut args = Vec::with_capacity(items.len());
        let mut ok = true;
        let mut seen_index: [Option<String>; 6] = Default::default();
        for (i, item) in items.iter().enumerate() {
            let Some(f) = self.object(item, path.index(i), ARG_KEYS, "an argument condition")
            else {
                ok = false;
                continue;
            };
            let index = match f.get("index") {
                Some((v, p)) => match self.uint(v, &p, u64::from(u32::MAX), "`index`") {
                    Some(n) if n <= 5 => {
                        let slot = &mut seen_index[n as usize];
                        if let Some(first) = slot.clone() {
                            self.push(
                                Code::DuplicateArgIndex,
                                &p,
                                format!(
                                    "argument {n} is already tested at {first}: runc and crun split such a rule into one rule per condition, so the conditions are ORed, not ANDed"
                                ),
                            );
                        } else {
                            *slot = Some(p.render());
                        }
                        Some(n)
                    }
                    Some(n) => {
                        self.push(
                            Code::ArgIndexOutOfRange,
                            &p,
                            format!(
                                "argument index {n} is out of range: syscalls have arguments 0 to 5"
                            ),
                        );
                        None
                    }
                    None => None,
                },
                None => {
                    self.push(
                        Code::MissingIndex,
                        &f.path,
                        "the argument condition has no `index`",
                    );
                    None
                }
            };
            let value = f
                .get("value")
                .map(|(v, p)| self.uint(v, &p, u64::MAX, "`value`"))
                .unwrap_or(Some(0));
            let value_two = f
                .get("valueTwo")
                .map(|(v, p)| self.uint(v, &p, u64::MAX, "`valueTwo`"))
                .unwrap_or(Some(0));
            let op = match f.get("op") {
                Some((v, p)) => match self.string(v, &p, "`op`") {
                    Some(op) if OPERATORS.contains(&op) => Some(op.to_owned()),
                    Some(op) => {
                        self.push(
                            Code::UnknownOperator,
                            &p,
                            format!(
                                "\"{op}\" is not a comparison operator; expected one of {}",
                                OPERATORS.join(", ")
                            ),
                        );
                        None
                    }
                    None => None,
                },
                None => {
                    self.push(
                        Code::MissingOp,
                        &f.path,
                        "the argument condition has no `op`",
                    );
                    None
                }
            };
            if let (Some("SCMP_CMP_MASKED_EQ"), Some(mask), Some(datum)) =
                (op.as_deref(), value, value_two)
                && datum & !mask != 0
            {
                self.push(
                    Code::MaskedEqUnreachable,
                    &f.path,
                    format!(
                        "SCMP_CMP_MASKED_EQ with mask {mask:#x} can never equal {datum:#x}: the datum has bits outside the mask"
                    ),
                );
            }
            match (index, value, value_two, op) {
                (Some(index), Some(value), Some(value_two), Some(op)) => args.push(Arg {
                    index,
                    value,
                    value_two,
                    op,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(args)
    }

    /// Checks across rules, on the rules that parsed (`rules[i]` is `/syscalls/i`, with the
    /// offset of its names' ids in `name_ids`).
    fn cross_rule_checks(&mut self, default: Option<&Action>, rules: &[(Option<Rule>, usize)]) {
        const UNSEEN: usize = usize::MAX;
        const CONDITIONAL_ONLY: usize = usize::MAX - 1;
        let rule_ptr = |i: usize| format!("/syscalls/{i}");
        let ids = std::mem::take(&mut self.name_ids);
        // Per syscall: the first rule giving it an unconditional action (libseccomp keeps
        // the first one added), or a marker.
        let mut first = vec![UNSEEN; tables::syscall_count()];
        let mut names_seen = 0usize;
        let mut estimate = 4usize; // arch check, syscall number load, default return
        let mut actions: Vec<&Action> = Vec::new();
        for (i, (rule, id_offset)) in rules.iter().enumerate() {
            let Some(rule) = rule else { continue };
            if let Some(default) = default
                && effective(&rule.action) == effective(default)
            {
                self.diags.push(Diagnostic::new(
                    Code::RuleEqualsDefault,
                    format!("{}/action", rule_ptr(i)),
                    format!(
                        "the rule's action equals `defaultAction` ({default}): runc and crun skip it, podman fails on it"
                    ),
                ));
            }
            if !actions.contains(&&rule.action) {
                actions.push(&rule.action);
            }
            // Each argument condition costs at least one comparison instruction per name.
            estimate += rule.names.len() * rule.args.len();
            let unconditional = rule.is_unconditional();
            for (k, name) in rule.names.iter().enumerate() {
                let slot = &mut first[usize::from(ids[id_offset + k])];
                match *slot {
                    UNSEEN => {
                        names_seen += 1;
                        *slot = if unconditional { i } else { CONDITIONAL_ONLY };
                    }
                    CONDITIONAL_ONLY if unconditional => *slot = i,
                    at if unconditional => {
                        let earlier = rules[at].0.as_ref().map(|r| &r.action);
                        if let Some(action) = earlier
                            && *action != rule.action
                        {
                            self.diags.push(Diagnostic::new(
                                Code::ConflictingActions,
                                format!("{}/action", rule_ptr(i)),
                                format!(
                                    "\"{name}\" already gets {action} unconditionally at {}; libseccomp keeps the first, so this {} is ignored",
                                    rule_ptr(at),
                                    rule.action
                                ),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        // One jump per distinct syscall, one return per distinct action.
        estimate += names_seen + actions.len();
        if estimate > BPF_MAX_INSNS {
            self.diags.push(Diagnostic::new(
                Code::FilterTooLarge,
                "/syscalls",
                format!(
                    "the filter needs at least {estimate} BPF instructions, over the kernel's limit of {BPF_MAX_INSNS}: the container would fail to start"
                ),
            ));
        }
    }
}

/// The union of the listed architectures' tables, or `None` when the check cannot be made
/// (nothing listed means "native", or a listed architecture has no table).
fn listed_tables(architectures: &[String]) -> Option<ArchSet> {
    let mut set = ArchSet::default();
    for name in architectures {
        let info = tables::arch_info(name)?;
        if info.tables.is_empty() {
            return None;
        }
        set = set.union(info.tables);
    }
    (!set.is_empty()).then_some(set)
}

/// An action as libseccomp compares it: runtimes send EPERM when no errno is given.
fn effective(a: &Action) -> (&str, u64) {
    let ret = if is_errno_or_trace(&a.name) {
        a.ret.unwrap_or(1)
    } else {
        0
    };
    (&a.name, ret)
}

fn is_kernel_version(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}
