//! The GitOps sink: one YAML file per NCI (`<name>.yaml`) in a directory that Argo CD or
//! Flux watches. Files are written atomically with `seccomp_server::atomic` (temporary file
//! in the same directory, fsync, rename, fsync of the directory), unchanged files are not rewritten, files of ours that are
//! no longer desired are removed, and files that are not ours are never touched.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use seccomp_rollout::nci::{self, NodeConfigItem};
use seccomp_server::atomic;

use crate::error::{Error, Result};

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// NCIs whose file was created or replaced.
    pub written: Vec<String>,
    /// NCIs whose file already had the desired bytes.
    pub unchanged: Vec<String>,
    /// Files of ours removed because their NCI is no longer desired.
    pub removed: Vec<String>,
}

/// A directory of NCI YAML files.
#[derive(Debug, Clone)]
pub struct DirSink {
    dir: PathBuf,
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// A temporary file of ours: the shared writer's, or of the form earlier versions used
/// (`.{name}.yaml.tmp-{pid}`).
fn is_temp(name: &str) -> bool {
    let old_style = name.starts_with('.')
        && name
            .rsplit_once(".yaml.tmp-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    atomic::is_temp_name(name) || old_style
}

/// True when the file parses as an NCI carrying our managed-by label.
fn is_ours(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string(path) else {
        return false;
    };
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("metadata")?
                .get("labels")?
                .get(nci::labels::MANAGED_BY)?
                .as_str()
                .map(|s| s == nci::MANAGER)
        })
        .unwrap_or(false)
}

impl DirSink {
    /// A sink writing into `dir` (created on first sync).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSink { dir: dir.into() }
    }

    /// Make the directory hold exactly `ncis` among our files.
    pub fn sync(&self, ncis: &[NodeConfigItem]) -> Result<SyncReport> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        // Temporary files of writes a crash interrupted: this sink is the directory's only
        // writer, so any left is ours and stale.
        File::open(&self.dir)
            .and_then(|d| atomic::remove_temps(&d, is_temp))
            .map_err(|e| Error::io(format!("cleaning up {}", self.dir.display()), e))?;
        let mut report = SyncReport::default();
        let mut desired = BTreeSet::new();
        for n in ncis {
            let name = &n.metadata.name;
            seccomp_profile::name::check_dns_subdomain(name).map_err(|e| {
                Error::invalid(format!(
                    "NCI name {} is not valid: {e}",
                    seccomp_profile::name::display(name)
                ))
            })?;
            if !desired.insert(format!("{name}.yaml")) {
                return Err(Error::invalid(format!("NCI \"{name}\" is given twice")));
            }
        }
        for n in ncis {
            let name = &n.metadata.name;
            let path = self.dir.join(format!("{name}.yaml"));
            let yaml = n.to_yaml()?;
            match fs::read(&path) {
                Ok(existing) if existing == yaml.as_bytes() => {
                    report.unchanged.push(name.clone());
                    continue;
                }
                Ok(_) if !is_ours(&path) => {
                    return Err(Error::invalid(format!(
                        "{} exists and is not ours (no {}={} label): refusing to overwrite it",
                        path.display(),
                        nci::labels::MANAGED_BY,
                        nci::MANAGER
                    )));
                }
                _ => {}
            }
            atomic::write(&path, yaml.as_bytes(), 0o644)
                .map_err(|e| Error::io(e.context(), e.source))?;
            report.written.push(name.clone());
        }
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !file_name.ends_with(".yaml") || desired.contains(&file_name) {
                continue;
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_file()) && is_ours(&path) {
                fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                report
                    .removed
                    .push(file_name.trim_end_matches(".yaml").to_owned());
            }
        }
        if !report.removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        report.removed.sort();
        Ok(report)
    }
}

impl super::NciSink for DirSink {
    fn describe(&self) -> String {
        format!("yaml directory {}", self.dir.display())
    }

    fn sync<'a>(&'a self, ncis: &'a [NodeConfigItem]) -> crate::BoxFuture<'a, Result<()>> {
        let sink = self.clone();
        let ncis = ncis.to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || sink.sync(&ncis).map(|_| ()))
                .await
                .map_err(|e| Error::Storage(format!("yaml sink task: {e}")))?
        })
    }
}
