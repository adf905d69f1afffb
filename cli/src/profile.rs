//! `seccompctl profile publish|get|list|history|diff|deprecate|delete`: the registry's versions.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use seccomp_proto::registry::v1 as pb;
use serde::Serialize;
use tonic::Code;

use crate::Outcome;
use crate::client::{self, Registry as Client, Service};
use crate::output::{Format, outln, print_structured, print_table, table, write_stdout_bytes};

/// `seccompctl profile ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a profile file and store it as a new version.
    ///
    /// Prints the version, digest, whether it was created (publishing bytes identical to a
    /// live version returns that version with `created: false`) and the warnings. A rejected
    /// profile prints every diagnostic as `path: severity[code]: message` and exits 1.
    Publish {
        /// Profile name (DNS-1123 subdomain: lowercase a-z, 0-9, '-', '.').
        name: String,
        /// The profile JSON; stored byte for byte.
        file: PathBuf,
        /// Description stored with the new version.
        #[arg(long, short = 'd', default_value = "")]
        description: String,
        /// Compare-and-set: fail unless the latest version is N (0: none yet).
        #[arg(long, value_name = "N")]
        expect_version: Option<u64>,
    },
    /// Show one version: NAME (latest), NAME@VERSION, or NAME@sha256:<hex>.
    Get {
        /// NAME, NAME@VERSION, NAME@latest or NAME@sha256:<hex>.
        reference: String,
        /// Write the exact stored bytes to standard output, nothing else.
        #[arg(long)]
        raw: bool,
    },
    /// List profiles with their latest version.
    List,
    /// List the versions of a profile, newest first.
    History {
        /// Profile name.
        name: String,
    },
    /// Show what changes, syscall by syscall, from one version to another.
    Diff {
        /// Profile name.
        name: String,
        /// Version compared from.
        from: u64,
        /// Version compared to.
        to: u64,
    },
    /// Mark a version deprecated: still readable, but no longer `latest`.
    Deprecate {
        /// NAME@VERSION.
        reference: String,
        /// Why it should no longer be used.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Set the compatibility rule every later publish of the profile is checked against.
    ///
    /// `none` (the default), `no-new-denies` (a new version may not stop a call the latest
    /// live version let run: the safe direction for running workloads) or `tighten-only` (a
    /// new version may not let run a call the latest one stopped). A publish that breaks
    /// the rule fails (exit 1) naming each syscall and architecture. Needs the admin role;
    /// audited.
    Policy {
        /// Profile name (published at least once).
        name: String,
        /// The rule.
        #[arg(long, value_parser = ["none", "no-new-denies", "tighten-only"])]
        compat: String,
    },
    /// Suggest the next version from what the profile's workloads were seen doing.
    ///
    /// Takes the seccomp events agents reported under NAME (`seccompctl events --profile
    /// NAME`: what a complain-mode profile logged, or what it denied), and makes a profile
    /// that allows those syscalls (one rule per set of architectures where they were seen
    /// on different ones) and keeps everything else of the base version; an explicit deny
    /// is kept and said. With --enforce a SCMP_ACT_LOG default becomes SCMP_ACT_ERRNO
    /// (EPERM). Prints the semantic diff against the base and the validator's verdict (exit
    /// 1 when invalid); --publish stores it as the next version.
    Suggest(crate::suggest::Args),
    /// Delete a version and its bytes for good (deprecate is the reversible way out).
    ///
    /// Its number is never reused. The registry refuses (exit 1) while an active rollout or
    /// any node uses the version, and while it cannot ask its distributor.
    Delete {
        /// NAME@VERSION.
        reference: String,
        /// Required: confirms that the bytes are to be deleted, not deprecated.
        #[arg(long)]
        yes: bool,
    },
}

/// Human-facing form of a diagnostic, as `seccompctl validate` prints it.
#[derive(Debug, Serialize)]
struct Diag {
    severity: &'static str,
    code: String,
    path: String,
    message: String,
}

impl From<&pb::Diagnostic> for Diag {
    fn from(d: &pb::Diagnostic) -> Self {
        Diag {
            severity: if d.severity == pb::Severity::Warning as i32 {
                "warning"
            } else {
                "error"
            },
            code: d.code.clone(),
            path: d.path.clone(),
            message: d.message.clone(),
        }
    }
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

fn time(t: Option<prost_types::Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct Published {
    name: String,
    version: u64,
    digest: String,
    size: u64,
    created: bool,
    warnings: Vec<Diag>,
}

#[derive(Debug, Serialize)]
struct Rejected {
    name: String,
    error: &'static str,
    message: String,
    diagnostics: Vec<Diag>,
}

#[derive(Debug, Serialize)]
struct Version {
    name: String,
    version: u64,
    digest: String,
    size: u64,
    created_at: String,
    author: String,
    description: String,
    deprecated: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    deprecation_reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    deprecated_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    deprecated_by: String,
    warnings: Vec<Diag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

impl From<pb::ProfileVersion> for Version {
    fn from(v: pb::ProfileVersion) -> Self {
        Version {
            content: (!v.content.is_empty())
                .then(|| String::from_utf8_lossy(&v.content).into_owned()),
            name: v.name,
            version: v.version,
            digest: v.digest,
            size: v.size,
            created_at: time(v.created_at),
            author: v.author,
            description: v.description,
            deprecated: v.deprecated,
            deprecation_reason: v.deprecation_reason,
            deprecated_at: time(v.deprecated_at),
            deprecated_by: v.deprecated_by,
            warnings: v.warnings.iter().map(Diag::from).collect(),
        }
    }
}

impl Version {
    fn status(&self) -> String {
        match (self.deprecated, self.deprecation_reason.as_str()) {
            (false, _) => "live".to_owned(),
            (true, "") => "deprecated".to_owned(),
            (true, reason) => format!("deprecated: {reason}"),
        }
    }

    fn print_details(&self) {
        outln!("name:        {}", self.name);
        outln!("version:     {}", self.version);
        outln!("status:      {}", self.status());
        outln!("digest:      {}", self.digest);
        outln!("size:        {} bytes", self.size);
        outln!("created:     {} by {}", self.created_at, self.author);
        if self.deprecated {
            outln!(
                "deprecated:  {} by {}",
                self.deprecated_at,
                self.deprecated_by
            );
        }
        if !self.description.is_empty() {
            outln!("description: {}", self.description);
        }
        outln!("warnings:    {}", self.warnings.len());
        for w in &self.warnings {
            outln!("  {w}");
        }
    }
}

#[derive(Debug, Serialize)]
struct Profiles {
    profiles: Vec<Summary>,
}

#[derive(Debug, Serialize)]
struct Summary {
    name: String,
    latest_version: u64,
    latest_digest: String,
    version_count: u64,
    updated_at: String,
    description: String,
}

#[derive(Debug, Serialize)]
struct History {
    name: String,
    versions: Vec<Version>,
}

#[derive(Debug, Serialize)]
struct Change {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    arch: String,
    before: String,
    after: String,
}

#[derive(Debug, Serialize)]
struct Diff {
    name: String,
    from_version: u64,
    to_version: u64,
    from_digest: String,
    to_digest: String,
    identical: bool,
    default_action_before: String,
    default_action_after: String,
    architectures_added: Vec<String>,
    architectures_removed: Vec<String>,
    flags_added: Vec<String>,
    flags_removed: Vec<String>,
    syscalls_added: Vec<Change>,
    syscalls_removed: Vec<Change>,
    syscalls_changed: Vec<Change>,
    other_changes: Vec<String>,
}

fn changes(list: Vec<pb::SyscallChange>) -> Vec<Change> {
    list.into_iter()
        .map(|c| Change {
            name: c.name,
            arch: c.arch,
            before: c.action_before,
            after: c.action_after,
        })
        .collect()
}

/// `NAME`, `NAME@latest`, `NAME@7`, `NAME@sha256:...` to a request selector.
pub(crate) fn parse_reference(
    reference: &str,
) -> Result<(String, Option<pb::get_profile_request::Selector>)> {
    use pb::get_profile_request::Selector;
    let Some((name, selector)) = reference.split_once('@') else {
        return Ok((reference.to_owned(), None));
    };
    let selector = if selector == "latest" {
        Selector::Latest(true)
    } else if selector.starts_with("sha256:") {
        Selector::Digest(selector.to_owned())
    } else {
        Selector::Version(selector.parse().map_err(|_| {
            anyhow!("invalid version {selector:?} in {reference:?}: expected a number, `latest` or `sha256:<hex>`")
        })?)
    };
    Ok((name.to_owned(), Some(selector)))
}

fn parse_versioned(reference: &str) -> Result<(String, u64)> {
    match parse_reference(reference)? {
        (name, Some(pb::get_profile_request::Selector::Version(v))) => Ok((name, v)),
        _ => bail!("expected NAME@VERSION with a version number, got {reference:?}"),
    }
}

/// Run a `profile` subcommand against the registry at `url`.
pub fn run(command: Command, url: &str, dist: &str, format: Format) -> Result<Outcome> {
    // Read local files before connecting, so a typo in a path is reported as such.
    let content = match &command {
        Command::Publish { file, .. } => {
            Some(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?)
        }
        Command::Delete { reference, yes } => {
            parse_versioned(reference)?;
            if !yes {
                bail!(
                    "`profile delete {reference}` deletes the version's bytes for good; add --yes to confirm (or use `profile deprecate` to retire it reversibly)"
                );
            }
            None
        }
        _ => None,
    };
    let runtime = client::runtime()?;
    runtime.block_on(async {
        let mut client = client::registry(url).await?;
        match command {
            Command::Publish {
                name,
                description,
                expect_version,
                ..
            } => {
                let request = pb::PublishRequest {
                    name,
                    content: content.unwrap_or_default(),
                    description,
                    expected_latest_version: expect_version,
                };
                publish(&mut client, request, url, format).await
            }
            Command::Get { reference, raw } => get(&mut client, &reference, raw, url, format).await,
            Command::List => list(&mut client, url, format).await,
            Command::History { name } => history(&mut client, name, url, format).await,
            Command::Diff { name, from, to } => {
                diff(&mut client, name, from, to, url, format).await
            }
            Command::Deprecate { reference, reason } => {
                let (name, version) = parse_versioned(&reference)?;
                deprecate(&mut client, name, version, reason, url, format).await
            }
            Command::Delete { reference, .. } => {
                let (name, version) = parse_versioned(&reference)?;
                delete(&mut client, name, version, url, format).await
            }
            Command::Policy { name, compat } => {
                policy(&mut client, name, compat, url, format).await
            }
            Command::Suggest(args) => {
                crate::suggest::run(&mut client, &args, url, dist, format).await
            }
        }
    })
}

async fn publish(
    client: &mut Client,
    request: pb::PublishRequest,
    url: &str,
    format: Format,
) -> Result<Outcome> {
    let name = request.name.clone();
    let reply = match client.publish(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let Some(failure) = client::validation_failure(&status)
                .filter(|_| status.code() == Code::InvalidArgument)
            else {
                return client::refused(status, Service::Registry, url);
            };
            let rejected = Rejected {
                name,
                error: client::code_name(status.code()),
                message: status.message().to_owned(),
                diagnostics: failure.diagnostics.iter().map(Diag::from).collect(),
            };
            if !print_structured(format, &rejected)? {
                let errors = rejected
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == "error")
                    .count();
                outln!(
                    "{}: rejected ({errors} error{}, {} warning{})",
                    rejected.name,
                    if errors == 1 { "" } else { "s" },
                    rejected.diagnostics.len() - errors,
                    if rejected.diagnostics.len() - errors == 1 {
                        ""
                    } else {
                        "s"
                    },
                );
                for d in &rejected.diagnostics {
                    outln!("  {d}");
                }
            }
            return Ok(Outcome::Negative);
        }
    };
    let published = Published {
        name,
        version: reply.version,
        digest: reply.digest,
        size: reply.size,
        created: reply.created,
        warnings: reply.warnings.iter().map(Diag::from).collect(),
    };
    if !print_structured(format, &published)? {
        outln!("name:     {}", published.name);
        outln!("version:  {}", published.version);
        outln!("digest:   {}", published.digest);
        outln!("size:     {} bytes", published.size);
        outln!(
            "created:  {}{}",
            published.created,
            if published.created {
                ""
            } else {
                " (identical to this live version; nothing stored)"
            }
        );
        outln!("warnings: {}", published.warnings.len());
        for w in &published.warnings {
            outln!("  {w}");
        }
    }
    Ok(Outcome::Ok)
}

async fn get(
    client: &mut Client,
    reference: &str,
    raw: bool,
    url: &str,
    format: Format,
) -> Result<Outcome> {
    let (name, selector) = parse_reference(reference)?;
    let request = pb::GetProfileRequest {
        name,
        selector,
        include_content: Some(raw || format != Format::Table),
    };
    let profile = match client.get_profile(request).await {
        Ok(r) => r.into_inner().profile.unwrap_or_default(),
        Err(status) => return client::refused(status, Service::Registry, url),
    };
    if raw {
        write_stdout_bytes(&profile.content);
        return Ok(Outcome::Ok);
    }
    let version = Version::from(profile);
    if !print_structured(format, &version)? {
        version.print_details();
    }
    Ok(Outcome::Ok)
}

async fn list(client: &mut Client, url: &str, format: Format) -> Result<Outcome> {
    let mut profiles = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListProfilesRequest {
            page_size: 1000,
            page_token,
        };
        let page = match client.list_profiles(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return client::refused(status, Service::Registry, url),
        };
        profiles.extend(page.profiles.into_iter().map(|p| Summary {
            name: p.name,
            latest_version: p.latest_version,
            latest_digest: p.latest_digest,
            version_count: p.version_count,
            updated_at: time(p.updated_at),
            description: p.description,
        }));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let out = Profiles { profiles };
    if !print_structured(format, &out)? {
        let mut t = table([
            "NAME",
            "LATEST",
            "VERSIONS",
            "UPDATED",
            "DIGEST",
            "DESCRIPTION",
        ]);
        for p in &out.profiles {
            t.add_row(vec![
                p.name.clone(),
                match p.latest_version {
                    0 => "-".to_owned(),
                    v => v.to_string(),
                },
                p.version_count.to_string(),
                p.updated_at.clone(),
                p.latest_digest.clone(),
                p.description.clone(),
            ]);
        }
        print_table(&t);
    }
    Ok(Outcome::Ok)
}

async fn history(client: &mut Client, name: String, url: &str, format: Format) -> Result<Outcome> {
    let mut versions = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::HistoryRequest {
            name: name.clone(),
            page_size: 1000,
            page_token,
        };
        let page = match client.history(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return client::refused(status, Service::Registry, url),
        };
        versions.extend(page.versions.into_iter().map(Version::from));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let out = History { name, versions };
    if !print_structured(format, &out)? {
        let mut t = table([
            "VERSION",
            "CREATED",
            "AUTHOR",
            "STATUS",
            "WARNINGS",
            "DIGEST",
            "DESCRIPTION",
        ]);
        for v in &out.versions {
            t.add_row(vec![
                v.version.to_string(),
                v.created_at.clone(),
                v.author.clone(),
                v.status(),
                v.warnings.len().to_string(),
                v.digest.clone(),
                v.description.clone(),
            ]);
        }
        print_table(&t);
    }
    Ok(Outcome::Ok)
}

async fn diff(
    client: &mut Client,
    name: String,
    from: u64,
    to: u64,
    url: &str,
    format: Format,
) -> Result<Outcome> {
    let request = pb::DiffRequest {
        name,
        from_version: from,
        to_version: to,
    };
    let reply = match client.diff(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return client::refused(status, Service::Registry, url),
    };
    let d = reply.diff.unwrap_or_default();
    let out = Diff {
        name: reply.name,
        from_version: reply.from_version,
        to_version: reply.to_version,
        from_digest: reply.from_digest,
        to_digest: reply.to_digest,
        identical: d.identical,
        default_action_before: d.default_action_before,
        default_action_after: d.default_action_after,
        architectures_added: d.architectures_added,
        architectures_removed: d.architectures_removed,
        flags_added: d.flags_added,
        flags_removed: d.flags_removed,
        syscalls_added: changes(d.syscalls_added),
        syscalls_removed: changes(d.syscalls_removed),
        syscalls_changed: changes(d.syscalls_changed),
        other_changes: d.other_changes,
    };
    if print_structured(format, &out)? {
        return Ok(Outcome::Ok);
    }
    outln!(
        "{} {} -> {} ({} -> {})",
        out.name,
        out.from_version,
        out.to_version,
        out.from_digest,
        out.to_digest
    );
    if out.identical {
        outln!("no semantic difference");
        return Ok(Outcome::Ok);
    }
    if out.default_action_before != out.default_action_after {
        outln!(
            "default action: {} -> {}",
            out.default_action_before,
            out.default_action_after
        );
    }
    for (what, added, removed) in [
        (
            "architectures",
            &out.architectures_added,
            &out.architectures_removed,
        ),
        ("flags", &out.flags_added, &out.flags_removed),
    ] {
        if !added.is_empty() || !removed.is_empty() {
            let mut parts: Vec<String> = added.iter().map(|a| format!("+{a}")).collect();
            parts.extend(removed.iter().map(|r| format!("-{r}")));
            outln!("{what}: {}", parts.join(" "));
        }
    }
    let mut rows: Vec<(&str, &Change)> = Vec::new();
    rows.extend(out.syscalls_added.iter().map(|c| ("+", c)));
    rows.extend(out.syscalls_removed.iter().map(|c| ("-", c)));
    rows.extend(out.syscalls_changed.iter().map(|c| ("~", c)));
    rows.sort_by(|a, b| a.1.name.cmp(&b.1.name).then(a.1.arch.cmp(&b.1.arch)));
    if !rows.is_empty() {
        let mut t = table(["", "SYSCALL", "BEFORE", "AFTER"]);
        for (mark, c) in rows {
            let name = if c.arch.is_empty() {
                c.name.clone()
            } else {
                format!("{} ({})", c.name, c.arch)
            };
            let or_default = |s: &str| {
                if s.is_empty() {
                    "(default action)".to_owned()
                } else {
                    s.to_owned()
                }
            };
            t.add_row(vec![
                mark.to_owned(),
                name,
                or_default(&c.before),
                or_default(&c.after),
            ]);
        }
        print_table(&t);
    }
    for other in &out.other_changes {
        outln!("{other}");
    }
    Ok(Outcome::Ok)
}

#[derive(Debug, Serialize)]
struct Deleted {
    name: String,
    version: u64,
    deleted: bool,
}

/// What `profile policy` prints with `-o json|yaml`.
#[derive(Debug, Serialize)]
struct PolicySet {
    name: String,
    compat: String,
    previous: String,
}

async fn policy(
    client: &mut Client,
    name: String,
    compat: String,
    url: &str,
    format: Format,
) -> Result<Outcome> {
    let request = pb::SetPolicyRequest {
        name: name.clone(),
        compat: compat.clone(),
    };
    let previous = match client.set_policy(request).await {
        Ok(r) => r.into_inner().previous,
        Err(status) => return client::refused(status, Service::Registry, url),
    };
    let set = PolicySet {
        name,
        compat,
        previous,
    };
    if !print_structured(format, &set)? {
        outln!(
            "{}: compatibility {} (was {})",
            set.name,
            set.compat,
            set.previous
        );
    }
    Ok(Outcome::Ok)
}

async fn delete(
    client: &mut Client,
    name: String,
    version: u64,
    url: &str,
    format: Format,
) -> Result<Outcome> {
    let request = pb::DeleteVersionRequest {
        name: name.clone(),
        version,
    };
    if let Err(status) = client.delete_version(request).await {
        return client::refused(status, Service::Registry, url);
    }
    let deleted = Deleted {
        name,
        version,
        deleted: true,
    };
    if !print_structured(format, &deleted)? {
        outln!(
            "deleted {}@{} (its number will not be reused)",
            deleted.name,
            deleted.version
        );
    }
    Ok(Outcome::Ok)
}

async fn deprecate(
    client: &mut Client,
    name: String,
    version: u64,
    reason: String,
    url: &str,
    format: Format,
) -> Result<Outcome> {
    let request = pb::DeprecateRequest {
        name,
        version,
        reason,
    };
    let profile = match client.deprecate(request).await {
        Ok(r) => r.into_inner().profile.unwrap_or_default(),
        Err(status) => return client::refused(status, Service::Registry, url),
    };
    let version = Version::from(profile);
    if !print_structured(format, &version)? {
        outln!("deprecated {}@{}", version.name, version.version);
        version.print_details();
    }
    Ok(Outcome::Ok)
}
