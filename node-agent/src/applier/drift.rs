//! Drift: a desired entry that someone else changed on disk since the agent applied it, and
//! its repair, which re-applies the last desired set from the content store.

use super::Applier;
use crate::accounts::Accounts;
use crate::fsops;
use crate::model::{DesiredKind, Drift, DriftKind, DriftReport, ObservedFile, ObservedKind};

impl Applier {
    /// Every desired entry that differs from what is on disk now (files: content, mode, uid,
    /// gid, kind; directories: existence and kind only, since an existing directory is
    /// deliberately left as it is). Empty when nothing drifted.
    pub fn check_drift(&self) -> Vec<Drift> {
        let root = match fsops::open_root(&self.config.host_root) {
            Ok(root) => root,
            Err(e) => {
                tracing::warn!(host_root = ?self.config.host_root, "cannot open the host root: {e}");
                return self
                    .record
                    .desired
                    .iter()
                    .map(|d| unreadable(&d.path))
                    .collect();
            }
        };
        let accounts = Accounts::load(&root);
        let (checked, errors) = self.check(&self.record.desired, &accounts, true);
        for error in errors {
            // For example an owner removed from the host's passwd since the apply.
            tracing::warn!(path = %error.path, code = %error.code, "cannot check for drift: {}", error.message);
        }
        let mut drifted = Vec::new();
        for entry in &checked {
            let observed = match self.observe_checked(&root, &accounts, entry) {
                Ok(observed) => observed,
                Err(_) => {
                    drifted.push(unreadable(&entry.desired.path));
                    continue;
                }
            };
            let mut kinds = Vec::new();
            match (entry.desired.kind, observed.kind) {
                (_, None) => kinds.push(DriftKind::Missing),
                (DesiredKind::File, Some(ObservedKind::File)) => {
                    if observed.sha256 != entry.sha256 {
                        kinds.push(DriftKind::Content);
                    }
                    if observed.mode != entry.attrs.mode {
                        kinds.push(DriftKind::Mode);
                    }
                    if observed.uid != entry.attrs.uid {
                        kinds.push(DriftKind::Owner);
                    }
                    if observed.gid != entry.attrs.gid {
                        kinds.push(DriftKind::Group);
                    }
                }
                (DesiredKind::Directory, Some(ObservedKind::Directory)) => {}
                _ => kinds.push(DriftKind::WrongKind),
            }
            if !kinds.is_empty() {
                drifted.push(Drift { observed, kinds });
            }
        }
        drifted
    }

    /// Checks for drift and, if any, re-applies the last desired set (which rewrites only what
    /// differs). `None` when nothing drifted.
    pub fn repair(&mut self) -> Option<DriftReport> {
        let drifted = self.check_drift();
        if drifted.is_empty() {
            return None;
        }
        let revision = self.record.revision.clone();
        let desired = self.record.desired.clone();
        tracing::info!(
            revision,
            drifted = drifted.len(),
            "drift detected, repairing"
        );
        Some(match self.apply_set(&revision, &desired, true) {
            Ok(applied) => DriftReport {
                revision,
                drifted,
                repaired: true,
                errors: Vec::new(),
                observed: applied.observed,
            },
            Err(rejected) => DriftReport {
                revision,
                drifted,
                repaired: false,
                errors: rejected.errors,
                observed: rejected.observed,
            },
        })
    }
}

fn unreadable(path: &str) -> Drift {
    Drift {
        observed: ObservedFile::missing(path),
        kinds: vec![DriftKind::Unreadable],
    }
}
