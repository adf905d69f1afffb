//! The distributor's time for deadlines and timers: the wall clock read once at start, then
//! advanced by the monotonic clock. An NTP step (or an operator's `date -s`) while the
//! distributor runs moves none of its deadlines, so it cannot time out every Applying node at
//! once; stored times stay close to wall time, for people. After a restart the wall clock is
//! read again, and settling restarts every deadline anyway.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds for the rollout engine and its records.
pub trait Clock: Send + Sync + 'static {
    /// Now, in ms since the Unix epoch (approximately).
    fn now_ms(&self) -> u64;
}

/// The wall clock at start plus monotonic time since (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    wall_at_start_ms: u64,
    start: Instant,
}

/// The system's wall clock, in ms since the epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl MonotonicClock {
    /// Starting at the system's wall clock now.
    pub fn new() -> Self {
        Self::starting_at(wall_ms())
    }

    /// Starting at `wall_ms` (ms since the epoch) now.
    pub fn starting_at(wall_ms: u64) -> Self {
        MonotonicClock {
            wall_at_start_ms: wall_ms,
            start: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start_ms.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_goes_on_from_the_start_whatever_the_wall_clock_does() {
        let clock = MonotonicClock::starting_at(1_000_000);
        let a = clock.now_ms();
        let b = clock.now_ms();
        assert!(a >= 1_000_000 && b >= a, "{a} {b}");
        // It never reads the wall clock again, so a step of the system clock cannot show.
        assert!(b - 1_000_000 < 60_000);
    }
}
