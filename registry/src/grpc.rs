//! The gRPC face of the registry: implements `seccomp.registry.v1.Registry` over
//! [`service::Registry`](crate::service::Registry), converts between proto and domain types,
//! and is the only place that builds a `tonic::Status`.
//!
//! Identity: `seccomp_server::auth`'s layer, in front of this service, verifies every
//! caller and allows the call by its one table of rules; handlers take the verified
//! principal from the request ([`auth::principal`]) as the actor of versions and audit
//! entries. With authentication off (loopback development) that is `anonymous`, or
//! `unverified:<name>` for a client that names itself in `x-seccomp-actor`.

use prost::Message as _;
use seccomp_proto::registry::v1 as pb;
use seccomp_proto::registry::v1::registry_server::{self, RegistryServer};
use tonic::{Code, Request, Response, Status};
use tracing::{Span, error, instrument};

use seccomp_server::auth::{self, Refusals};

use crate::error::{Category, Error};
use crate::service::{Actor, Publish, Registry, Selector};
use crate::store::{AuditEntry, Finding, UnixNanos, VersionMeta};

/// Room for the other fields of a publish request on top of the profile size limit.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match e.category() {
            Category::InvalidArgument => Code::InvalidArgument,
            Category::NotFound => Code::NotFound,
            Category::FailedPrecondition => Code::FailedPrecondition,
            Category::ResourceExhausted => Code::ResourceExhausted,
            Category::Unavailable => Code::Unavailable,
            Category::Internal => {
                error!(error = %e, "internal error");
                Code::Internal
            }
        };
        let message = e.to_string();
        if let Error::InvalidProfile { diagnostics, .. } = e {
            let failure = pb::ValidationFailure {
                diagnostics: diagnostics.iter().map(diagnostic).collect(),
            };
            match prost_types::Any::from_msg(&failure) {
                Ok(any) => {
                    let details = tonic_types::pb::Status {
                        code: code as i32,
                        message: message.clone(),
                        details: vec![any],
                    };
                    return Status::with_details(code, message, details.encode_to_vec().into());
                }
                Err(e) => error!(error = %e, "cannot encode validation failure details"),
            }
        }
        Status::new(code, message)
    }
}

fn diagnostic(f: &Finding) -> pb::Diagnostic {
    pb::Diagnostic {
        severity: match f.severity {
            seccomp_profile::Severity::Error => pb::Severity::Error,
            seccomp_profile::Severity::Warning => pb::Severity::Warning,
        } as i32,
        code: f.code.clone(),
        path: f.path.clone(),
        message: f.message.clone(),
    }
}

fn timestamp(t: UnixNanos) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (t.0 / 1_000_000_000) as i64,
        nanos: (t.0 % 1_000_000_000) as i32,
    }
}

/// A `since` bound: times before 1970 mean "from the beginning", times past the year 2554
/// (where u64 nanoseconds end) mean "nothing yet".
fn unix_nanos(t: &prost_types::Timestamp) -> Result<UnixNanos, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument(format!(
            "invalid timestamp: nanos {} is outside 0..1000000000",
            t.nanos
        )));
    }
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    Ok(UnixNanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX)))
}

fn version(meta: VersionMeta, content: Option<Vec<u8>>) -> pb::ProfileVersion {
    let (deprecated, reason, at, by) = match meta.deprecation {
        Some(d) => (true, d.reason, Some(timestamp(d.at)), d.by),
        None => (false, String::new(), None, String::new()),
    };
    pb::ProfileVersion {
        name: meta.name,
        version: meta.version,
        content: content.unwrap_or_default(),
        digest: meta.digest,
        size: meta.size,
        created_at: Some(timestamp(meta.created_at)),
        author: meta.author,
        description: meta.description,
        warnings: meta.warnings.iter().map(diagnostic).collect(),
        deprecated,
        deprecation_reason: reason,
        deprecated_at: at,
        deprecated_by: by,
    }
}

fn audit_entry(e: AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        time: Some(timestamp(e.time)),
        actor: e.actor,
        method: e.method,
        target: e.target,
        result: e.result,
        message: e.message,
    }
}

fn diff_change(c: &seccomp_profile::SyscallChange) -> pb::SyscallChange {
    pb::SyscallChange {
        name: c.name.clone(),
        // The library's diff is per syscall across the profile's architectures.
        arch: String::new(),
        action_before: c.before.clone().unwrap_or_default(),
        action_after: c.after.clone().unwrap_or_default(),
    }
}

/// The profile name for span fields: bounded, so garbage input cannot bloat logs.
fn span_name(name: &str) -> &str {
    let mut end = name.len().min(seccomp_profile::name::MAX_SUBDOMAIN_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn actor<T>(request: &Request<T>) -> Actor {
    Actor(auth::principal(request).actor())
}

/// The tonic service: the registry with a message size limit just above the profile size
/// limit.
pub type Service = RegistryServer<RegistryGrpc>;

/// Build the tonic service for `registry`.
pub fn service(registry: Registry) -> Service {
    let limit = registry
        .limits()
        .max_profile_bytes
        .saturating_add(MESSAGE_OVERHEAD);
    RegistryServer::new(RegistryGrpc { registry }).max_decoding_message_size(limit)
}

/// Implements the generated `Registry` trait.
pub struct RegistryGrpc {
    registry: Registry,
}

#[tonic::async_trait]
impl registry_server::Registry for RegistryGrpc {
    #[instrument(skip_all, fields(profile = span_name(&request.get_ref().name), version))]
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let published = self
            .registry
            .publish(
                &actor,
                Publish {
                    name: r.name,
                    content: r.content,
                    description: r.description,
                    expected_latest: r.expected_latest_version,
                },
            )
            .await?;
        Span::current().record("version", published.meta.version);
        let meta = published.meta;
        Ok(Response::new(pb::PublishResponse {
            version: meta.version,
            digest: meta.digest,
            size: meta.size,
            created: published.created,
            warnings: meta.warnings.iter().map(diagnostic).collect(),
        }))
    }

    #[instrument(skip_all, fields(profile = span_name(&request.get_ref().name)))]
    async fn validate_profile(
        &self,
        request: Request<pb::ValidateProfileRequest>,
    ) -> Result<Response<pb::ValidateProfileResponse>, Status> {
        let r = request.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let v = self.registry.validate(name, &r.content);
        Ok(Response::new(pb::ValidateProfileResponse {
            valid: v.valid,
            diagnostics: v.diagnostics.iter().map(diagnostic).collect(),
            digest: v.digest,
            size: v.size,
        }))
    }

    #[instrument(skip_all, fields(profile = span_name(&request.get_ref().name), version))]
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        use pb::get_profile_request::Selector as S;
        let r = request.into_inner();
        let selector = match r.selector {
            None | Some(S::Latest(true)) => Selector::Latest,
            Some(S::Latest(false)) => {
                return Err(Status::invalid_argument(
                    "selector latest must be true when chosen",
                ));
            }
            Some(S::Version(v)) => Selector::Version(v),
            Some(S::Digest(d)) => Selector::Digest(d),
        };
        let fetched = self
            .registry
            .get(&r.name, &selector, r.include_content.unwrap_or(true))?;
        Span::current().record("version", fetched.meta.version);
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(version(fetched.meta, fetched.content)),
        }))
    }

    #[instrument(skip_all)]
    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let r = request.into_inner();
        let page = self.registry.list(r.page_size, &r.page_token)?;
        let profiles = page
            .items
            .into_iter()
            .map(|s| {
                let (digest, description) = match s.latest {
                    Some(m) => (m.digest, m.description),
                    None => (String::new(), String::new()),
                };
                pb::ProfileSummary {
                    name: s.name,
                    latest_version: s.record.latest_live,
                    latest_digest: digest,
                    version_count: s.record.stored,
                    updated_at: s.updated_at.map(timestamp),
                    description,
                }
            })
            .collect();
        Ok(Response::new(pb::ListProfilesResponse {
            profiles,
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    #[instrument(skip_all, fields(profile = span_name(&request.get_ref().name)))]
    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let r = request.into_inner();
        let page = self.registry.history(&r.name, r.page_size, &r.page_token)?;
        Ok(Response::new(pb::HistoryResponse {
            versions: page.items.into_iter().map(|m| version(m, None)).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    #[instrument(skip_all, fields(
        profile = span_name(&request.get_ref().name),
        from = request.get_ref().from_version,
        to = request.get_ref().to_version,
    ))]
    async fn diff(
        &self,
        request: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let r = request.into_inner();
        let d = self.registry.diff(&r.name, r.from_version, r.to_version)?;
        let identical = d.identical();
        let diff = pb::ProfileDiff {
            identical,
            default_action_before: d.default_action_before,
            default_action_after: d.default_action_after,
            architectures_added: d.diff.architectures_added.clone(),
            architectures_removed: d.diff.architectures_removed.clone(),
            flags_added: d.diff.flags_added.clone(),
            flags_removed: d.diff.flags_removed.clone(),
            syscalls_added: d.diff.added().map(diff_change).collect(),
            syscalls_removed: d.diff.removed().map(diff_change).collect(),
            syscalls_changed: d.diff.changed().map(diff_change).collect(),
            other_changes: d.other_changes,
        };
        Ok(Response::new(pb::DiffResponse {
            name: d.from.name,
            from_version: d.from.version,
            to_version: d.to.version,
            from_digest: d.from.digest,
            to_digest: d.to.digest,
            diff: Some(diff),
        }))
    }

    #[instrument(skip_all, fields(
        profile = span_name(&request.get_ref().name),
        version = request.get_ref().version,
    ))]
    async fn deprecate(
        &self,
        request: Request<pb::DeprecateRequest>,
    ) -> Result<Response<pb::DeprecateResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let meta = self
            .registry
            .deprecate(&actor, &r.name, r.version, &r.reason)
            .await?;
        Ok(Response::new(pb::DeprecateResponse {
            profile: Some(version(meta, None)),
        }))
    }

    #[instrument(skip_all, fields(
        profile = span_name(&request.get_ref().name),
        version = request.get_ref().version,
    ))]
    async fn delete_version(
        &self,
        request: Request<pb::DeleteVersionRequest>,
    ) -> Result<Response<pb::DeleteVersionResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        self.registry.delete(&actor, &r.name, r.version).await?;
        Ok(Response::new(pb::DeleteVersionResponse {}))
    }

    #[instrument(skip_all, fields(profile = span_name(&request.get_ref().name)))]
    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let previous = self.registry.set_policy(&actor, &r.name, &r.compat).await?;
        Ok(Response::new(pb::SetPolicyResponse { previous }))
    }

    #[instrument(skip_all)]
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = request.into_inner();
        let since = r.since.as_ref().map(unix_nanos).transpose()?;
        let page = self.registry.audit(since, r.page_size, &r.page_token)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: page.items.into_iter().map(audit_entry).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }
}

/// Records the calls the auth layer refused in the registry's audit log.
pub struct AuditRefusals(pub Registry);

impl Refusals for AuditRefusals {
    fn refused(&self, path: &str, actor: &str, code: &str, reason: &str) {
        let method = path
            .strip_prefix(concat!("/", "seccomp.registry.v1.Registry", "/"))
            .unwrap_or(path);
        self.0.record_refusal(actor, method, code, reason);
    }
}
