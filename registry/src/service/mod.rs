//! The registry's behaviour (DESIGN section 3), free of any transport: publish with
//! idempotency and compare-and-set, reads, diff, deprecate, delete, compatibility rules
//! (`policy`), and the audit log.
//!
//! Concurrency: reads go straight to sled. Mutations take one writer lock around "read the
//! state, decide, commit", so two publishers can never both see version N as latest and both
//! win. A commit ([`ProfileStore::insert_version`] and its siblings) returns once the mutation
//! is on disk and applied, so the lock also orders flushes: concurrent publishes each wait for
//! one flush of their own, one after the other, instead of sharing flushes as they did with
//! sled transactions. Each flush is cheaper and the validation of one publish overlaps the
//! flush of another, so four concurrent publishers still went from about 1,900-2,500 to
//! 2,600-3,100 publishes a second (BENCHMARKS.md). The locked part runs in a tracked task, so a
//! client that disconnects cannot cancel a publish halfway, and shutdown waits for it
//! ([`Registry::drain`]).

mod checks;
mod policy;

use std::sync::Arc;

use seccomp_profile::name;
use seccomp_profile::{Options, Profile, ProfileDiff};
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info};

use crate::error::{Error, Result};
use crate::store::{
    AuditEntry, Deprecation, Finding, NewVersion, Page, ProfileRecord, ProfileStore,
    ProfileSummary, UnixNanos, VersionMeta,
};
pub use checks::MAX_TEXT_BYTES;
use checks::{check_digest, check_name, check_new_name, check_text, check_version, target};

/// Who makes a call, as the transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The actor when authentication is disabled.
    pub fn anonymous() -> Self {
        Actor("anonymous".to_owned())
    }
}

/// A boxed future, as a dyn-compatible trait method returns one.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether something outside the registry still uses a version, which forbids deleting it.
///
/// The distributor is the only thing that can know (active rollouts, nodes that hold the
/// file): [`crate::usage::DistributorUsage`] asks it. A registry started without one runs with
/// [`NoUsageTracking`].
pub trait UsageCheck: Send + Sync + 'static {
    /// A description of the user (`rollout 7 of NCI x`) when `name@version` (whose bytes
    /// have `digest`, `sha256:<hex>`) is in use, `None` when nothing uses it, and an error
    /// (why it cannot be told) that refuses the delete.
    fn user_of<'a>(
        &'a self,
        name: &'a str,
        version: u64,
        digest: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<String>, String>>;
}

/// The usage check of a registry with no distributor: nothing is ever reported in use.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoUsageTracking;

impl UsageCheck for NoUsageTracking {
    fn user_of<'a>(
        &'a self,
        _name: &'a str,
        _version: u64,
        _digest: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<String>, String>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// Limits applied to requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted profile, in bytes.
    pub max_profile_bytes: usize,
}

/// A publish request.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Profile name.
    pub name: String,
    /// The exact bytes.
    pub content: Vec<u8>,
    /// Stored with a new version.
    pub description: String,
    /// Compare-and-set: the latest live version the caller expects (0: none).
    pub expected_latest: Option<u64>,
}

/// The outcome of a publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The version holding the content.
    pub meta: VersionMeta,
    /// Whether it was created by this call.
    pub created: bool,
}

/// The outcome of a dry-run validation.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Publish would accept it.
    pub valid: bool,
    /// Every diagnostic.
    pub diagnostics: Vec<Finding>,
    /// The digest the content would have.
    pub digest: String,
    /// Its size.
    pub size: u64,
}

/// How a version is chosen.
#[derive(Debug, Clone)]
pub enum Selector {
    /// By number.
    Version(u64),
    /// The highest live version.
    Latest,
    /// By digest (the highest version with it).
    Digest(String),
}

/// A version, with its bytes when asked for.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Metadata.
    pub meta: VersionMeta,
    /// The exact bytes, when requested.
    pub content: Option<Vec<u8>>,
}

/// The semantic difference between two versions.
#[derive(Debug, Clone)]
pub struct VersionDiff {
    /// The older side.
    pub from: VersionMeta,
    /// The newer side.
    pub to: VersionMeta,
    /// Default action of `from`, with its errno.
    pub default_action_before: String,
    /// Default action of `to`.
    pub default_action_after: String,
    /// What the profile library compares.
    pub diff: ProfileDiff,
    /// Differences the library's diff does not cover (listenerPath).
    pub other_changes: Vec<String>,
}

impl VersionDiff {
    /// True when the two versions behave the same.
    pub fn identical(&self) -> bool {
        self.diff.is_empty() && self.other_changes.is_empty()
    }
}

struct Inner {
    store: ProfileStore,
    limits: Limits,
    usage: Arc<dyn UsageCheck>,
    writer: Mutex<()>,
    tasks: TaskTracker,
    /// Counted when served (`--metrics-listen`).
    metrics: std::sync::OnceLock<Arc<crate::metrics::RegistryMetrics>>,
}

/// The registry service. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: ProfileStore, limits: Limits, usage: Arc<dyn UsageCheck>) -> Self {
        Registry {
            inner: Arc::new(Inner {
                store,
                limits,
                usage,
                writer: Mutex::new(()),
                tasks: TaskTracker::new(),
                metrics: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Count publishes and validations in `metrics` from now on.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::RegistryMetrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// How many profiles have a stored version, and how many versions are stored.
    pub fn counts(&self) -> (usize, u64) {
        let (mut profiles, mut versions) = (0, 0);
        let mut token = None;
        loop {
            let Ok(page) = self.inner.store.list(1000, token.as_deref()) else {
                break;
            };
            for p in &page.items {
                if p.record.stored > 0 {
                    profiles += 1;
                    versions += p.record.stored;
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        (profiles, versions)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Wait for mutations in progress (including ones whose caller went away) and flush.
    pub async fn drain(&self) -> Result<()> {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.store.flush().await
    }

    /// Record a call the auth layer refused. Written without waiting for the disk (sled
    /// flushes it within half a second, or the next commit does): refusals cost anyone who
    /// can reach the port nothing, so they must not cost a flush each.
    pub fn record_refusal(&self, actor: &str, method: &str, code: &str, reason: &str) {
        let entry = AuditEntry {
            time: UnixNanos::now(),
            actor: actor.to_owned(),
            method: method.to_owned(),
            target: String::new(),
            result: code.to_owned(),
            message: reason.to_owned(),
        };
        if let Err(e) = self.inner.store.append_audit(&entry) {
            error!(error = %e, "cannot record audit entry");
        }
    }

    /// Record a failed mutating call; a failure to record is logged, not returned, so the
    /// caller sees the original error.
    async fn audit_failure(&self, actor: &Actor, method: &str, target: String, error: &Error) {
        let entry = AuditEntry {
            time: UnixNanos::now(),
            actor: actor.0.clone(),
            method: method.to_owned(),
            target,
            result: error.category().as_str().to_owned(),
            message: error.to_string(),
        };
        let store = &self.inner.store;
        if let Err(e) = store.append_audit(&entry) {
            error!(error = %e, "cannot record audit entry");
            return;
        }
        if let Err(e) = store.flush().await {
            error!(error = %e, "cannot flush audit entry");
        }
    }

    fn check_content(&self, name: &str, content: &[u8]) -> Result<seccomp_profile::Report> {
        let limit = self.inner.limits.max_profile_bytes;
        if content.len() > limit {
            return Err(Error::TooLarge {
                name: name.to_owned(),
                size: content.len(),
                limit,
            });
        }
        let started = std::time::Instant::now();
        let report = seccomp_profile::validate(content, &Options { max_bytes: limit });
        if let Some(m) = self.inner.metrics.get() {
            m.validation.observe(started.elapsed().as_secs_f64());
        }
        if !report.is_valid() {
            let errors: Vec<_> = report.errors().collect();
            let summary = match errors.first() {
                Some(first) => format!(
                    "{} error{}; first: {first}",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                ),
                None => "rejected".to_owned(),
            };
            return Err(Error::InvalidProfile {
                name: name.to_owned(),
                summary,
                diagnostics: report.diagnostics.iter().map(Finding::from).collect(),
            });
        }
        Ok(report)
    }

    /// Validate and store a new version (see the module docs for the concurrency story).
    pub async fn publish(&self, actor: &Actor, request: Publish) -> Result<Published> {
        let name = request.name.clone();
        let result = self.publish_inner(actor, request).await;
        if let Some(m) = self.inner.metrics.get() {
            match &result {
                Ok(p) if p.created => m.published("created"),
                Ok(_) => m.published("unchanged"),
                Err(e) => m.published(e.category().as_str()),
            }
        }
        match result {
            Ok(published) => Ok(published),
            Err(e) => {
                self.audit_failure(actor, "Publish", target(&name, None), &e)
                    .await;
                Err(e)
            }
        }
    }

    async fn publish_inner(&self, actor: &Actor, request: Publish) -> Result<Published> {
        check_new_name(&request.name)?;
        check_text("description", &request.description)?;
        let report = self.check_content(&request.name, &request.content)?;
        let warnings: Vec<Finding> = report.warnings().map(Finding::from).collect();
        let this = self.clone();
        let actor = actor.clone();
        let task = self.inner.tasks.spawn(async move {
            let (published, audit_only) = {
                let _guard = this.inner.writer.lock().await;
                this.publish_locked(&actor, request, report.digest, warnings)
                    .await?
            };
            // A new version is durable once stored; identical bytes write nothing but the
            // audit entry, flushed here.
            if let Some(entry) = audit_only {
                if let Err(e) = this.inner.store.append_audit(&entry) {
                    error!(error = %e, "cannot record audit entry");
                }
                this.inner.store.flush().await?;
            }
            Ok(published)
        });
        task.await.map_err(|e| Error::Task(e.to_string()))?
    }

    /// The decision and the write, under the writer lock. Returns the audit entry still to
    /// write when nothing else was written.
    async fn publish_locked(
        &self,
        actor: &Actor,
        request: Publish,
        digest: String,
        warnings: Vec<Finding>,
    ) -> Result<(Published, Option<AuditEntry>)> {
        let store = &self.inner.store;
        let name = &request.name;
        let mut record = store.profile(name)?.unwrap_or(ProfileRecord {
            next_version: 1,
            ..ProfileRecord::default()
        });

        // Identical bytes to a live version: return it and write nothing. Not subject to
        // compare-and-set, so a retried publish stays idempotent.
        for v in store.versions_with_digest(name, &digest)? {
            if let Some(meta) = store.version(name, v)?
                && meta.is_live()
            {
                info!(profile = %name, version = v, "identical to a live version, nothing stored");
                let entry = AuditEntry {
                    time: UnixNanos::now(),
                    actor: actor.0.clone(),
                    method: "Publish".into(),
                    target: target(name, Some(v)),
                    result: "OK".into(),
                    message: format!("unchanged: identical to version {v}"),
                };
                return Ok((
                    Published {
                        meta,
                        created: false,
                    },
                    Some(entry),
                ));
            }
        }

        if let Some(expected) = request.expected_latest
            && expected != record.latest_live
        {
            return Err(Error::StaleVersion {
                name: name.clone(),
                expected,
                actual: record.latest_live,
            });
        }

        let version = record.next_version;
        self.check_compat(name, &record, version, &request.content)?;
        let now = UnixNanos::now();
        let meta = VersionMeta {
            name: name.clone(),
            version,
            digest,
            size: request.content.len() as u64,
            created_at: now,
            author: actor.0.clone(),
            description: request.description,
            warnings,
            deprecation: None,
        };
        record.next_version = version + 1;
        record.latest_live = version;
        record.stored += 1;
        let entry = AuditEntry {
            time: now,
            actor: actor.0.clone(),
            method: "Publish".into(),
            target: target(name, Some(version)),
            result: "OK".into(),
            message: format!("created version {version}"),
        };
        store
            .insert_version(NewVersion {
                record: &record,
                meta: &meta,
                content: &request.content,
                audit: &entry,
            })
            .await?;
        info!(profile = %name, version, digest = %meta.digest, "stored new version");
        Ok((
            Published {
                meta,
                created: true,
            },
            None,
        ))
    }

    /// Validate without storing. A bad profile (or name) is a result here, not an error.
    pub fn validate(&self, name: Option<&str>, content: &[u8]) -> Validation {
        let report = seccomp_profile::validate(
            content,
            &Options {
                max_bytes: self.inner.limits.max_profile_bytes,
            },
        );
        let mut diagnostics = Vec::new();
        if let Some(name) = name
            && let Err(reason) = name::check_profile_name(name)
        {
            diagnostics.push(Finding {
                severity: seccomp_profile::Severity::Error,
                code: "invalid-name".to_owned(),
                path: String::new(),
                message: format!("invalid profile name {}: {reason}", name::display(name)),
            });
        }
        let valid = report.is_valid() && diagnostics.is_empty();
        diagnostics.extend(report.diagnostics.iter().map(Finding::from));
        Validation {
            valid,
            diagnostics,
            digest: report.digest,
            size: report.size as u64,
        }
    }

    fn record(&self, name: &str) -> Result<ProfileRecord> {
        check_name(name)?;
        match self.inner.store.profile(name)? {
            Some(r) if r.stored > 0 => Ok(r),
            _ => Err(Error::ProfileNotFound {
                name: name.to_owned(),
            }),
        }
    }

    fn meta(&self, name: &str, version: u64) -> Result<VersionMeta> {
        check_version(version)?;
        self.record(name)?;
        self.inner
            .store
            .version(name, version)?
            .ok_or_else(|| Error::VersionNotFound {
                name: name.to_owned(),
                version,
            })
    }

    /// One version, by number, latest, or digest.
    pub fn get(&self, name: &str, selector: &Selector, with_content: bool) -> Result<Fetched> {
        let store = &self.inner.store;
        let meta = match selector {
            Selector::Version(v) => self.meta(name, *v)?,
            Selector::Latest => {
                let record = self.record(name)?;
                if record.latest_live == 0 {
                    return Err(Error::NoLiveVersion {
                        name: name.to_owned(),
                    });
                }
                self.meta(name, record.latest_live)?
            }
            Selector::Digest(digest) => {
                check_digest(digest)?;
                self.record(name)?;
                let v = store
                    .versions_with_digest(name, digest)?
                    .first()
                    .copied()
                    .ok_or_else(|| Error::DigestNotFound {
                        name: name.to_owned(),
                        digest: digest.clone(),
                    })?;
                self.meta(name, v)?
            }
        };
        let content = if with_content {
            Some(
                store
                    .content(name, meta.version)?
                    .ok_or_else(|| Error::Corrupt {
                        key: format!("content/{name}@{}", meta.version),
                        reason: "metadata without content".into(),
                    })?,
            )
        } else {
            None
        };
        debug!(profile = %name, version = meta.version, "fetched");
        Ok(Fetched { meta, content })
    }

    /// Profiles by name.
    pub fn list(&self, page_size: u32, token: &str) -> Result<Page<ProfileSummary>> {
        self.inner
            .store
            .list(crate::store::page_size(page_size), non_empty(token))
    }

    /// Versions of a profile, newest first.
    pub fn history(&self, name: &str, page_size: u32, token: &str) -> Result<Page<VersionMeta>> {
        self.record(name)?;
        self.inner
            .store
            .history(name, crate::store::page_size(page_size), non_empty(token))
    }

    fn validated(&self, meta: &VersionMeta) -> Result<Profile> {
        let bytes = self
            .inner
            .store
            .content(&meta.name, meta.version)?
            .ok_or_else(|| Error::Corrupt {
                key: format!("content/{}@{}", meta.name, meta.version),
                reason: "metadata without content".into(),
            })?;
        // The limit may have been lowered since the publish; a stored version is never
        // refused for its size.
        let options = Options {
            max_bytes: bytes.len().max(self.inner.limits.max_profile_bytes),
        };
        let report = seccomp_profile::validate(&bytes, &options);
        let first_error = report.errors().next().map(ToString::to_string);
        report.profile.ok_or_else(|| Error::StoredInvalid {
            name: meta.name.clone(),
            version: meta.version,
            reason: first_error.unwrap_or_else(|| "rejected".to_owned()),
        })
    }

    /// The semantic diff of two stored versions, both re-validated from their bytes.
    pub fn diff(&self, name: &str, from: u64, to: u64) -> Result<VersionDiff> {
        let from_meta = self.meta(name, from)?;
        let to_meta = self.meta(name, to)?;
        let old = self.validated(&from_meta)?;
        let new = self.validated(&to_meta)?;
        let diff = seccomp_profile::diff(&old, &new);
        let mut other_changes = Vec::new();
        if old.listener_path != new.listener_path {
            let show = |p: &Option<String>| {
                p.as_deref()
                    .map_or("unset".to_owned(), |p| format!("{p:?}"))
            };
            other_changes.push(format!(
                "listenerPath changed from {} to {}",
                show(&old.listener_path),
                show(&new.listener_path)
            ));
        }
        Ok(VersionDiff {
            default_action_before: old.default_action.to_string(),
            default_action_after: new.default_action.to_string(),
            from: from_meta,
            to: to_meta,
            diff,
            other_changes,
        })
    }

    /// Soft-delete a version: readable, but no longer `latest`. Idempotent.
    pub async fn deprecate(
        &self,
        actor: &Actor,
        name: &str,
        version: u64,
        reason: &str,
    ) -> Result<VersionMeta> {
        check_text("reason", reason)?;
        let (who, profile, why) = (actor.clone(), name.to_owned(), reason.to_owned());
        let result = self.mutate(name, version, move |this: Registry| async move {
            this.deprecate_locked(&who, &profile, version, &why).await
        });
        match result.await {
            Ok(meta) => Ok(meta),
            Err(e) => {
                self.audit_failure(actor, "Deprecate", target(name, Some(version)), &e)
                    .await;
                Err(e)
            }
        }
    }

    /// Run a mutation of one version under the writer lock, then flush (which also makes its
    /// commit leave the journal sooner). It runs as a tracked task, like a publish: a caller
    /// that goes away can neither cancel it halfway nor release the lock before it is done,
    /// and shutdown waits for it.
    async fn mutate<T, F>(
        &self,
        name: &str,
        version: u64,
        mutation: impl FnOnce(Registry) -> F + Send + 'static,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        check_name(name)?;
        check_version(version)?;
        let this = self.clone();
        let task = self.inner.tasks.spawn(async move {
            let out = {
                let _guard = this.inner.writer.lock().await;
                mutation(this.clone()).await?
            };
            this.inner.store.flush().await?;
            Ok(out)
        });
        task.await.map_err(|e| Error::Task(e.to_string()))?
    }

    async fn deprecate_locked(
        &self,
        actor: &Actor,
        name: &str,
        version: u64,
        reason: &str,
    ) -> Result<VersionMeta> {
        let store = &self.inner.store;
        let mut record = self.record(name)?;
        let mut meta = self.meta(name, version)?;
        let mut entry = AuditEntry {
            time: UnixNanos::now(),
            actor: actor.0.clone(),
            method: "Deprecate".into(),
            target: target(name, Some(version)),
            result: "OK".into(),
            message: String::new(),
        };
        if meta.deprecation.is_some() {
            entry.message = "already deprecated; unchanged".into();
            store.append_audit(&entry)?;
            return Ok(meta);
        }
        meta.deprecation = Some(Deprecation {
            reason: reason.to_owned(),
            at: entry.time,
            by: actor.0.clone(),
        });
        if record.latest_live == version {
            record.latest_live = store.highest_live_below(name, version)?;
        }
        entry.message = if reason.is_empty() {
            "deprecated".to_owned()
        } else {
            format!("deprecated: {reason}")
        };
        store.update_version(&record, &meta, &entry).await?;
        info!(profile = %name, version, latest = record.latest_live, "deprecated");
        Ok(meta)
    }

    /// Hard-delete a version unless something uses it. Its number is never reused.
    pub async fn delete(&self, actor: &Actor, name: &str, version: u64) -> Result<()> {
        let result = async {
            self.check_unused(name, version).await?;
            let (who, profile) = (actor.clone(), name.to_owned());
            self.mutate(name, version, move |this: Registry| async move {
                this.delete_locked(&who, &profile, version).await
            })
            .await
        };
        match result.await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.audit_failure(actor, "DeleteVersion", target(name, Some(version)), &e)
                    .await;
                Err(e)
            }
        }
    }

    /// Refuse to delete a version something uses, or one whose use cannot be checked. Asked
    /// before the writer lock is taken, so a slow distributor holds up no publish; a rollout
    /// created in between has already read the version's bytes.
    async fn check_unused(&self, name: &str, version: u64) -> Result<()> {
        check_name(name)?;
        let meta = self.meta(name, version)?;
        match self.inner.usage.user_of(name, version, &meta.digest).await {
            Ok(None) => Ok(()),
            Ok(Some(user)) => Err(Error::InUse {
                name: name.to_owned(),
                version,
                user,
            }),
            Err(reason) => Err(Error::UsageUnknown {
                name: name.to_owned(),
                version,
                reason,
            }),
        }
    }

    async fn delete_locked(&self, actor: &Actor, name: &str, version: u64) -> Result<()> {
        let store = &self.inner.store;
        let mut record = self.record(name)?;
        let meta = self.meta(name, version)?;
        if record.latest_live == version {
            record.latest_live = store.highest_live_below(name, version)?;
        }
        record.stored = record.stored.saturating_sub(1);
        let entry = AuditEntry {
            time: UnixNanos::now(),
            actor: actor.0.clone(),
            method: "DeleteVersion".into(),
            target: target(name, Some(version)),
            result: "OK".into(),
            message: format!("deleted version {version}"),
        };
        store.delete_version(&record, &meta, &entry).await?;
        info!(profile = %name, version, "deleted");
        Ok(())
    }

    /// Remove the audit entries from before `before_ns` (see `seccomp_server::retention`).
    pub fn prune_audit(&self, before_ns: u64) -> Result<usize> {
        self.inner.store.prune_audit(before_ns)
    }

    /// Audit entries at or after `since`, oldest first.
    pub fn audit(
        &self,
        since: Option<UnixNanos>,
        page_size: u32,
        token: &str,
    ) -> Result<Page<AuditEntry>> {
        self.inner
            .store
            .audit(since, crate::store::page_size(page_size), non_empty(token))
    }
}

fn non_empty(token: &str) -> Option<&str> {
    (!token.is_empty()).then_some(token)
}
