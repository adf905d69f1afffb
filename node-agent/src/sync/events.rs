//! The agent's seccomp events (`--audit-log`, #19): every [`Config::audit_interval`] the
//! followed logs are read for new kernel seccomp records, each record is told by container
//! while its process still exists, and counted in a bounded [`Aggregator`]. The session
//! takes what was counted at the same interval and sends it as one `SeccompEvents`; while
//! there is no stream the counts keep growing (bounded, the rest counted as dropped) and
//! go with the first message of the next one.
//!
//! A log's position is kept once its records are counted, so events counted but not yet
//! sent when the agent stops are not sent again after a restart, and none is sent twice.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use seccomp_proto::agent::v1 as pb;
use tokio_util::sync::CancellationToken;

use super::Config;
use crate::audit_log::{LogFollower, state_file};
use crate::seccomp_events::Aggregator;

/// What the logs gave, shared by the reading loop and the sessions.
#[derive(Clone)]
pub(super) struct Events(Arc<Mutex<Aggregator>>);

impl Events {
    /// What was counted since the last take, as a message; `None` when nothing was.
    pub(super) fn take(&self) -> Option<pb::SeccompEvents> {
        let (events, dropped) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if events.is_empty() && dropped == 0 {
            return None;
        }
        let at = |ms: u64| {
            Some(prost_types::Timestamp::from(
                UNIX_EPOCH + Duration::from_millis(ms),
            ))
        };
        Some(pb::SeccompEvents {
            events: events
                .into_iter()
                .map(|(k, c)| pb::SeccompEvent {
                    container_id: k.container,
                    exe: k.exe,
                    arch: k.arch,
                    syscall: k.syscall,
                    action: k.action,
                    count: c.count,
                    first_seen: at(c.first_ms),
                    last_seen: at(c.last_ms),
                })
                .collect(),
            dropped,
        })
    }
}

/// Reads the logs of `config.audit_logs` until `stop`; `None` when there are none.
pub(super) fn start(
    config: &Config,
    stop: CancellationToken,
) -> Option<(Events, tokio::task::JoinHandle<()>)> {
    if config.audit_logs.is_empty() {
        return None;
    }
    let root = &config.files.host_root;
    let followers: Vec<(PathBuf, LogFollower)> = config
        .audit_logs
        .iter()
        .map(|log| {
            let on_disk = root.join(log.strip_prefix("/").unwrap_or(log));
            let state = state_file(&config.files.state_dir, log);
            (log.clone(), LogFollower::new(on_disk, state))
        })
        .collect();
    let events = Events(Arc::new(Mutex::new(Aggregator::new(
        root.join("proc"),
        config.audit_max_kinds,
    ))));
    tracing::info!(logs = ?config.audit_logs, interval = ?config.audit_interval, "following logs for seccomp records");
    let task = tokio::spawn(read_loop(
        followers,
        events.clone(),
        config.audit_interval,
        stop,
    ));
    Some((events, task))
}

async fn read_loop(
    followers: Vec<(PathBuf, LogFollower)>,
    events: Events,
    period: Duration,
    stop: CancellationToken,
) {
    let mut followers = Some(followers);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(mut list) = followers.take() else {
            return;
        };
        let shared = events.clone();
        // File reads and /proc lookups block: on the blocking pool.
        let done = tokio::task::spawn_blocking(move || {
            for (log, follower) in &mut list {
                match follower.poll() {
                    Ok(records) => {
                        if !records.is_empty() {
                            tracing::debug!(log = %log.display(), records = records.len(), "seccomp records read");
                        }
                        let mut agg = shared.0.lock().unwrap_or_else(|e| e.into_inner());
                        for r in &records {
                            agg.add(r);
                        }
                    }
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            list
        })
        .await;
        match done {
            Ok(list) => followers = Some(list),
            Err(e) => {
                tracing::error!(error = %e, "reading the audit logs panicked; seccomp events stop");
                return;
            }
        }
    }
}
