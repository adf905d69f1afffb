//! When to look for drift: an inotify watcher on the allowed root that says "something
//! changed" (nothing more: the scan decides what drifted), and a periodic tick that catches
//! what inotify cannot (a watch set up late, a queue overflow, a changed owner in passwd).
//!
//! The sync client runs a loop like this one. Scans and repairs do blocking file I/O (reads,
//! fsync), so they run off the async worker threads:
//!
//! ```no_run
//! # async fn run(applier: std::sync::Arc<std::sync::Mutex<seccomp_node_agent::Applier>>) -> anyhow::Result<()> {
//! use seccomp_node_agent::watch::{ChangeWatcher, DriftTrigger};
//! let dir = applier.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.allowed_root_on_disk();
//! let (_watcher, changes) = ChangeWatcher::channel(&dir)?;
//! let mut trigger = DriftTrigger::new(Some(changes), std::time::Duration::from_secs(60));
//! loop {
//!     trigger.next().await;
//!     let applier = applier.clone();
//!     let report = tokio::task::spawn_blocking(move || applier.lock().ok().and_then(|mut a| a.repair())).await?;
//!     if let Some(report) = report {
//!         // send Drift{report} to the distributor
//!     }
//! }
//! # }
//! ```

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use crate::error::{Error, Result};
use crate::fsops::TEMP_PREFIX;

/// Watches a directory tree and calls back on every change that is not the agent's own temp
/// file churn or a mere read. Dropping it stops the watch.
pub struct ChangeWatcher {
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for ChangeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeWatcher(..)")
    }
}

impl ChangeWatcher {
    /// Watches `dir` recursively (it must exist); `on_change` runs on the watcher's thread.
    /// Watcher errors (such as an event queue overflow) count as changes, so a scan follows.
    pub fn new(dir: &Path, on_change: impl Fn() + Send + 'static) -> Result<Self> {
        let handler = move |event: notify::Result<notify::Event>| {
            if event.map_or(true, |event| relevant(&event)) {
                on_change();
            }
        };
        let watch_error = |source| Error::Watch {
            path: dir.to_owned(),
            source,
        };
        let mut watcher = notify::recommended_watcher(handler).map_err(watch_error)?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(watch_error)?;
        Ok(Self { _watcher: watcher })
    }

    /// Like [`new`](Self::new), signalling through a channel that holds at most one pending
    /// signal: a burst of events becomes one scan.
    pub fn channel(dir: &Path) -> Result<(Self, mpsc::Receiver<()>)> {
        let (tx, rx) = mpsc::channel(1);
        let watcher = Self::new(dir, move || {
            // Full means a signal is already pending; closed means nobody listens.
            let _ = tx.try_send(());
        })?;
        Ok((watcher, rx))
    }
}

/// Reads (our own scans open every file) and the agent's temp files are noise.
fn relevant(event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    let temp = |path: &Path| {
        path.file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| n.starts_with(TEMP_PREFIX))
    };
    event.paths.is_empty() || !event.paths.iter().all(|p| temp(p))
}

/// Why a drift scan is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The watcher saw a change.
    Changed,
    /// The periodic scan is due.
    Periodic,
}

/// Combines watcher signals with a periodic tick.
#[derive(Debug)]
pub struct DriftTrigger {
    changes: Option<mpsc::Receiver<()>>,
    interval: Interval,
}

impl DriftTrigger {
    /// `changes` from [`ChangeWatcher::channel`] (or `None` to scan periodically only); the
    /// first periodic tick comes one `period` from now. Must be called inside a tokio runtime.
    pub fn new(changes: Option<mpsc::Receiver<()>>, period: Duration) -> Self {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { changes, interval }
    }

    /// Waits until a scan is due.
    pub async fn next(&mut self) -> Trigger {
        loop {
            let Some(changes) = self.changes.as_mut() else {
                self.interval.tick().await;
                return Trigger::Periodic;
            };
            tokio::select! {
                signal = changes.recv() => match signal {
                    Some(()) => return Trigger::Changed,
                    // The watcher is gone: periodic scans only.
                    None => self.changes = None,
                },
                _ = self.interval.tick() => return Trigger::Periodic,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
    use notify::{Event, EventKind};

    use super::relevant;

    fn event(kind: EventKind, names: &[&str]) -> Event {
        names.iter().fold(Event::new(kind), |e, n| {
            e.add_path(format!("/r/{n}").into())
        })
    }

    #[test]
    fn reads_and_own_temp_files_are_noise() {
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let close = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let create = EventKind::Create(CreateKind::File);
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(
            !relevant(&event(open, &["web.json"])),
            "a drift scan reading files must not trigger a scan"
        );
        assert!(!relevant(&event(close, &["web.json"])));
        assert!(!relevant(&event(
            create,
            &[".seccomp-agent.web.json.tmp.1"]
        )));
        assert!(
            relevant(&event(
                modify,
                &[".seccomp-agent.web.json.tmp.1", "web.json"]
            )),
            "rename into place"
        );
        assert!(relevant(&event(modify, &["web.json"])));
        assert!(relevant(&event(create, &[])));
    }
}
