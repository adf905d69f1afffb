//! How long audit entries are kept: the `--audit-retention` flag and the loop that prunes
//! older entries while a server runs. The store that holds the entries does the pruning;
//! this only says when and up to what time.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The retention flag of a server that keeps an audit log.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Delete audit entries older than this (checked at a tenth of it, at most hourly);
    /// `0s` keeps them forever.
    #[arg(long, env = "SECCOMP_AUDIT_RETENTION", default_value = "365d", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,
}

impl RetentionArgs {
    /// The retention: `None` for "forever".
    pub fn retention(&self) -> Option<Duration> {
        (!self.audit_retention.is_zero()).then_some(self.audit_retention)
    }
}

/// The most entries one call of a store's pruning removes (bounding the batch it holds);
/// [`prune_until`] calls again at once when a call removed that many.
pub const PRUNE_BATCH: usize = 100_000;

/// The default retention, one year.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often to prune for `retention`: a tenth of it, between a second and an hour.
pub fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Wall-clock nanoseconds since the Unix epoch before which entries are past `retention`
/// at `now` (0 when the clock is before `retention` after the epoch).
pub fn cutoff_ns(now: SystemTime, retention: Duration) -> u64 {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(now.saturating_sub(retention).as_nanos()).unwrap_or(u64::MAX)
}

/// Until `stop` resolves, call `prune` with the cutoff at once and then every
/// [`interval`]; `prune` returns how many entries went, or why it could not prune (logged,
/// and tried again next time).
pub async fn prune_until<E: std::fmt::Display>(
    retention: Duration,
    mut prune: impl FnMut(u64) -> Result<usize, E>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut every = tokio::time::interval(interval(retention));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = every.tick() => {
                let cutoff = cutoff_ns(SystemTime::now(), retention);
                let mut pruned = 0;
                let outcome = loop {
                    match prune(cutoff) {
                        Ok(n) if n >= PRUNE_BATCH => pruned += n,
                        Ok(n) => break Ok(pruned + n),
                        Err(e) => break Err(e),
                    }
                };
                match outcome {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(entries = n, retention = %humantime::format_duration(retention), "pruned old audit entries"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune the audit log"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_the_retention_before_now_and_the_interval_a_tenth_within_bounds() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(cutoff_ns(now, Duration::from_secs(10)), 990_000_000_000);
        assert_eq!(cutoff_ns(now, Duration::from_secs(5000)), 0);
        assert_eq!(interval(DEFAULT_RETENTION), Duration::from_secs(3600));
        assert_eq!(interval(Duration::from_secs(100)), Duration::from_secs(10));
        assert_eq!(interval(Duration::from_millis(10)), Duration::from_secs(1));
    }
}
