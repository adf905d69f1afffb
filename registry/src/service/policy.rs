//! Compatibility rules (`SetPolicy`): a profile's rule, and the check of every publish
//! against its latest live version ([`seccomp_profile::compat`]).

use tracing::info;

use super::checks::target;
use super::{Actor, Registry};
use crate::error::{Error, Result};
use crate::store::{AuditEntry, ProfileRecord, UnixNanos};

impl Registry {
    /// The profile's compatibility rule against its latest live version, for `content` as
    /// version `version`.
    pub(super) fn check_compat(
        &self,
        name: &str,
        record: &ProfileRecord,
        version: u64,
        content: &[u8],
    ) -> Result<()> {
        use seccomp_profile::compat::{self, CompatMode, Treatment};
        let mode = record
            .compat
            .as_deref()
            .and_then(CompatMode::parse)
            .unwrap_or_default();
        if mode == CompatMode::None || record.latest_live == 0 {
            return Ok(());
        }
        let against = record.latest_live;
        let old =
            self.inner
                .store
                .content(name, against)?
                .ok_or_else(|| Error::VersionNotFound {
                    name: name.to_owned(),
                    version: against,
                })?;
        let (Some(old), Some(new)) = (
            seccomp_profile::validate_default(&old).profile,
            seccomp_profile::validate_default(content).profile,
        ) else {
            // The new one validated before; an old one that no longer does is not a base.
            return Ok(());
        };
        let violations = compat::check(mode, &old, &new);
        if violations.is_empty() {
            return Ok(());
        }
        let word = |t: Treatment| match t {
            Treatment::Allowed => "allowed",
            Treatment::Sometimes => "allowed for some arguments",
            Treatment::Denied => "denied",
        };
        const SHOWN: usize = 20;
        let mut text: Vec<String> = violations
            .iter()
            .take(SHOWN)
            .map(|v| {
                format!(
                    "{} on {}: {} → {}",
                    v.syscall,
                    v.arch,
                    word(v.before),
                    word(v.after)
                )
            })
            .collect();
        if violations.len() > SHOWN {
            text.push(format!("and {} more", violations.len() - SHOWN));
        }
        Err(Error::Incompatible {
            name: name.to_owned(),
            version,
            mode: mode.name().to_owned(),
            against,
            violations: text.join("; "),
        })
    }

    /// Set a profile's compatibility rule; returns the one it had.
    pub async fn set_policy(&self, actor: &Actor, name: &str, compat: &str) -> Result<String> {
        let result = self.set_policy_inner(actor, name, compat).await;
        if let Err(e) = &result {
            self.audit_failure(actor, "SetPolicy", target(name, None), e)
                .await;
        }
        result
    }

    async fn set_policy_inner(&self, actor: &Actor, name: &str, compat: &str) -> Result<String> {
        let mode = seccomp_profile::compat::CompatMode::parse(compat).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown compatibility rule {compat:?}: none, no-new-denies or tighten-only"
            ))
        })?;
        let _guard = self.inner.writer.lock().await;
        let store = &self.inner.store;
        let mut record = store.profile(name)?.ok_or_else(|| Error::ProfileNotFound {
            name: name.to_owned(),
        })?;
        let previous = record.compat.clone().unwrap_or_else(|| "none".to_owned());
        record.compat =
            (mode != seccomp_profile::compat::CompatMode::None).then(|| mode.name().to_owned());
        let entry = AuditEntry {
            time: UnixNanos::now(),
            actor: actor.0.clone(),
            method: "SetPolicy".into(),
            target: target(name, None),
            result: "OK".into(),
            message: format!("compatibility {previous} → {}", mode.name()),
        };
        store.update_record(name, &record, &entry).await?;
        info!(profile = %name, from = %previous, to = mode.name(), "compatibility rule set");
        Ok(previous)
    }
}
