//! The drift loop of [`super::run`]: inotify on the allowed root plus a periodic scan call
//! [`Applier::repair`], and each report goes to the sessions, which send it as `Drift`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::Applier;
use crate::error::Result;
use crate::model::DriftReport;
use crate::watch::{ChangeWatcher, DriftTrigger};

/// Scans for drift when inotify or the periodic tick says so, repairs, and queues reports.
pub(super) struct DriftLoop {
    pub(super) applier: Shared,
    pub(super) dir: PathBuf,
    pub(super) period: Duration,
    pub(super) reports: mpsc::Sender<DriftReport>,
    pub(super) applied: Arc<Notify>,
    pub(super) stop: CancellationToken,
    /// No repairs until the next apply (the last one was interrupted).
    pub(super) hold: bool,
    /// Counted when served.
    pub(super) metrics: Option<Arc<crate::metrics::AgentMetrics>>,
}

impl DriftLoop {
    pub(super) async fn run(mut self) -> Result<()> {
        let result = self.scan_and_repair().await;
        if result.is_err() {
            // Without repairs the agent is not doing its job: stop the sessions too.
            self.stop.cancel();
        }
        result
    }

    /// A watcher on the allowed root, or none while it does not exist (an apply creates it).
    fn watch(&self) -> (Option<ChangeWatcher>, DriftTrigger) {
        match ChangeWatcher::channel(&self.dir) {
            Ok((watcher, changes)) => {
                (Some(watcher), DriftTrigger::new(Some(changes), self.period))
            }
            Err(e) => {
                tracing::debug!("{e}; periodic drift scans only, until it can be watched");
                (None, DriftTrigger::new(None, self.period))
            }
        }
    }

    async fn scan_and_repair(&mut self) -> Result<()> {
        let (mut watcher, mut trigger) = self.watch();
        // Drift that happened while the agent was not running is repaired at once.
        let mut due = !self.hold;
        loop {
            if !due {
                let applied = tokio::select! {
                    () = self.stop.cancelled() => return Ok(()),
                    _ = trigger.next() => false,
                    () = self.applied.notified(), if watcher.is_none() || self.hold => true,
                };
                if applied && self.hold {
                    self.hold = false;
                    tracing::debug!("applied: drift repairs resume");
                }
                if watcher.is_none() {
                    (watcher, trigger) = self.watch();
                }
                if self.hold {
                    continue;
                }
            }
            due = false;
            let Some(report) = self.applier.with(Applier::repair).await? else {
                continue;
            };
            let paths: Vec<&str> = report
                .drifted
                .iter()
                .map(|d| d.observed.path.as_str())
                .collect();
            if let Some(m) = &self.metrics {
                let result = if report.repaired {
                    "repaired"
                } else {
                    "failed"
                };
                crate::metrics::AgentMetrics::count(&m.repairs, result);
            }
            if report.repaired {
                tracing::info!(revision = %report.revision, ?paths, "drift repaired");
            } else {
                tracing::warn!(
                    revision = %report.revision,
                    ?paths,
                    errors = ?report.errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
                    "drift found and not repaired"
                );
            }
            // A watch does not follow a directory that was removed and made again: watch anew.
            (watcher, trigger) = self.watch();
            match self.reports.try_send(report) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("no stream to the distributor: drift report dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
    }
}
